"""The elastic SuperTransformer (HAT arXiv 2005.14187 §3.1; AutoMoE arXiv 2210.07535 §3).

It holds the weights of `space.supernet_arch()`: every layer at the widest width with
`max_experts` experts of the widest FFN. A subnet `arch` uses, for every weight of the standalone
`MoETransformer(arch)`, the prefix slice `W[:out, :in]` of the supernet weight of the same name:
expert i of a layer is the prefix of expert i's own matrices, the router is `R[:n, :d]`, the first
`decoder_layers` decoder layers are used.

The forward pass of a subnet *is* `MoETransformer(arch).forward`, run with
`torch.func.functional_call` on views of the supernet weights, so the supernet and the extracted
model cannot drift apart. The architecture is an argument of every call; nothing is stored.

Prefix slicing is one way to make a subnet's weights (`WeightSharing.kind` "prefix"); the
Mixture-of-Supernets kinds ("mos-layer", "mos-neuron", `automoe.mos`) subclass this supernet and
generate them from the architecture instead. `build_supernet` makes the supernet of a kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn as nn
from torch.func import functional_call

from .config import ArchConfig, ConfigError, SearchSpace, _JsonMixin
from .modeling import MoETransformer, Seq2SeqOutput

WEIGHT_SHARING_KINDS = ("prefix", "mos-layer", "mos-neuron")


@dataclass(frozen=True)
class WeightSharing(_JsonMixin):
    """How a supernet makes the weights of a subnet; saved as `weight_sharing.json` in a supernet folder.

    `kind` "prefix": prefix slices of one set of weights (HAT). "mos-layer" / "mos-neuron":
    Mixture-of-Supernets (arXiv 2306.04845), `sets` weight sets per matrix mixed by a router MLP
    with `hidden` units that reads the architecture (`automoe.mos`). `sets` and `hidden` belong to
    the MoS kinds only (None for prefix).
    """

    kind: str = "prefix"
    sets: int | None = None
    hidden: int | None = None

    DEFAULT_SETS = 2  # the smallest mixture: the weight sets cost E x the linear weights
    DEFAULT_HIDDEN = 128  # the router width of the MoS authors' MT pipeline script

    def __post_init__(self) -> None:
        if self.kind not in WEIGHT_SHARING_KINDS:
            raise ConfigError(f"weight sharing {self.kind!r} must be one of {list(WEIGHT_SHARING_KINDS)}")
        if self.kind == "prefix":
            if self.sets is not None or self.hidden is not None:
                raise ConfigError("weight sharing 'prefix' has no weight sets or router: sets and hidden "
                                  "(--mos-sets, --mos-hidden) apply to mos-layer and mos-neuron only")
            return
        object.__setattr__(self, "sets", self.DEFAULT_SETS if self.sets is None else self.sets)
        object.__setattr__(self, "hidden", self.DEFAULT_HIDDEN if self.hidden is None else self.hidden)
        for name in ("sets", "hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"weight sharing {self.kind!r}: {name} must be a positive int, got {value!r}")


def build_supernet(space: SearchSpace, sharing: WeightSharing = WeightSharing()) -> "SuperTransformer":
    """A freshly initialised supernet of `space` with the given kind of weight sharing."""
    if sharing.kind == "prefix":
        return SuperTransformer(space)
    from .mos import MixtureOfSupernets  # mos.py builds on this module

    return MixtureOfSupernets(space, per_neuron=sharing.kind == "mos-neuron", sets=sharing.sets,
                              hidden=sharing.hidden)


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

    @property
    def sharing(self) -> WeightSharing:
        """The kind of weight sharing of this supernet (recorded in its folder)."""
        return WeightSharing("prefix")

    def weights(self) -> dict[str, torch.Tensor]:
        """The tensors of `supernet.safetensors`: the state dict with the "model." prefix dropped
        (so a prefix supernet's file holds exactly the supernet architecture's model weights)."""
        return {_file_key(k): v for k, v in self.state_dict().items()}

    def load_weights(self, state: dict[str, torch.Tensor], source: str) -> None:
        """Load tensors written from `weights()` strictly (as fp32); a missing, unexpected or
        mis-shaped tensor is a `CheckpointError` naming `source`."""
        from .checkpoint import check_state_dict

        check_state_dict(self.weights(), state, source)
        keys = {_file_key(k): k for k in self.state_dict()}
        self.load_state_dict({keys[k]: v.float() for k, v in state.items()}, strict=True)

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


def _file_key(name: str) -> str:
    return name.removeprefix("model.")
