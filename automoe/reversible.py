"""Multi-split reversible residual stacks: training memory for activations that does not grow with depth.

RevNet (Gomez et al., arXiv 1707.04585) and Reformer (arXiv 2001.04451) carry the hidden state as
two streams and update each from the other, so a layer's inputs can be recomputed from its
outputs; Zhao et al. (arXiv 2105.14669) generalise this to n splits to run differentiable
architecture search on Transformers. Here the state is n streams z_1..z_n (n >= 2), each [B, T, d]
and each equal to the input x at the start. Sublayer l (self-attention, cross-attention, FFN/MoE)
updates stream s = l mod n from the mean of the other streams:

    u = mean_{j != s} z_j
    z_s <- z_s + f_l(u)

The other streams are unchanged, so every step inverts exactly: u is computed from the outputs,
then z_s = z_s' - f_l(u). `ReversibleSequence`'s backward pass (a custom `torch.autograd.Function`)
walks the sublayers in reverse, reconstructs each step's input from its output and recomputes f_l
with autograd for that step only. Only the last step's outputs are kept, whatever the depth.
Dropout is reproduced by running every sublayer under its own seed (drawn from the global RNG once
per forward pass) both in the forward pass and in the recomputation.

A reversible f_l cannot hold its own residual or a post-LayerNorm (x = LN(x + f(x)) has no inverse),
so the sublayers here are pre-LN, f(u) = dropout(sublayer(LN(u))), and a stack's output is the mean
of its streams. The sublayers reuse `modeling.Attention` and `moe.MoEFeedForward` unchanged.

With `reversible=False` the same stack runs with ordinary autograd (every activation stored), the
same seeds and the same arithmetic: the reference that the reversible gradients are tested against.
Reversible stacks run in full precision: the recomputation does not replay an autocast context, and
reconstruction error grows as precision shrinks.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ArchConfig
from .modeling import Attention
from .moe import MoEFeedForward

Context = tuple  # per-sublayer extra arguments after u: tensors (with or without grad) or plain values


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Run with the RNG of the CPU (and of `device` if CUDA) seeded by `seed`; restore it afterwards."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.manual_seed(seed)
        yield


def _call(sublayer: nn.Module, u: torch.Tensor, context: Context) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A sublayer's output and its auxiliary loss (None when it returns a tensor only)."""
    out = sublayer(u, *context)
    if isinstance(out, tuple):
        return out[0], out[1]
    return out, None


def _others_mean(streams: Sequence[torch.Tensor], s: int) -> torch.Tensor:
    """Mean of every stream but `s` (the input of the sublayer that updates stream s)."""
    others = [z for j, z in enumerate(streams) if j != s]
    if len(others) == 1:
        return others[0]
    u = others[0]
    for z in others[1:]:
        u = u + z
    return u / len(others)


def _flatten(contexts: Sequence[Context]) -> tuple[list[torch.Tensor], list[tuple]]:
    """The distinct tensors of all contexts (shared ones once, so their gradients add up) and, per
    sublayer, a spec that rebuilds its context from them: ("t", index) or ("v", plain value)."""
    tensors: list[torch.Tensor] = []
    seen: dict[int, int] = {}
    spec = []
    for context in contexts:
        items = []
        for value in context:
            if torch.is_tensor(value):
                if id(value) not in seen:
                    seen[id(value)] = len(tensors)
                    tensors.append(value)
                items.append(("t", seen[id(value)]))
            else:
                items.append(("v", value))
        spec.append(tuple(items))
    return tensors, spec


def _unflatten(items: tuple, tensors: Sequence[torch.Tensor]) -> Context:
    return tuple(tensors[v] if kind == "t" else v for kind, v in items)


class _ReversibleFunction(torch.autograd.Function):
    """Forward without stored activations; backward by reconstruction (see the module docstring).

    Inputs after the plain arguments: the n input streams, the distinct context tensors, then the
    sublayers' parameters, so that autograd routes gradients to all of them.
    """

    @staticmethod
    def forward(ctx, stack: "ReversibleSequence", spec: list[tuple], seeds: list[int], n_context: int,
                param_index: list[list[int]], *tensors: torch.Tensor):
        n = stack.splits
        streams, context = tensors[:n], tensors[n:n + n_context]
        contexts = [_unflatten(items, context) for items in spec]
        outs, aux = stack.run(streams, contexts, seeds)  # autograd records nothing inside forward()
        # a stream no sublayer updated would be an input returned as output: autograd needs a new tensor
        outs = [z.clone() if z is x else z for z, x in zip(outs, streams)]
        ctx.stack, ctx.spec, ctx.seeds, ctx.n_context, ctx.param_index = stack, spec, seeds, n_context, param_index
        ctx.save_for_backward(*outs, *context)
        return (*outs, aux)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None):
        stack, n = ctx.stack, ctx.stack.splits
        saved = ctx.saved_tensors
        ys = [y.detach() for y in saved[:n]]
        context = saved[n:]
        params = stack.parameter_list()
        need = ctx.needs_input_grad[5:]
        need_ctx, need_par = need[n:n + ctx.n_context], need[n + ctx.n_context:]
        # fresh leaves, so that each sublayer's recomputation yields the gradient of its own use
        leaves = [c.detach().requires_grad_(bool(w)) if w else c for c, w in zip(context, need_ctx)]
        g = [torch.zeros_like(y) if gr is None else gr for gr, y in zip(grads[:n], ys)]
        g_aux = grads[n]
        ctx_grads: list[torch.Tensor | None] = [None] * len(context)
        par_grads: list[torch.Tensor | None] = [None] * len(params)
        for l in reversed(range(len(stack.sublayers))):
            s = l % n
            with torch.no_grad():
                u = _others_mean(ys, s).detach()
            u.requires_grad_(True)
            ctx_ids = sorted({v for kind, v in ctx.spec[l] if kind == "t" and need_ctx[v]})
            par_ids = [i for i in ctx.param_index[l] if need_par[i]]
            with torch.enable_grad(), _seeded(ctx.seeds[l], u.device):
                out, aux = _call(stack.sublayers[l], u, _unflatten(ctx.spec[l], leaves))
            outputs, out_grads = [out], [g[s]]
            if aux is not None and g_aux is not None and aux.requires_grad:
                outputs.append(aux)
                out_grads.append(g_aux)
            inputs = [u] + [leaves[i] for i in ctx_ids] + [params[i] for i in par_ids]
            got = torch.autograd.grad(outputs, inputs, out_grads, allow_unused=True)
            with torch.no_grad():
                ys[s] = ys[s] - out.detach()  # the input of this step: z_s = z_s' - f(u)
                if got[0] is not None:
                    share = got[0] / (n - 1)  # u is the mean of the n-1 other streams
                    for j in range(n):
                        if j != s:
                            g[j] = g[j] + share
                k = len(ctx_ids)
                for bucket, ids, found in ((ctx_grads, ctx_ids, got[1:1 + k]), (par_grads, par_ids, got[1 + k:])):
                    for i, gr in zip(ids, found):
                        if gr is not None:
                            bucket[i] = gr if bucket[i] is None else bucket[i] + gr
        return (None, None, None, None, None, *g, *ctx_grads, *par_grads)


class ReversibleSequence(nn.Module):
    """A residual stack of sublayers on `splits` streams, reversible or with stored activations.

    Each sublayer is a module called as `sublayer(u, *context)` that returns f(u) of u's shape, or
    (f(u), auxiliary loss); it holds no residual connection of its own. `forward(x, contexts)`
    takes one context tuple per sublayer (masks, encoder memory, architecture weights, ...; tensors
    in it may require gradients and may be shared between sublayers) and returns the mean of the
    streams and the summed auxiliary loss. The sublayers' own parameters are what is trained.
    """

    def __init__(self, sublayers: Sequence[nn.Module], splits: int = 2, reversible: bool = True):
        super().__init__()
        if not isinstance(splits, int) or splits < 2:
            raise ValueError(f"splits={splits!r}: a reversible stack needs at least 2 streams")
        if not sublayers:
            raise ValueError("a ReversibleSequence needs at least one sublayer")
        self.sublayers = nn.ModuleList(sublayers)
        self.splits = splits
        self.reversible = reversible

    def parameter_list(self) -> list[nn.Parameter]:
        """The distinct parameters of all sublayers, in first-use order."""
        return list(dict.fromkeys(p for sub in self.sublayers for p in sub.parameters()))

    def _param_index(self) -> list[list[int]]:
        index = {id(p): i for i, p in enumerate(self.parameter_list())}
        return [[index[id(p)] for p in sub.parameters()] for sub in self.sublayers]

    def draw_seeds(self) -> list[int]:
        """One dropout seed per sublayer, from the global RNG (so runs are reproducible under manual_seed)."""
        return torch.randint(0, 2**62, (len(self.sublayers),)).tolist()

    def _check(self, contexts: Sequence[Context] | None) -> list[Context]:
        if contexts is None:
            return [()] * len(self.sublayers)
        if len(contexts) != len(self.sublayers):
            raise ValueError(f"got {len(contexts)} contexts for {len(self.sublayers)} sublayers: pass one tuple each")
        return [tuple(c) for c in contexts]

    def run(self, streams: Sequence[torch.Tensor], contexts: Sequence[Context], seeds: Sequence[int]
            ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Apply every sublayer to its stream in order (ordinary autograd): (output streams, aux)."""
        streams = list(streams)
        aux = None
        for l, (sub, context) in enumerate(zip(self.sublayers, contexts)):
            s = l % self.splits
            u = _others_mean(streams, s)
            with _seeded(seeds[l], u.device):
                out, a = _call(sub, u, context)
            streams[s] = streams[s] + out
            if a is not None:
                aux = a if aux is None else aux + a
        return streams, (streams[0].new_zeros((), dtype=torch.float32) if aux is None else aux)

    @torch.no_grad()
    def inverse(self, streams: Sequence[torch.Tensor], contexts: Sequence[Context] | None, seeds: Sequence[int]
                ) -> list[torch.Tensor]:
        """The input streams that `run(..., seeds)` maps to `streams` (no gradients)."""
        contexts = self._check(contexts)
        ys = list(streams)
        for l in reversed(range(len(self.sublayers))):
            s = l % self.splits
            u = _others_mean(ys, s)
            with _seeded(seeds[l], u.device):
                out, _ = _call(self.sublayers[l], u, contexts[l])
            ys[s] = ys[s] - out
        return ys

    def forward(self, x: torch.Tensor, contexts: Sequence[Context] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, d] -> (mean of the output streams [B, T, d], summed auxiliary loss)."""
        contexts = self._check(contexts)
        seeds = self.draw_seeds()
        streams = [x] * self.splits
        if self.reversible and torch.is_grad_enabled():
            tensors, spec = _flatten(contexts)
            out = _ReversibleFunction.apply(self, spec, seeds, len(tensors), self._param_index(),
                                            *streams, *tensors, *self.parameter_list())
            streams, aux = list(out[:self.splits]), out[self.splits]
        else:  # stored activations, or inference (where nothing is stored anyway)
            streams, aux = self.run(streams, contexts, seeds)
        return _others_mean(streams, -1), aux  # s = -1: the mean of all streams


# ------------------------------------------------------------------- Transformer blocks

class AttentionSublayer(nn.Module):
    """f(u) = dropout(Attention(LN(u))): self-attention, or cross-attention when called with a memory."""

    def __init__(self, attn: Attention, d_model: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.attn = attn
        self.dropout = dropout

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None, memory: torch.Tensor | None = None
                ) -> torch.Tensor:
        """u: [B, T, d]; mask broadcastable to [B, H, T, S]; memory: [B, S, d_kv] for cross-attention."""
        x = self.norm(u)
        h = self.attn(x, self.attn.project_kv(x if memory is None else memory), mask)  # [B, T, d]
        return F.dropout(h, self.dropout, self.training)


class FeedForwardSublayer(nn.Module):
    """f(u) = dropout(MoEFeedForward(LN(u))), returned with the layer's load-balancing loss."""

    def __init__(self, ffn: MoEFeedForward, d_model: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.ffn = ffn
        self.dropout = dropout

    def forward(self, u: torch.Tensor, token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """u: [B, T, d]; token_mask: [B, T] True for real tokens. Returns (f(u), balancing loss)."""
        h, aux, _ = self.ffn(self.norm(u), token_mask)
        return F.dropout(h, self.dropout, self.training), aux


def _check_splits(splits: int) -> None:
    if not isinstance(splits, int) or splits < 2:
        raise ValueError(f"splits={splits!r} must be an int >= 2")


class ReversibleEncoder(nn.Module):
    """The encoder layers of `cfg` (self-attention + MoE FFN each, pre-LN) as one reversible stack."""

    def __init__(self, cfg: ArchConfig, splits: int = 2, reversible: bool = True):
        super().__init__()
        _check_splits(splits)
        d = cfg.encoder_embed_dim
        sublayers: list[nn.Module] = []
        for i in range(cfg.encoder_layers):
            attn = Attention(d, d, cfg.qkv_dim, cfg.encoder_heads[i], cfg.attention_dropout)
            ffn = MoEFeedForward(d, cfg.encoder_ffn[i], cfg.top_k, cfg.router_scale, cfg.activation_dropout)
            sublayers += [AttentionSublayer(attn, d, cfg.dropout), FeedForwardSublayer(ffn, d, cfg.dropout)]
        self.layers = ReversibleSequence(sublayers, splits, reversible)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: embedded source [B, S, d]; token_mask [B, S]. Returns (LN(output) [B, S, d], aux loss)."""
        contexts = [(token_mask[:, None, None, :],), (token_mask,)] * (len(self.layers.sublayers) // 2)
        h, aux = self.layers(x, contexts)
        return self.norm(h), aux


class ReversibleDecoder(nn.Module):
    """The decoder layers of `cfg` (causal self-attention, cross-attention to the encoder output,
    MoE FFN; pre-LN) as one reversible stack. Cross-attention reads the last encoder layer only
    (a reversible encoder keeps no intermediate outputs), so `decoder_cross_last_k` must be 1."""

    def __init__(self, cfg: ArchConfig, splits: int = 3, reversible: bool = True):
        super().__init__()
        _check_splits(splits)
        if any(k != 1 for k in cfg.decoder_cross_last_k):
            raise ValueError(f"decoder_cross_last_k={cfg.decoder_cross_last_k}: a reversible decoder reads "
                             "the last encoder layer only; use 1 for every layer")
        d, d_enc = cfg.decoder_embed_dim, cfg.encoder_embed_dim
        sublayers: list[nn.Module] = []
        for i in range(cfg.decoder_layers):
            self_attn = Attention(d, d, cfg.qkv_dim, cfg.decoder_heads[i], cfg.attention_dropout)
            cross = Attention(d, d_enc, cfg.qkv_dim, cfg.decoder_cross_heads[i], cfg.attention_dropout)
            ffn = MoEFeedForward(d, cfg.decoder_ffn[i], cfg.top_k, cfg.router_scale, cfg.activation_dropout)
            sublayers += [AttentionSublayer(self_attn, d, cfg.dropout), AttentionSublayer(cross, d, cfg.dropout),
                          FeedForwardSublayer(ffn, d, cfg.dropout)]
        self.layers = ReversibleSequence(sublayers, splits, reversible)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
                token_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: embedded target [B, T, d]; memory: encoder output [B, S, d_enc]; memory_mask [B, S].
        Returns (LN(output) [B, T, d], aux loss)."""
        T = x.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # [T, T]
        layer = [(causal,), (memory_mask[:, None, None, :], memory), (token_mask,)]
        h, aux = self.layers(x, layer * (len(self.layers.sublayers) // 3))
        return self.norm(h), aux
