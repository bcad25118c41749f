"""automoe's own ONNX Runtime operator (export/csrc/automoe_ops.cc, automoe.export.kernel): it
computes what its PyTorch reference computes, on both its code paths, inside int8 export folders
that run with onnxruntime alone; and it fails with messages that say what to do."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from automoe.export import kernel
from automoe.moe import MoEFeedForward

from test_export import TINY, _beam_decoder, _LayerOutput, _optimized_ops, _save, check_int8_translations

pytestmark = pytest.mark.skipif(not kernel.available(), reason="no C++ compiler builds automoe's operator here")


def _session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(str(kernel.build_library()))
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def layer_graph(tmp_path_factory):
    """A MoE layer of experts of three odd widths over an odd d_model, exported in the kernel form."""
    from automoe.export.onnx import CUSTOM_OPSETS
    from automoe.export.onnx_moe import moe_form

    torch.manual_seed(0)
    layer = _LayerOutput(MoEFeedForward(37, (48, 21, 40)).eval())
    path = tmp_path_factory.mktemp("layer") / "layer.onnx"
    with torch.no_grad(), moe_form(layer, "kernel"):
        torch.onnx.export(layer, (torch.randn(3, 5, 37),), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "b", 1: "t"}}, opset_version=17, dynamo=False,
                          custom_opsets=CUSTOM_OPSETS)
    return layer, path


def test_kernel_layer_equals_its_reference_and_the_fp32_layer_up_to_int8(layer_graph):
    """The operator's output equals the eager reference (the reference top-1 layer with experts
    that compute in int8 as the kernel does) up to fp32 rounding, and the fp32 layer
    (`automoe.moe.top1_moe`) up to 8-bit quantization, for 1..15 rows (whole sources and one-token
    rows, all four-row blocks and their remainders); every expert gets rows."""
    import onnx

    from automoe.export.onnx_moe import moe_form

    layer, path = layer_graph
    ops = [node.op_type for node in onnx.load(str(path)).graph.node if node.op_type != "Constant"]
    assert ops == ["Top1MoE"]  # the whole layer, router included
    session = _session(path)
    torch.manual_seed(1)
    seen = set()
    for shape in [(3, 5), (1, 1), (2, 1), (1, 3), (4, 1), (1, 15)]:
        x = torch.randn(*shape, 37)
        got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        with torch.no_grad():
            fp32, _, choice = layer.layer(x)
            with moe_form(layer, "kernel"):
                reference = layer(x)
        seen |= set(choice.flatten().tolist())
        scale = fp32.abs().max()
        assert (got - reference).abs().max() <= 1e-5 * scale
        assert (got - fp32).abs().max() <= 0.03 * scale
    assert seen == {0, 1, 2}


def test_kernel_gives_each_concurrent_run_its_own_result(layer_graph):
    """One session serving several threads at once (a demo server does) keeps every call's rows
    apart: the operator's scratch memory is per thread, not per graph node."""
    from concurrent.futures import ThreadPoolExecutor

    _, path = layer_graph
    session = _session(path)
    inputs = [torch.randn(1 + i % 3, 30 + 7 * i, 37).numpy() for i in range(12)]  # long enough calls to overlap
    alone = [session.run(None, {"x": x})[0] for x in inputs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(20):
            together = list(pool.map(lambda x: session.run(None, {"x": x})[0], inputs))
            assert all(np.array_equal(a, b) for a, b in zip(alone, together))


def test_kernel_portable_path_computes_the_same(layer_graph, tmp_path):
    """AUTOMOE_KERNEL_PORTABLE=1 makes the library use its portable loops instead of AVX-512 VNNI (the
    path of CPUs without it): the same integers, so the same outputs."""
    _, path = layer_graph
    x = torch.randn(2, 7, 37).numpy()
    np.save(tmp_path / "x.npy", x)
    script = ("import sys, numpy as np, onnxruntime as ort\n"
              "o = ort.SessionOptions(); o.register_custom_ops_library(sys.argv[1])\n"
              "s = ort.InferenceSession(sys.argv[2], o, providers=['CPUExecutionProvider'])\n"
              "np.save(sys.argv[4], s.run(None, {'x': np.load(sys.argv[3])})[0])\n")
    library = str(kernel.build_library())
    outputs = []
    for name, env in [("fast", {}), ("portable", {"AUTOMOE_KERNEL_PORTABLE": "1"})]:
        args = [sys.executable, "-c", script, library, str(path), str(tmp_path / "x.npy"), str(tmp_path / f"{name}.npy")]
        done = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs.append(np.load(tmp_path / f"{name}.npy"))
    assert np.array_equal(outputs[0], outputs[1])


def test_kernel_refuses_inputs_that_do_not_fit(layer_graph, tmp_path):
    """A router weight or expert weights that do not match the widths and x fail with the
    operator's own message, not a crash."""
    import onnx
    import onnx.numpy_helper
    import onnxruntime as ort

    _, path = layer_graph
    model = onnx.load(str(path))
    x = np.zeros((1, 2, 37), np.float32)
    _session(path).run(None, {"x": x})
    tensors = {t.name: t for t in model.graph.initializer}
    tensors.update({n.output[0]: n.attribute[0].t for n in model.graph.node if n.op_type == "Constant"})
    node = next(n for n in model.graph.node if n.op_type == "Top1MoE")
    bad = tmp_path / "bad.onnx"
    for index, value, message in [(1, np.zeros((3, 36), np.float32), "the router weight must be \\[3, 37\\]"),
                                  (10, np.array([48, 21, 41], np.int64), "do not match widths")]:
        tensor = tensors[node.input[index]]
        original = onnx.TensorProto()
        original.CopyFrom(tensor)
        tensor.CopyFrom(onnx.numpy_helper.from_array(value, name=original.name))
        onnx.save(model, str(bad))
        tensor.CopyFrom(original)
        with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail, match=message):
            _session(bad).run(None, {"x": x})


def test_int8_export_runs_every_moe_layer_of_the_beam_graph_in_the_kernel(tmp_path):
    """The int8 default: the beam graph's decoder writes every top-1 layer with experts (equal or
    mixed widths) as the operator; the folder carries the library, names it in export_info.json and
    translates in a process that has onnxruntime alone; residual LayerNorms still fuse after it."""
    import onnx

    from automoe.export.onnx import default_moe_dispatch, router_matmuls, to_onnx

    assert default_moe_dispatch("int8") == "kernel" and default_moe_dispatch(None) == "compact"
    arch = TINY.largest().replace(vocab_size=1000, max_positions=96, decoder_embed_dim=16,
                                  decoder_ffn=((32, 32, 32), (40,), (24, 8)))
    model_dir = _save(arch, tmp_path / "moe")
    with pytest.raises(ValueError, match="use it with quantize='int8'"):
        to_onnx(model_dir, tmp_path / "fp32", moe_dispatch="kernel")
    out = to_onnx(model_dir, tmp_path / "q", quantize="int8")
    info = json.loads((out / "export_info.json").read_text())
    assert info["moe_dispatch"] == "kernel" and info["kernel_isa"] in ("avx512-vnni", "portable")
    assert info["moe_graphs"] == {"encoder": "compact", "decoder": "compact", "beam_search": "kernel"}
    assert (out / info["custom_ops_library"]).is_file()
    beam_decoder = _beam_decoder(out, tmp_path)
    graph = onnx.load(str(beam_decoder)).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("Top1MoE") == 2 and "ScatterND" not in ops
    assert not router_matmuls(graph)  # the routers are inside the operator, their weights fp32 inputs
    routers = {node.input[1] for node in graph.node if node.op_type == "Top1MoE"}
    initializers = {t.name: t.data_type for t in graph.initializer}
    initializers.update({n.output[0]: n.attribute[0].t.data_type for n in graph.node if n.op_type == "Constant"})
    assert {initializers[name] for name in routers} == {onnx.TensorProto.FLOAT}
    for name in ("encoder.onnx", "decoder.onnx"):
        assert "Top1MoE" not in [node.op_type for node in onnx.load(str(out / name)).graph.node]
    dense = _save(arch.replace(decoder_ffn=tuple((w[0],) for w in arch.decoder_ffn)), tmp_path / "dense")
    dense_out = to_onnx(dense, tmp_path / "dense-q", quantize="int8")
    assert json.loads((dense_out / "export_info.json").read_text())["custom_ops_library"] is None
    with pytest.raises(Exception, match="Top1MoE"):  # without the library ONNX Runtime cannot run it
        _optimized_ops(beam_decoder, tmp_path)
    fused = [_optimized_ops(beam_decoder, tmp_path, kernel.build_library()).count("SkipLayerNormalization"),
             _optimized_ops(dense_out / "decoder.onnx", tmp_path).count("SkipLayerNormalization")]
    assert fused[0] == fused[1] >= arch.decoder_layers
    check_int8_translations(model_dir, out)


def test_without_a_compiler_the_kernel_says_so_and_exports_fall_back_to_compact(monkeypatch, tmp_path):
    from automoe.export import onnx as onnx_export

    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("AUTOMOE_KERNEL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(kernel.KernelUnavailable, match="does not run"):
        kernel.build_library()
    monkeypatch.setattr(kernel, "available", lambda: False)
    assert onnx_export.default_moe_dispatch("int8") == "compact"
    # int8-row has no form without the operator: refused, naming the int8 export that works here
    from automoe.config import SearchSpace
    from automoe.random_model import save_random_model

    arch = SearchSpace.preset("tiny").largest().replace(vocab_size=300)
    model_dir = save_random_model(arch, tmp_path / "dense", seed=0)
    with pytest.raises(kernel.KernelUnavailable, match="quantize='int8-row' runs automoe's operator library.*"
                                                       "does not run.*quantize='int8'"):
        onnx_export.to_onnx(model_dir, tmp_path / "out", quantize="int8-row")
    assert not (tmp_path / "out").exists()
