"""Vocabulary-shortlist decoding inside ONNX Runtime's single-graph beam search.

Two forms of the BeamSearch graph (beam_search.onnx) read one sentence's shortlist
(`automoe.shortlist.Shortlist.ids`: int64 ids, the special ids first at fixed positions) as an
extra graph input, `shortlist`, that both subgraphs read as an outer-scope value (the operator
passes implicit inputs through to its subgraphs). In both, the output projection, whose weight is
a constant [d, V] matrix (int8 in int8 exports), multiplies the decoder state by the shortlisted
columns only: a copy of the weight is stored transposed, [V, d], so that they are one contiguous
Gather, transposed back to [d, K]. The K logits are the very numbers the full projection computes
for those ids (the same int8 weights, per-tensor scale and activation quantization).

- **Fixed width** (`beam_search_shortlist_W.onnx`, one per width W of `WIDTHS` below the
  vocabulary size; the fast form): the subgraphs emit W logits, not V. The BeamSearch operator
  reads the vocabulary size from the subgraph's static output shape when the session is created,
  so each width is its own graph: a sentence's K ids are padded to the smallest width W >= K, and a
  second input, `shortlist_mask` (float [W]: 0, or -inf on the padding), is added to the logits.
  The operator's log-softmax, top-k and hypotheses then work over W positions instead of V, and
  the tokens it feeds back are positions, which each subgraph maps to ids with one Gather before
  its embedding; the caller maps the returned positions the same way. The operator's EOS, padding
  and start tokens are given as positions, which `Shortlist.ids` keeps fixed.
- **Scattered** (`beam_search_shortlist.onnx`, for a shortlist longer than the widest graph): the
  K logits are scattered into a [N, 1, V] tensor of -inf, so the operator's softmax and top-k still
  run over V.

Both equal masking the full logits to the shortlist, which `serve.engines` does where it runs the
decoder-step graphs (batches): the paths agree. docs/shortlist.md measures the forms.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .int8_rows import LINEAR_OP

logger = logging.getLogger(__name__)

SHORTLIST_BEAM_FILE = "beam_search_shortlist.onnx"
INPUT = "shortlist"
MASK_INPUT = "shortlist_mask"
# the test split's shortlists of the shipped dense model (top-k 50, 100 frequent) hold 487-938
# pieces for 80% of the sentences and at most 1,412: 256-wide steps pad by 128 on average
WIDTHS = (512, 768, 1024, 1280, 1536, 2048)
# the token input each subgraph embeds (T5 layout): the start token in the encoder subgraph
TOKEN_INPUTS = {"encoder": "decoder_input_ids", "decoder": "input_ids"}


def width_file(width: int) -> str:
    """File name of the fixed-width shortlist beam graph of `width` positions."""
    return f"beam_search_shortlist_{width}.onnx"


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
        if node.op_type == LINEAR_OP and node.input[2] in inits and inits[node.input[2]].dims == [vocab_size]:
            return node, numpy_helper.to_array(inits[node.input[1]])  # packed (int8_rows)
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


def _shortlisted_projection(graph, vocab_size: int) -> str:
    """Rewrite the projection of one BeamSearch subgraph in place so that it reads the `shortlist`
    columns of its weight; returns the name of its [N, 1, K] output, which nothing reads yet
    ("logits" is left without a producer for the caller to write)."""
    from onnx import helper, numpy_helper

    node, weight = find_projection(graph, vocab_size)
    if node.op_type == LINEAR_OP:
        return _shortlisted_linear(graph, node, weight, vocab_size)
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
    return short


def _shortlisted_linear(graph, node, packed: np.ndarray, vocab_size: int) -> str:
    """`_shortlisted_projection` for an int8-row export: the projection's Int8Linear node becomes an
    Int8LinearColumns node over the `shortlist` columns (the same per-row arithmetic, so the K logits
    are bitwise the full projection's numbers for those ids)."""
    from onnx import helper, numpy_helper

    from .int8_rows import COLUMNS_OP, column_arrays
    from .kernel import DOMAIN, packed_depth

    if node.output[0] != "logits":
        raise ValueError(f"the output projection {node.name!r} of the {graph.name!r} graph does not write 'logits' "
                         "itself; export the model again with this automoe")
    k4 = packed_depth(packed, vocab_size)
    columns = f"{node.input[1]}_columns"
    graph.initializer.append(numpy_helper.from_array(column_arrays(packed, k4, vocab_size), columns))
    short = "logits_shortlist"
    node.output[0] = "logits_full_unused"
    graph.node.insert(list(graph.node).index(node), helper.make_node(
        COLUMNS_OP, [node.input[0], columns, *node.input[2:5], INPUT], [short], domain=DOMAIN,
        name="shortlist_projection"))
    _drop_dead_nodes(graph, keep={short})
    return short


def _set_logits_output(graph, width: int, *hidden: str) -> None:
    """Declare "logits" [batch, 1, width]: the operator reads its vocabulary size from this shape."""
    from onnx import TensorProto, helper

    del graph.output[list(o.name for o in graph.output).index("logits")]
    graph.output.insert(0, helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, width]))
    kept = [v for v in graph.value_info if v.name not in ("logits", *hidden)]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def shortlist_subgraph(graph, vocab_size: int) -> None:
    """Rewrite one BeamSearch subgraph in place into the scattered form (module docstring): the
    projection reads the `shortlist` columns of its weight, and "logits" is their scatter into -inf."""
    from onnx import helper, numpy_helper

    short = _shortlisted_projection(graph, vocab_size)
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
    _set_logits_output(graph, vocab_size, short)


def width_subgraph(graph, vocab_size: int, width: int, token_input: str) -> None:
    """Rewrite one BeamSearch subgraph in place into the fixed-width form (module docstring): W
    logits, the `shortlist_mask` added, and the fed-back positions in `token_input` mapped to ids."""
    from onnx import helper

    short = _shortlisted_projection(graph, vocab_size)
    graph.node.append(helper.make_node("Add", [short, MASK_INPUT], ["logits"], name="shortlist_mask_padding"))
    ids = f"{token_input}_shortlist_ids"
    readers = [n for n in graph.node if token_input in n.input]
    if not readers:
        raise ValueError(f"nothing reads {token_input!r} in the {graph.name!r} graph")
    for n in readers:
        n.input[:] = [ids if name == token_input else name for name in n.input]
    graph.node.insert(0, helper.make_node("Gather", [INPUT, token_input], [ids], axis=0, name="shortlist_positions"))
    _set_logits_output(graph, width, short)


def _rewrite_beam_search(beam_file: Path, out: Path, rewrite, inputs: list, **attributes: int) -> Path:
    """Write `out`: the BeamSearch model `beam_file` with `rewrite(graph, subgraph_name)` applied to
    both subgraphs, `inputs` (value infos) added, and the operator's integer `attributes` replaced."""
    import onnx

    model = onnx.load(str(beam_file))
    node = next(n for n in model.graph.node if n.op_type == "BeamSearch")
    for attr in node.attribute:
        if attr.name in TOKEN_INPUTS:
            rewrite(attr.g, attr.name)
        elif attr.name in attributes:
            attr.i = attributes[attr.name]
    model.graph.input.extend(inputs)
    onnx.save(model, str(out))
    logger.info("wrote %s", out)
    return out


def build_shortlist_beam_search(beam_file: Path, out: Path, vocab_size: int) -> Path:
    """Write `out`: the BeamSearch model `beam_file` in the scattered form, with a `shortlist`
    input (int64 [K]) that both of its subgraphs read (see the module docstring)."""
    from onnx import TensorProto, helper

    return _rewrite_beam_search(beam_file, out, lambda graph, _: shortlist_subgraph(graph, vocab_size),
                                [helper.make_tensor_value_info(INPUT, TensorProto.INT64, ["shortlist"])])


def build_width_beam_search(beam_file: Path, out: Path, vocab_size: int, width: int,
                            special_ids: list[int], config) -> Path:
    """Write `out`: the BeamSearch model `beam_file` in the fixed-width form (module docstring),
    inputs `shortlist` (int64 [width]) and `shortlist_mask` (float [width]). `special_ids` are the
    ids every shortlist starts with (`Shortlist.special_ids`), so the operator's EOS, padding and
    start tokens are their positions."""
    from onnx import TensorProto, helper

    missing = {config.eos_id, config.pad_id, config.bos_id} - set(special_ids)
    if missing:
        raise ValueError(f"the shortlist's special ids {special_ids} lack the model's {sorted(missing)}")
    position = special_ids.index
    return _rewrite_beam_search(
        beam_file, out, lambda graph, name: width_subgraph(graph, vocab_size, width, TOKEN_INPUTS[name]),
        [helper.make_tensor_value_info(INPUT, TensorProto.INT64, [width]),
         helper.make_tensor_value_info(MASK_INPUT, TensorProto.FLOAT, [width])],
        eos_token_id=position(config.eos_id), pad_token_id=position(config.pad_id),
        decoder_start_token_id=position(config.bos_id))


def fit_width(ids: np.ndarray, widths: dict[int, str]) -> tuple[str, dict[str, np.ndarray], np.ndarray] | None:
    """For one sentence's shortlist `ids`, the fixed-width graph that holds it (file name), its
    two inputs (the ids padded with their first id, the mask -inf on the padding) and the padded
    ids that map the operator's output positions back; None when no width holds it."""
    width = min((w for w in widths if w >= len(ids)), default=None)
    if width is None:
        return None
    padded = np.full(width, ids[0], dtype=np.int64)
    padded[: len(ids)] = ids
    mask = np.zeros(width, dtype=np.float32)
    mask[len(ids):] = float("-inf")
    return widths[width], {INPUT: padded, MASK_INPUT: mask}, padded


def add_to_export(model_dir: Path, out_dir: Path, config) -> dict | None:
    """Carry a model folder's shortlist into an ONNX export folder being written (which already
    holds beam_search.onnx) and write the shortlist beam graphs beside it: the scattered form and
    one fixed-width form per width of `WIDTHS` below the vocabulary size. Returns the export_info
    entry ("beam_search": the scattered graph, "widths": {width: file}), or None when the model
    folder has no shortlist."""
    from automoe.shortlist import Shortlist, carry_into_export

    from .onnx import BEAM_FILE

    entry = carry_into_export(model_dir, out_dir)
    if entry is None:
        return None
    beam = out_dir / BEAM_FILE
    build_shortlist_beam_search(beam, out_dir / SHORTLIST_BEAM_FILE, config.vocab_size)
    entry["beam_search"] = SHORTLIST_BEAM_FILE
    specials = Shortlist.load(out_dir / entry["file"]).special_ids
    entry["widths"] = {}
    for width in (w for w in WIDTHS if w < config.vocab_size):
        build_width_beam_search(beam, out_dir / width_file(width), config.vocab_size, width, specials, config)
        entry["widths"][str(width)] = width_file(width)
    return entry
