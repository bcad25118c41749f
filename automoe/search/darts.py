"""Differentiable architecture search (DARTS) over a `SearchSpace`, on multi-split reversible layers.

DARTS (Liu et al., arXiv 1806.09055) replaces every discrete choice by a softmax-weighted mixture
of its candidates and learns the mixture weights (the architecture weights alpha) by gradient
descent, alternating with the network weights. On Transformers the candidates' activations
exhaust memory; Zhao et al. (arXiv 2105.14669) run the relaxed network on multi-split reversible
layers (`automoe.reversible`), which recompute activations in the backward pass instead.

The relaxation of this package's space (`SearchSpace`), per layer of each stack:
- attention heads (self, and decoder cross-attention): softmax over `space.heads`. The candidates
  share the q/k/v/out projections (qkv_dim is fixed, as in the supernet) and differ only in how
  qkv is split into heads, so the projections are computed once: y = out(sum_h p_h attn_h(q,k,v)).
- expert count: softmax over 1..max_experts. Candidate n routes every token top-1 among the first
  n experts with the router rows R[:n] (the supernet's slicing) and scales by the router
  probability; y = sum_n p_n MoE_n(x). Every expert runs on every token (the DARTS cost).
- expert width: per expert slot, softmax over `space.ffn_dims`. Candidate w is the prefix W[:w]
  of the slot's matrices, and sum_w p_w FFN_w(x) equals one full-width FFN whose hidden unit k is
  scaled by sum_{w > k} p_w: exact, one matmul instead of one per width.
- depth: one softmax over the stack's depth choices; the layer-or-skip candidates of layer i are
  weighted P(depth > i) and 1 - P(depth > i), i.e. the layer's residual updates are scaled by
  P(depth > i) (a skipped layer is the identity).
Not relaxed: d_model (one width of `space.d_model` for both stacks), and cross-attention reads the
last encoder layer (last_k = 1, or the smallest choice): a reversible encoder keeps no
intermediate outputs.

Search: first-order DARTS (the xi = 0 approximation of DARTS eq. 7): each step is one Adam step of
the network weights on a train batch, then one Adam step of alpha on a dev batch with the gradient
taken at the current weights (no unrolled second-order step). The load-balancing loss enters the
weight step only (in the alpha step it would favour one expert for its own sake). An optional
latency term uses the fitted log-linear latency predictor (`search.latency`) on the expected
values of its whole-model features under alpha, which are multilinear in the choice
probabilities; `expected_summary_features` equals `summary_features` exactly for one-hot alpha.
Discretisation takes the argmax of every choice and gives an `ArchConfig` of the space.
The relaxed network itself is `darts_supernet.DartsSupernet`; the search on a dataset folder
(batches, logs, checkpoints, resume) is `darts_run.run_darts`; docs/darts.md has the whole method.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ArchConfig, ConfigError, SearchSpace
from .darts_supernet import DartsSupernet, layer_gates
from .latency import SUMMARY_NAMES, LatencyPredictor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DartsConfig:
    """Hyper-parameters of a DARTS search (first-order; see the module docstring)."""

    steps: int = 4000  # weight steps (each followed by an alpha step once past arch_start)
    max_tokens: int = 3000  # padded tokens per batch, train and dev alike
    lr: float = 7e-4  # network weights: Adam, linear warmup then constant
    warmup: int = 300
    arch_lr: float = 3e-3  # alpha: Adam(betas 0.5, 0.999) with weight decay, as DARTS
    arch_weight_decay: float = 1e-3
    arch_start: int = 500  # weight-only steps first, so alpha is not judged on untrained weights
    splits: int = 2  # streams of the reversible stacks
    reversible: bool = True  # False: the same network with stored activations
    d_model: int | None = None  # None: the widest of space.d_model
    dropout: float = 0.1
    label_smoothing: float = 0.1
    balance_coef: float = 0.01
    clip_norm: float = 1.0
    latency_weight: float = 1.0  # weight of the latency term (used only with a predictor)
    minutes: float | None = None  # stop early after this much wall time (of this run or resumed segment)
    save_every_minutes: float = 5.0  # checkpoint interval (and at the end); a killed search resumes from it
    seed: int = 1
    log_every: int = 50

    def __post_init__(self) -> None:
        errors = []
        for name in ("steps", "max_tokens", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                errors.append(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not isinstance(self.splits, int) or self.splits < 2:
            errors.append(f"splits must be an int >= 2, got {self.splits!r}")
        if self.warmup < 0 or self.arch_start < 0:
            errors.append("warmup and arch_start must be >= 0")
        if not (self.lr > 0 and self.arch_lr > 0):
            errors.append("lr and arch_lr must be > 0")
        if not self.save_every_minutes >= 0 or (self.minutes is not None and not self.minutes >= 0):
            errors.append("save_every_minutes and minutes must be >= 0")
        if not 0 <= self.dropout < 1 or not 0 <= self.label_smoothing < 1:
            errors.append("dropout and label_smoothing must be in [0, 1)")
        if errors:
            raise ConfigError("invalid DartsConfig: " + "; ".join(errors))


def cross_last_k(space: SearchSpace) -> int:
    """The cross-attention depth a DARTS architecture uses: 1, or the smallest choice of the space."""
    return 1 if 1 in space.cross_last_k else min(space.cross_last_k)


# ------------------------------------------------------------------------ architecture weights

class ArchParameters(nn.Module):
    """The architecture weights alpha of a space (zeros: every candidate equally likely)."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        n_enc, n_dec, experts = max(space.encoder_layers), max(space.decoder_layers), space.max_experts
        heads, widths = len(space.heads), len(space.ffn_dims)
        zeros = lambda *shape: nn.Parameter(torch.zeros(*shape))  # noqa: E731
        self.encoder_depth = zeros(len(space.encoder_layers))
        self.decoder_depth = zeros(len(space.decoder_layers))
        self.encoder_heads = zeros(n_enc, heads)
        self.decoder_heads = zeros(n_dec, heads)
        self.decoder_cross_heads = zeros(n_dec, heads)
        self.encoder_experts = zeros(n_enc, experts)
        self.decoder_experts = zeros(n_dec, experts)
        self.encoder_width = zeros(n_enc, experts, widths)
        self.decoder_width = zeros(n_dec, experts, widths)

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Softmax over the last dimension of every alpha (the candidates of one choice)."""
        return {name: alpha.softmax(dim=-1) for name, alpha in self.named_parameters()}


def discretise(space: SearchSpace, alphas: ArchParameters, d_model: int) -> ArchConfig:
    """The architecture of the argmax of every choice (a valid member of `space`)."""
    arg = lambda t: int(t.argmax())  # noqa: E731
    n_enc = space.encoder_layers[arg(alphas.encoder_depth)]
    n_dec = space.decoder_layers[arg(alphas.decoder_depth)]

    def ffn(experts: torch.Tensor, width: torch.Tensor, i: int) -> tuple[int, ...]:
        return tuple(space.ffn_dims[arg(width[i, j])] for j in range(arg(experts[i]) + 1))

    arch = ArchConfig(
        vocab_size=space.vocab_size, encoder_embed_dim=d_model, decoder_embed_dim=d_model, qkv_dim=space.qkv_dim,
        encoder_layers=n_enc, decoder_layers=n_dec,
        encoder_heads=tuple(space.heads[arg(alphas.encoder_heads[i])] for i in range(n_enc)),
        decoder_heads=tuple(space.heads[arg(alphas.decoder_heads[i])] for i in range(n_dec)),
        decoder_cross_heads=tuple(space.heads[arg(alphas.decoder_cross_heads[i])] for i in range(n_dec)),
        decoder_cross_last_k=(cross_last_k(space),) * n_dec,
        encoder_ffn=tuple(ffn(alphas.encoder_experts, alphas.encoder_width, i) for i in range(n_enc)),
        decoder_ffn=tuple(ffn(alphas.decoder_experts, alphas.decoder_width, i) for i in range(n_dec)),
        top_k=space.top_k, max_positions=space.max_positions,
    )
    space.validate(arch)
    return arch


# ------------------------------------------------------------------------------ latency term

def _ffn_expectations(experts: torch.Tensor, width: torch.Tensor, ffn_dims: torch.Tensor):
    """Per layer: E[sum of widths], E[mean width], P(MoE), E[experts if MoE] of independent choices."""
    slot_width = width @ ffn_dims  # [L, M] expected width of each expert slot
    first_n = slot_width.cumsum(dim=-1)  # [L, M] expected sum of the first n slots, n = index + 1
    n = torch.arange(1, experts.shape[-1] + 1, dtype=experts.dtype, device=experts.device)
    return ((experts * first_n).sum(-1), (experts * first_n / n).sum(-1), 1 - experts[:, 0],
            (experts[:, 1:] * n[1:]).sum(-1))


def expected_summary_features(space: SearchSpace, probs: dict[str, torch.Tensor], d_model: int) -> torch.Tensor:
    """E[`latency.summary_features`] under the architecture probabilities, in `SUMMARY_NAMES` order [13].

    Every feature is a sum over layers of products of independent choices (layer kept, expert
    count, widths, heads), so its expectation is the same sum over products of expectations.
    """
    d, qkv = float(d_model), float(space.qkv_dim)
    dims = torch.tensor(space.ffn_dims, dtype=torch.float32)
    heads = torch.tensor(space.heads, dtype=torch.float32)
    enc_gate = layer_gates(probs["encoder_depth"], space.encoder_layers)  # [L_enc] P(layer kept)
    dec_gate = layer_gates(probs["decoder_depth"], space.decoder_layers)
    enc_sum, enc_mean, enc_moe, enc_experts = _ffn_expectations(probs["encoder_experts"], probs["encoder_width"], dims)
    dec_sum, dec_mean, dec_moe, dec_experts = _ffn_expectations(probs["decoder_experts"], probs["decoder_width"], dims)
    n_enc, n_dec = enc_gate.sum(), dec_gate.sum()  # expected depths
    dec_heads = probs["decoder_heads"] @ heads + probs["decoder_cross_heads"] @ heads  # [L_dec]
    values = {
        "dec_attn_weights": n_dec * 6 * d * qkv / 1e6,
        "dec_ffn_weights_mean": (dec_gate * 2 * d * dec_mean).sum() / 1e6,
        "dec_ffn_weights_all": (dec_gate * 2 * d * dec_sum).sum() / 1e6,
        "dec_moe_layers": (dec_gate * dec_moe).sum(),
        "enc_attn_weights": n_enc * 4 * d * qkv / 1e6,
        "enc_ffn_weights_mean": (enc_gate * 2 * d * enc_mean).sum() / 1e6,
        "enc_moe_layers": (enc_gate * enc_moe).sum(),
        "dec_cross_reads": n_dec * cross_last_k(space),
        "dec_layers": n_dec,
        "dec_output_projection": n_dec.new_tensor(d * space.vocab_size / 1e6),
        "dec_moe_experts": (dec_gate * dec_experts).sum(),
        "enc_moe_experts": (enc_gate * enc_experts).sum(),
        "dec_heads": (dec_gate * dec_heads).sum(),
    }
    return torch.stack([values[name] for name in SUMMARY_NAMES])


def check_predictor(predictor: LatencyPredictor) -> None:
    """A differentiable latency term needs the log-linear predictor on whole-model sums."""
    if predictor.kind != "automoe" or predictor.model != "linear":
        raise ConfigError(f"the DARTS latency term needs a log-linear automoe predictor (fit-predictor --model "
                          f"linear); this one is kind={predictor.kind!r}, model={predictor.model!r}")


def predicted_latency_ms(predictor: LatencyPredictor, features: torch.Tensor) -> torch.Tensor:
    """The predictor's milliseconds for (expected) summary features, differentiable: exp(w0 + w . z)."""
    check_predictor(predictor)
    z = (features.double() - predictor.mean.double()) / predictor.std.double()  # [13], as `predict` in float64
    return (predictor.weight[0] + z @ predictor.weight[1:]).exp()


# ---------------------------------------------------------------------------------- search

@contextlib.contextmanager
def _frozen(params: Iterable[nn.Parameter]):
    """Exclude `params` from autograd for a step (the reversible backward then skips their gradients)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def token_loss(logits: torch.Tensor, target: torch.Tensor, pad_id: int, smoothing: float) -> tuple[torch.Tensor, int]:
    """(mean label-smoothed cross-entropy over the non-padding target tokens, their count)."""
    tokens = int(target.ne(pad_id).sum())
    loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=pad_id,
                           label_smoothing=smoothing, reduction="sum")
    return loss / max(tokens, 1), tokens


class DartsSearch:
    """The relaxed network, its architecture weights and both optimizers; one `step` = one weight
    step on a train batch and (from `arch_start` on) one alpha step on a dev batch.

    `predictor` and `latency_ms` add the latency term to the alpha step: latency_weight *
    max(0, log(predicted / latency_ms)) with a budget, latency_weight * log(predicted) without.
    """

    def __init__(self, space: SearchSpace, config: DartsConfig = DartsConfig(), *, pad_id: int = 0,
                 predictor: LatencyPredictor | None = None, latency_ms: float | None = None):
        if latency_ms is not None and predictor is None:
            raise ConfigError("a latency budget needs a fitted predictor (automoe search fit-predictor)")
        if predictor is not None:
            check_predictor(predictor)
        self.space, self.config, self.pad_id = space, config, pad_id
        self.predictor, self.latency_ms = predictor, latency_ms
        torch.manual_seed(config.seed)
        self.model = DartsSupernet(space, config.d_model, splits=config.splits, reversible=config.reversible,
                                   dropout=config.dropout, pad_id=pad_id)
        self.alphas = ArchParameters(space)
        self.weights = list(self.model.parameters())
        self.weight_opt = torch.optim.Adam(self.weights, lr=config.lr, betas=(0.9, 0.98), eps=1e-8)
        self.arch_opt = torch.optim.Adam(self.alphas.parameters(), lr=config.arch_lr, betas=(0.5, 0.999),
                                         weight_decay=config.arch_weight_decay)
        self.steps_done = 0

    def latency_term(self, probs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(penalty, expected-feature latency in ms) for the current probabilities, or None without a predictor."""
        if self.predictor is None:
            return None
        ms = predicted_latency_ms(self.predictor, expected_summary_features(self.space, probs, self.model.d_model))
        excess = ms.log() if self.latency_ms is None else F.relu(ms.log() - math.log(self.latency_ms))
        return self.config.latency_weight * excess, ms

    def weight_step(self, batch: dict) -> dict:
        """One Adam step of the network weights on a train batch (alpha fixed)."""
        self.steps_done += 1
        lr = self.config.lr * min(1.0, self.steps_done / max(self.config.warmup, 1))
        for group in self.weight_opt.param_groups:
            group["lr"] = lr
        self.model.train()
        with _frozen(self.alphas.parameters()):
            logits, aux = self.model(batch["src"], batch["tgt_in"], self.alphas.probabilities())
            loss, tokens = token_loss(logits, batch["tgt_out"], self.pad_id, self.config.label_smoothing)
            self.weight_opt.zero_grad(set_to_none=True)
            (loss + self.config.balance_coef * aux).backward()
        if self.config.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.weights, self.config.clip_norm)
        self.weight_opt.step()
        return {"train_loss": loss.item(), "aux": aux.item(), "lr": lr, "train_tokens": tokens}

    def arch_step(self, batch: dict) -> dict:
        """One Adam step of alpha on a dev batch at the current weights (first-order DARTS)."""
        self.model.train()
        with _frozen(self.weights):
            probs = self.alphas.probabilities()
            logits, _ = self.model(batch["src"], batch["tgt_in"], probs)
            loss, tokens = token_loss(logits, batch["tgt_out"], self.pad_id, 0.0)
            total, record = loss, {"dev_loss": loss.item(), "dev_tokens": tokens}
            latency = self.latency_term(probs)
            if latency is not None:
                total = total + latency[0]
                record.update(latency_penalty=latency[0].item(), expected_ms=latency[1].item())
            self.arch_opt.zero_grad(set_to_none=True)
            total.backward()
        self.arch_opt.step()
        return record

    def step(self, train_batch: dict, dev_batch: dict | None) -> dict:
        """A weight step, then an alpha step when `dev_batch` is given."""
        record = self.weight_step(train_batch)
        if dev_batch is not None:
            record.update(self.arch_step(dev_batch))
        return record

    def architecture(self) -> ArchConfig:
        """The discretised architecture (argmax of every choice)."""
        return discretise(self.space, self.alphas, self.model.d_model)

    def probabilities(self) -> dict[str, list]:
        """The current choice probabilities as JSON-ready lists."""
        with torch.no_grad():
            return {k: [round(x, 4) for x in v.flatten().tolist()] if v.dim() == 1 else
                    torch.round(v, decimals=4).tolist() for k, v in self.alphas.probabilities().items()}
