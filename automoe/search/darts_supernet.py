"""The relaxed supernet of DARTS: every candidate of every choice, mixed by architecture probabilities.

`DartsSupernet` holds the deepest architecture of a `SearchSpace`, each layer with all its
candidates (`MixedAttention`: head counts; `MixedFeedForward`: expert counts and per-expert widths),
on multi-split reversible stacks (`automoe.reversible`). The architecture probabilities are an
argument of every forward call; the network holds no architecture weights. The relaxation itself
is described in `automoe.search.darts`, which trains and discretises it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, SearchSpace
from ..modeling import Attention, sinusoidal_positions
from ..moe import Expert, load_balancing_loss
from ..reversible import ReversibleSequence


def check_space(space: SearchSpace, d_model: int | None) -> int:
    """The supernet width for `space` (`d_model` or the widest choice); errors name what to change."""
    if space.top_k != 1:
        raise ConfigError(f"space {space.name!r} has top_k={space.top_k}: the DARTS relaxation routes top-1")
    d = max(space.d_model) if d_model is None else d_model
    if d not in space.d_model:
        raise ConfigError(f"d_model={d} is not a choice of space {space.name!r} ({list(space.d_model)})")
    return d


def layer_gates(depth_probs: torch.Tensor, choices: tuple[int, ...]) -> torch.Tensor:
    """P(depth > i) for every layer i < max(choices): the weight of layer i's "layer" candidate."""
    deeper = torch.tensor(choices, device=depth_probs.device)[None, :] > torch.arange(
        max(choices), device=depth_probs.device)[:, None]  # [L, choices]
    return deeper.to(depth_probs.dtype) @ depth_probs  # [L]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None,
            dropout: float, training: bool) -> torch.Tensor:
    """Softmax attention of q [B, T, C] over k, v [B, S, C] split into `heads` heads -> [B, T, C]."""
    split = lambda x: x.view(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)  # noqa: E731  [B, H, *, C/H]
    scores = (split(q) @ split(k).transpose(-1, -2)) * (q.shape[-1] // heads) ** -0.5  # [B, H, T, S]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = F.dropout(scores.softmax(dim=-1), dropout, training)
    y = (probs @ split(v)).transpose(1, 2)  # [B, T, H, C/H]
    return y.reshape(y.shape[0], y.shape[1], -1)  # [B, T, C]


class MixedAttention(nn.Module):
    """Pre-LN (self- or cross-) attention whose head count is a mixture over `heads` candidates.

    Holds one `modeling.Attention` for its projections; the candidates differ only in the split.
    Called as a reversible sublayer: f(u) = gate * dropout(sum_h p_h Attn_h(LN(u))).
    """

    def __init__(self, d_model: int, qkv_dim: int, heads: tuple[int, ...], dropout: float,
                 attention_dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, d_model, qkv_dim, max(heads), attention_dropout)
        self.heads, self.dropout, self.attention_dropout = heads, dropout, attention_dropout

    def forward(self, u: torch.Tensor, head_probs: torch.Tensor, gate: torch.Tensor, mask: torch.Tensor | None,
                memory: torch.Tensor | None = None) -> torch.Tensor:
        """u: [B, T, d]; head_probs: [len(heads)]; gate: P(this layer is kept); memory: [B, S, d] or None."""
        x = self.norm(u)
        kv = x if memory is None else memory
        q, k, v = self.attn.q_proj(x), self.attn.k_proj(kv), self.attn.v_proj(kv)  # [B, T|S, qkv]
        y = sum(p * _attend(q, k, v, h, mask, self.attention_dropout, self.training)
                for p, h in zip(head_probs.unbind(), self.heads))  # [B, T, qkv]
        return gate * F.dropout(self.attn.out_proj(y), self.dropout, self.training)


class MixedFeedForward(nn.Module):
    """Pre-LN MoE FFN whose expert count and per-expert widths are mixtures (module docstring).

    Holds `max_experts` widest `moe.Expert`s and a bias-free router, the supernet's layout. Returns
    (gate * dropout(y), gate * expected load-balancing loss).
    """

    def __init__(self, d_model: int, widths: tuple[int, ...], max_experts: int, dropout: float,
                 activation_dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.experts = nn.ModuleList(Expert(d_model, max(widths), activation_dropout) for _ in range(max_experts))
        self.router = nn.Linear(d_model, max_experts, bias=False) if max_experts > 1 else None
        # within[c, k] = 1 when hidden unit k belongs to width candidate c (a prefix of the matrix)
        self.register_buffer("within", (torch.arange(max(widths))[None, :] < torch.tensor(widths)[:, None]).float(),
                             persistent=False)
        self.dropout = dropout

    def forward(self, u: torch.Tensor, count_probs: torch.Tensor, width_probs: torch.Tensor, gate: torch.Tensor,
                token_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """u: [B, T, d]; count_probs: [max_experts] (candidate n at n-1); width_probs: [max_experts, widths]."""
        B, T, d = u.shape
        flat = self.norm(u).flatten(0, 1)  # [N, d]
        unit_weight = width_probs @ self.within  # [M, max width]: sum of p_w over the widths holding unit k
        ys = []
        for expert, weight in zip(self.experts, unit_weight):
            h = F.relu(expert.fc1(flat)) * weight  # [N, max width]
            h = F.dropout(h, expert.activation_dropout, self.training)
            ys.append(expert.fc2(h))  # [N, d]
        y = torch.stack(ys, dim=1)  # [N, M, d]
        out = count_probs[0] * y[:, 0]  # candidate n = 1: the dense FFN of expert 0
        aux = flat.new_zeros((), dtype=torch.float32)
        if self.router is not None:
            logits = self.router(flat.float())  # [N, M]; softmax over the first n = the supernet's router R[:n]
            mask = None if token_mask is None else token_mask.reshape(-1)
            for n in range(2, len(self.experts) + 1):
                probs = logits[:, :n].softmax(dim=-1)  # [N, n]
                weight, choice = probs.max(dim=-1)  # top-1 gate and expert, [N]
                routed = y.gather(1, choice.view(-1, 1, 1).expand(-1, 1, d)).squeeze(1)  # [N, d]
                out = out + count_probs[n - 1] * weight.unsqueeze(-1).to(y.dtype) * routed
                aux = aux + count_probs[n - 1] * load_balancing_loss(probs, choice.unsqueeze(-1), mask)
        return gate * F.dropout(out.view(B, T, d), self.dropout, self.training), gate * aux


class DartsSupernet(nn.Module):
    """The relaxed encoder-decoder: every layer of the deepest architecture of `space`, each holding
    all candidates, on reversible stacks. `forward(src, tgt_in, probs)` takes the architecture
    probabilities (`ArchParameters.probabilities()`) as an argument; the network holds no alpha."""

    def __init__(self, space: SearchSpace, d_model: int | None = None, *, splits: int = 2, reversible: bool = True,
                 dropout: float = 0.1, pad_id: int = 0):
        super().__init__()
        d = check_space(space, d_model)
        self.space, self.d_model, self.pad_id, self.dropout = space, d, pad_id, dropout
        ffn = lambda: MixedFeedForward(d, space.ffn_dims, space.max_experts, dropout)  # noqa: E731
        attn = lambda: MixedAttention(d, space.qkv_dim, space.heads, dropout)  # noqa: E731
        enc = [m for _ in range(max(space.encoder_layers)) for m in (attn(), ffn())]
        dec = [m for _ in range(max(space.decoder_layers)) for m in (attn(), attn(), ffn())]
        self.embed_tokens = nn.Embedding(space.vocab_size, d, padding_idx=pad_id)
        self.encoder = ReversibleSequence(enc, splits, reversible)
        self.decoder = ReversibleSequence(dec, splits, reversible)
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        for module in self.modules():  # fairseq-style init, as MoETransformer
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed_tokens.weight, std=d ** -0.5)
        with torch.no_grad():
            self.embed_tokens.weight[pad_id].zero_()

    def set_reversible(self, reversible: bool) -> None:
        """Switch both stacks between reconstruction and stored activations (same weights, same result)."""
        self.encoder.reversible = self.decoder.reversible = reversible

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(tokens) * math.sqrt(self.d_model)  # [B, T, d]
        x = x + sinusoidal_positions(torch.arange(tokens.shape[1], device=tokens.device), self.d_model).to(x.dtype)
        return F.dropout(x, self.dropout, self.training)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, probs: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """src [B, S], tgt_in [B, T] -> (logits [B, T, V], mean expected load-balancing loss per layer)."""
        space = self.space
        src_mask, tgt_mask = src.ne(self.pad_id), tgt_in.ne(self.pad_id)  # [B, S], [B, T]
        enc_gate = layer_gates(probs["encoder_depth"], space.encoder_layers)  # [L_enc]
        dec_gate = layer_gates(probs["decoder_depth"], space.decoder_layers)  # [L_dec]
        attn_mask = src_mask[:, None, None, :]  # [B, 1, 1, S]
        contexts = []
        for i in range(max(space.encoder_layers)):
            contexts += [(probs["encoder_heads"][i], enc_gate[i], attn_mask),
                         (probs["encoder_experts"][i], probs["encoder_width"][i], enc_gate[i], src_mask)]
        memory, enc_aux = self.encoder(self._embed(src), contexts)
        memory = self.encoder_norm(memory)  # [B, S, d]
        T = tgt_in.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=src.device).tril()  # [T, T]
        contexts = []
        for i in range(max(space.decoder_layers)):
            contexts += [(probs["decoder_heads"][i], dec_gate[i], causal),
                         (probs["decoder_cross_heads"][i], dec_gate[i], attn_mask, memory),
                         (probs["decoder_experts"][i], probs["decoder_width"][i], dec_gate[i], tgt_mask)]
        h, dec_aux = self.decoder(self._embed(tgt_in), contexts)
        logits = F.linear(self.decoder_norm(h), self.embed_tokens.weight)  # [B, T, V]
        layers = max(space.encoder_layers) + max(space.decoder_layers)
        return logits, (enc_aux + dec_aux) / layers
