"""Sparse Mixture-of-Experts feed-forward layer with heterogeneous experts.

The routing follows Switch Transformers (Fedus et al., arXiv 2101.03961) and AutoMoE
(arXiv 2210.07535): a linear router picks the top-k experts of every token, the chosen expert's
output is scaled by its router probability, and experts may have different FFN widths.
Only the tokens routed to an expert are sent through it (gather / scatter-add); nothing is
dropped at inference (no capacity factor).
"""

from __future__ import annotations

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
        probs = router_probabilities(flat, self.router)  # [N, n]
        if self.top_k == 1:  # max instead of topk: fewer graph nodes, same result
            gate, choice = probs.max(dim=-1)  # [N], [N]
            chosen = choice.unsqueeze(-1)  # [N, 1]
            out = self._dispatch_top1(flat, gate if self.router_scale else torch.ones_like(gate), choice)
        else:
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

    def _dispatch_top1(self, flat: torch.Tensor, gate: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
        """Top-1 dispatch with few graph nodes: each expert gathers its tokens, the outputs are
        concatenated and put back in token order with one inverse permutation, and the gate is
        applied once. At decode time (a handful of tokens per step) the per-expert fixed cost of
        an exported graph dominates, so this keeps 5 glue ops per expert instead of ~30.

        flat [N, d], gate [N], choice [N] -> [N, d].
        """
        outputs, order = [], []
        for e, expert in enumerate(self.experts):
            token = (choice == e).nonzero().view(-1)  # [n_e] tokens routed to e
            if token.numel() == 0 and not _tracing():
                continue  # a data-dependent skip must not be baked into an exported graph
            outputs.append(expert(flat.index_select(0, token)))  # [n_e, d]
            order.append(token)
        by_expert = torch.cat(outputs).to(flat.dtype)  # [N, d], grouped by expert
        back = torch.cat(order).argsort()  # position of each token in `by_expert`
        return by_expert.index_select(0, back) * gate.unsqueeze(-1).to(flat.dtype)
