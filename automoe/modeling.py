"""The standalone encoder-decoder MoE Transformer built from one `ArchConfig`.

Post-LN like HAT/fairseq, ReLU FFNs, sinusoidal positions, one embedding table shared by the
source, the target and the output projection. Every layer's FFN is a `MoEFeedForward` with 1..M
experts of their own widths, and every decoder layer may attend to the last k encoder layers.
This is both the extracted/deployed model and (through `torch.func.functional_call` with sliced
weights) the computation of every subnet of the supernet, so there is one implementation only.

No I/O here: saving and loading live in `automoe.checkpoint`, decoding in `automoe.generate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import HubMixin
from .config import ArchConfig
from .moe import MoEFeedForward

KV = tuple[torch.Tensor, torch.Tensor]  # (keys, values), each [B, H, S, head_dim]


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """fairseq/tensor2tensor sinusoidal embeddings: [sin(p * w_i), cos(p * w_i)] concatenated.

    positions: [T] integer positions; returns [T, dim] in fp32.
    """
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=positions.device) * -scale)
    angles = positions.float().unsqueeze(1) * freqs.unsqueeze(0)  # [T, half]
    emb = torch.cat([angles.sin(), angles.cos()], dim=1)  # [T, 2*half]
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


class Attention(nn.Module):
    """Multi-head attention with a fixed q/k/v width (`qkv_dim`) split into `heads` heads (HAT)."""

    def __init__(self, d_query: int, d_kv: int, qkv_dim: int, heads: int, dropout: float):
        super().__init__()
        self.q_proj = nn.Linear(d_query, qkv_dim)
        self.k_proj = nn.Linear(d_kv, qkv_dim)
        self.v_proj = nn.Linear(d_kv, qkv_dim)
        self.out_proj = nn.Linear(qkv_dim, d_query)
        self.heads = heads
        self.dropout = dropout
        # a constant, not q.shape[-1] ** -0.5: exported, that is four shape nodes per attention per step
        # and a Mul, where a constant scale folds into ONNX Runtime's fused MatMul
        self.scale = (qkv_dim // heads) ** -0.5

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.heads, C // self.heads).transpose(1, 2)  # [B, H, T, C/H]

    def project_kv(self, kv: torch.Tensor) -> KV:
        """Keys and values of `kv` [B, S, d_kv], each [B, H, S, qkv_dim/H]."""
        return self._split(self.k_proj(kv)), self._split(self.v_proj(kv))

    def forward(self, x: torch.Tensor, kv: KV, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, T, d_query]; kv from `project_kv`; mask broadcastable to [B, H, T, S], True = attend."""
        q = self._split(self.q_proj(x))  # [B, H, T, C/H]
        k, v = kv
        # Explicit softmax attention: for translation-length sequences it is ~3x faster on CPU than
        # F.scaled_dot_product_attention's flash kernel (fwd+bwd, bf16) and exports to plain ONNX ops.
        scores = (q @ k.transpose(-1, -2)) * self.scale  # [B, H, T, S]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        probs = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)  # [B, H, T, S]
        y = (probs @ v).transpose(1, 2)  # [B, T, H, C/H]
        # y's own shape, not x's: ONNX Runtime folds that into a constant reshape, no shape nodes
        y = y.reshape(y.shape[0], y.shape[1], -1)  # [B, T, qkv_dim]
        return self.out_proj(y)  # [B, T, d_query]


class EncoderLayer(nn.Module):
    """Post-LN encoder layer: x = LN(x + SelfAttn(x)); x = LN(x + MoE-FFN(x))."""

    def __init__(self, cfg: ArchConfig, i: int):
        super().__init__()
        d = cfg.encoder_embed_dim
        self.self_attn = Attention(d, d, cfg.qkv_dim, cfg.encoder_heads[i], cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(d)
        self.ffn = MoEFeedForward(d, cfg.encoder_ffn[i], cfg.top_k, cfg.router_scale, cfg.activation_dropout)
        self.ffn_norm = nn.LayerNorm(d)
        self.dropout = cfg.dropout

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, token_mask: torch.Tensor):
        """x: [B, S, d]; attn_mask: [B, 1, 1, S]; token_mask: [B, S]. Returns (x, aux loss, routing [B, S])."""
        h = self.self_attn(x, self.self_attn.project_kv(x), attn_mask)
        x = self.self_attn_norm(x + F.dropout(h, self.dropout, self.training))
        h, aux, routing = self.ffn(x, token_mask)
        x = self.ffn_norm(x + F.dropout(h, self.dropout, self.training))
        return x, aux, routing


class DecoderLayer(nn.Module):
    """Post-LN decoder layer with causal self-attention (KV cache), cross-attention to the last
    k encoder layers, and a MoE FFN."""

    def __init__(self, cfg: ArchConfig, i: int):
        super().__init__()
        d, d_enc = cfg.decoder_embed_dim, cfg.encoder_embed_dim
        self.self_attn = Attention(d, d, cfg.qkv_dim, cfg.decoder_heads[i], cfg.attention_dropout)
        self.self_attn_norm = nn.LayerNorm(d)
        self.cross_attn = Attention(d, d_enc, cfg.qkv_dim, cfg.decoder_cross_heads[i], cfg.attention_dropout)
        self.cross_attn_norm = nn.LayerNorm(d)
        self.ffn = MoEFeedForward(d, cfg.decoder_ffn[i], cfg.top_k, cfg.router_scale, cfg.activation_dropout)
        self.ffn_norm = nn.LayerNorm(d)
        self.dropout = cfg.dropout
        self.last_k = cfg.decoder_cross_last_k[i]

    def forward(self, x: torch.Tensor, self_mask: torch.Tensor, past: KV | None,
                cross_kv: KV, cross_mask: torch.Tensor, token_mask: torch.Tensor | None):
        """x: [B, T, d]; self_mask: [T, P+T] causal; past: cached self-attention K/V of P earlier
        positions or None; cross_kv / cross_mask: [B, H, k*S, C/H] / [B, 1, 1, k*S].

        Returns (x, present self-attention K/V, aux loss, routing [B, T]).
        """
        k, v = self.self_attn.project_kv(x)  # [B, H, T, C/H]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # [B, H, P+T, C/H]
        h = self.self_attn(x, (k, v), self_mask)
        x = self.self_attn_norm(x + F.dropout(h, self.dropout, self.training))
        h = self.cross_attn(x, cross_kv, cross_mask)
        x = self.cross_attn_norm(x + F.dropout(h, self.dropout, self.training))
        h, aux, routing = self.ffn(x, token_mask)
        x = self.ffn_norm(x + F.dropout(h, self.dropout, self.training))
        return x, (k, v), aux, routing


@dataclass
class Encoded:
    """Encoder result: the output of every encoder layer and the source padding mask."""

    states: list[torch.Tensor]  # per layer [B, S, d_enc]
    token_mask: torch.Tensor  # [B, S], True for real tokens
    aux_loss: torch.Tensor  # summed balancing loss of the MoE encoder layers
    routing: torch.Tensor  # [B, S, encoder_layers] top-1 expert per token and layer


@dataclass
class DecoderState:
    """What one decoding step needs from earlier steps: cross-attention K/V (computed once from
    the encoder) and the growing self-attention cache, one entry per decoder layer."""

    cross_kv: list[KV]
    cross_masks: list[torch.Tensor]  # per layer [B, 1, 1, k*S]
    self_kv: list[KV | None]

    @property
    def length(self) -> int:
        """Number of target positions already decoded."""
        first = self.self_kv[0]
        return 0 if first is None else first[0].shape[2]

    def reorder(self, index: torch.Tensor, self_only: bool = False) -> "DecoderState":
        """Select rows (batch x beam entries) of every cached tensor, e.g. to follow beam search.

        `self_only` keeps the cross-attention K/V and masks as they are: beam search reorders rows
        only within one sentence's beams, whose encoder rows are identical after the first expand.
        """
        pick = lambda kv: None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))  # noqa: E731
        return DecoderState(
            cross_kv=self.cross_kv if self_only else [pick(kv) for kv in self.cross_kv],
            cross_masks=self.cross_masks if self_only else [m.index_select(0, index) for m in self.cross_masks],
            self_kv=[pick(kv) for kv in self.self_kv],
        )


@dataclass
class Seq2SeqOutput:
    """Teacher-forced forward result."""

    logits: torch.Tensor  # [B, T, V]
    aux_loss: torch.Tensor  # mean load-balancing loss over the MoE layers (0 if dense)
    encoder_routing: torch.Tensor  # [B, S, encoder_layers]
    decoder_routing: torch.Tensor  # [B, T, decoder_layers]


class MoETransformer(nn.Module, HubMixin):
    """Encoder-decoder Transformer whose layers hold heterogeneous top-k MoE FFNs."""

    def __init__(self, config: ArchConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.embed_dim, padding_idx=config.pad_id)
        self.encoder_layers = nn.ModuleList(EncoderLayer(config, i) for i in range(config.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.decoder_layers))
        n_moe = sum(n > 1 for n in config.encoder_experts + config.decoder_experts)
        self._aux_norm = 1.0 / max(n_moe, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fairseq-style init: Xavier-uniform linear weights, zero biases, N(0, d^-1/2) embeddings."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed_tokens.weight, std=self.config.embed_dim ** -0.5)
        with torch.no_grad():
            self.embed_tokens.weight[self.config.pad_id].zero_()

    def _embed(self, tokens: torch.Tensor, dim: int, offset: int = 0) -> torch.Tensor:
        """Scaled token embeddings (first `dim` columns of the shared table) plus positions."""
        x = F.embedding(tokens, self.embed_tokens.weight[:, :dim]) * math.sqrt(dim)  # [B, T, dim]
        positions = torch.arange(offset, offset + tokens.shape[1], device=tokens.device)
        x = x + sinusoidal_positions(positions, dim).to(x.dtype)
        return F.dropout(x, self.config.dropout, self.training)

    def encode(self, src: torch.Tensor, token_mask: torch.Tensor | None = None) -> Encoded:
        """Run the encoder on right-padded source ids `src` [B, S]; `token_mask` [B, S] (True for
        real tokens) defaults to `src != pad_id`."""
        token_mask = src.ne(self.config.pad_id) if token_mask is None else token_mask.bool()  # [B, S]
        attn_mask = token_mask[:, None, None, :]  # [B, 1, 1, S]
        x = self._embed(src, self.config.encoder_embed_dim)
        states, aux, routes = [], src.new_zeros((), dtype=torch.float32), []
        for layer in self.encoder_layers:
            x, layer_aux, routing = layer(x, attn_mask, token_mask)
            states.append(x)
            aux = aux + layer_aux
            routes.append(routing)
        return Encoded(states, token_mask, aux, torch.stack(routes, dim=-1))

    def init_state(self, encoded: Encoded) -> DecoderState:
        """Cross-attention K/V of every decoder layer, computed once per source."""
        cross_kv, cross_masks = [], []
        for layer in self.decoder_layers:
            memory = torch.cat(encoded.states[-layer.last_k:], dim=1)  # [B, k*S, d_enc]
            cross_kv.append(layer.cross_attn.project_kv(memory))
            cross_masks.append(encoded.token_mask.repeat(1, layer.last_k)[:, None, None, :])
        return DecoderState(cross_kv, cross_masks, [None] * len(self.decoder_layers))

    def output_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The output-projection rows of target ids `ids` [B, K] (a per-sentence vocabulary
        shortlist; -1 = padding, given row 0 here and masked by the caller): [B, K, d_dec]."""
        d = self.config.decoder_embed_dim
        return F.embedding(ids.clamp(min=0), self.embed_tokens.weight[:, :d])  # [B, K, d]

    def project(self, x: torch.Tensor, output_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Output projection of decoder states x [N, T, d]: logits over the whole vocabulary
        [N, T, V], or with `output_rows` [B, K, d] (from `output_rows`; N = B * copies, rows of one
        sentence adjacent, as beam search keeps them) over each sentence's K shortlisted ids [N, T, K]."""
        if output_rows is None:
            return F.linear(x, self.embed_tokens.weight[:, : self.config.decoder_embed_dim])  # [N, T, V]
        N, T, d = x.shape
        B = output_rows.shape[0]
        logits = x.reshape(B, (N // B) * T, d) @ output_rows.transpose(1, 2)  # [B, copies*T, K]
        return logits.view(N, T, -1)  # [N, T, K]

    def decode(self, tgt: torch.Tensor, state: DecoderState, token_mask: torch.Tensor | None = None,
               output_rows: torch.Tensor | None = None):
        """Decode target ids `tgt` [B, T] that follow the `state.length` cached positions.

        Used both for the teacher-forced pass (T = whole target, empty cache) and for incremental
        decoding (T = 1). Returns (logits [B, T, V], new state, aux loss, routing [B, T, layers]);
        with `output_rows` (see `project`) the logits cover each sentence's shortlist only [B, T, K].
        """
        past = state.length
        T = tgt.shape[1]
        d = self.config.decoder_embed_dim
        x = self._embed(tgt, d, offset=past)
        # One new position may attend to every cached one: no mask (keeps the exported step graph simple).
        self_mask = None if T == 1 else torch.ones(T, past + T, dtype=torch.bool, device=tgt.device).tril(past)
        aux, routes, present = x.new_zeros((), dtype=torch.float32), [], []
        for i, layer in enumerate(self.decoder_layers):
            x, kv, layer_aux, routing = layer(
                x, self_mask, state.self_kv[i], state.cross_kv[i], state.cross_masks[i], token_mask
            )
            present.append(kv)
            aux = aux + layer_aux
            routes.append(routing)
        logits = self.project(x, output_rows)  # [B, T, V] or [B, T, K]
        new_state = DecoderState(state.cross_kv, state.cross_masks, present)
        return logits, new_state, aux, torch.stack(routes, dim=-1)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> Seq2SeqOutput:
        """Teacher-forced pass: src [B, S], tgt_in [B, T] (BOS + shifted target) -> logits [B, T, V]."""
        encoded = self.encode(src)
        logits, _, dec_aux, dec_routing = self.decode(
            tgt_in, self.init_state(encoded), tgt_in.ne(self.config.pad_id)
        )
        aux = (encoded.aux_loss + dec_aux) * self._aux_norm
        return Seq2SeqOutput(logits, aux, encoded.routing, dec_routing)


# ------------------------------------------------------------------------------------ losses

def label_smoothed_nll(logits: torch.Tensor, target: torch.Tensor, epsilon: float, pad_id: int
                       ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Summed label-smoothed cross-entropy (Szegedy et al. 2016; fairseq's formulation):

        loss = (1 - eps) * nll + eps / V * sum_v -log p(v)

    over non-padding target positions. logits [B, T, V], target [B, T].
    Returns (smoothed loss sum, nll sum, number of target tokens).
    """
    logp = logits.float().log_softmax(dim=-1)  # [B, T, V]
    mask = target.ne(pad_id)  # [B, T]
    nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)  # [B, T]
    smooth = -logp.mean(dim=-1)  # [B, T]
    loss = (1.0 - epsilon) * nll + epsilon * smooth
    return loss[mask].sum(), nll[mask].sum(), int(mask.sum())
