"""int8 forms of a linear layer in ONNX Runtime: speed at 4 and 128 rows, and batch independence.

A stack of 8 FFNs of the dense model's shape (384 -> 1536 -> 384, random weights) in four forms:
  fp32            MatMul (reference)
  per-tensor      DynamicQuantizeLinear -> MatMulInteger (what quantize_dynamic writes; ONNX
                  Runtime fuses it into DynamicQuantizeMatMul): one activation scale per tensor
  per-row         int8_per_row.py: one activation scale per row (batch-independent)
  nbits-32 / -128 com.microsoft.MatMulNBits, 8-bit weights in blocks of 32 / 128, int8 compute
                  (accuracy_level 4: activations quantized per row and block)
  int8-row        automoe's Int8Linear operator (export/int8_rows.py, what "int8-row" exports
                  write): one scale per row, bias and Relu folded in, AVX-512 VNNI where the CPU
                  has it (needs a C++ compiler; left out without one)
Rows: 4 (one sentence, beam 4) and 128 (32 sentences). Forms interleaved round-robin, 1 thread,
the minimum over repeats (on a shared host other load only adds time). Batch independence: the
first row of an 8-row batch whose fourth row is 50x larger, against the first row alone, bitwise.
Appends one record per form to benchmarks/results/int8_forms.jsonl.

    python benchmarks/int8_forms.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, commits, environment  # noqa: E402

FORMS = ("fp32", "per-tensor", "per-row", "nbits-32", "nbits-128", "int8-row")


def ffn_stack(d: int, width: int, layers: int, seed: int = 0):
    """An fp32 ONNX model: `layers` x (MatMul + Add -> Relu -> MatMul + Add), x [n, d] -> [n, d]."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        for j, (k, n) in enumerate(((d, width), (width, d))):
            name = f"l{i}_{j}"
            inits += [numpy_helper.from_array((rng.standard_normal((k, n)) * k ** -0.5).astype(np.float32), name + "_w"),
                      numpy_helper.from_array(np.zeros(n, np.float32), name + "_b")]
            nodes += [helper.make_node("MatMul", [x, name + "_w"], [name + "_m"], name=name),
                      helper.make_node("Add", [name + "_m", name + "_b"], [name + "_y"])]
            x = name + "_y"
            if j == 0:
                nodes.append(helper.make_node("Relu", [x], [name + "_r"]))
                x = name + "_r"
    graph = helper.make_graph(nodes, "ffn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", d])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["n", d])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def in_form(model, form: str, tmp: Path) -> bytes:
    """`model` written in `form` (see the module docstring), serialized."""
    import onnx

    if form == "fp32":
        return model.SerializeToString()
    if form == "per-row":
        from int8_per_row import rewrite_per_row

        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        rewrite_per_row(copy, skip=set())
        return copy.SerializeToString()
    if form == "int8-row":
        from automoe.export.int8_rows import rewrite_graph
        from automoe.export.kernel import DOMAIN

        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        rewrite_graph(copy.graph, skip=set())
        copy.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
        return copy.SerializeToString()
    if form == "per-tensor":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        src, dst = tmp / "fp32.onnx", tmp / "per-tensor.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"])
        return dst.read_bytes()
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    block = int(form.split("-")[1])
    config = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=4, bits=8)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the quantizer edits the model it is given
    quantizer = MatMulNBitsQuantizer(copy, algo_config=config)
    quantizer.process()
    return quantizer.model.model.SerializeToString()


def table(run: list[dict]) -> str:
    """Markdown for report.py: the int8 forms of one run (int8_forms.jsonl)."""
    if not run:
        return "_No int8 forms run yet (benchmarks/int8_forms.py)._"
    lines = ["| form | us per MatMul, 4 rows | us per MatMul, 128 rows | max error vs fp32 (4 rows) | batch-independent |",
             "|---|---:|---:|---:|---|"]
    for r in run:
        lines.append(f"| {r['form']} | {r['us_per_matmul_4_rows']:.1f} | {r['us_per_matmul_128_rows']:.1f} | "
                     f"{r['rel_error_4_rows']:.4f} | {'yes' if r['batch_independent'] else 'no'} |")
    r0 = run[0]
    return "\n".join(lines) + (f"\n\n{r0['layers']} FFNs {r0['d']} -> {r0['width']} -> {r0['d']}, random weights, "
                               f"1 thread, forms interleaved, the minimum of {r0['repeats']} runs; error relative to "
                               f"the largest fp32 output; {r0['cpu']}, commit {commits(run)}.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=40)
    p.add_argument("--out", default=str(RESULTS / "int8_forms.jsonl"))
    args = p.parse_args(argv)
    import logging
    import tempfile

    import onnxruntime as ort

    from automoe.export import kernel

    logging.getLogger().setLevel(logging.ERROR)  # the quantizers log a line per tensor
    env = environment()
    d, width, layers = 384, 1536, 8
    model = ffn_stack(d, width, layers)
    forms = FORMS if kernel.available() else tuple(f for f in FORMS if f != "int8-row")
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    if "int8-row" in forms:
        options.register_custom_ops_library(str(kernel.build_library()))
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {f: ort.InferenceSession(in_form(model, f, Path(tmp)), options, providers=["CPUExecutionProvider"])
                    for f in forms}
    rng = np.random.default_rng(1)
    records = {f: {"benchmark": "int8_forms", "form": f, "d": d, "width": width, "layers": layers, "threads": 1,
                   "repeats": args.repeats, **env} for f in forms}
    for rows in (4, 128):
        x = rng.standard_normal((rows, d)).astype(np.float32)
        reference = sessions["fp32"].run(None, {"x": x})[0]
        best = {f: float("inf") for f in forms}
        for i in range(args.repeats):
            for f in forms[i % len(forms):] + forms[: i % len(forms)]:
                start = time.perf_counter()
                out = sessions[f].run(None, {"x": x})[0]
                best[f] = min(best[f], time.perf_counter() - start)
        for f in forms:
            out = sessions[f].run(None, {"x": x})[0]
            records[f][f"us_per_matmul_{rows}_rows"] = round(best[f] * 1e6 / (2 * layers), 2)
            records[f][f"rel_error_{rows}_rows"] = round(float(np.abs(out - reference).max() / np.abs(reference).max()), 5)
    x = rng.standard_normal((8, d)).astype(np.float32)
    x[3] *= 50
    for f in forms:
        batched, alone = sessions[f].run(None, {"x": x})[0][0], sessions[f].run(None, {"x": x[:1]})[0][0]
        records[f]["batch_independent"] = bool(np.array_equal(batched, alone))
    for r in records.values():
        print(r["form"], r["us_per_matmul_4_rows"], r["us_per_matmul_128_rows"], r["batch_independent"])
    append_jsonl(args.out, list(records.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
