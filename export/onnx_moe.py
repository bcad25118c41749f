"""The ONNX form of top-1 MoE feed-forward layers: one sort, one split, one scatter per layer.

At decode time with beam 4 a MoE layer routes 4 tokens, so ONNX Runtime's fixed cost per graph
node, not arithmetic, decides what sparse dispatch costs. Traced as PyTorch runs it
(`automoe.moe.top1_moe`: an Equal / NonZero / Gather and a scatter per expert) a layer exports as
several nodes per expert, and runs slower (docs/moe_dispatch.md). This form exports as

    Flatten -> router MatMul -> Softmax -> ReduceMax (gate) + ArgMax (expert)
    Shape -> TopK (tokens sorted by expert) -> GatherND -> OneHot -> ReduceSum (tokens per expert)
    Split -> per expert MatMul + Add -> Relu -> MatMul + Add -> Concat -> ScatterND -> Mul -> Reshape

16 nodes per layer besides the experts' own; the decoder-step graph, whose rows are single
tokens, leaves out Flatten and the final Shape / Reshape. ScatterND writes into the layer's input
rows, so its output keeps their (batch) shape and ONNX Runtime still fuses the residual Add and
LayerNorm after the layer into SkipLayerNormalization, as in a dense layer. An expert no token
chose runs on an empty block (a node on 0 rows costs ~0.2 us; an `If` per expert was measured slower).
It computes exactly what the PyTorch layer computes; the export parity tests hold it to that.
`moe_form(model)` makes every top-1 MoE layer of a model trace this way.

For the beam graph's decoder in int8 exports (`onnx.export_graphs`) there is a second form,
`Top1KernelMoE`: automoe's own operator (`automoe.Top1MoE`, built from csrc/automoe_ops.cc by
`kernel.build_library`), one node per layer that routes each row (fp32), quantizes it once, groups
the rows by expert and runs the chosen experts with int8 kernels about as fast as ONNX Runtime's
dense ones (experts of any widths). `moe_form(model, "kernel")` selects it.
Both compute `automoe.moe.top1_moe`, the reference top-1 layer (the kernel with int8 experts).
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch
import torch.nn.functional as F

from automoe.moe import MoEFeedForward, top1_moe

from . import kernel


def _expert(w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """An expert from its weights, as `automoe.moe.Expert` computes it at inference."""
    return F.linear(F.relu(F.linear(x, w1, b1)), w2, b2)


def _tensor(g, values, dtype=torch.int64):
    return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))


class Top1MoE(torch.autograd.Function):
    """A top-1 MoE feed-forward layer as one traced call: eager PyTorch when run, the compact
    ONNX graph of the module docstring when exported (TorchScript exporter, opset >= 13)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, one_token: bool, router_scale: bool, router_weight: torch.Tensor,
                *expert_params: torch.Tensor) -> torch.Tensor:
        """x: [B, T, d] -> [B, T, d]; expert_params are (fc1.weight, fc1.bias, fc2.weight, fc2.bias)
        per expert, in expert order. The same arithmetic as `MoEFeedForward` with top-1 routing.
        one_token: T is 1 in every use of the graph (a decoder step), which saves three nodes."""
        if one_token and x.shape[1] != 1:
            raise ValueError(f"one_token=True needs x of shape [B, 1, d], got {list(x.shape)}")
        experts = [functools.partial(_expert, *expert_params[i: i + 4]) for i in range(0, len(expert_params), 4)]
        return top1_moe(x.reshape(-1, x.shape[-1]), router_weight, experts, router_scale)[0].view_as(x)

    @staticmethod
    def symbolic(g, x, one_token: bool, router_scale: bool, router_weight, *expert_params):
        """Emit the compact graph. Tokens are the rows of x flattened to [N, d] (N = B * T) or, with
        one_token, x itself ([B, 1, d]: GatherND / ScatterND index its first axis either way).
        The router MatMul is the only MatMul with a constant weight whose output feeds a Softmax;
        int8 export keeps it fp32 (see onnx.router_matmuls)."""
        n_experts = len(expert_params) // 4
        transpose = lambda w: g.op("Transpose", w, perm_i=[1, 0])  # noqa: E731  (folded into the weight)
        rows = x if one_token else g.op("Flatten", x, axis_i=2)  # [B, 1, d] or [N, d]
        probs = g.op("Softmax", g.op("MatMul", rows, transpose(router_weight)), axis_i=-1)  # [..., E]
        gate = g.op("ReduceMax", probs, axes_i=[-1], keepdims_i=1)  # [B, 1, 1] or [N, 1]
        # [B, 1] or [N, 1]: one index per token and a trailing 1, as TopK / GatherND / ScatterND need;
        # ArgMax picks the first maximum, like torch.max
        choice = g.op("ArgMax", probs, axis_i=-1, keepdims_i=0 if one_token else 1)
        n = g.op("Shape", rows, start_i=0, end_i=1)  # [1]: B or N
        _, order = g.op("TopK", choice, n, axis_i=0, largest_i=0, outputs=2)  # tokens sorted by expert
        grouped = g.op("GatherND", rows, order)  # each expert's tokens contiguous
        one_hot = g.op("OneHot", choice, _tensor(g, n_experts), _tensor(g, [0, 1]), axis_i=-1)  # [., 1, E]
        counts = g.op("ReduceSum", one_hot, _tensor(g, [0, 1]), keepdims_i=0)  # [E] tokens per expert
        blocks = g.op("Split", grouped, counts, axis_i=0, outputs=n_experts)
        blocks = blocks if n_experts > 1 else [blocks]
        outputs = []
        for e, block in enumerate(blocks):
            w1, b1, w2, b2 = expert_params[4 * e: 4 * e + 4]
            h = g.op("Relu", g.op("Add", g.op("MatMul", block, transpose(w1)), b1))
            outputs.append(g.op("Add", g.op("MatMul", h, transpose(w2)), b2))  # [n_e, d]
        y = g.op("Concat", *outputs, axis_i=0)  # in `order`
        # back to token order; every row of `rows` is overwritten, and the output keeps its (batch)
        # shape, so ONNX Runtime still fuses the residual Add and LayerNorm that follow
        y = g.op("ScatterND", rows, order, y)
        if router_scale:
            y = g.op("Mul", y, gate)
        return y if one_token else g.op("Reshape", y, g.op("Shape", x))  # [B, T, d]


class Top1KernelMoE(torch.autograd.Function):
    """A top-1 MoE layer as automoe's operator `automoe.Top1MoE`, router included (int8 exports only;
    see csrc/automoe_ops.cc). Eager, it computes the operator's result (`kernel.reference_top1_moe`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, router_scale: bool, router_weight: torch.Tensor,
                *inputs: torch.Tensor) -> torch.Tensor:
        """x [B, T, d]; router_weight [E, d]; inputs: the operator's weights (`kernel.layer_inputs`)
        -> [B, T, d]."""
        y = kernel.reference_top1_moe(x, router_weight, list(inputs), router_scale)
        # a copy the tracer sees as a constant: traced, the reference's own ops (integer unpacking,
        # per-expert index lists) break TorchScript's peephole pass, and `symbolic` replaces them anyway
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return torch.from_numpy(y.detach().numpy().copy())

    @staticmethod
    def symbolic(g, x, router_scale: bool, router_weight, *inputs):
        """One node: the operator routes (fp32 router weight, which int8 quantization does not touch:
        it quantizes MatMuls only) and runs the experts; any rank works, so a decoder step's
        [B, 1, d] goes in as it is."""
        y = g.op(f"{kernel.DOMAIN}::{kernel.OP_TYPE}", x, router_weight, *inputs, router_scale_i=int(router_scale))
        y.setType(x.type())
        return y


def _forward_result(out: torch.Tensor, x: torch.Tensor):
    """What MoEFeedForward.forward returns, for an exported layer's output: the balancing loss and
    the routing, which no exported graph returns, as zeros."""
    return out, x.new_zeros(()), torch.zeros(x.shape[:2], dtype=torch.long, device=x.device)


def _export_forward(module: MoEFeedForward, one_token: bool, x: torch.Tensor, mask: torch.Tensor | None = None):
    """MoEFeedForward.forward for export, through Top1MoE."""
    params = [p for e in module.experts for p in (e.fc1.weight, e.fc1.bias, e.fc2.weight, e.fc2.bias)]
    return _forward_result(Top1MoE.apply(x, one_token, module.router_scale, module.router.weight, *params), x)


def _kernel_weights(module: MoEFeedForward) -> list[torch.Tensor]:
    """A layer's experts as `Top1KernelMoE` takes them (int8 codes, packed; plain tensors, traced as
    constants)."""
    return kernel.layer_inputs([(e.fc1.weight, e.fc1.bias, e.fc2.weight, e.fc2.bias) for e in module.experts])


def _export_forward_kernel(module: MoEFeedForward, weights: list[torch.Tensor], x: torch.Tensor,
                           mask: torch.Tensor | None = None):
    """MoEFeedForward.forward for an int8 export through Top1KernelMoE (weights from `_kernel_weights`)."""
    return _forward_result(Top1KernelMoE.apply(x, module.router_scale, module.router.weight, *weights), x)


@contextlib.contextmanager
def moe_form(model: torch.nn.Module, form: str = "compact", one_token: bool = False):
    """Within the block every top-1 MoE layer of `model` (with a router, so with experts) runs and
    traces as `Top1MoE` (form="compact") or `Top1KernelMoE` (form="kernel"); dense layers and
    top-k > 1 layers are untouched. Restored on exit.
    one_token: every traced call sees one token per row (the decoder-step graph)."""
    if form not in ("compact", "kernel"):
        raise ValueError(f"form={form!r} must be 'compact' or 'kernel'")
    layers = [m for m in model.modules() if isinstance(m, MoEFeedForward) and m.router is not None and m.top_k == 1]
    for m in layers:
        if form == "kernel":
            m.forward = functools.partial(_export_forward_kernel, m, _kernel_weights(m))
        else:
            m.forward = functools.partial(_export_forward, m, one_token)
    try:
        yield model
    finally:
        for m in layers:
            del m.forward
