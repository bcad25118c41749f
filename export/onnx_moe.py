"""The ONNX form of top-1 MoE feed-forward layers: one sort, one split, one scatter per layer.

At decode time with beam 4 a MoE layer routes 4 tokens, so ONNX Runtime's fixed cost per graph
node, not arithmetic, decides what sparse dispatch costs. The traced PyTorch dispatch
(`MoEFeedForward._dispatch_top1`: Equal / NonZero / Transpose / Reshape / Gather per expert, then
an argsort) exports as about 44 nodes for a 4-expert layer. This form exports as

    Flatten -> router MatMul -> Softmax -> ReduceMax (gate) + ArgMax (expert)
    Shape -> TopK (tokens sorted by expert) -> GatherND -> OneHot -> ReduceSum (tokens per expert)
    Split -> per expert MatMul + Add -> Relu -> MatMul + Add -> Concat -> ScatterND -> Mul -> Reshape

16 nodes per layer besides the experts' own; the decoder-step graph, whose rows are single
tokens, leaves out Flatten and the final Shape / Reshape. ScatterND writes into the layer's input
rows, so its output keeps their (batch) shape and ONNX Runtime still fuses the residual Add and
LayerNorm after the layer into SkipLayerNormalization, as in a dense layer. An expert no token
chose runs on an empty block (a node on 0 rows costs ~0.2 us; an `If` per expert was measured slower).
It computes exactly what the PyTorch layer computes; the export parity tests hold it to that.
`compact_moe_dispatch(model)` makes every top-1 MoE layer of a model trace this way.

For the beam graph's decoder in int8 exports (`onnx.export_graphs`) there is a second form,
`Top1QMoE`: ONNX Runtime's own fused `com.microsoft.QMoE` operator with 8-bit block-quantized
expert weights (Flatten, router MatMul, Softmax, QMoE: 4 nodes per layer). The whole dispatch and
every expert run inside one kernel, which groups the step's tokens by expert and skips the
experts no token chose. Within a decoder step the compact form's dozen small dispatch kernels run
with cold code and branch history, and cost several times what they cost alone; one kernel does
not. The operator needs one width for all experts of a layer, so layers with experts of
different widths keep the compact form (one operator per width, each skipping the tokens of the
others, was measured slower than compact on a searched architecture). The residual Add and
LayerNorm after a QMoE layer fuse as after a dense one once `onnx.fix_custom_op_shapes` has
removed the dims the exporter invented for the operator's output. Its int8 kernels multiply row
by row, so with many rows per call (whole sources, batches of sentences) the compact form, whose
experts run as int8 matrix products, is faster; hence only the beam graph uses it.
`compact_moe_dispatch(model, form="qmoe")` selects it where it applies.

The third form, `Top1KernelMoE`, is automoe's own operator (`automoe.Top1MoE`, built from
csrc/automoe_ops.cc by `kernel.build_library`): one node per layer that routes each row (fp32),
quantizes it once, groups the rows by expert and runs the chosen experts with int8 kernels about
as fast as ONNX Runtime's dense ones (experts of any widths).
`compact_moe_dispatch(model, form="kernel")` selects it for every top-1 layer with experts.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch
import torch.nn.functional as F

from automoe.moe import MoEFeedForward

from . import kernel


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
        flat = x.reshape(-1, x.shape[-1])
        gate, choice = F.linear(flat, router_weight).softmax(dim=-1).max(dim=-1)  # [N], [N]
        out = torch.empty_like(flat)
        for e in range(len(expert_params) // 4):
            w1, b1, w2, b2 = expert_params[4 * e: 4 * e + 4]
            rows = (choice == e).nonzero().view(-1)
            out[rows] = F.linear(F.relu(F.linear(flat[rows], w1, b1)), w2, b2)
        return (out * gate.unsqueeze(-1) if router_scale else out).view_as(x)

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


QMOE_BLOCK_SIZES = (128, 64, 32, 16)  # preferred first: larger blocks run faster (fewer scales)


def qmoe_block_size(d_model: int, width: int) -> int | None:
    """The block size of `Top1QMoE` for experts d_model -> width -> d_model: the first of
    QMOE_BLOCK_SIZES that divides both input sizes (fc1 reads d_model, fc2 reads width), else None."""
    return next((b for b in QMOE_BLOCK_SIZES if d_model % b == 0 and width % b == 0), None)


def qmoe_layer_block(d_model: int, widths: tuple[int, ...], top_k: int) -> int | None:
    """The block size `Top1QMoE` uses for a MoE layer of experts `widths`, or None where the layer
    keeps the compact form: a dense layer (one expert), top-k > 1, experts of different widths (the
    operator takes one width), or no block size that divides d_model and the width."""
    if len(widths) < 2 or min(top_k, len(widths)) != 1 or len(set(widths)) != 1:
        return None
    return qmoe_block_size(d_model, widths[0])


def quantize_blocks(weight: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric 8-bit block quantization along the last axis, as `com.microsoft.QMoE` reads it:
    weight [..., K] -> (uint8 codes [..., K] with zero point 128, fp32 scales [..., K / block_size])."""
    blocks = weight.detach().float().unflatten(-1, (-1, block_size))
    scale = blocks.abs().amax(-1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero block: any scale is exact
    codes = torch.round(blocks / scale.unsqueeze(-1)).clamp(-127, 127) + 128
    return codes.flatten(-2).to(torch.uint8), scale


def _absent(g):
    """An omitted optional input of an ONNX node (exported as the empty name)."""
    none = g.op("prim::Constant")
    none.setType(torch._C.OptionalType.ofTensor())
    return none


class Top1QMoE(torch.autograd.Function):
    """A top-1 MoE layer whose experts share one width, as ONNX Runtime's `com.microsoft.QMoE`
    operator with 8-bit block-quantized expert weights (int8 exports only; see the module docstring).
    Eager, it computes the operator's result from the dequantized weights (with fp32 activations;
    the operator quantizes them to int8 as well)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, router_scale: bool, block_size: int, router_weight: torch.Tensor,
                w1: torch.Tensor, s1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, s2: torch.Tensor,
                b2: torch.Tensor) -> torch.Tensor:
        """x [B, T, d]; w1 [E, width, d] and w2 [E, d, width] uint8 codes, s1 / s2 their block scales,
        b1 [E, width] and b2 [E, d] the biases -> [B, T, d]."""
        dequant = lambda w, s: (w.float() - 128) * s.repeat_interleave(block_size, -1)  # noqa: E731
        flat = x.reshape(-1, x.shape[-1])
        gate, choice = F.linear(flat, router_weight).softmax(dim=-1).max(dim=-1)  # [N], [N]
        h = F.relu(torch.einsum("nd,nwd->nw", flat, dequant(w1, s1)[choice]) + b1[choice])
        out = torch.einsum("nw,ndw->nd", h, dequant(w2, s2)[choice]) + b2[choice]
        return (out * gate.unsqueeze(-1) if router_scale else out).view_as(x)

    @staticmethod
    def symbolic(g, x, router_scale: bool, block_size: int, router_weight, w1, s1, b1, w2, s2, b2):
        """The operator picks each token's expert from the router logits and, with router_weights
        (input 14) given, scales its output by that expert's weight there: the router probability."""
        rows = g.op("Flatten", x, axis_i=2)  # [B * T, d]: the operator takes its router input as 2-D
        logits = g.op("MatMul", rows, g.op("Transpose", router_weight, perm_i=[1, 0]))  # fp32 in int8 exports
        inputs = [x, logits, w1, s1, b1, w2, s2, b2]
        if router_scale:  # mix by router_weights (input 14) = the softmax probabilities
            inputs += [_absent(g)] * 6 + [g.op("Softmax", logits, axis_i=-1)]
        y = g.op("com.microsoft::QMoE", *inputs, k_i=1, activation_type_s="relu", expert_weight_bits_i=8,
                 block_size_i=block_size, normalize_routing_weights_i=0)
        y.setType(x.type())  # the input's dtype and rank: the graph after it keeps its shapes typed
        return y


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


def _qmoe_weights(module: MoEFeedForward, block_size: int) -> list[torch.Tensor]:
    """The quantized expert weights and the biases of a layer, as `Top1QMoE` takes them. Made before
    tracing, they are plain tensors, not parameters: the tracer records them as constants, and the
    operator packs constant weights once, at session start, for its int8 kernels."""
    with torch.no_grad():
        stack = lambda tensors: torch.stack(list(tensors)).float()  # noqa: E731
        w1, s1 = quantize_blocks(stack(e.fc1.weight for e in module.experts), block_size)  # [E, width, d]
        w2, s2 = quantize_blocks(stack(e.fc2.weight for e in module.experts), block_size)  # [E, d, width]
        return [w1, s1, stack(e.fc1.bias for e in module.experts), w2, s2, stack(e.fc2.bias for e in module.experts)]


def _export_forward_qmoe(module: MoEFeedForward, block_size: int, weights: list[torch.Tensor], x: torch.Tensor,
                         mask: torch.Tensor | None = None):
    """MoEFeedForward.forward for an int8 export through Top1QMoE (weights from `_qmoe_weights`)."""
    return _forward_result(Top1QMoE.apply(x, module.router_scale, block_size, module.router.weight, *weights), x)


def _kernel_weights(module: MoEFeedForward) -> list[torch.Tensor]:
    """A layer's experts as `Top1KernelMoE` takes them (int8 codes, packed; plain tensors, traced as
    constants)."""
    return kernel.layer_inputs([(e.fc1.weight, e.fc1.bias, e.fc2.weight, e.fc2.bias) for e in module.experts])


def _export_forward_kernel(module: MoEFeedForward, weights: list[torch.Tensor], x: torch.Tensor,
                           mask: torch.Tensor | None = None):
    """MoEFeedForward.forward for an int8 export through Top1KernelMoE (weights from `_kernel_weights`)."""
    return _forward_result(Top1KernelMoE.apply(x, module.router_scale, module.router.weight, *weights), x)


@contextlib.contextmanager
def compact_moe_dispatch(model: torch.nn.Module, one_token: bool = False, form: str = "compact"):
    """Within the block every top-1 MoE layer of `model` (with a router, so with experts) runs and
    traces as `Top1MoE`; dense layers and top-k > 1 layers are untouched. Restored on exit.
    one_token: every traced call sees one token per row (the decoder-step graph).
    form="qmoe": layers whose experts share a width a block size divides trace as `Top1QMoE`
    instead; form="kernel": every such layer traces as `Top1KernelMoE`."""
    if form not in ("compact", "qmoe", "kernel"):
        raise ValueError(f"form={form!r} must be 'compact', 'qmoe' or 'kernel'")
    layers = [m for m in model.modules() if isinstance(m, MoEFeedForward) and m.router is not None and m.top_k == 1]
    for m in layers:
        widths = tuple(e.fc1.out_features for e in m.experts)
        block = qmoe_layer_block(m.experts[0].fc1.in_features, widths, m.top_k) if form == "qmoe" else None
        if form == "kernel":
            m.forward = functools.partial(_export_forward_kernel, m, _kernel_weights(m))
        elif block:
            m.forward = functools.partial(_export_forward_qmoe, m, block, _qmoe_weights(m, block))
        else:
            m.forward = functools.partial(_export_forward, m, one_token)
    try:
        yield model
    finally:
        for m in layers:
            del m.forward

