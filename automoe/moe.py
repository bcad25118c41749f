"""Sparse Mixture-of-Experts feed-forward layer with heterogeneous experts.

The routing follows Switch Transformers (Fedus et al., arXiv 2101.03961) and AutoMoE
(arXiv 2210.07535): a linear router picks the top-k experts of every token, the chosen expert's
output is scaled by its router probability, and experts may have different FFN widths.
Only the tokens routed to an expert are sent through it (gather / scatter-add); nothing is
dropped at inference (no capacity factor).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def router_probabilities(x: torch.Tensor, router: nn.Linear) -> torch.Tensor:
    """Router distribution p(e | x) = softmax(x R^T) over the n experts, computed in fp32.

    x: [N, d] tokens, router: a bias-free Linear(d, n). Returns [N, n]. Switch Transformers compute
    the router in fp32 for stability, so this runs outside autocast (and exporters keep it fp32:
    its graph nodes are named after the `router` module).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        logits = router(x.float())  # [N, n]
    return logits.softmax(dim=-1)


def top_k_route(probs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most probable experts of every token and their probabilities (the gates).

    probs: [N, n]. Returns (gates [N, k], experts [N, k]); gates are the raw router probabilities,
    not renormalised, so top-1 output is `p_e(x) * E_e(x)` as in Switch Transformers eq. 2.
    """
    gates, experts = probs.topk(k, dim=-1)  # [N, k], [N, k]
    return gates, experts


def load_balancing_loss(probs: torch.Tensor, experts: torch.Tensor,
                        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Switch Transformers auxiliary loss for one layer (arXiv 2101.03961, eq. 4-6):

        loss = n * sum_i f_i * P_i,
        f_i = (1/T) * sum_x 1[argmax p(x) = i]   (fraction of tokens whose top-1 expert is i)
        P_i = (1/T) * sum_x p_i(x)               (mean router probability of expert i)

    over the T real (non-padding) tokens of the layer. It equals 1 for a perfectly balanced router
    and n when all tokens go to one expert. Computed per layer, so layers with different expert
    counts are each normalised by their own n (average the layers afterwards).

    probs: [N, n]; experts: [N, k] (only column 0, the top-1 choice, counts); mask: [N] bool, True
    for real tokens.
    """
    n = probs.shape[-1]
    if mask is not None:
        probs, experts = probs[mask], experts[mask]
    tokens = max(probs.shape[0], 1)
    counts = torch.zeros(n, dtype=probs.dtype, device=probs.device)
    counts.index_add_(0, experts[:, 0], torch.ones_like(experts[:, 0], dtype=probs.dtype))
    fraction = counts / tokens  # f_i, [n]
    mean_prob = probs.sum(0) / tokens  # P_i, [n]
    return n * (fraction * mean_prob).sum()


def _tracing() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling()


def top1_moe(x: torch.Tensor, router_weight: torch.Tensor, experts: Sequence[Callable[[torch.Tensor], torch.Tensor]],
             router_scale: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top-1 MoE layer (Switch Transformers eq. 2, arXiv 2101.03961): every token x goes to the
    expert e = argmax_i p_i(x) of its router distribution p(x) = softmax(x R^T) (fp32, the first
    maximum on ties) and its output is p_e(x) * E_e(x), or E_e(x) without `router_scale`.

    This is the reference every form of the layer is held to: `MoEFeedForward` runs it, and the
    exported forms (automoe.export.onnx_moe: the exact ONNX graph, automoe's int8 operator, whose
    PyTorch model `automoe.export.kernel.reference_top1_moe` passes int8 experts) are tested against it.

    x: [N, d] tokens; router_weight: [E, d]; experts: E callables [n, d] -> [n, d]. Returns
    (output [N, d], router probabilities [N, E], chosen expert [N]).
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        probs = F.linear(x.float(), router_weight).softmax(dim=-1)  # [N, E]
    gate, choice = probs.max(dim=-1)  # [N], [N]
    out = torch.zeros_like(x)  # [N, d]
    for e, expert in enumerate(experts):
        rows = (choice == e).nonzero().view(-1)  # [n_e] tokens routed to e
        if rows.numel() == 0 and not _tracing():
            continue  # a data-dependent skip must not be baked into a traced graph
        out[rows] = expert(x[rows]).to(x.dtype)  # [n_e, d]
    if router_scale:
        out = out * gate.unsqueeze(-1).to(x.dtype)
    return out, probs, choice


class Expert(nn.Module):
    """One feed-forward expert: fc2(dropout(relu(fc1(x)))) with its own hidden width."""

    def __init__(self, d_model: int, width: int, activation_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(d_model, width)
        self.fc2 = nn.Linear(width, d_model)
        self.activation_dropout = activation_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc1(x))  # [N, width]
        h = F.dropout(h, self.activation_dropout, self.training)
        return self.fc2(h)  # [N, d]


class MoEFeedForward(nn.Module):
    """A feed-forward sublayer holding 1..M experts of (possibly) different widths.

    With one expert it is a plain dense FFN with no router. With several, each token goes to its
    top-k experts, scaled by the router probability when `router_scale` (AutoMoE default).
    """

    def __init__(self, d_model: int, widths: tuple[int, ...], top_k: int = 1,
                 router_scale: bool = True, activation_dropout: float = 0.0):
        super().__init__()
        self.experts = nn.ModuleList(Expert(d_model, w, activation_dropout) for w in widths)
        self.router = nn.Linear(d_model, len(widths), bias=False) if len(widths) > 1 else None
        self.top_k = min(top_k, len(widths))
        self.router_scale = router_scale

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: [B, T, d]; mask: [B, T] True for real tokens (used by the balancing loss only).

        Returns (output [B, T, d], balancing loss (0 for a dense layer), top-1 expert [B, T]).
        """
        B, T, d = x.shape
        if self.router is None:
            zeros = torch.zeros(B, T, dtype=torch.long, device=x.device)
            return self.experts[0](x), x.new_zeros(()).float(), zeros
        flat = x.flatten(0, 1)  # [N, d]
        if self.top_k == 1:
            out, probs, choice = top1_moe(flat, self.router.weight, self.experts, self.router_scale)
            chosen = choice.unsqueeze(-1)  # [N, 1]
        else:
            probs = router_probabilities(flat, self.router)  # [N, n]
            gates, chosen = top_k_route(probs, self.top_k)  # [N, k], [N, k]
            if not self.router_scale:
                gates = torch.ones_like(gates)
            out = torch.zeros_like(flat)  # [N, d]
            for e, expert in enumerate(self.experts):
                token, slot = (chosen == e).nonzero(as_tuple=True)  # tokens routed to e
                if token.numel() == 0 and not _tracing():
                    continue  # a data-dependent skip must not be baked into an exported graph
                y = expert(flat[token]) * gates[token, slot].unsqueeze(-1)  # [n_e, d]
                out.index_add_(0, token, y.to(out.dtype))
        flat_mask = None if mask is None else mask.reshape(B * T)
        loss = load_balancing_loss(probs, chosen, flat_mask)
        return out.view_as(x), loss, chosen[:, 0].view(B, T)
