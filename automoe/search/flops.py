"""Analytic parameter counts and FLOPs of an `ArchConfig` (no torch needed).

Protocol (DESIGN.md §6): a 30-token source and a 30-token target; a multiply-add counts as 2
FLOPs; only the routed expert(s) of each token count. With experts of different widths the
routed width is the mean width of the layer's experts (what a balanced router, which the
load-balancing loss pushes towards, gives on average). The shared embedding and the output
projection (d x vocab per target token) are reported separately because on an optimized runtime
they bound the speedup any search can give.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..config import ArchConfig

SRC_TOKENS = 30
TGT_TOKENS = 30


@dataclass(frozen=True)
class Cost:
    """Size and compute of one architecture."""

    total_params: int  # every parameter of the standalone model, embedding included
    embedding_params: int  # the shared (tied) embedding table
    active_params: int  # non-embedding parameters one token uses (routed experts only)
    flops: int  # encoder + decoder FLOPs for the protocol sentence pair, output projection excluded
    output_projection_flops: int  # d_dec x vocab per target token

    @property
    def gflops(self) -> float:
        """`flops + output_projection_flops` in GFLOPs."""
        return (self.flops + self.output_projection_flops) / 1e9

    def to_dict(self) -> dict:
        """JSON-ready dict (with gflops)."""
        return {**asdict(self), "gflops": self.gflops}


def _linear(d_in: int, d_out: int) -> int:
    return d_in * d_out + d_out


def _attention_params(d_query: int, d_kv: int, qkv: int) -> int:
    return _linear(d_query, qkv) + 2 * _linear(d_kv, qkv) + _linear(qkv, d_query)


def _ffn_params(d: int, widths: tuple[int, ...], top_k: int) -> tuple[int, int]:
    """(all parameters, parameters one token uses) of a MoE FFN sublayer, router included."""
    experts = [_linear(d, w) + _linear(w, d) for w in widths]
    router = d * len(widths) if len(widths) > 1 else 0
    k = min(top_k, len(widths))
    return sum(experts) + router, round(k * sum(experts) / len(experts)) + router


def _ffn_flops(d: int, widths: tuple[int, ...], top_k: int) -> float:
    """FLOPs per token of a MoE FFN: router + k experts of the layer's mean width."""
    k = min(top_k, len(widths))
    router = 2 * d * len(widths) if len(widths) > 1 else 0
    return router + k * 4 * d * sum(widths) / len(widths)


def cost(arch: ArchConfig, src_tokens: int = SRC_TOKENS, tgt_tokens: int = TGT_TOKENS) -> Cost:
    """Parameters and FLOPs of `arch` for a `src_tokens` / `tgt_tokens` sentence pair."""
    de, dd, qkv, S, T = arch.encoder_embed_dim, arch.decoder_embed_dim, arch.qkv_dim, src_tokens, tgt_tokens
    embedding = arch.vocab_size * arch.embed_dim
    total, active, flops = embedding, 0, 0.0
    for i in range(arch.encoder_layers):
        attn = _attention_params(de, de, qkv)
        ffn_all, ffn_active = _ffn_params(de, arch.encoder_ffn[i], arch.top_k)
        norms = 2 * 2 * de
        total += attn + ffn_all + norms
        active += attn + ffn_active + norms
        flops += S * (2 * 4 * de * qkv + 2 * 2 * S * qkv + _ffn_flops(de, arch.encoder_ffn[i], arch.top_k))
    for i in range(arch.decoder_layers):
        self_attn = _attention_params(dd, dd, qkv)
        cross = _attention_params(dd, de, qkv)
        ffn_all, ffn_active = _ffn_params(dd, arch.decoder_ffn[i], arch.top_k)
        norms = 3 * 2 * dd
        total += self_attn + cross + ffn_all + norms
        active += self_attn + cross + ffn_active + norms
        memory = arch.decoder_cross_last_k[i] * S  # cross-attention reads the last k encoder layers
        flops += T * 2 * 4 * dd * qkv  # self-attention projections
        flops += 2 * 2 * qkv * T * (T + 1) / 2  # causal scores and weighted sum
        flops += T * 2 * 2 * dd * qkv + memory * 2 * 2 * de * qkv  # cross q/out, k/v (once)
        flops += T * 2 * 2 * memory * qkv  # cross scores and weighted sum
        flops += T * _ffn_flops(dd, arch.decoder_ffn[i], arch.top_k)
    return Cost(total_params=int(total), embedding_params=int(embedding), active_params=int(active),
                flops=int(round(flops)), output_projection_flops=int(2 * T * dd * arch.vocab_size))
