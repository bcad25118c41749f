"""The per-row int8 form of a linear layer, for benchmarks/int8_forms.py: activations quantized
with one scale per row, so a row's result does not depend on its batch-mates.

ONNX Runtime's dynamic quantization (`quantize_dynamic`, what automoe's int8 exports use) writes
each int8 MatMul as DynamicQuantizeLinear -> MatMulInteger (fused into DynamicQuantizeMatMul),
with one activation scale over the whole tensor. `rewrite_per_row` writes every constant-weight
MatMul as

    s   = max(ReduceMax(|x|, last axis) / 127, tiny)        one scale per row (shared by the
    q   = QuantizeLinear(x / s, 1, 128)  (uint8)              MatMuls that read the same x)
    y   = Cast(MatMulInteger(q, W8, 128)) * w_scale * s     W8: per-column symmetric int8

and, where x is the output of a Relu, s = max(x) / 255 with zero point 0. Every operation is
row-local and exact in integers, so a row's output is bitwise the same beside any other rows.
It is not used by the exports: on the shipped models it made a beam-4 sentence 18-32% slower
than the per-tensor form (docs/throughput.md), and `Translator` translates int8 lists one
sentence at a time, so the per-tensor scale only ever spans one sentence's beams.
"""

from __future__ import annotations

import numpy as np

MIN_SCALE = 1e-12  # an all-zero row quantizes to zeros with any scale; this keeps x / s finite


def _constants(graph) -> dict[str, np.ndarray]:
    """Every constant tensor of a graph by name: initializers and Constant node outputs."""
    from onnx import numpy_helper

    out = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                out[node.output[0]] = value
    return {name: numpy_helper.to_array(t) for name, t in out.items()}


def column_codes(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-column int8 quantization of a [K, N] weight (y = x @ weight), as automoe's
    MoE operator stores its experts (`kernel.quantize_columns`): (codes int8 [K, N], scales fp32 [N])."""
    from automoe.export.kernel import quantize_columns

    import torch

    codes, scales, _ = quantize_columns(torch.from_numpy(np.array(weight, np.float32)))
    return codes, scales


def rewrite_per_row(model, skip: set[str]) -> int:
    """Replace, in place, every MatMul of `model`'s main graph whose second input is a constant fp32
    2-D weight and whose name is not in `skip`, by the per-row int8 form of the module docstring.
    Returns how many MatMuls were rewritten."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    constants = _constants(graph)
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    shared = {"q_one": np.array(1.0, np.float32), "q_zero128": np.array(128, np.uint8),
              "q_zero0": np.array(0, np.uint8), "q_min_scale": np.array(MIN_SCALE, np.float32),
              "q_inv127": np.array(1 / 127, np.float32), "q_inv255": np.array(1 / 255, np.float32)}
    rows: dict[str, tuple[str, str, str]] = {}  # x -> (codes, row scale, zero point name)
    new_nodes, new_inits, count = [], [], 0

    def quantize_rows(x: str, prefix: str) -> list:
        """Nodes that quantize x per row; fills rows[x]."""
        relu = x in producers and producers[x].op_type == "Relu"
        nodes = []
        src = x
        if not relu:
            nodes.append(helper.make_node("Abs", [x], [prefix + "_abs"], name=prefix + "_abs"))
            src = prefix + "_abs"
        nodes += [
            helper.make_node("ReduceMax", [src], [prefix + "_max"], axes=[-1], keepdims=1, name=prefix + "_max"),
            helper.make_node("Mul", [prefix + "_max", "q_inv255" if relu else "q_inv127"], [prefix + "_s0"],
                             name=prefix + "_s0"),
            helper.make_node("Max", [prefix + "_s0", "q_min_scale"], [prefix + "_scale"], name=prefix + "_scale"),
            helper.make_node("Div", [x, prefix + "_scale"], [prefix + "_div"], name=prefix + "_div"),
        ]
        zero = "q_zero0" if relu else "q_zero128"
        nodes.append(helper.make_node("QuantizeLinear", [prefix + "_div", "q_one", zero], [prefix + "_q"],
                                      name=prefix + "_q"))
        rows[x] = (prefix + "_q", prefix + "_scale", zero)
        return nodes

    for node in graph.node:
        weight = constants.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        if weight is None or weight.ndim != 2 or weight.dtype != np.float32 or node.name in skip:
            new_nodes.append(node)
            continue
        count += 1
        name = node.name or f"matmul_{count}"
        x = node.input[0]
        if x not in rows:
            new_nodes += quantize_rows(x, f"{name}_rowq")
        q, scale, zero = rows[x]
        codes, w_scale = column_codes(weight)
        new_inits += [numpy_helper.from_array(codes, name + "_W8"), numpy_helper.from_array(w_scale, name + "_wscale")]
        consumers[node.input[1]] -= 1
        new_nodes += [
            helper.make_node("MatMulInteger", [q, name + "_W8", zero], [name + "_i32"], name=name + "_int8"),
            helper.make_node("Cast", [name + "_i32"], [name + "_f"], to=TensorProto.FLOAT, name=name + "_cast"),
            helper.make_node("Mul", [name + "_f", name + "_wscale"], [name + "_fw"], name=name + "_wscale"),
            helper.make_node("Mul", [name + "_fw", scale], [node.output[0]], name=name + "_rowscale"),
        ]
    unused = {name for name, n in consumers.items() if n == 0}
    kept_nodes = [n for n in new_nodes if not (n.op_type == "Constant" and n.output[0] in unused)]
    kept_inits = [t for t in graph.initializer if t.name not in unused]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits + new_inits + ([numpy_helper.from_array(v, k) for k, v in shared.items()]
                                                      if count else []))
    return count
