"""Extract one subnet of a supernet into a standalone sparse MoE checkpoint."""

from __future__ import annotations

import torch

from .config import ArchConfig
from .modeling import MoETransformer
from .supernet import SuperTransformer


@torch.no_grad()
def extract_subnet(supernet: SuperTransformer, arch: ArchConfig) -> MoETransformer:
    """Copy the weights that `supernet` makes for `arch` into a new `MoETransformer(arch)`.

    Prefix supernet: the prefix slices. Mixture-of-Supernets (`automoe.mos`): the weights its
    architecture router generates, collapsed once, so the model carries no router and no weight
    sets. The result owns its (small) weights; it shares no storage with the supernet and computes
    exactly what `supernet(src, tgt, arch)` computes.
    """
    weights = supernet.subnet_weights(arch)
    model = MoETransformer(arch)
    model.load_state_dict({name: w.detach().clone() for name, w in weights.items()}, strict=True)
    return model.eval()
