"""Configuration dataclasses: one concrete architecture and the space it is searched in.

`ArchConfig` is the single source of truth for a model: it is saved inside every artifact
(`config.json` of a model folder, export folders, search results) and nothing else describes the
architecture. `SearchSpace` lists the choices of every dimension (AutoMoE, arXiv 2210.07535 §3;
HAT, arXiv 2005.14187 §3) and knows how to sample, bound and check architectures.

This module never imports torch, so configs can be read and written anywhere.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration is malformed or outside its search space; the message names the field."""


def _check_keys(cls: type, data: dict) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{cls.__name__}: unknown key(s) {unknown}; allowed keys are {sorted(names)}"
        )


def _tuples(value: Any) -> Any:
    """Turn (nested) JSON lists into tuples so configs are hashable and compare equal."""
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(v) for v in value)
    return value


def _lists(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_lists(v) for v in value]
    return value


class _JsonMixin:
    """JSON round trip shared by the config dataclasses; unknown keys are an error."""

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict (tuples become lists)."""
        return {f.name: _lists(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict):
        """Build from a dict; unknown keys raise `ConfigError` naming them."""
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        _check_keys(cls, data)
        return cls(**{k: _tuples(v) for k, v in data.items()})

    def to_json(self) -> str:
        """Return the config as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: str | Path) -> None:
        """Write the config as JSON to `path`."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path):
        """Read a config written by `save`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        return cls.from_dict(data)


@dataclass(frozen=True)
class ArchConfig(_JsonMixin):
    """One concrete encoder-decoder MoE Transformer.

    Per-layer tuples have one entry per layer. `encoder_ffn[i]` / `decoder_ffn[i]` hold one FFN
    width per expert of layer i, so the number of experts of a layer is `len(encoder_ffn[i])`;
    a layer with a single width is a plain dense FFN without a router.
    `decoder_cross_last_k[i] = k` lets decoder layer i attend to the outputs of the last k encoder
    layers, concatenated along the source length (HAT's "arbitrary encoder-decoder attention").
    """

    vocab_size: int
    encoder_embed_dim: int
    decoder_embed_dim: int
    qkv_dim: int
    encoder_layers: int
    decoder_layers: int
    encoder_heads: tuple[int, ...]
    decoder_heads: tuple[int, ...]
    decoder_cross_heads: tuple[int, ...]
    decoder_cross_last_k: tuple[int, ...]
    encoder_ffn: tuple[tuple[int, ...], ...]
    decoder_ffn: tuple[tuple[int, ...], ...]
    top_k: int = 1
    router_scale: bool = True
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    max_positions: int = 256
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self) -> None:
        # Accept lists from Python callers too; store tuples so the config is hashable.
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _tuples(getattr(self, f.name)))
        errors = self._errors()
        if errors:
            raise ConfigError("invalid ArchConfig: " + "; ".join(errors))

    def _errors(self) -> list[str]:
        errors = []
        for name in ("vocab_size", "encoder_embed_dim", "decoder_embed_dim", "qkv_dim",
                     "encoder_layers", "decoder_layers", "top_k", "max_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                errors.append(f"{name} must be a positive int, got {value!r}")
        if errors:
            return errors
        per_layer = {
            "encoder_heads": self.encoder_layers,
            "encoder_ffn": self.encoder_layers,
            "decoder_heads": self.decoder_layers,
            "decoder_cross_heads": self.decoder_layers,
            "decoder_cross_last_k": self.decoder_layers,
            "decoder_ffn": self.decoder_layers,
        }
        for name, n in per_layer.items():
            value = getattr(self, name)
            if not isinstance(value, tuple) or len(value) != n:
                count = len(value) if isinstance(value, tuple) else type(value).__name__
                layers = "encoder_layers" if name.startswith("encoder") else "decoder_layers"
                errors.append(f"{name} must have one entry per layer ({layers}={n}), got {count}")
        if errors:
            return errors
        for name in ("encoder_heads", "decoder_heads", "decoder_cross_heads"):
            for i, h in enumerate(getattr(self, name)):
                if not isinstance(h, int) or h < 1 or self.qkv_dim % h:
                    errors.append(f"{name}[{i}]={h!r} must be a positive divisor of qkv_dim={self.qkv_dim}")
        for i, k in enumerate(self.decoder_cross_last_k):
            if not isinstance(k, int) or not 1 <= k <= self.encoder_layers:
                errors.append(f"decoder_cross_last_k[{i}]={k!r} must be in 1..encoder_layers={self.encoder_layers}")
        for name in ("encoder_ffn", "decoder_ffn"):
            for i, widths in enumerate(getattr(self, name)):
                if not isinstance(widths, tuple) or not widths or not all(
                    isinstance(w, int) and w >= 1 for w in widths
                ):
                    errors.append(f"{name}[{i}]={widths!r} must be a non-empty list of positive expert widths")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                errors.append(f"{name} must be in [0, 1), got {value!r}")
        ids = {"pad_id": self.pad_id, "bos_id": self.bos_id, "eos_id": self.eos_id}
        for name, value in ids.items():
            if not isinstance(value, int) or not 0 <= value < self.vocab_size:
                errors.append(f"{name}={value!r} must be a token id in 0..vocab_size-1={self.vocab_size - 1}")
        if len(set(ids.values())) != 3:
            errors.append(f"pad_id, bos_id and eos_id must differ, got {ids}")
        return errors

    @property
    def encoder_experts(self) -> tuple[int, ...]:
        """Number of experts in each encoder layer (1 = dense FFN)."""
        return tuple(len(w) for w in self.encoder_ffn)

    @property
    def decoder_experts(self) -> tuple[int, ...]:
        """Number of experts in each decoder layer (1 = dense FFN)."""
        return tuple(len(w) for w in self.decoder_ffn)

    @property
    def embed_dim(self) -> int:
        """Width of the shared embedding table (the wider of the two stacks)."""
        return max(self.encoder_embed_dim, self.decoder_embed_dim)

    @property
    def is_dense(self) -> bool:
        """True when no layer has more than one expert."""
        return all(n == 1 for n in self.encoder_experts + self.decoder_experts)

    def replace(self, **changes) -> "ArchConfig":
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SearchSpace(_JsonMixin):
    """The choices of every architecture dimension.

    Both stacks draw their width from `d_model`; heads are drawn per layer for self- and
    cross-attention; every layer draws 1..`max_experts` experts and one width per expert.
    """

    name: str
    vocab_size: int
    d_model: tuple[int, ...]
    qkv_dim: int
    encoder_layers: tuple[int, ...]
    decoder_layers: tuple[int, ...]
    ffn_dims: tuple[int, ...]
    heads: tuple[int, ...]
    cross_last_k: tuple[int, ...]
    max_experts: int
    top_k: int = 1
    max_positions: int = 256

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _tuples(getattr(self, f.name)))
        errors = []
        for name in ("d_model", "encoder_layers", "decoder_layers", "ffn_dims", "heads", "cross_last_k"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not value or not all(
                isinstance(v, int) and v >= 1 for v in value
            ):
                errors.append(f"{name} must be a non-empty list of positive ints, got {value!r}")
            elif len(set(value)) != len(value):
                errors.append(f"{name} has repeated choices: {value!r}")
        for name in ("vocab_size", "qkv_dim", "max_experts", "top_k", "max_positions"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                errors.append(f"{name} must be a positive int, got {value!r}")
        if not errors:
            bad_heads = [h for h in self.heads if self.qkv_dim % h]
            if bad_heads:
                errors.append(f"heads {bad_heads} do not divide qkv_dim={self.qkv_dim}")
            if max(self.cross_last_k) > min(self.encoder_layers):
                errors.append(
                    f"cross_last_k {self.cross_last_k} exceeds the smallest encoder depth {min(self.encoder_layers)}"
                )
        if errors:
            raise ConfigError(f"invalid SearchSpace {self.name!r}: " + "; ".join(errors))

    @classmethod
    def preset(cls, name: str) -> "SearchSpace":
        """Return a named preset: `small` (2-core CPU default), `wmt14` (the paper space) or `tiny` (tests)."""
        if name not in PRESETS:
            raise ConfigError(f"unknown search space {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]

    def _arch(self, d_enc, d_dec, n_enc, n_dec, enc_heads, dec_heads, cross_heads, last_k,
              enc_ffn, dec_ffn, **extra) -> ArchConfig:
        return ArchConfig(
            vocab_size=self.vocab_size, encoder_embed_dim=d_enc, decoder_embed_dim=d_dec,
            qkv_dim=self.qkv_dim, encoder_layers=n_enc, decoder_layers=n_dec,
            encoder_heads=enc_heads, decoder_heads=dec_heads, decoder_cross_heads=cross_heads,
            decoder_cross_last_k=last_k, encoder_ffn=enc_ffn, decoder_ffn=dec_ffn,
            top_k=self.top_k, max_positions=self.max_positions, **extra,
        )

    def _uniform(self, d: int, n_enc: int, n_dec: int, heads: int, experts: tuple[int, ...],
                 last_k: int, **extra) -> ArchConfig:
        """An architecture with the same settings in every layer."""
        return self._arch(d, d, n_enc, n_dec, (heads,) * n_enc, (heads,) * n_dec, (heads,) * n_dec,
                          (last_k,) * n_dec, (experts,) * n_enc, (experts,) * n_dec, **extra)

    def largest(self, **extra) -> ArchConfig:
        """The largest dense architecture: widest, deepest, most heads, widest FFN, 1 expert."""
        return self._uniform(max(self.d_model), max(self.encoder_layers), max(self.decoder_layers),
                             max(self.heads), (max(self.ffn_dims),), 1, **extra)

    def smallest(self, **extra) -> ArchConfig:
        """The smallest architecture: narrowest, shallowest, fewest heads, narrowest FFN, 1 expert."""
        return self._uniform(min(self.d_model), min(self.encoder_layers), min(self.decoder_layers),
                             min(self.heads), (min(self.ffn_dims),), 1, **extra)

    def dense_baseline(self, **extra) -> ArchConfig:
        """The dense Transformer baseline (DESIGN.md §4): the largest dense architecture."""
        return self.largest(**extra)

    def switch_baseline(self, num_experts: int | None = None, **extra) -> ArchConfig:
        """The Switch Transformer baseline: the dense baseline with `num_experts` widest experts per layer."""
        n = self.max_experts if num_experts is None else num_experts
        if not 1 <= n <= self.max_experts:
            raise ConfigError(f"num_experts={n} must be in 1..max_experts={self.max_experts}")
        return self._uniform(max(self.d_model), max(self.encoder_layers), max(self.decoder_layers),
                             max(self.heads), (max(self.ffn_dims),) * n, 1, **extra)

    def supernet_arch(self) -> ArchConfig:
        """The architecture whose weights hold every subnet: every layer at full width with
        `max_experts` experts of the widest FFN. Each elastic weight of a subnet is a prefix slice
        of this model's weight of the same name."""
        return self.switch_baseline(self.max_experts) if self.max_experts > 1 else self.largest()

    def sample(self, rng: random.Random) -> ArchConfig:
        """Draw one architecture uniformly per dimension with the given RNG."""
        d_enc, d_dec = rng.choice(self.d_model), rng.choice(self.d_model)
        n_enc, n_dec = rng.choice(self.encoder_layers), rng.choice(self.decoder_layers)
        last_k = tuple(rng.choice([k for k in self.cross_last_k if k <= n_enc]) for _ in range(n_dec))

        def ffn(n_layers: int) -> tuple[tuple[int, ...], ...]:
            return tuple(
                tuple(rng.choice(self.ffn_dims) for _ in range(rng.randint(1, self.max_experts)))
                for _ in range(n_layers)
            )

        return self._arch(
            d_enc, d_dec, n_enc, n_dec,
            tuple(rng.choice(self.heads) for _ in range(n_enc)),
            tuple(rng.choice(self.heads) for _ in range(n_dec)),
            tuple(rng.choice(self.heads) for _ in range(n_dec)),
            last_k, ffn(n_enc), ffn(n_dec),
        )

    def violations(self, arch: ArchConfig) -> list[str]:
        """Every reason `arch` is not in this space (empty when it is)."""
        out = []

        def check(name: str, value: Any, allowed: tuple) -> None:
            if value not in allowed:
                out.append(f"{name}={value!r} not in {list(allowed)}")

        if arch.vocab_size != self.vocab_size:
            out.append(f"vocab_size={arch.vocab_size} must equal the space's {self.vocab_size}")
        if arch.qkv_dim != self.qkv_dim:
            out.append(f"qkv_dim={arch.qkv_dim} must equal the space's {self.qkv_dim}")
        if arch.top_k != self.top_k:
            out.append(f"top_k={arch.top_k} must equal the space's {self.top_k}")
        if arch.max_positions > self.max_positions:
            out.append(f"max_positions={arch.max_positions} exceeds the space's {self.max_positions}")
        check("encoder_embed_dim", arch.encoder_embed_dim, self.d_model)
        check("decoder_embed_dim", arch.decoder_embed_dim, self.d_model)
        check("encoder_layers", arch.encoder_layers, self.encoder_layers)
        check("decoder_layers", arch.decoder_layers, self.decoder_layers)
        for name in ("encoder_heads", "decoder_heads", "decoder_cross_heads"):
            for i, h in enumerate(getattr(arch, name)):
                check(f"{name}[{i}]", h, self.heads)
        for i, k in enumerate(arch.decoder_cross_last_k):
            check(f"decoder_cross_last_k[{i}]", k, self.cross_last_k)
        for name in ("encoder_ffn", "decoder_ffn"):
            for i, widths in enumerate(getattr(arch, name)):
                if len(widths) > self.max_experts:
                    out.append(f"{name}[{i}] has {len(widths)} experts, more than max_experts={self.max_experts}")
                for j, w in enumerate(widths):
                    check(f"{name}[{i}][{j}]", w, self.ffn_dims)
        return out

    def contains(self, arch: ArchConfig) -> bool:
        """True when every dimension of `arch` is one of this space's choices."""
        return not self.violations(arch)

    def validate(self, arch: ArchConfig) -> None:
        """Raise `ConfigError` listing every reason `arch` is outside this space."""
        reasons = self.violations(arch)
        if reasons:
            raise ConfigError(f"architecture is outside search space {self.name!r}: " + "; ".join(reasons))


PRESETS: dict[str, SearchSpace] = {
    # DESIGN.md §4: measured to give a >= 5x ceiling speedup on CT2 int8 at 1 thread.
    "small": SearchSpace(
        name="small", vocab_size=8000, d_model=(384, 256), qkv_dim=256, encoder_layers=(4,),
        decoder_layers=(1, 2, 3, 4), ffn_dims=(1536, 768, 384), heads=(4, 2), cross_last_k=(1, 2, 3),
        max_experts=4,
    ),
    # The HAT / AutoMoE WMT'14 space.
    "wmt14": SearchSpace(
        name="wmt14", vocab_size=32000, d_model=(640, 512), qkv_dim=512, encoder_layers=(6,),
        decoder_layers=(1, 2, 3, 4, 5, 6), ffn_dims=(3072, 2048, 1024), heads=(8, 4),
        cross_last_k=(1, 2, 3), max_experts=6,
    ),
    # Deliberately odd sizes for fast tests.
    "tiny": SearchSpace(
        name="tiny", vocab_size=97, d_model=(24, 16), qkv_dim=24, encoder_layers=(3, 2),
        decoder_layers=(1, 2, 3), ffn_dims=(40, 24, 8), heads=(4, 2), cross_last_k=(1, 2),
        max_experts=3, max_positions=64,
    ),
}



@dataclass(frozen=True)
class TrainConfig(_JsonMixin):
    """Hyper-parameters of one training run (supernet or single model); saved in every checkpoint.

    A run stops at the first of `max_updates`, `max_tokens_seen` (target tokens, all processes) or
    `minutes` (wall time of this invocation, so a resumed run can be given a fresh time slice).
    """

    data: str
    max_tokens: int = 3000
    update_freq: int = 1
    lr: float = 7e-4
    warmup_updates: int = 300
    schedule: str = "inverse_sqrt"
    betas: tuple[float, float] = (0.9, 0.98)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    balance_coef: float = 0.01
    dropout: float = 0.1
    max_updates: int | None = None
    max_tokens_seen: int | None = None
    minutes: float | None = None
    seed: int = 1
    save_every_minutes: float = 5.0
    valid_every: int = 250
    valid_sentences: int = 300
    sandwich: bool = False
    bf16: bool = False
    max_len: int = 200

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", _tuples(self.betas))
        errors = []
        for name in ("max_tokens", "update_freq", "valid_every", "valid_sentences", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                errors.append(f"{name} must be a positive int, got {value!r}")
        if self.schedule not in ("inverse_sqrt", "cosine"):
            errors.append(f"schedule={self.schedule!r} must be 'inverse_sqrt' or 'cosine'")
        if self.schedule == "cosine" and not self.max_updates:
            errors.append("schedule='cosine' needs max_updates (the length of the cosine)")
        if not self.lr > 0 or self.warmup_updates < 0:
            errors.append(f"lr must be > 0 and warmup_updates >= 0, got {self.lr}, {self.warmup_updates}")
        if not 0 <= self.label_smoothing < 1 or not 0 <= self.dropout < 1:
            errors.append("label_smoothing and dropout must be in [0, 1)")
        if self.max_updates is None and self.max_tokens_seen is None and self.minutes is None:
            errors.append("give at least one stopping rule: max_updates, max_tokens_seen or minutes")
        if errors:
            raise ConfigError("invalid TrainConfig: " + "; ".join(errors))
