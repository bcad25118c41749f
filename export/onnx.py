"""Export a model folder to ONNX Runtime: any architecture of any search space.

An export folder holds
  encoder.onnx      encoder + the first decoder step (the BeamSearch "encoder" subgraph):
                    encoder_input_ids, encoder_attention_mask, decoder_input_ids ->
                    logits, encoder_hidden_states, present self/cross K/V of every decoder layer
  decoder.onnx      one decoder step with the KV cache: input_ids, encoder_attention_mask,
                    past self K/V, cross K/V -> logits, present self K/V
  beam_search.onnx  both wrapped in ONNX Runtime's com.microsoft.BeamSearch operator (T5 layout):
                    a whole translation in one `session.run`, usable with onnxruntime alone
  beam_search_shortlist*.onnx
                    with a shortlist in the model folder (shortlist.safetensors, copied): the
                    beam graph decoding over one sentence's shortlist, at fixed widths and
                    scattered (`onnx_shortlist`)
  weights.onnx.data every weight of the graphs, each stored once (ONNX external data:
                    the graphs share the decoder's and the encoder's tensors)
  config.json       the model's config (the architecture: engines read it from here only)
  spm.model, export_info.json (provenance: source checksum, tool versions, MoE forms, layout)
Batch, source and cache lengths are dynamic. Top-1 MoE layers export in the exact compact form of
`onnx_moe` (tokens sorted by expert, split into one block per expert, scattered back); routers
stay fp32 under int8 quantization. In int8 exports the decoder inside beam_search.onnx, which
translates one sentence at a time, writes its MoE layers as automoe's own int8 operator
(`kernel`; the folder then holds its library, libautomoe_ops.so, which sessions register with
`SessionOptions.register_custom_ops_library`), or stays compact where no C++ compiler can build
that; export_info.json records each graph's form ("moe_graphs") and the library
("custom_ops_library"). Why these forms and no others: docs/moe_dispatch.md.
Two int8 forms: "int8" quantizes every constant-weight MatMul with ONNX Runtime's
`quantize_dynamic` (one activation scale per tensor), "int8-row" writes every linear layer as
automoe's `Int8Linear` operator (one activation scale per row: a row's result does not depend on
the other rows of the call, so a list decodes in batches exactly as one sentence at a time;
`int8_rows`, docs/throughput.md). Both need the operator library where they use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from automoe.artifacts import staged_out_dir, write_export_info
from automoe.checkpoint import CONFIG_NAME, read_model_config
from automoe.modeling import DecoderState, MoETransformer

from . import kernel
from .int8_rows import quantize_rows
from .onnx_moe import moe_form
from .onnx_shortlist import add_to_export as add_shortlist_to_export

logger = logging.getLogger(__name__)

ENCODER_FILE, DECODER_FILE, BEAM_FILE = "encoder.onnx", "decoder.onnx", "beam_search.onnx"
BEAM_DECODER_FILE = "beam_decoder.onnx"  # written only while exporting: beam_search.onnx holds it
OPSET = 17
QUANTIZATIONS = (None, "int8", "int8-row")  # int8-row: every linear layer per row (`int8_rows`)
WEIGHTS_FILE = "weights.onnx.data"
# export_info.json "layout": 3 = weights stored once in WEIGHTS_FILE and, with a shortlist, the
# fixed-width shortlist beam graphs (2: the scattered one only; absent: each graph held its weights)
LAYOUT = 3
INT8 = ("int8", "int8-row")
MOE_DISPATCHES = ("compact", "kernel")
CUSTOM_OPSETS = {kernel.DOMAIN: 1}  # automoe.Top1MoE (the kernel form)


def _require(module: str, extra: str = "onnx"):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(f"{module} is needed for ONNX export/inference: pip install 'automoe[{extra}]'") from e


def kv_names(prefix: str, kind: str, layers: int) -> list[str]:
    """[prefix_key_kind_0, prefix_value_kind_0, ...] in the order the BeamSearch operator expects."""
    return [f"{prefix}_{t}_{kind}_{i}" for i in range(layers) for t in ("key", "value")]


class EncoderInit(nn.Module):
    """Encoder and first decoder step, with the BeamSearch T5 encoder-subgraph signature."""

    def __init__(self, model: MoETransformer):
        super().__init__()
        self.model = model

    def forward(self, encoder_input_ids, encoder_attention_mask, decoder_input_ids):
        encoded = self.model.encode(encoder_input_ids.long(), encoder_attention_mask)
        state = self.model.init_state(encoded)
        logits, state, _, _ = self.model.decode(decoder_input_ids.long(), state)  # [B, 1, V]
        outputs = [logits, encoded.states[-1]]
        for k, v in state.self_kv + state.cross_kv:
            outputs += [k, v]
        return tuple(outputs)


class DecoderStep(nn.Module):
    """One incremental decoder step, with the BeamSearch T5 decoder-subgraph signature."""

    def __init__(self, model: MoETransformer):
        super().__init__()
        self.model = model

    def forward(self, input_ids, encoder_attention_mask, *past):
        n = len(self.model.decoder_layers)
        self_kv = [(past[2 * i], past[2 * i + 1]) for i in range(n)]
        cross_kv = [(past[2 * n + 2 * i], past[2 * n + 2 * i + 1]) for i in range(n)]
        mask = encoder_attention_mask.bool()
        cross_masks = [mask.repeat(1, layer.last_k)[:, None, None, :] for layer in self.model.decoder_layers]
        logits, state, _, _ = self.model.decode(input_ids.long(), DecoderState(cross_kv, cross_masks, self_kv))
        outputs = [logits]
        for k, v in state.self_kv:
            outputs += [k, v]
        return tuple(outputs)


def _example(model: MoETransformer):
    """Small example inputs with padding, for tracing (batch 2, source 5, cache length 2)."""
    cfg = model.config
    src = torch.full((2, 5), 4 % cfg.vocab_size, dtype=torch.int32)
    src[0] = torch.arange(5, dtype=torch.int32) % cfg.vocab_size
    mask = torch.ones(2, 5, dtype=torch.int32)
    src[1, 3:], mask[1, 3:] = cfg.pad_id, 0
    start = torch.full((2, 1), cfg.bos_id, dtype=torch.int32)
    return src, mask, start


def moe_graphs(arch, moe_dispatch: str) -> dict[str, str]:
    """The MoE form each graph of an export gets from `moe_dispatch` (see `export_graphs`): "compact"
    everywhere, except that with "kernel" the decoder inside beam_search.onnx gets "kernel" when
    one of `arch`'s decoder layers is a top-1 layer with experts."""
    if moe_dispatch not in MOE_DISPATCHES:
        raise ValueError(f"moe_dispatch={moe_dispatch!r} must be one of {list(MOE_DISPATCHES)}")
    fused = moe_dispatch == "kernel" and arch.top_k == 1 and any(len(w) > 1 for w in arch.decoder_ffn)
    return {"encoder": "compact", "decoder": "compact", "beam_search": "kernel" if fused else "compact"}


def export_graphs(model: MoETransformer, out_dir: Path, moe_dispatch: str = "compact",
                  forms: dict[str, str] | None = None) -> dict[str, Path]:
    """Trace `model` into encoder.onnx and decoder.onnx (TorchScript exporter, opset 17), and the
    decoder graph for beam_search.onnx; returns their paths as {"encoder", "decoder", "beam_decoder"}.

    moe_dispatch: "compact" exports top-1 MoE layers as `onnx_moe.Top1MoE` (few graph nodes, exact);
    "kernel" (int8 exports) is "compact" except in the beam graph's decoder, which writes its top-1
    MoE layers as automoe's operator (`onnx_moe.Top1KernelMoE`, any widths, 8-bit expert weights).
    The beam graph decodes one sentence, so its steps route `beam` rows, where one fused kernel is
    faster than a dozen small ones; the encoder (whole sources) and decoder.onnx (batches of
    sentences) keep the compact form, whose experts run as ONNX Runtime's multi-threaded int8
    matrix products (the operator runs on one thread). The beam_decoder file is decoder.onnx
    itself unless its form differs (then `to_onnx` deletes it once the beam graph holds it).
    `forms` overrides `moe_graphs(model.config, moe_dispatch)`, for benchmarks that time a form in
    a graph where the exporter does not use it.
    """
    forms = forms or moe_graphs(model.config, moe_dispatch)
    n = len(model.decoder_layers)
    model = model.float().eval()
    src, mask, start = _example(model)
    enc_in = ["encoder_input_ids", "encoder_attention_mask", "decoder_input_ids"]
    enc_out = ["logits", "encoder_hidden_states"] + kv_names("present", "self", n) + kv_names("present", "cross", n)
    dyn = {"encoder_input_ids": {0: "batch", 1: "src"}, "encoder_attention_mask": {0: "batch", 1: "src"},
           "decoder_input_ids": {0: "batch"}, "logits": {0: "batch"}, "encoder_hidden_states": {0: "batch", 1: "src"}}
    for i in range(n):
        for t in ("key", "value"):
            dyn[f"present_{t}_self_{i}"] = {0: "batch"}
            dyn[f"present_{t}_cross_{i}"] = {0: "batch", 2: f"memory_{i}"}
    encoder_init = EncoderInit(model)
    paths = {"encoder": out_dir / ENCODER_FILE, "decoder": out_dir / DECODER_FILE}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python ints from shapes are expected
        with moe_form(model, forms["encoder"]):  # encoder layers see whole sources
            torch.onnx.export(encoder_init, (src, mask, start), str(paths["encoder"]), input_names=enc_in,
                              output_names=enc_out, dynamic_axes=dyn, opset_version=OPSET, dynamo=False,
                              custom_opsets=CUSTOM_OPSETS if forms["encoder"] == "kernel" else {})
        past = list(encoder_init(src, mask, start)[2:])
        step = DecoderStep(model)
        tokens = torch.full((2, 1), 5 % model.config.vocab_size, dtype=torch.int32)
        past = list(step(tokens, mask, *past)[1:]) + past[2 * n:]  # a cache of length 2
        dec_in = ["input_ids", "encoder_attention_mask"] + kv_names("past", "self", n) + kv_names("past", "cross", n)
        dec_out = ["logits"] + kv_names("present", "self", n)
        dyn = {"input_ids": {0: "batch"}, "encoder_attention_mask": {0: "batch", 1: "src"}, "logits": {0: "batch"}}
        for i in range(n):
            for t in ("key", "value"):
                dyn[f"past_{t}_self_{i}"] = {0: "batch", 2: "past"}
                dyn[f"past_{t}_cross_{i}"] = {0: "batch", 2: f"memory_{i}"}
                dyn[f"present_{t}_self_{i}"] = {0: "batch", 2: "past_plus_1"}
        decoders = {"decoder": forms["decoder"]}
        if forms["beam_search"] != forms["decoder"]:
            paths["beam_decoder"], decoders["beam_decoder"] = out_dir / BEAM_DECODER_FILE, forms["beam_search"]
        for name, form in decoders.items():
            with moe_form(model, form, one_token=True):  # input_ids is [batch, 1]: one token per row
                torch.onnx.export(step, (tokens, mask, *past), str(paths[name]), input_names=dec_in,
                                  output_names=dec_out, dynamic_axes=dyn, opset_version=OPSET, dynamo=False,
                                  custom_opsets=CUSTOM_OPSETS if form == "kernel" else {})
    paths.setdefault("beam_decoder", paths["decoder"])
    return paths


def fix_custom_op_shapes(path: Path) -> None:
    """Give the outputs of a graph's Top1MoE nodes their input's shape, in place (after quantization,
    which infers shapes again). The exporter names their dynamic dims afresh and the operator has
    no schema in ONNX Runtime, so it could not tell that a MoE layer's output has its input's shape
    and would not fuse the residual Add and LayerNorm after it."""
    onnx = _require("onnx")
    model = onnx.load(str(path))
    graph = model.graph
    known = {info.name: info for info in list(graph.value_info) + list(graph.input)}
    outputs = {node.output[0]: node for node in graph.node if node.op_type == kernel.OP_TYPE}
    kept = [info for info in graph.value_info if info.name not in outputs]
    for name, node in outputs.items():
        if node.input[0] in known:
            info = onnx.ValueInfoProto()
            info.CopyFrom(known[node.input[0]])
            info.name = name
            kept.append(info)
    del graph.value_info[:]
    graph.value_info.extend(kept)
    onnx.save(model, str(path))


def router_matmuls(graph) -> list[str]:
    """Names of the MoE router MatMuls of an ONNX graph: those with a constant weight whose output
    feeds a Softmax (attention's Softmax follows a MatMul of two activations, the output
    projection has no Softmax in the graph)."""
    constants = {t.name for t in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    softmax_inputs = {node.input[0] for node in graph.node if node.op_type == "Softmax"}
    return [node.name for node in graph.node if node.op_type == "MatMul" and node.input[1] in constants
            and node.output[0] in softmax_inputs]


def quantize_int8(path: Path) -> None:
    """Dynamic int8 quantization of every constant-weight MatMul except the routers, in place."""
    onnx = _require("onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    routers = router_matmuls(onnx.load(str(path)).graph)
    tmp = path.with_name(path.stem + ".int8.onnx")
    # The quantizer logs a line per tensor and a pre-processing hint per graph on the root logger:
    # hundreds of lines per export that say nothing about this graph, so they are held back.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=routers)
    finally:
        root.setLevel(level)
    os.replace(tmp, path)


def build_beam_search(encoder: Path, decoder: Path, out: Path, config) -> None:
    """Wrap the two graphs in a com.microsoft.BeamSearch node (model_type 1: encoder-decoder)."""
    onnx = _require("onnx")
    from onnx import TensorProto, helper

    enc, dec = onnx.load(str(encoder)), onnx.load(str(decoder))
    enc.graph.name, dec.graph.name = "encoder", "decoder"
    node = helper.make_node(
        "BeamSearch",
        ["input_ids", "max_length", "min_length", "num_beams", "num_return_sequences", "length_penalty",
         "repetition_penalty", "", "", "attention_mask"],
        ["sequences", "sequences_scores"], domain="com.microsoft", name="beam_search",
        eos_token_id=config.eos_id, pad_token_id=config.pad_id, decoder_start_token_id=config.bos_id,
        no_repeat_ngram_size=0, early_stopping=0, model_type=1, encoder=enc.graph, decoder=dec.graph,
    )
    scalar = lambda name, t: helper.make_tensor_value_info(name, t, [1])  # noqa: E731
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT32, ["batch", "src"]),
              scalar("max_length", TensorProto.INT32), scalar("min_length", TensorProto.INT32),
              scalar("num_beams", TensorProto.INT32), scalar("num_return_sequences", TensorProto.INT32),
              scalar("length_penalty", TensorProto.FLOAT), scalar("repetition_penalty", TensorProto.FLOAT),
              helper.make_tensor_value_info("attention_mask", TensorProto.INT32, ["batch", "src"])]
    outputs = [helper.make_tensor_value_info("sequences", TensorProto.INT32, ["batch", "returned", "length"]),
               helper.make_tensor_value_info("sequences_scores", TensorProto.FLOAT, ["batch", "returned"])]
    graph = helper.make_graph([node], "automoe_beam_search", inputs, outputs)
    opsets = {o.domain: o.version for o in list(enc.opset_import) + list(dec.opset_import)}
    opsets["com.microsoft"] = 1
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                              ir_version=enc.ir_version)
    onnx.save(model, str(out))


def copy_model_files(model_dir: Path, tmp: Path, meta: dict) -> None:
    """Copy config.json and the tokenizer so an export folder describes itself."""
    shutil.copyfile(model_dir / CONFIG_NAME, tmp / CONFIG_NAME)
    tok = (meta.get("tokenizer") or {}).get("file")
    if tok:
        shutil.copyfile(model_dir / tok, tmp / tok)


def _tensors(graph):
    """Every tensor a graph holds: its initializers and node attributes, subgraphs included."""
    onnx = _require("onnx")
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == onnx.AttributeProto.GRAPH:
                yield from _tensors(attr.g)


def store_weights_once(paths: list[Path], data_file: Path, min_bytes: int = 1024) -> None:
    """Move every tensor of at least `min_bytes` of the graphs at `paths` (in place) into
    `data_file`, one copy per distinct content (ONNX external data, which ONNX Runtime reads for
    initializers and constants of subgraphs too). The encoder graph, decoder.onnx and the two graphs
    inside beam_search.onnx hold the same decoder (and encoder) weights, so each is stored once;
    smaller tensors (shapes, scales) stay inside the graphs."""
    onnx = _require("onnx")
    from onnx.external_data_helper import set_external_data

    offsets: dict[tuple, int] = {}
    with open(data_file, "wb") as data:
        for path in paths:
            model = onnx.load(str(path))
            for tensor in _tensors(model.graph):
                size = len(tensor.raw_data)
                if size < min_bytes:
                    continue
                key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(tensor.raw_data).digest())
                if key not in offsets:
                    offsets[key] = data.seek(-(-data.tell() // 64) * 64)  # 64-byte aligned, as SIMD loads like
                    data.write(tensor.raw_data)
                set_external_data(tensor, data_file.name, offset=offsets[key], length=size)
                tensor.ClearField("raw_data")
            onnx.save(model, str(path))


def default_moe_dispatch(quantize: str | None) -> str:
    """How `to_onnx` exports MoE layers unless told: in int8 exports "kernel" (automoe's operator in
    the beam graph's decoder: the least decode-step overhead at batch 1, docs/moe_dispatch.md)
    where a C++ compiler builds it; the exact compact form everywhere else."""
    return "kernel" if quantize in INT8 and kernel.available() else "compact"


def is_current(folder: str | Path, quantize: str | None) -> bool:
    """Whether `folder` holds an ONNX export as this automoe writes it for `quantize` by default (the
    layout of the module docstring, the default MoE form of every graph): an export cache
    re-exports a folder that is not, e.g. one that an older automoe wrote with a copy of the weights
    in every graph, or one without automoe's operator where it builds now."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "export_info.json").read_text(encoding="utf-8"))
        arch, _ = read_model_config(folder)
    except (OSError, ValueError):
        return False
    return (info.get("target") == "onnxruntime" and info.get("quantization") == quantize
            and info.get("layout") == LAYOUT and info.get("moe_graphs") == moe_graphs(arch, default_moe_dispatch(quantize)))


def to_onnx(model_dir: str | Path, out_dir: str | Path, *, quantize: str | None = None, force: bool = False,
            moe_dispatch: str | None = None, verify: bool = True) -> Path:
    """Export a model folder to an ONNX Runtime folder (see the module docstring); returns it.
    `moe_dispatch` (default: `default_moe_dispatch(quantize)`) decides each graph's MoE form
    (`moe_graphs`, which refuses an unknown one). Where the "kernel" form is used, the operator
    library is built first (`kernel.build_library`: KernelUnavailable without a C++ compiler) and
    copied into the folder. The model folder's checksums are verified unless `verify=False`;
    export_info.json records the sha256 of every file written ("sha256")."""
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize={quantize!r} must be one of {list(QUANTIZATIONS)}")
    moe_dispatch = moe_dispatch or default_moe_dispatch(quantize)
    if moe_dispatch == "kernel" and quantize not in INT8:
        raise ValueError("moe_dispatch='kernel' stores 8-bit expert weights: use it with quantize='int8' or 'int8-row' "
                         "(an fp32 export keeps the exact 'compact' dispatch)")
    _require("onnxruntime")
    _require("onnx")
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    arch, meta = read_model_config(model_dir)
    model = MoETransformer.from_model_folder(model_dir, arch, meta, verify=verify)
    with staged_out_dir(out_dir, force) as tmp:
        forms = moe_graphs(arch, moe_dispatch)
        library = None
        if "kernel" in forms.values() or quantize == "int8-row":  # built first: no half-made folder
            try:
                library = kernel.build_library()
            except kernel.KernelUnavailable as e:
                if quantize != "int8-row":
                    raise
                raise kernel.KernelUnavailable(f"quantize='int8-row' runs automoe's operator library, which does not "
                                               f"build here: {e}. Export with quantize='int8' (ONNX Runtime's own "
                                               "int8) instead") from e
            shutil.copyfile(library, tmp / kernel.LIBRARY_FILE)
        graphs = export_graphs(model, tmp, forms=forms)
        if quantize in INT8:
            for path in dict.fromkeys(graphs.values()):  # beam_decoder may be decoder.onnx itself
                quantize_rows(path) if quantize == "int8-row" else quantize_int8(path)
        if forms["beam_search"] == "kernel":
            fix_custom_op_shapes(graphs["beam_decoder"])
        build_beam_search(graphs["encoder"], graphs["beam_decoder"], tmp / BEAM_FILE, arch)
        if graphs["beam_decoder"] != graphs["decoder"]:
            graphs["beam_decoder"].unlink()
        shortlist = add_shortlist_to_export(model_dir, tmp, arch)  # None without MODEL/shortlist.safetensors
        beams = [tmp / BEAM_FILE] + ([tmp / shortlist["beam_search"], *(tmp / f for f in shortlist["widths"].values())]
                                     if shortlist else [])
        store_weights_once([graphs["encoder"], graphs["decoder"], *beams], tmp / WEIGHTS_FILE)
        copy_model_files(model_dir, tmp, meta)
        write_export_info(tmp, model_dir, {
            "format": "automoe-onnx", "target": "onnxruntime", "layout": LAYOUT, "quantization": quantize,
            "opset": OPSET, "moe_dispatch": moe_dispatch, "moe_graphs": forms,
            "custom_ops_library": library and kernel.LIBRARY_FILE, "kernel_isa": library and kernel.isa(library),
            "files": {"encoder": ENCODER_FILE, "decoder": DECODER_FILE, "beam_search": BEAM_FILE, "weights": WEIGHTS_FILE},
            "shortlist": shortlist}, tokenizer=meta.get("tokenizer"), tools=("torch", "onnx", "onnxruntime"))
    logger.info("exported %s to %s (%s)", model_dir, out_dir, quantize or "fp32")
    return out_dir
