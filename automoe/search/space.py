"""Genes: fixed-length encodings of the architectures of a `SearchSpace`, for evolution.

The layout is derived from the space itself (no second hand-kept description): stack widths and
depths, then one slot per possible encoder layer (heads, expert count, one width per possible
expert) and per possible decoder layer (self heads, cross heads, cross last-k, expert count,
widths). Slots past the active depth or expert count are carried along unused, as in HAT, so a
mutation that adds a layer or an expert revives the values they had. Genes hold plain values
(not indices) so search logs stay readable. All functions are pure; randomness comes from the
`random.Random` passed in.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..config import ArchConfig, SearchSpace

Gene = tuple[int, ...]


@dataclass(frozen=True)
class GeneLayout:
    """Name and allowed values of every gene position of a space."""

    names: tuple[str, ...]
    choices: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, space: SearchSpace) -> "GeneLayout":
        """The layout for `space`."""
        names: list[str] = ["encoder_embed_dim", "decoder_embed_dim", "encoder_layers", "decoder_layers"]
        choices: list[tuple[int, ...]] = [space.d_model, space.d_model, space.encoder_layers, space.decoder_layers]
        experts = tuple(range(1, space.max_experts + 1))
        for i in range(max(space.encoder_layers)):
            names += [f"encoder_heads.{i}", f"encoder_experts.{i}"]
            choices += [space.heads, experts]
            names += [f"encoder_ffn.{i}.{j}" for j in range(space.max_experts)]
            choices += [space.ffn_dims] * space.max_experts
        for i in range(max(space.decoder_layers)):
            names += [f"decoder_heads.{i}", f"decoder_cross_heads.{i}", f"decoder_cross_last_k.{i}",
                      f"decoder_experts.{i}"]
            choices += [space.heads, space.heads, space.cross_last_k, experts]
            names += [f"decoder_ffn.{i}.{j}" for j in range(space.max_experts)]
            choices += [space.ffn_dims] * space.max_experts
        return cls(tuple(names), tuple(choices))

    def index(self, name: str) -> int:
        """Position of a named gene value."""
        return self.names.index(name)


def encode(space: SearchSpace, arch: ArchConfig) -> Gene:
    """The gene of `arch` (unused slots hold each position's first choice)."""
    space.validate(arch)
    layout = GeneLayout.of(space)
    values = {"encoder_embed_dim": arch.encoder_embed_dim, "decoder_embed_dim": arch.decoder_embed_dim,
              "encoder_layers": arch.encoder_layers, "decoder_layers": arch.decoder_layers}
    for i in range(arch.encoder_layers):
        values[f"encoder_heads.{i}"] = arch.encoder_heads[i]
        values[f"encoder_experts.{i}"] = len(arch.encoder_ffn[i])
        values.update({f"encoder_ffn.{i}.{j}": w for j, w in enumerate(arch.encoder_ffn[i])})
    for i in range(arch.decoder_layers):
        values[f"decoder_heads.{i}"] = arch.decoder_heads[i]
        values[f"decoder_cross_heads.{i}"] = arch.decoder_cross_heads[i]
        values[f"decoder_cross_last_k.{i}"] = arch.decoder_cross_last_k[i]
        values[f"decoder_experts.{i}"] = len(arch.decoder_ffn[i])
        values.update({f"decoder_ffn.{i}.{j}": w for j, w in enumerate(arch.decoder_ffn[i])})
    return tuple(values.get(name, opts[0]) for name, opts in zip(layout.names, layout.choices))


def decode(space: SearchSpace, gene: Gene) -> ArchConfig:
    """The architecture a gene describes (only its active slots matter)."""
    layout = GeneLayout.of(space)
    if len(gene) != len(layout.names):
        raise ValueError(f"gene has {len(gene)} values; space {space.name!r} genes have {len(layout.names)}")
    g = dict(zip(layout.names, gene))
    n_enc, n_dec = g["encoder_layers"], g["decoder_layers"]

    def ffn(stack: str, i: int) -> tuple[int, ...]:
        return tuple(g[f"{stack}_ffn.{i}.{j}"] for j in range(g[f"{stack}_experts.{i}"]))

    arch = ArchConfig(
        vocab_size=space.vocab_size, encoder_embed_dim=g["encoder_embed_dim"],
        decoder_embed_dim=g["decoder_embed_dim"], qkv_dim=space.qkv_dim, encoder_layers=n_enc,
        decoder_layers=n_dec, encoder_heads=tuple(g[f"encoder_heads.{i}"] for i in range(n_enc)),
        decoder_heads=tuple(g[f"decoder_heads.{i}"] for i in range(n_dec)),
        decoder_cross_heads=tuple(g[f"decoder_cross_heads.{i}"] for i in range(n_dec)),
        decoder_cross_last_k=tuple(g[f"decoder_cross_last_k.{i}"] for i in range(n_dec)),
        encoder_ffn=tuple(ffn("encoder", i) for i in range(n_enc)),
        decoder_ffn=tuple(ffn("decoder", i) for i in range(n_dec)),
        top_k=space.top_k, max_positions=space.max_positions,
    )
    space.validate(arch)
    return arch


def _repair(space: SearchSpace, layout: GeneLayout, gene: list[int]) -> Gene:
    """Make cross-attention depths fit the encoder depth (the only cross-position constraint)."""
    n_enc = gene[layout.index("encoder_layers")]
    allowed = [k for k in space.cross_last_k if k <= n_enc]
    for pos, name in enumerate(layout.names):
        if name.startswith("decoder_cross_last_k.") and gene[pos] > n_enc:
            gene[pos] = max(allowed)
    return tuple(gene)


def sample(space: SearchSpace, rng: random.Random) -> Gene:
    """A random gene, distributed like `space.sample`."""
    return encode(space, space.sample(rng))


def mutate(space: SearchSpace, gene: Gene, prob: float, rng: random.Random) -> Gene:
    """Redraw every value with probability `prob` from its position's choices (HAT's mutation)."""
    layout = GeneLayout.of(space)
    out = [rng.choice(opts) if rng.random() < prob else v for v, opts in zip(gene, layout.choices)]
    return _repair(space, layout, out)


def crossover(space: SearchSpace, a: Gene, b: Gene, rng: random.Random) -> Gene:
    """Take every value from parent `a` or `b` with equal probability (uniform crossover)."""
    layout = GeneLayout.of(space)
    return _repair(space, layout, [x if rng.random() < 0.5 else y for x, y in zip(a, b)])
