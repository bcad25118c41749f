"""Mixture-of-Supernets: architecture-routed weight generation (Jawahar et al., arXiv 2306.04845).

The prefix supernet (`automoe.supernet`) gives every subnet the leading block `W[:out, :in]` of
one matrix, so all subnets pull the same weights in different directions. MoS keeps `E` weight
sets `S_1..S_E` of every matrix of the supernet architecture and lets a small router MLP, which
reads an encoding of the architecture, mix them before the usual prefix slice:

    layer-wise   W(arch)    = sum_e alpha_e(arch)   S_e       one softmax over E per matrix
    neuron-wise  W(arch)[j] = sum_e alpha_j,e(arch) S_e[j]    one softmax over E per output neuron j

    subnet weight = W(arch)[:out, :in]

("layer" is the paper's word for one linear map.) The coefficients depend on the architecture
only, never on the tokens, so a chosen subnet collapses to ordinary weights (`extract_subnet`):
the extracted model has no inference cost.

In the heterogeneous MoE space every expert `j` of every layer has its own `E` sets of fc1 and
fc2, and the token router of every layer has its own `E` sets of `R`: the architecture router
mixes them per subnet (expert 0 of a 1-expert 384-wide layer and of a 4-expert 1536-wide layer get
different weights), and the token router still picks each token's expert at run time.

What is generated: every `nn.Linear` weight of the supernet architecture (attention projections,
expert fc1/fc2, token routers). Biases, LayerNorms and the shared embedding table stay
prefix-shared: they are a small part of the parameters (the embedding is large, but elastic only
in its width), and `E` copies of them would cost memory for little expressiveness.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ArchConfig, SearchSpace
from .search import space as genes
from .supernet import SuperTransformer, WeightSharing, prefix_slice


# ------------------------------------------------------------------------ architecture encoding

@lru_cache(maxsize=16)
def _layout(space: SearchSpace) -> tuple[tuple[str, ...], tuple[float, ...]]:
    layout = genes.GeneLayout.of(space)
    return layout.names, tuple(float(max(choices)) for choices in layout.choices)


def encoding_names(space: SearchSpace) -> tuple[str, ...]:
    """What each position of `arch_encoding` holds (e.g. "decoder_ffn.2.1": the width of
    expert 1 of decoder layer 2); the positions of the space's genes (`automoe.search.space`)."""
    return _layout(space)[0]


def _active(name: str, arch: ArchConfig) -> bool:
    """Whether gene position `name` belongs to `arch`: a layer slot past its depth, or an expert
    slot past the layer's expert count, does not."""
    parts = name.split(".")  # "encoder_layers" | "decoder_heads.3" | "encoder_ffn.2.1"
    if len(parts) == 1:
        return True
    stack, layer = parts[0].split("_")[0], int(parts[1])
    if layer >= getattr(arch, f"{stack}_layers"):
        return False
    return len(parts) == 2 or int(parts[2]) < len(getattr(arch, f"{stack}_ffn")[layer])


def arch_encoding(space: SearchSpace, arch: ArchConfig) -> list[float]:
    """The fixed-length, normalised encoding of `arch` that the architecture router reads.

    One value per gene position of the space (`encoding_names`): the architecture's value divided
    by the largest choice of that position (so in (0, 1]), and 0 for layer and expert slots the
    architecture does not have. Genes are a bijection onto the space's architectures, so distinct
    architectures get distinct encodings. Raises `ConfigError` if `arch` is outside the space.
    """
    names, scale = _layout(space)
    gene = genes.encode(space, arch)
    return [v / s if _active(name, arch) else 0.0 for name, v, s in zip(names, gene, scale)]


# --------------------------------------------------------------------------- weight generation

class ArchRouter(nn.Module):
    """The architecture router: a 2-layer MLP from the architecture encoding to the mixing
    logits of every generated matrix. Its first layer is shared by all matrices; the output
    layer holds one head per matrix (E logits layer-wise, out x E neuron-wise), concatenated."""

    def __init__(self, encoding_dim: int, hidden: int, logits: int):
        super().__init__()
        self.fc1 = nn.Linear(encoding_dim, hidden)
        self.fc2 = nn.Linear(hidden, logits)

    def forward(self, encoding: torch.Tensor) -> torch.Tensor:
        """encoding [D] -> logits [logits]."""
        return self.fc2(F.relu(self.fc1(encoding)))


class MixtureOfSupernets(SuperTransformer):
    """A supernet whose subnet weights are generated from the architecture (layer- or neuron-wise).

    Same interface as the prefix `SuperTransformer`: `forward(src, tgt_in, arch)` runs subnet
    `arch`, `subnet_weights(arch)` gives the standalone model's tensors. Every `nn.Linear` weight
    of `self.model` holds `sets` weight sets stacked on a leading dimension (`[E, out, in]`), so
    `self.model` is a store of weights, never run itself.
    """

    def __init__(self, space: SearchSpace, *, per_neuron: bool, sets: int = WeightSharing.DEFAULT_SETS,
                 hidden: int = WeightSharing.DEFAULT_HIDDEN):
        super().__init__(space)
        self.per_neuron, self.sets, self.hidden = per_neuron, sets, hidden
        # generated weight name -> (first logit, number of logits) in the router's output
        self.heads: dict[str, tuple[int, int]] = {}
        offset = 0
        for name, module in self.model.named_modules():
            if isinstance(module, nn.Linear):
                # set 0 is the prefix supernet's initialisation; the others are drawn the same way
                extra = [nn.init.xavier_uniform_(torch.empty_like(module.weight)) for _ in range(sets - 1)]
                module.weight = nn.Parameter(torch.stack([module.weight.detach(), *extra]))  # [E, out, in]
                n = sets * (module.out_features if per_neuron else 1)
                self.heads[f"{name}.weight"] = (offset, n)
                offset += n
        self.arch_router = ArchRouter(len(encoding_names(space)), hidden, offset)

    def load_prefix_supernet(self, prefix: SuperTransformer) -> None:
        """Start from a trained prefix supernet of the same space, so that every subnet runs
        exactly as in `prefix`: weight set k of a generated matrix W becomes W + d_k, with offsets
        d_k drawn like a fresh weight set (Xavier) and centred so that they sum to zero, and the
        router's output layer is zeroed, so every mixture starts uniform and equals W. The rest is
        copied as is. Identical sets would not do: the router's gradient, which compares the sets,
        would be zero, and the sets would barely drift apart. Raises `ValueError` if `prefix` is
        not a prefix supernet of this space."""
        if isinstance(prefix, MixtureOfSupernets) or prefix.space != self.space:
            raise ValueError("a Mixture-of-Supernets starts only from a prefix supernet of the same space; got "
                             f"weight sharing {prefix.sharing.kind!r}, space {prefix.space.name!r}")
        own = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, weight in prefix.model.named_parameters():
                target = own[name]
                if name not in self.heads:
                    target.copy_(weight)
                    continue
                offsets = torch.stack([nn.init.xavier_uniform_(torch.empty_like(weight)) for _ in range(self.sets)])
                target.copy_(weight + offsets - offsets.mean(dim=0))
            self.arch_router.fc2.weight.zero_()
            self.arch_router.fc2.bias.zero_()

    @property
    def sharing(self) -> WeightSharing:
        """The kind of weight sharing of this supernet (recorded in its folder)."""
        return WeightSharing("mos-neuron" if self.per_neuron else "mos-layer", self.sets, self.hidden)

    def mixing(self, arch: ArchConfig) -> dict[str, torch.Tensor]:
        """The mixing coefficients of every generated matrix for `arch` (fp32): [1, E] layer-wise,
        [out, E] neuron-wise (one row per output neuron of the supernet's matrix); rows sum to 1."""
        first = self.arch_router.fc1.weight
        encoding = torch.tensor(arch_encoding(self.space, arch), dtype=torch.float32, device=first.device)
        # fp32 like the token router: a bf16 softmax would round the mix of every weight
        with torch.autocast(device_type=first.device.type, enabled=False):
            logits = self.arch_router(encoding.to(first.dtype)).float()  # [logits]
        return {name: logits[start: start + n].view(-1, self.sets).softmax(dim=-1)
                for name, (start, n) in self.heads.items()}

    def subnet_weights(self, arch: ArchConfig) -> dict[str, torch.Tensor]:
        """The tensors of the standalone model of `arch`: generated (mixed, then prefix-sliced)
        for the linear weights, prefix slices for the rest. Gradients reach the weight sets and
        the router. Raises `ConfigError` if `arch` is outside the space."""
        alphas = self.mixing(arch)  # validates arch
        own = dict(self.model.named_parameters())
        out = {}
        for name, shape in self.subnet_shapes(arch).items():
            if name not in alphas:
                out[name] = prefix_slice(own[name], shape)
                continue
            sets = own[name][:, : shape[0], : shape[1]]  # [E, out, in]
            alpha = alphas[name][: shape[0]] if self.per_neuron else alphas[name]  # [out or 1, E]
            out[name] = (alpha.t().unsqueeze(-1).to(sets.dtype) * sets).sum(dim=0)  # [out, in]
        return out


def mixing_spread(supernet: MixtureOfSupernets, archs: list[ArchConfig]) -> float:
    """How far the router tells `archs` apart: the largest difference between the mixing
    coefficients two of them get for the same matrix and set (0: every architecture gets the same
    mixture, as a router that learned nothing does; up to 1). Raises `ValueError` for fewer than
    two architectures."""
    if len(archs) < 2:
        raise ValueError(f"mixing_spread compares architectures: give at least two, got {len(archs)}")
    spread = 0.0
    with torch.no_grad():
        mixes = [supernet.mixing(arch) for arch in archs]
        for name in mixes[0]:
            stacked = torch.stack([m[name] for m in mixes])  # [archs, rows, E]
            spread = max(spread, float((stacked.amax(0) - stacked.amin(0)).max()))
    return spread

