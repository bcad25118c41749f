"""The per-row int8 form ("int8-row" exports, automoe.export.int8_rows): automoe's Int8Linear and
Int8LinearColumns operators compute what their PyTorch reference computes, each row alone (bitwise
the same beside any other rows), on both code paths; the graph rewrite replaces every linear layer
but the routers; and an int8-row export translates a list in batches exactly as one sentence at a
time."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from automoe.export import kernel

pytestmark = pytest.mark.skipif(not kernel.available(), reason="no C++ compiler builds automoe's operator here")

K, N = 37, 45  # odd sizes: K is padded to 4, N to 16 in the kernel's layout


def _session(model):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.register_custom_ops_library(str(kernel.build_library()))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _linear_model(weight: np.ndarray, bias: np.ndarray, relu: int, columns: bool = False):
    """One Int8Linear node (or, with `columns`, one Int8LinearColumns node reading input "cols")."""
    from onnx import TensorProto, helper, numpy_helper

    from automoe.export.int8_rows import COLUMNS_OP, LINEAR_OP, column_arrays, linear_arrays

    arrays = linear_arrays(weight, bias)
    if columns:
        arrays["w"] = column_arrays(arrays["w"], *weight.shape)
    inits = [numpy_helper.from_array(arrays[k], k) for k in "wscb"]
    inputs = ["x", "w", "s", "c", "b"] + (["cols"] if columns else [])
    node = helper.make_node(COLUMNS_OP if columns else LINEAR_OP, inputs, ["y"], domain=kernel.DOMAIN,
                            **({} if columns else {"relu": relu}))
    graph_inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]
    if columns:
        graph_inputs.append(helper.make_tensor_value_info("cols", TensorProto.INT64, ["m"]))
    graph = helper.make_graph([node], "linear", graph_inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(kernel.DOMAIN, 1)],
                             ir_version=8)


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    return torch.randn(K, N) * K ** -0.5, torch.randn(N) * 0.1


@pytest.mark.parametrize("relu", [0, 1])
def test_int8_linear_equals_its_reference_and_fp32_up_to_int8(layer, relu):
    """For 1..130 rows (the few-row path and the many-row one, every remainder of four rows) and a
    leading batch shape, the operator equals `reference_linear` up to fp32 rounding and the fp32
    layer up to 8-bit quantization."""
    from automoe.export.int8_rows import reference_linear

    weight, bias = layer
    session = _session(_linear_model(weight.numpy(), bias.numpy(), relu))
    for shape in [(1,), (3,), (4,), (5,), (9,), (130,), (2, 3, 7)]:
        x = torch.randn(*shape, K)
        got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
        fp32 = x @ weight + bias
        fp32 = fp32.relu() if relu else fp32
        scale = fp32.abs().max()
        assert got.shape == fp32.shape
        assert (got - reference_linear(x, weight, bias, relu=bool(relu))).abs().max() <= 1e-5 * scale
        assert (got - fp32).abs().max() <= 0.03 * scale


def test_int8_linear_rows_do_not_depend_on_their_batch_mates(layer):
    """A row's output is bitwise the same alone and beside rows 50x larger, at any position, on
    the few-row and the many-row paths (what makes batched decoding equal one sentence at a time)."""
    weight, bias = layer
    session = _session(_linear_model(weight.numpy(), bias.numpy(), 0))
    x = np.random.default_rng(1).standard_normal((40, K)).astype(np.float32)
    x[3] *= 50
    alone = np.concatenate([session.run(None, {"x": x[i: i + 1]})[0] for i in range(len(x))])
    for rows in (2, 4, 7, 40):
        together = np.concatenate([session.run(None, {"x": x[i: i + rows]})[0] for i in range(0, len(x), rows)])
        assert np.array_equal(alone, together)


@pytest.mark.parametrize("K,N", [(1, 1), (4, 16), (5, 17), (384, 8000)])
def test_packed_depth_is_k_rounded_up_to_four(K, N):
    packed = kernel.pack_weights(np.ones((K, N), np.int8))
    assert kernel.packed_depth(packed, N) == -(-K // 4) * 4
    assert np.array_equal(kernel.unpack_weights(torch.from_numpy(packed), kernel.packed_depth(packed, N), N)[:K],
                          np.ones((K, N), np.int8))


def test_int8_linear_columns_are_bitwise_the_full_layers_columns(layer):
    """Int8LinearColumns (a shortlisted output projection) gives exactly Int8Linear's numbers for
    the columns asked, in their order, and refuses a column outside the layer."""
    import onnxruntime as ort

    weight, bias = layer
    full = _session(_linear_model(weight.numpy(), bias.numpy(), 0))
    picked = _session(_linear_model(weight.numpy(), bias.numpy(), 0, columns=True))
    x = np.random.default_rng(2).standard_normal((2, 5, K)).astype(np.float32)
    cols = np.array([44, 0, 17, 16, 3, 3], np.int64)
    assert np.array_equal(picked.run(None, {"x": x, "cols": cols})[0], full.run(None, {"x": x})[0][..., cols])
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail, match="column 45 is outside 0..44"):
        picked.run(None, {"x": x, "cols": np.array([1, 45], np.int64)})


def test_int8_linear_portable_path_computes_the_same(layer, tmp_path):
    """AUTOMOE_KERNEL_PORTABLE=1 (the loops of CPUs without AVX-512 VNNI) gives the same outputs,
    for both operators and both row paths."""
    import onnx

    weight, bias = layer
    for name, model in [("linear", _linear_model(weight.numpy(), bias.numpy(), 1)),
                        ("columns", _linear_model(weight.numpy(), bias.numpy(), 0, columns=True))]:
        onnx.save(model, str(tmp_path / f"{name}.onnx"))
    np.save(tmp_path / "x.npy", np.random.default_rng(3).standard_normal((9, K)).astype(np.float32))
    script = ("import sys, numpy as np, onnxruntime as ort\n"
              "o = ort.SessionOptions(); o.register_custom_ops_library(sys.argv[1])\n"
              "x = np.load(sys.argv[3]); out = []\n"
              "for name in ('linear', 'columns'):\n"
              "    s = ort.InferenceSession(sys.argv[2] + '/' + name + '.onnx', o, providers=['CPUExecutionProvider'])\n"
              "    feeds = {'x': x} if name == 'linear' else {'x': x, 'cols': np.arange(44, -1, -3)}\n"
              "    out += [s.run(None, feeds)[0], s.run(None, {k: v[:3] if k == 'x' else v for k, v in feeds.items()})[0]]\n"
              "np.savez(sys.argv[4], *out)\n")
    outputs = []
    for env in ({}, {"AUTOMOE_KERNEL_PORTABLE": "1"}):
        target = tmp_path / f"out{len(outputs)}.npz"
        done = subprocess.run([sys.executable, "-c", script, str(kernel.build_library()), str(tmp_path),
                               str(tmp_path / "x.npy"), str(target)], env={**os.environ, **env},
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs.append(np.load(target))
    assert all(np.array_equal(outputs[0][k], outputs[1][k]) for k in outputs[0].files)


def test_int8_linear_refuses_weights_that_do_not_fit(layer):
    """Weights whose sizes do not match x's last axis fail with the operator's message."""
    import onnxruntime as ort

    weight, bias = layer
    session = _session(_linear_model(weight.numpy(), bias.numpy(), 0))
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.Fail, match="do not match K = 41 and N = 45"):
        session.run(None, {"x": np.zeros((1, 41), np.float32)})


def test_rewrite_replaces_every_linear_layer_but_the_routers(tmp_path):
    """The rewrite of an exported MoE graph folds each bias Add and Relu into its Int8Linear node,
    keeps the router MatMuls fp32, and leaves only activation-by-activation MatMuls (attention)."""
    import onnx

    from automoe.config import SearchSpace
    from automoe.export.int8_rows import LINEAR_OP, quantize_rows
    from automoe.export.onnx import export_graphs, router_matmuls
    from automoe.modeling import MoETransformer

    arch = SearchSpace.preset("tiny").largest().replace(vocab_size=300, decoder_ffn=((24, 40), (40,), (8, 8)),
                                                       encoder_ffn=((40,), (8, 24), (24,)))
    torch.manual_seed(0)
    paths = export_graphs(MoETransformer(arch).eval(), tmp_path)
    before = onnx.load(str(paths["decoder"])).graph
    routers = len(router_matmuls(before))
    weights = {t.name for t in before.initializer}
    linear = sum(n.op_type == "MatMul" and n.input[1] in weights for n in before.node) - routers
    assert quantize_rows(paths["decoder"]) == linear
    after = onnx.load(str(paths["decoder"])).graph
    ops = [n.op_type for n in after.node]
    assert ops.count(LINEAR_OP) == linear and "Relu" not in ops
    assert len(router_matmuls(after)) == routers
    weights = {t.name for t in after.initializer}
    assert all(n.input[1] not in weights for n in after.node if n.op_type == "MatMul" and n.name not in
               router_matmuls(after))
