"""The per-row int8 form of an ONNX export: every linear layer one `automoe.Int8Linear` node.

ONNX Runtime's dynamic quantization (`quantize_dynamic`, the "int8" exports) quantizes a MatMul's
activations with one scale per tensor, so a row's result depends on the largest value of every
other row in the call: decoded in a batch, a sentence's translation would depend on its batch-mates
(docs/throughput.md). This form ("int8-row" exports) writes every MatMul by a constant fp32 weight,
with the bias Add and the Relu behind it where there is one, as automoe's own operator

    Int8Linear(x, W packed, s, c, b, relu)   y[r] = deq(q(x[r]) . W) + b   (csrc/automoe_ops.cc)

q: per-row asymmetric uint8, W: per-column symmetric int8 (as the MoE operator's experts). Each
row is quantized and multiplied alone, so its output is bitwise the same whatever rows share the
call: decoding a list in batches gives each sentence the translation it gets alone. The MoE
routers stay fp32, as in every int8 export (`onnx.router_matmuls`).

`reference_linear` is what the operator computes, in PyTorch (tests compare).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import kernel

LINEAR_OP, COLUMNS_OP = "Int8Linear", "Int8LinearColumns"


def linear_arrays(weight: np.ndarray, bias: np.ndarray | None) -> dict[str, np.ndarray]:
    """A [K, N] weight (y = x @ weight) and its bias as the operator's inputs 1..4:
    {"w": packed int8, "s": fp32 [N] scales, "c": int32 [N] column sums, "b": fp32 [N]}."""
    codes, scales, sums = kernel.quantize_columns(torch.from_numpy(np.array(weight, np.float32)))
    b = np.zeros(weight.shape[1], np.float32) if bias is None else np.asarray(bias, np.float32)
    return {"w": kernel.pack_weights(codes), "s": scales, "c": sums, "b": b}


def column_arrays(packed: np.ndarray, K: int, N: int) -> np.ndarray:
    """Int8LinearColumns' weight input from Int8Linear's packed one: W by columns, [N][K rounded up
    to 4] int8, zero-padded (one shortlisted column is then one contiguous row)."""
    w = kernel.unpack_weights(torch.from_numpy(np.array(packed, np.int8)), K, N).numpy()  # [K, N]
    out = np.zeros((N, -(-K // 4) * 4), np.int8)
    out[:, :K] = w.T
    return out.reshape(-1)


def reference_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                     relu: bool = False) -> torch.Tensor:
    """What `automoe.Int8Linear` computes for x [..., K] and a [K, N] fp32 weight (y = x @ weight),
    in PyTorch: equal to the operator's output up to fp32 rounding."""
    codes, scales, sums = kernel.quantize_columns(weight)
    b = torch.zeros(weight.shape[1]) if bias is None else bias.float()
    y = kernel.int8_linear(x.reshape(-1, x.shape[-1]).float(), torch.from_numpy(codes), torch.from_numpy(scales),
                            torch.from_numpy(sums), b)
    return (y.relu() if relu else y).view(*x.shape[:-1], weight.shape[1])


def _constant_bias(node, graph_inits: dict, output: str, n: int):
    """The [n] constant the Add `node` adds to `output`, or None."""
    from onnx import numpy_helper

    if node.op_type != "Add" or len(node.input) != 2:
        return None
    other = node.input[1] if node.input[0] == output else node.input[0]
    if other not in graph_inits:
        return None
    value = numpy_helper.to_array(graph_inits[other])
    return value if value.shape == (n,) and value.dtype == np.float32 else None


def rewrite_graph(graph, skip: set[str]) -> int:
    """Replace, in place, every MatMul of `graph` by a constant fp32 [K, N] initializer whose name
    is not in `skip` (the routers) by an Int8Linear node, with the constant bias Add behind it and
    then a Relu folded in where each is the sole reader. Returns how many were replaced."""
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:  # the exporter shares equal constants through Identity nodes
        if node.op_type == "Identity" and node.input[0] in inits:
            inits[node.output[0]] = inits[node.input[0]]
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    folded, replaced, arrays = set(), {}, []
    for node in graph.node:
        if node.op_type != "MatMul" or node.name in skip or node.input[1] not in inits:
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if weight.ndim != 2 or weight.dtype != np.float32:
            continue
        n, out, bias, relu = weight.shape[1], node.output[0], None, 0
        after = readers.get(out, [])
        if len(after) == 1 and (bias := _constant_bias(after[0], inits, out, n)) is not None:
            folded.add(id(after[0]))
            out = after[0].output[0]
        after = readers.get(out, [])
        if len(after) == 1 and after[0].op_type == "Relu":
            folded.add(id(after[0]))
            out, relu = after[0].output[0], 1
        prefix = f"int8_linear_{len(replaced)}"
        values = linear_arrays(weight, bias)
        arrays += [numpy_helper.from_array(values[k], f"{prefix}_{k}") for k in ("w", "s", "c", "b")]
        replaced[id(node)] = helper.make_node(LINEAR_OP, [node.input[0]] + [f"{prefix}_{k}" for k in "wscb"], [out],
                                              domain=kernel.DOMAIN, name=prefix, relu=relu)
    nodes = [replaced.get(id(n), n) for n in graph.node if id(n) not in folded]
    read = {name for n in nodes for name in n.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if n.op_type != "Identity" or n.output[0] in read]  # shared fp32 copies left unread
    read = {name for n in nodes for name in n.input} | {o.name for o in graph.output}
    kept = [t for t in graph.initializer if t.name in read]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + arrays)
    return len(replaced)


def quantize_rows(path: Path) -> int:
    """Rewrite the ONNX file `path` (an fp32 export graph) into the per-row int8 form, in place;
    returns how many linear layers it replaced. Shapes are inferred first and kept: the operator
    has no schema in ONNX Runtime, which could not otherwise tell its outputs' shapes (the beam
    search operator needs the attention caches' head size), and the output keeps the name of the
    last node it replaces, so the inferred shape stays right."""
    import onnx

    from .onnx import router_matmuls

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    count = rewrite_graph(model.graph, set(router_matmuls(model.graph)))
    if not any(o.domain == kernel.DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(kernel.DOMAIN, 1))
    onnx.save(model, str(path))
    return count
