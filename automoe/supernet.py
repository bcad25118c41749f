"""The elastic SuperTransformer (HAT arXiv 2005.14187 §3.1; AutoMoE arXiv 2210.07535 §3).

It holds the weights of `space.supernet_arch()`: every layer at the widest width with
`max_experts` experts of the widest FFN. A subnet `arch` uses, for every weight of the standalone
`MoETransformer(arch)`, the prefix slice `W[:out, :in]` of the supernet weight of the same name:
expert i of a layer is the prefix of expert i's own matrices, the router is `R[:n, :d]`, the first
`decoder_layers` decoder layers are used.

The forward pass of a subnet *is* `MoETransformer(arch).forward`, run with
`torch.func.functional_call` on views of the supernet weights, so the supernet and the extracted
model cannot drift apart. The architecture is an argument of every call; nothing is stored.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn
from torch.func import functional_call

from .config import ArchConfig, SearchSpace
from .modeling import MoETransformer, Seq2SeqOutput


def prefix_slice(weight: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """The leading `shape` block of `weight` (a view, so gradients reach the supernet)."""
    return weight[tuple(slice(0, n) for n in shape)]


@lru_cache(maxsize=256)
def _skeleton(arch: ArchConfig) -> MoETransformer:
    """A weightless (meta-device) model of `arch`, used only for its structure and forward code."""
    with torch.device("meta"):
        return MoETransformer(arch)


class SuperTransformer(nn.Module):
    """Weight-sharing supernet of a `SearchSpace`; `forward(src, tgt_in, arch)` runs any subnet."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space
        # Only the weights of this model are used; dropout comes from the subnet's own arch.
        self.model = MoETransformer(space.supernet_arch())

    def subnet_shapes(self, arch: ArchConfig) -> dict[str, torch.Size]:
        """Name -> shape of every tensor of the standalone model of `arch`."""
        return {name: p.shape for name, p in _skeleton(arch).state_dict().items()}

    def subnet_weights(self, arch: ArchConfig) -> dict[str, torch.Tensor]:
        """Views of the supernet weights that form `arch` (raises if `arch` is outside the space)."""
        self.space.validate(arch)
        own = dict(self.model.named_parameters())
        return {name: prefix_slice(own[name], shape) for name, shape in self.subnet_shapes(arch).items()}

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, arch: ArchConfig) -> Seq2SeqOutput:
        """Teacher-forced forward pass of subnet `arch`: same result as the extracted model."""
        skeleton = _skeleton(arch).train(self.training)
        return functional_call(skeleton, self.subnet_weights(arch), (src, tgt_in))
