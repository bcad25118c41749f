"""Greedy and beam-search decoding with the KV cache of `MoETransformer`.

Beam search keeps `beam` hypotheses per sentence; a hypothesis that emits EOS stays in the beam
with a frozen score (it can only be extended by padding at zero cost), and the final choice
normalises scores by length ** length_penalty (fairseq's convention, EOS counted). With beam 1
this is exactly greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .modeling import MoETransformer


@dataclass
class Generation:
    """Decoded ids per sentence (BOS/EOS/padding removed), their scores and optional routing."""

    tokens: list[list[int]]
    scores: list[float]  # length-normalised log-probability of each output
    encoder_routing: list[list[list[int]]] | None = None  # [sentence][source token][layer] expert id
    # [sentence][decoder input position: BOS, y_1 .. y_n][layer] expert id
    decoder_routing: list[list[list[int]]] | None = None


def default_max_length(model: MoETransformer, src_len: int) -> int:
    """Output length limit: 1.5 x source + 10, within the model's positions."""
    return min(model.config.max_positions, int(1.5 * src_len) + 10)


def _strip(model: MoETransformer, ids: list[int]) -> list[int]:
    cfg = model.config
    out = []
    for t in ids:
        if t in (cfg.eos_id, cfg.pad_id):
            break
        out.append(t)
    return out


def _routing_lists(src: torch.Tensor, routing: torch.Tensor, pad_id: int) -> list:
    return [r[s.ne(pad_id)].tolist() for s, r in zip(src, routing)]


@torch.no_grad()
def generate(model: MoETransformer, src: torch.Tensor, *, beam: int = 4, max_length: int | None = None,
             length_penalty: float = 1.0, return_routing: bool = False) -> Generation:
    """Translate right-padded source ids `src` [B, S] with beam search (`beam=1`: greedy).

    Returns the best hypothesis of each sentence. With `return_routing`, also the top-1 expert
    that each source token and each output token took in every layer.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    cfg = model.config
    B, S = src.shape
    max_length = max_length or default_max_length(model, S)
    if not 1 <= max_length <= cfg.max_positions:
        raise ValueError(f"max_length={max_length} must be in 1..max_positions={cfg.max_positions}")
    if beam > cfg.vocab_size:
        raise ValueError(f"beam={beam} exceeds the vocabulary size {cfg.vocab_size}")
    encoded = model.encode(src)
    rows = torch.arange(B, device=src.device).repeat_interleave(beam)  # [B*K] source row of each hypothesis
    state = model.init_state(encoded).reorder(rows)
    tokens = torch.full((B * beam, 1), cfg.bos_id, dtype=torch.long, device=src.device)  # [B*K, 1]
    scores = torch.zeros(B, beam, device=src.device)
    scores[:, 1:] = float("-inf")  # all hypotheses start identical: expand only the first
    finished = torch.zeros(B * beam, dtype=torch.bool, device=src.device)
    lengths = torch.zeros(B * beam, device=src.device)  # output length including EOS
    routes = []  # per step [B*K, layers], re-indexed with the beams
    offsets = (torch.arange(B, device=src.device) * beam).unsqueeze(1)  # [B, 1]

    for step in range(max_length):
        logits, state, _, routing = model.decode(tokens[:, -1:], state)  # [B*K, 1, V]
        logp = logits[:, -1].float().log_softmax(dim=-1)  # [B*K, V]
        if step == max_length - 1:  # out of room: every open hypothesis must end now
            eos_logp = logp[:, cfg.eos_id].clone()
            logp.fill_(float("-inf"))
            logp[:, cfg.eos_id] = eos_logp
        logp[finished] = float("-inf")
        logp[finished, cfg.pad_id] = 0.0  # a finished hypothesis only grows by free padding
        V = logp.shape[-1]
        candidates = (scores.view(B * beam, 1) + logp).view(B, beam * V)  # [B, K*V]
        scores, flat = candidates.topk(beam, dim=-1)  # [B, K]
        origin = (offsets + flat // V).view(-1)  # [B*K] hypothesis each new one extends
        new_tokens = (flat % V).view(-1, 1)  # [B*K, 1]
        tokens = torch.cat([tokens.index_select(0, origin), new_tokens], dim=1)
        state = state.reorder(origin)
        was_finished = finished.index_select(0, origin)
        lengths = lengths.index_select(0, origin) + (~was_finished).float()
        finished = was_finished | new_tokens.view(-1).eq(cfg.eos_id)
        if return_routing:
            routes = [r.index_select(0, origin) for r in routes + [routing[:, -1]]]
        if finished.all():
            break

    normalised = scores / lengths.view(B, beam).clamp(min=1) ** length_penalty  # [B, K]
    best = normalised.argmax(dim=-1)  # [B]
    pick = (offsets.view(-1) + best)  # [B]
    out_tokens = [_strip(model, row[1:].tolist()) for row in tokens.index_select(0, pick)]
    generation = Generation(out_tokens, normalised.gather(1, best[:, None]).view(-1).tolist())
    if return_routing:
        generation.encoder_routing = _routing_lists(src, encoded.routing, cfg.pad_id)
        dec = torch.stack(routes, dim=1).index_select(0, pick)  # [B, steps, layers]
        generation.decoder_routing = [dec[i, : len(t) + 1].tolist() for i, t in enumerate(out_tokens)]
    return generation


@torch.no_grad()
def greedy(model: MoETransformer, src: torch.Tensor, *, max_length: int | None = None) -> list[list[int]]:
    """Plain greedy decoding (argmax each step), kept simple as a reference for beam search."""
    cfg = model.config
    B, S = src.shape
    max_length = max_length or default_max_length(model, S)
    state = model.init_state(model.encode(src))
    tokens = torch.full((B, 1), cfg.bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for step in range(max_length):
        logits, state, _, _ = model.decode(tokens[:, -1:], state)
        nxt = logits[:, -1].argmax(dim=-1)  # [B]
        if step == max_length - 1:
            nxt = torch.full_like(nxt, cfg.eos_id)
        nxt = torch.where(done, torch.full_like(nxt, cfg.pad_id), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done = done | nxt.eq(cfg.eos_id)
        if done.all():
            break
    return [_strip(model, row[1:].tolist()) for row in tokens]
