"""Vocabulary-shortlist decoding inside ONNX Runtime's single-graph beam search.

`beam_search_shortlist.onnx` is beam_search.onnx with one more graph input, `shortlist` (int64
[K]: one sentence's target ids, `automoe.shortlist.Shortlist.ids`), read by both subgraphs as an
outer-scope value (the BeamSearch operator passes implicit inputs through to its subgraphs). In
each subgraph the output projection, whose weight is a constant [d, V] matrix (int8 in int8
exports), multiplies the decoder state by the K shortlisted columns only: a copy of the weight is
stored transposed, [V, d], so that the K rows are one contiguous Gather, then transposed back to
[d, K]. The K logits are scattered into a [N, 1, V] tensor of -inf, because the operator fixes the
vocabulary size from the subgraph's output shape when the session is created; its log-softmax and
top-k then see the shortlisted ids only. The K logits are the very numbers the full projection
computes for those ids (the same int8 weights, per-tensor scale and activation quantization), so
decoding equals masking the full logits: `serve.engines` does exactly that where it runs the
decoder-step graphs (batches), and the two paths agree.

This is the only form built so far; benchmarks/paper_scale.py measures it against the full graph.
The gather reads K x d int8 bytes per step instead of V x d, but the scatter and the operator's
softmax and top-k over V floats per beam row remain. Two untried forms would remove more
(docs/shortlist.md): K logits with ids mapped back (the operator needs a fixed K: padded size
buckets), and rows gathered once per sentence (carried as an extra cross-attention cache entry).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SHORTLIST_BEAM_FILE = "beam_search_shortlist.onnx"
INPUT = "shortlist"


def _producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def find_projection(graph, vocab_size: int):
    """The node that multiplies by the output projection: the MatMul / MatMulInteger upstream of
    the "logits" output whose constant B input is [d, vocab_size]. Returns (node, B initializer)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    producers = _producers(graph)
    stack, seen = ["logits"], set()
    while stack:
        name = stack.pop()
        node = producers.get(name)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type in ("MatMul", "MatMulInteger") and node.input[1] in inits:
            weight = inits[node.input[1]]
            if len(weight.dims) == 2 and weight.dims[1] == vocab_size:
                return node, numpy_helper.to_array(weight)
        stack.extend(i for i in node.input if i)
    raise ValueError(f"no output projection (a MatMul by a constant [d, {vocab_size}] matrix) upstream of "
                     f"'logits' in the {graph.name!r} graph")


def _check_per_tensor(graph, node) -> None:
    """int8 exports quantize the projection per tensor; a per-column scale would need gathering too."""
    from onnx import numpy_helper

    if node.op_type != "MatMulInteger" or len(node.input) < 4 or not node.input[3]:
        return
    inits = {t.name: t for t in graph.initializer}
    zp = inits.get(node.input[3])
    if zp is not None and numpy_helper.to_array(zp).size != 1:
        raise ValueError("the output projection is quantized per column; shortlist graphs need per-tensor "
                         "quantization (quantize_dynamic's default)")


def _drop_dead_nodes(graph, keep: set[str]) -> None:
    """Remove nodes none of whose outputs is read (by a node, a graph output or `keep`), and the
    initializers nothing reads any more; repeated until nothing changes."""
    outputs = {o.name for o in graph.output} | keep
    while True:
        read = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    read = {i for n in graph.node for i in n.input}
    unused = [t for t in graph.initializer if t.name not in read]
    for t in unused:
        graph.initializer.remove(t)


def shortlist_subgraph(graph, vocab_size: int) -> None:
    """Rewrite one BeamSearch subgraph in place (see the module docstring): the projection reads
    the `shortlist` columns of its weight, and "logits" is their scatter into -inf."""
    from onnx import TensorProto, helper, numpy_helper

    node, weight = find_projection(graph, vocab_size)
    _check_per_tensor(graph, node)
    rows = f"{node.input[1]}_rows"  # [V, d] so that a shortlist is contiguous rows
    graph.initializer.append(numpy_helper.from_array(weight.T.copy(), rows))
    picked, columns = f"{rows}_picked", f"{rows}_columns"
    gather = [helper.make_node("Gather", [rows, INPUT], [picked], axis=0, name="shortlist_gather"),  # [K, d]
              helper.make_node("Transpose", [picked], [columns], perm=[1, 0], name="shortlist_transpose")]  # [d, K]
    short = "logits_shortlist"  # [N, 1, K]
    for n in graph.node:  # the int8 chain's old end becomes dead and is dropped below
        for i, name in enumerate(n.output):
            if name == "logits":
                n.output[i] = short if node.op_type != "MatMulInteger" else "logits_full_unused"
    index = list(graph.node).index(node)
    if node.op_type == "MatMulInteger":
        # ONNX Runtime fuses the quantizer's DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul
        # chain into one DynamicQuantizeMatMul when B is a constant, and that kernel quantizes the
        # activations its own way: write the fused operator here too, so the K logits are the
        # full graph's numbers exactly
        quantizer = _producers(graph)[node.input[0]]
        weight_name = node.input[1]
        scale = weight_name[: -len("_quantized")] + "_scale" if weight_name.endswith("_quantized") else None
        if quantizer.op_type != "DynamicQuantizeLinear" or scale not in {t.name for t in graph.initializer}:
            raise ValueError(f"unexpected int8 output projection around {node.name!r} in the {graph.name!r} graph")
        fused = helper.make_node("DynamicQuantizeMatMul", [quantizer.input[0], columns, scale, node.input[3]],
                                 [short], domain="com.microsoft", name="shortlist_projection")
        graph.node.insert(index, fused)
    else:
        node.input[1] = columns
    for k, extra in enumerate(gather):
        graph.node.insert(index + k, extra)
    _drop_dead_nodes(graph, keep={short})
    graph.initializer.extend([
        numpy_helper.from_array(np.array([float("-inf")], dtype="float32"), "shortlist_neg_inf"),
        numpy_helper.from_array(np.array([0, 1], dtype="int64"), "shortlist_zero_one"),
        numpy_helper.from_array(np.array([vocab_size], dtype="int64"), "shortlist_vocab"),
    ])
    graph.node.extend([
        helper.make_node("Shape", [short], ["shortlist_short_shape"], name="shortlist_shape"),  # [N, 1, K]
        helper.make_node("Gather", ["shortlist_short_shape", "shortlist_zero_one"], ["shortlist_lead"], axis=0,
                         name="shortlist_lead_dims"),  # [N, 1]
        helper.make_node("Concat", ["shortlist_lead", "shortlist_vocab"], ["shortlist_full_shape"], axis=0,
                         name="shortlist_full_shape"),  # [N, 1, V]
        helper.make_node("Expand", ["shortlist_neg_inf", "shortlist_full_shape"], ["shortlist_blank"],
                         name="shortlist_blank"),  # -inf [N, 1, V]
        helper.make_node("Expand", [INPUT, "shortlist_short_shape"], ["shortlist_index"],
                         name="shortlist_index"),  # [N, 1, K]
        helper.make_node("ScatterElements", ["shortlist_blank", "shortlist_index", short], ["logits"], axis=2,
                         name="shortlist_scatter"),
    ])
    # the operator reads the vocabulary size from this output's static shape
    del graph.output[list(o.name for o in graph.output).index("logits")]
    graph.output.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, vocab_size]))
    kept = [v for v in graph.value_info if v.name not in ("logits", short)]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def build_shortlist_beam_search(beam_file: Path, out: Path, vocab_size: int) -> Path:
    """Write `out`: the BeamSearch model `beam_file` with a `shortlist` input (int64 [K]) that both
    of its subgraphs read (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(beam_file))
    node = next(n for n in model.graph.node if n.op_type == "BeamSearch")
    for attr in node.attribute:
        if attr.name in ("encoder", "decoder"):
            shortlist_subgraph(attr.g, vocab_size)
    model.graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.INT64, ["shortlist"]))
    onnx.save(model, str(out))
    logger.info("wrote %s", out)
    return out


def add_to_export(model_dir: Path, out_dir: Path, vocab_size: int) -> dict | None:
    """Carry a model folder's shortlist into an ONNX export folder being written (which already
    holds beam_search.onnx) and write beam_search_shortlist.onnx beside it; returns the
    export_info entry, or None when the model folder has no shortlist."""
    from automoe.shortlist import carry_into_export

    from .onnx import BEAM_FILE

    entry = carry_into_export(model_dir, out_dir)
    if entry is not None:
        build_shortlist_beam_search(out_dir / BEAM_FILE, out_dir / SHORTLIST_BEAM_FILE, vocab_size)
        entry["beam_search"] = SHORTLIST_BEAM_FILE
    return entry
