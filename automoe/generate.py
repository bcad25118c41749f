"""Greedy and beam-search decoding with the KV cache of `MoETransformer`.

Beam search follows the Hugging Face / ONNX Runtime `BeamSearch` algorithm exactly, so that the
exported beam-search graph and this reference give the same tokens: every step takes the top
2*beam continuations; one ending in EOS (among the first `beam`) becomes a finished hypothesis
scored `sum log p / length ** length_penalty` (length counts BOS, not EOS); the others (up to
`beam`) stay open. A sentence is done when it has `beam` finished hypotheses and no open one can
beat the worst of them; at `max_length` the open ones are finished as they are.
`max_length` counts generated tokens (EOS included).

ONNX Runtime's own scorer reads the stopping score of sentence b > 0 of a batch from a shifted
window, so its BeamSearch graph equals this reference exactly at batch size 1 (which is how
`automoe.serve` runs it); batches go through `beam_search` with an ONNX Runtime stepper instead.
"""

from __future__ import annotations

import heapq
import numbers
from dataclasses import dataclass, field

import torch

from .modeling import MoETransformer


@dataclass
class Generation:
    """Decoded ids per sentence (BOS/EOS/padding removed), their scores and optional routing."""

    tokens: list[list[int]]
    scores: list[float]  # length-normalised log-probability of each output
    encoder_routing: list[list[list[int]]] | None = None  # [sentence][source token][layer] expert id
    # [sentence][decoder input position: BOS, y_1 .. y_n][layer] expert id; a hypothesis cut at
    # max_length never fed its last token back, so it has no row for it
    decoder_routing: list[list[list[int]]] | None = None


def default_max_length(model, src_len: int) -> int:
    """Output length limit: 1.5 x source + 10, within the model's positions (`model.config`)."""
    return min(model.config.max_positions, int(1.5 * src_len) + 10)


def _strip(model: MoETransformer, ids: list[int]) -> list[int]:
    out = []
    for t in ids:
        if t in (model.config.eos_id, model.config.pad_id):
            break
        out.append(t)
    return out


def _routing_lists(src: torch.Tensor, routing: torch.Tensor, pad_id: int) -> list:
    return [r[s.ne(pad_id)].tolist() for s, r in zip(src, routing)]


@dataclass
class _Hypotheses:
    """The best `beam` finished hypotheses of one sentence (a min-heap on score)."""

    beam: int
    length_penalty: float
    heap: list = field(default_factory=list)  # (score, insertion number, tokens, routing)
    done: bool = False
    added: int = 0  # ties in score keep insertion order (and never compare tokens or routing)

    def add(self, tokens: list[int], sum_logprobs: float, routing) -> None:
        score = sum_logprobs / len(tokens) ** self.length_penalty
        if len(self.heap) < self.beam or score > self.heap[0][0]:
            self.added += 1
            heapq.heappush(self.heap, (score, -self.added, tokens, routing))
            if len(self.heap) > self.beam:
                heapq.heappop(self.heap)

    def is_done(self, best_sum_logprobs: float, length: int) -> bool:
        if len(self.heap) < self.beam:
            return False
        return self.heap[0][0] >= best_sum_logprobs / length ** self.length_penalty

    def best(self):
        return max(self.heap, key=lambda h: h[0])


class TorchStepper:
    """Beam-search view of a `MoETransformer`: encode once, then one `step` per output position.

    Other engines (ONNX Runtime) provide the same two methods, so `beam_search` serves them all.
    With a `shortlist` [B, K] (each sentence's target ids, -1 padded, see `check_shortlist`) the
    output rows are gathered once per sentence and beam search runs over shortlist positions:
    `step` takes positions, maps them to ids, and returns logits over the K positions.
    """

    def __init__(self, model: MoETransformer, src: torch.Tensor, copies: int, shortlist: torch.Tensor | None = None):
        self.model = model
        self.encoded = model.encode(src)
        rows = torch.arange(src.shape[0], device=src.device).repeat_interleave(copies)  # [B*K]
        self.state = model.init_state(self.encoded).reorder(rows)
        self.rows = self.ids = self.bias = None
        if shortlist is not None:
            self.rows = model.output_rows(shortlist)  # [B, K, d], gathered once per sentence
            self.ids = shortlist.repeat_interleave(copies, dim=0)  # [N, K] position -> id
            pad = torch.zeros(self.ids.shape).masked_fill(self.ids < 0, float("-inf"))  # [N, K]
            self.bias = pad if bool((self.ids < 0).any()) else None

    def step(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [N, 1] -> (next-token logits [N, V] or [N, K], top-1 expert per decoder layer [N, layers])."""
        if self.ids is not None:
            tokens = self.ids.gather(1, tokens)  # shortlist positions -> ids
        logits, self.state, _, routing = self.model.decode(tokens, self.state, output_rows=self.rows)
        logits = logits[:, -1]
        return (logits if self.bias is None else logits + self.bias), routing[:, -1]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep (and duplicate) the cached rows `rows` [N'] to follow the surviving hypotheses.

        `rows` never leave a sentence's own beams, so while they cover every sentence the
        cross-attention cache stays as it is; fewer rows than held (finished sentences left the
        batch) select the cross-attention cache and shortlist rows too."""
        shrink = len(rows) != self.state.cross_kv[0][0].shape[0]
        self.state = self.state.reorder(rows, self_only=not shrink)
        if shrink and self.ids is not None:
            copies = self.ids.shape[0] // self.rows.shape[0]
            self.rows = self.rows.index_select(0, rows[::copies] // copies)
            self.ids = self.ids.index_select(0, rows)
            self.bias = None if self.bias is None else self.bias.index_select(0, rows)


@torch.no_grad()
def beam_search(stepper, batch_size: int, *, beam: int, max_length: int, bos_id: int, eos_id: int,
                pad_id: int, length_penalty: float = 1.0, track_routing: bool = False, min_length: int = 0):
    """Beam search over any stepper holding `batch_size * beam` rows (see module docstring).

    `min_length` forbids EOS before that many tokens are generated (latency measurements use
    min_length == max_length for a fixed output length). Sentences whose search is done leave the
    batch once they are a quarter of the sentences held: `stepper.reorder(rows)` then gets the rows
    of the sentences still searching only (fewer than it holds), and the stepper drops the others'
    state (encoder output included), so the steps that remain cost what the open sentences need.
    Every row is computed on its own, so this changes no result.

    Returns, per sentence, (score, token ids starting with BOS, decoder routing [positions, layers] or None).
    """
    B = batch_size
    active = list(range(B))  # the sentences whose rows the stepper holds, in row order (done ones too)
    seqs = torch.full((B * beam, 1), bos_id, dtype=torch.long)  # [A*K, L], BOS first
    beam_scores = torch.zeros(B, beam)
    beam_scores[:, 1:] = -1e9  # all hypotheses start identical: expand only the first
    beam_scores = beam_scores.view(-1)  # [A*K]
    hyps = [_Hypotheses(beam, length_penalty) for _ in range(B)]
    routes = None  # [A*K, L, layers]

    for _ in range(max_length):
        length = seqs.shape[1]
        logits, routing = stepper.step(seqs[:, -1:])  # [A*K, V]
        if track_routing:
            step_routes = routing.cpu().unsqueeze(1)
            routes = step_routes if routes is None else torch.cat([routes, step_routes], dim=1)
        logp = logits.float().log_softmax(dim=-1).cpu()  # [A*K, V]
        if length <= min_length:
            logp[:, eos_id] = float("-inf")
        V = logp.shape[-1]
        scores = (logp + beam_scores[:, None]).view(len(active), beam * V)  # [A, K*V]
        top_scores, top_idx = scores.topk(2 * beam, dim=-1)  # [A, 2K]
        next_scores, next_tokens, next_rows, still = [], [], [], []
        for a, (b, row_scores, row_idx) in enumerate(zip(active, top_scores.tolist(), top_idx.tolist())):
            if hyps[b].done:  # finished earlier, still held: its rows idle until the batch shrinks
                next_scores += [0.0] * beam
                next_tokens += [pad_id] * beam
                next_rows += range(a * beam, (a + 1) * beam)
                continue
            chosen = 0
            for j in range(2 * beam):
                row, token, score = a * beam + row_idx[j] // V, row_idx[j] % V, row_scores[j]
                if token == eos_id:
                    if j < beam:  # EOS only counts among the first `beam` candidates
                        hyps[b].add(seqs[row].tolist(), score, routes[row] if track_routing else None)
                    continue
                next_scores.append(score)
                next_tokens.append(token)
                next_rows.append(row)
                chosen += 1
                if chosen == beam:
                    break
            hyps[b].done = hyps[b].is_done(max(row_scores), length)
            if not hyps[b].done:
                still.append(a)
        if not still:
            break
        # Finished sentences leave the batch once they are a quarter of it: every shrink copies the
        # open sentences' state, so shrinking at each finish would copy it up to batch-size times.
        if len(active) - len(still) >= max(1, len(active) // 4):
            keep = [a * beam + k for a in still for k in range(beam)]
            next_scores, next_tokens, next_rows = ([v[i] for i in keep] for v in (next_scores, next_tokens, next_rows))
            active = [active[a] for a in still]
        flat_rows = torch.tensor(next_rows, dtype=torch.long)
        seqs = torch.cat([seqs.index_select(0, flat_rows), torch.tensor(next_tokens, dtype=torch.long)[:, None]], dim=1)
        beam_scores = torch.tensor(next_scores, dtype=torch.float32)
        stepper.reorder(flat_rows)
        if track_routing:
            routes = routes.index_select(0, flat_rows)
    for a, b in enumerate(active):  # out of length: the open hypotheses finish as they are
        h = hyps[b]
        if not h.done:
            for row in range(a * beam, (a + 1) * beam):
                h.add(seqs[row].tolist(), beam_scores[row].item(), routes[row] if track_routing else None)
    return [(hyp[0], hyp[2], hyp[3]) for hyp in (h.best() for h in hyps)]


def check_generation_args(cfg, beam: int, max_length: int) -> None:
    """Raise a clear TypeError / ValueError for a beam or length the model cannot decode with."""
    for name, value in (("beam", beam), ("max_length", max_length)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):  # numpy ints are fine
            raise TypeError(f"{name} must be an int, got {value!r}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if not 1 <= max_length <= cfg.max_positions:
        raise ValueError(f"max_length={max_length} must be in 1..max_positions={cfg.max_positions}")
    if 2 * beam > cfg.vocab_size:
        raise ValueError(f"beam={beam} is too large for the vocabulary size {cfg.vocab_size}")


def check_shortlist(cfg, shortlist: torch.Tensor, batch_size: int, beam: int) -> dict[str, int]:
    """Check per-sentence shortlists `shortlist` [B, K] (int64 target ids, -1 padding on the right)
    and return the positions of pad / BOS / EOS in them, which beam search uses as its special ids:
    every row must start with the same special ids (as `automoe.shortlist.Shortlist.ids` puts them)."""
    if shortlist.dim() != 2 or shortlist.shape[0] != batch_size or shortlist.dtype != torch.long:
        raise ValueError(f"shortlist must be an int64 tensor [batch={batch_size}, K], got "
                         f"{shortlist.dtype} {list(shortlist.shape)}")
    if bool((shortlist >= cfg.vocab_size).any()) or bool((shortlist < -1).any()):
        raise ValueError(f"shortlist ids must be in 0..{cfg.vocab_size - 1} (-1 = padding)")
    first = shortlist[0].tolist()
    positions = {}
    for name in ("pad_id", "bos_id", "eos_id"):
        special = getattr(cfg, name)
        if special not in first or bool((shortlist[:, first.index(special)] != special).any()):
            raise ValueError(f"every shortlist row must hold {name}={special} at the same position "
                             "(the special ids first, as Shortlist.ids writes them)")
        positions[name] = first.index(special)
    if 2 * beam > int((shortlist >= 0).sum(dim=1).min()):
        raise ValueError(f"beam={beam} is too large for a shortlist of {int((shortlist >= 0).sum(dim=1).min())} ids")
    return positions


@torch.no_grad()
def generate(model: MoETransformer, src: torch.Tensor, *, beam: int = 4, max_length: int | None = None,
             length_penalty: float = 1.0, return_routing: bool = False,
             shortlist: torch.Tensor | None = None) -> Generation:
    """Translate right-padded source ids `src` [B, S] with beam search (`beam=1` equals greedy).

    Returns the best hypothesis of each sentence. With `return_routing`, also the top-1 expert
    that each source token and each decoder input token took in every layer. With `shortlist`
    [B, K] (each sentence's target ids, see `check_shortlist`), each sentence is decoded over its
    own shortlisted ids only (softmax renormalised over them).
    """
    cfg = model.config
    max_length = default_max_length(model, src.shape[1]) if max_length is None else max_length
    check_generation_args(cfg, beam, max_length)
    special = {"pad_id": cfg.pad_id, "bos_id": cfg.bos_id, "eos_id": cfg.eos_id}
    if shortlist is not None:
        special = check_shortlist(cfg, shortlist, src.shape[0], beam)
    stepper = TorchStepper(model, src, beam, shortlist)
    best = beam_search(stepper, src.shape[0], beam=beam, max_length=max_length, **special,
                       length_penalty=length_penalty, track_routing=return_routing)
    if shortlist is not None:  # positions back to ids
        best = [(score, shortlist[b, ids].tolist(), r) for b, (score, ids, r) in enumerate(best)]
    tokens = [_strip(model, ids[1:]) for _, ids, _ in best]
    generation = Generation(tokens, [score for score, _, _ in best])
    if return_routing:
        generation.encoder_routing = _routing_lists(src, stepper.encoded.routing, cfg.pad_id)
        generation.decoder_routing = [r[: len(t) + 1].tolist() for (_, _, r), t in zip(best, tokens)]
    return generation


@torch.no_grad()
def greedy(model: MoETransformer, src: torch.Tensor, *, max_length: int | None = None) -> list[list[int]]:
    """Plain greedy decoding (argmax each step), kept simple as a reference for beam search."""
    cfg = model.config
    B, S = src.shape
    max_length = default_max_length(model, S) if max_length is None else max_length
    state = model.init_state(model.encode(src))
    tokens = torch.full((B, 1), cfg.bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_length):
        logits, state, _, _ = model.decode(tokens[:, -1:], state)
        nxt = logits[:, -1].argmax(dim=-1)  # [B]
        nxt = torch.where(done, torch.full_like(nxt, cfg.pad_id), nxt)
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        done = done | nxt.eq(cfg.eos_id)
        if done.all():
            break
    return [_strip(model, row[1:].tolist()) for row in tokens]


class MaskedStepper:
    """A stepper whose full-vocabulary logits are masked to each sentence's shortlist: the same
    decoding as `TorchStepper` over the shortlist, for engines whose step graphs compute every
    logit (the ONNX Runtime decoder-step graphs on batches)."""

    def __init__(self, stepper, shortlist: torch.Tensor, vocab_size: int, copies: int):
        allowed = torch.zeros(shortlist.shape[0], vocab_size + 1, dtype=torch.bool)  # last column: the -1 padding
        allowed.scatter_(1, torch.where(shortlist < 0, vocab_size, shortlist), True)
        mask = torch.zeros(allowed.shape[0], vocab_size).masked_fill(~allowed[:, :vocab_size], float("-inf"))
        self.mask = mask.repeat_interleave(copies, dim=0)  # [N, V]
        self.stepper = stepper

    def step(self, tokens: torch.Tensor):
        """tokens [N, 1] -> (masked logits [N, V], routing or None)."""
        logits, routing = self.stepper.step(tokens)
        return logits.float() + self.mask, routing

    def reorder(self, rows: torch.Tensor) -> None:
        """Follow the surviving hypotheses (rows never leave a sentence, so the mask stays unless
        finished sentences leave the batch)."""
        if len(rows) != self.mask.shape[0]:
            self.mask = self.mask.index_select(0, rows)
        self.stepper.reorder(rows)
