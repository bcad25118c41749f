"""Export parity: ONNX Runtime and CTranslate2 give the tokens PyTorch gives (tiny random models)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from automoe.config import SearchSpace
from automoe.modeling import MoETransformer
from automoe.random_model import save_random_model
from automoe.serve import Translator

DATA = Path(__file__).parent / "data" / "bible-en-de"
SOURCES = [line.strip() for line in (DATA / "test.src").read_text().splitlines()[:22]] + ["Amen.", "Jesus wept."]
TINY = SearchSpace.preset("tiny")


def _save(arch, path, seed=0, sharpen=4.0):
    return save_random_model(arch, path, seed=seed, sharpen=sharpen, tokenizer_file=DATA / "spm.model")


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory):
    arch = TINY.largest().replace(vocab_size=1000, max_positions=96, decoder_embed_dim=16,
                                  encoder_ffn=((40, 8), (24,), (8, 24, 40)), decoder_ffn=((24, 40, 8), (40,), (8, 8)),
                                  decoder_cross_last_k=(2, 1, 2), decoder_heads=(2, 4, 2))
    return _save(arch, tmp_path_factory.mktemp("m") / "moe")


@pytest.fixture(scope="module")
def onnx_dir(moe_dir, tmp_path_factory):
    from automoe.export.onnx import to_onnx

    return to_onnx(moe_dir, tmp_path_factory.mktemp("e") / "moe-onnx")


@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    arch = TINY.largest().replace(vocab_size=1000, max_positions=96, decoder_embed_dim=16,
                                  encoder_ffn=((40,), (8,), (24,)), decoder_ffn=((8,), (40,), (24,)),
                                  encoder_heads=(2, 4, 2), decoder_heads=(4, 2, 2), decoder_cross_heads=(2, 2, 4))
    return _save(arch, tmp_path_factory.mktemp("d") / "dense", seed=1)


@pytest.mark.parametrize("beam", [1, 4])
def test_onnx_tokens_equal_torch_batched_and_single(moe_dir, onnx_dir, beam):
    torch_tr, ort_tr = Translator.from_pretrained(moe_dir), Translator.from_pretrained(onnx_dir)
    assert ort_tr.engine == "onnxruntime"
    expected = torch_tr.translate(SOURCES, beam=beam, max_length=24)
    assert ort_tr.translate(SOURCES, beam=beam, max_length=24) == expected  # one batch (python beam search)
    assert [ort_tr.translate([s], beam=beam, max_length=24)[0] for s in SOURCES] == expected  # in-graph BeamSearch
    assert len(set(expected)) > 5  # the sentences really differ


def test_onnx_decoder_step_logprobs_match(moe_dir, onnx_dir):
    from automoe.export.onnx import DecoderStep, EncoderInit
    from automoe.serve.engines import OnnxEngine

    model = MoETransformer.from_pretrained(moe_dir)
    engine = OnnxEngine(onnx_dir)
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 1000, (3, 9), generator=g, dtype=torch.int32)
    mask = torch.ones_like(src)
    src[0, 6:], mask[0, 6:] = 0, 0
    start = torch.full((3, 1), 2, dtype=torch.int32)
    ref = EncoderInit(model)(src, mask, start)
    got = engine.encoder.run(None, {"encoder_input_ids": src.numpy(), "encoder_attention_mask": mask.numpy(),
                                    "decoder_input_ids": start.numpy()})
    n = model.config.decoder_layers
    past_t, past_o = list(ref[2:]), got[2:]
    step = DecoderStep(model)
    for _ in range(6):
        tokens = torch.randint(4, 1000, (3, 1), generator=g, dtype=torch.int32)
        r = step(tokens, mask, *past_t)
        o = engine.decoder.run(None, {"input_ids": tokens.numpy(), "encoder_attention_mask": mask.numpy(),
                                      **dict(zip(engine.past_self_names + engine.past_cross_names, past_o))})
        lp_r = r[0].log_softmax(-1).detach().numpy()
        lp_o = torch.from_numpy(o[0]).log_softmax(-1).numpy()
        assert np.abs(lp_r - lp_o).max() < 1e-4
        past_t, past_o = list(r[1:]) + past_t[2 * n:], list(o[1:]) + list(past_o[2 * n:])


def test_onnx_folder_is_self_describing_and_refuses_overwrite(moe_dir, onnx_dir):
    from automoe.checkpoint import read_model_config
    from automoe.export.onnx import is_current, to_onnx

    info = json.loads((onnx_dir / "export_info.json").read_text())
    assert info["target"] == "onnxruntime" and info["quantization"] is None and len(info["source_sha256"]) == 64
    assert "arch" not in info and read_model_config(onnx_dir) == read_model_config(moe_dir)  # config.json only
    assert {"encoder.onnx", "decoder.onnx", "beam_search.onnx", "weights.onnx.data", "config.json", "spm.model"} <= {
        p.name for p in onnx_dir.iterdir()}
    assert is_current(onnx_dir, None) and not is_current(onnx_dir, "int8")
    with pytest.raises(FileExistsError, match="pass force=True"):
        to_onnx(moe_dir, onnx_dir)
    # force replaces an earlier export only: a model folder given as the output by mistake survives
    before = sorted(p.name for p in moe_dir.iterdir())
    with pytest.raises(FileExistsError, match="is not an export folder .* replaces only an earlier export"):
        to_onnx(moe_dir, moe_dir, force=True)
    assert sorted(p.name for p in moe_dir.iterdir()) == before
    with pytest.raises(FileExistsError, match="is a file, not a folder"):
        to_onnx(moe_dir, moe_dir / "config.json", force=True)


def test_onnx_int8_runs_and_keeps_router_fp32(moe_dir, tmp_path):
    import onnx

    from automoe.checkpoint import read_model_config
    from automoe.export.onnx import router_matmuls, to_onnx

    out = to_onnx(moe_dir, tmp_path / "q", quantize="int8")
    graph = onnx.load(str(out / "decoder.onnx")).graph
    ops = {node.op_type for node in graph.node}
    assert "DynamicQuantizeMatMul" in ops or "MatMulInteger" in ops
    moe_layers = sum(len(widths) > 1 for widths in read_model_config(moe_dir)[0].decoder_ffn)
    assert len(router_matmuls(graph)) == moe_layers == 2  # each still a plain fp32 MatMul
    assert len(Translator.from_pretrained(out).translate(SOURCES[:4], beam=2, max_length=10)) == 4


def test_onnx_moe_layers_export_in_the_compact_form(onnx_dir):
    """Top-1 MoE layers trace as one sort / split / scatter each (export/onnx_moe.py), not as the
    per-expert NonZero / Gather dispatch: every decoder MoE layer costs a fixed number of nodes."""
    import onnx

    graph = onnx.load(str(onnx_dir / "decoder.onnx")).graph
    count = lambda op: sum(node.op_type == op for node in graph.node)  # noqa: E731
    assert count("NonZero") == 0
    assert count("TopK") == count("ScatterND") == count("Split") == 2  # the two decoder MoE layers


def _optimized_ops(onnx_file: Path, tmp_path: Path, library: Path | None = None) -> list[str]:
    """Op types of `onnx_file` after ONNX Runtime's graph optimizations (fusions), with the custom
    operator `library` registered if given."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    if library:
        options.register_custom_ops_library(str(library))
    options.optimized_model_filepath = str(tmp_path / f"{onnx_file.parent.name}-optimized.onnx")
    ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    # op types only: its weights stay where the export keeps them (external data beside the export)
    return [node.op_type for node in onnx.load(options.optimized_model_filepath, load_external_data=False).graph.node]


def test_onnx_moe_output_keeps_residual_layer_norm_fusion(moe_dir, tmp_path):
    """ONNX Runtime fuses a residual Add + LayerNormalization into SkipLayerNormalization only when
    both Add inputs have the same known shape: the MoE output must keep the batch shape, so the
    int8 decoder step of a MoE model fuses as many as the same model with dense FFNs (one node per
    MoE layer and step)."""
    from automoe.checkpoint import read_model_config
    from automoe.export.onnx import to_onnx

    arch = read_model_config(moe_dir)[0]
    dense = arch.replace(encoder_ffn=tuple((w[0],) for w in arch.encoder_ffn),
                         decoder_ffn=tuple((w[0],) for w in arch.decoder_ffn))
    dense_dir = _save(dense, tmp_path / "dense")
    fused = {name: _optimized_ops(to_onnx(folder, tmp_path / f"{name}-int8", quantize="int8") / "decoder.onnx",
                                  tmp_path).count("SkipLayerNormalization")
             for name, folder in (("moe", moe_dir), ("dense", dense_dir))}
    assert fused["moe"] == fused["dense"] >= arch.decoder_layers


@pytest.mark.parametrize("beam", [1, 4])
def test_ct2_tokens_equal_torch_for_dense_subnets(dense_dir, tmp_path, beam):
    from automoe.export.ctranslate2 import to_ctranslate2

    out = to_ctranslate2(dense_dir, tmp_path / "ct2")
    expected = Translator.from_pretrained(dense_dir).translate(SOURCES, beam=beam, max_length=24)
    assert Translator.from_pretrained(out).translate(SOURCES, beam=beam, max_length=24) == expected
    assert len(set(expected)) > 5


def test_ct2_refuses_moe_and_deep_cross_attention_with_every_reason(moe_dir, tmp_path):
    from automoe.export.checks import UnsupportedArchitecture
    from automoe.export.ctranslate2 import to_ctranslate2

    with pytest.raises(UnsupportedArchitecture) as e:
        to_ctranslate2(moe_dir, tmp_path / "x")
    msg = str(e.value)
    assert "encoder layers 0 (2 experts), 2 (3 experts) are MoE layers" in msg
    assert "decoder layers 0 (3 experts), 2 (2 experts) are MoE layers" in msg
    assert "decoder layers 0 (k=2), 2 (k=2) attend to the last k>1 encoder layers" in msg
    assert not (tmp_path / "x").exists()  # refused before any work


def test_model_folder_exports_on_the_fly(dense_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOMOE_CACHE", str(tmp_path))
    tr = Translator.from_pretrained(dense_dir, engine="ctranslate2")
    assert tr.engine == "ctranslate2" and len(list((tmp_path / "exports").iterdir())) == 1
    assert tr.translate(["", "Amen."], beam=2, max_length=8)[0] == ""
    # an ONNX export cached by an older automoe with another MoE form is exported again, in place
    Translator.from_pretrained(dense_dir, engine="onnxruntime", quantize="int8")
    info_path = next((tmp_path / "exports").glob("*-onnxruntime-int8")) / "export_info.json"
    old_info = json.loads(info_path.read_text())
    del old_info["moe_graphs"]  # an export of session 13 recorded the form of int8 exports as moe_dispatch only
    info_path.write_text(json.dumps(old_info))
    Translator.from_pretrained(dense_dir, engine="onnxruntime", quantize="int8")
    assert json.loads(info_path.read_text())["moe_graphs"]["beam_search"] == "compact"  # dense: nothing to fuse
    assert len(list((tmp_path / "exports").iterdir())) == 2


def test_exports_store_each_weight_once_and_know_older_layouts(moe_dir, tmp_path):
    """An int8 export stores every weight once: encoder.onnx, decoder.onnx and the two graphs inside
    beam_search.onnx refer to one copy in weights.onnx.data (the decoder's weights are in three of
    them), and no graph holds a tensor of 1 KiB or more itself. A folder of the older layout (a copy
    of the weights in every graph, no "layout" in export_info.json) is not current: a cache
    exports it again."""
    import collections
    import hashlib

    import onnx

    from automoe.export.onnx import WEIGHTS_FILE, _tensors, is_current, to_onnx

    out = to_onnx(moe_dir, tmp_path / "q", quantize="int8")
    data = (out / WEIGHTS_FILE).read_bytes()
    places, uses, inline = {}, collections.Counter(), 0  # per distinct content: where it is stored, how often used
    for name in ("encoder.onnx", "decoder.onnx", "beam_search.onnx"):
        for tensor in _tensors(onnx.load(str(out / name), load_external_data=False).graph):
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                inline = max(inline, len(tensor.raw_data))
                continue
            where = {e.key: e.value for e in tensor.external_data}
            offset, length = int(where["offset"]), int(where["length"])
            content = hashlib.sha256(data[offset: offset + length]).digest()
            places.setdefault(content, set()).add((offset, length))
            uses[content] += 1
    assert inline < 1024 and all(len(stored) == 1 for stored in places.values())  # one copy of each content
    stored = sum(length for (_, length), in places.values())
    assert stored <= len(data) < stored + 64 * len(places)  # nothing else in the file but alignment
    assert max(uses.values()) == 4  # a decoder weight: encoder.onnx, decoder.onnx, both graphs of beam_search.onnx
    info_path = out / "export_info.json"
    assert is_current(out, "int8")
    old = json.loads(info_path.read_text())
    del old["layout"]
    info_path.write_text(json.dumps(old))
    assert not is_current(out, "int8")


BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in {'torch', 'automoe'}:
            raise ImportError('not allowed here: ' + name)
sys.meta_path.insert(0, Block())
"""

ORT_SCRIPT = BLOCK + """
import numpy as np, onnxruntime as ort, sentencepiece as spm
import json
folder = sys.argv[1]
sp = spm.SentencePieceProcessor(model_file=folder + '/spm.model')
options = ort.SessionOptions()
library = json.load(open(folder + '/export_info.json')).get('custom_ops_library')
if library:  # automoe's int8 MoE operator, shipped in the folder
    options.register_custom_ops_library(folder + '/' + library)
session = ort.InferenceSession(folder + '/beam_search.onnx', options, providers=['CPUExecutionProvider'])
ids = np.array([sp.encode('Jesus wept.') + [sp.eos_id()]], dtype=np.int32)
out = session.run(None, {'input_ids': ids, 'attention_mask': np.ones_like(ids),
    'max_length': np.array([12], np.int32), 'min_length': np.array([1], np.int32),
    'num_beams': np.array([4], np.int32), 'num_return_sequences': np.array([1], np.int32),
    'length_penalty': np.array([1.0], np.float32), 'repetition_penalty': np.array([1.0], np.float32)})
tokens = [t for t in out[0][0][0][1:].tolist() if t not in (0,)]
tokens = tokens[: tokens.index(3)] if 3 in tokens else tokens
print(sp.decode(tokens))
"""

CT2_SCRIPT = BLOCK + """
import ctranslate2, sentencepiece as spm
folder = sys.argv[1]
sp = spm.SentencePieceProcessor(model_file=folder + '/spm.model')
translator = ctranslate2.Translator(folder)
result = translator.translate_batch([sp.encode('Jesus wept.', out_type=str)], beam_size=4, max_decoding_length=11)
print(sp.decode(result[0].hypotheses[0]))
"""


def check_int8_translations(model_dir: Path, out: Path) -> None:
    """An int8 export `out` of `model_dir` mostly translates as PyTorch does, batched (decoder.onnx)
    and one sentence at a time (the beam graph), and runs in a process that has onnxruntime and
    sentencepiece alone."""
    torch_tr, ort_tr = Translator.from_pretrained(model_dir), Translator.from_pretrained(out)
    expected = torch_tr.translate(SOURCES, beam=4, max_length=16)
    batched = ort_tr.translate(SOURCES, beam=4, max_length=16)
    single = [ort_tr.translate([s], beam=4, max_length=16)[0] for s in SOURCES]  # in-graph BeamSearch
    assert sum(a == b for a, b in zip(batched, expected)) >= len(SOURCES) * 0.8
    assert sum(a == b for a, b in zip(single, batched)) >= len(SOURCES) * 0.8
    alone = subprocess.run([sys.executable, "-c", ORT_SCRIPT, str(out)], capture_output=True, text=True)
    assert alone.returncode == 0, alone.stderr
    assert alone.stdout.strip() == ort_tr.translate(["Jesus wept."], beam=4, max_length=11)[0].strip()


def test_export_folders_run_without_automoe_or_torch(moe_dir, onnx_dir, dense_dir, tmp_path):
    from automoe.checkpoint import read_model_config
    from automoe.export.ctranslate2 import is_current, read_config, to_ctranslate2

    expected = Translator.from_pretrained(moe_dir).translate(["Jesus wept."], beam=4, max_length=11)[0]
    out = subprocess.run([sys.executable, "-c", ORT_SCRIPT, str(onnx_dir)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected.strip()
    ct2 = to_ctranslate2(dense_dir, tmp_path / "ct2")
    # config.json holds CTranslate2's settings and the model's config, the one home of the architecture
    config = json.loads((ct2 / "config.json").read_text())
    assert config["decoder_start_token"] == "<s>" and read_config(ct2) == read_model_config(dense_dir)[0]
    assert "arch" not in json.loads((ct2 / "export_info.json").read_text())
    assert is_current(ct2, None) and not is_current(ct2, "int8")
    expected = Translator.from_pretrained(dense_dir).translate(["Jesus wept."], beam=4, max_length=11)[0]
    out = subprocess.run([sys.executable, "-c", CT2_SCRIPT, str(ct2)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected.strip()


@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "ctranslate2"])
def test_engines_refuse_bad_input_alike(dense_dir, engine, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOMOE_CACHE", str(tmp_path))
    tr = Translator.from_pretrained(dense_dir, engine=engine)
    for kwargs, message in [({"beam": 0}, "beam=0 is outside 1..128"), ({"beam": 129}, "beam=129 is outside 1..128"),
                            ({"max_length": 0}, "max_length=0 must be in 1..max_positions=96"),
                            ({"max_length": 97}, "max_length=97 must be in 1..max_positions=96")]:
        with pytest.raises(ValueError, match=message):
            tr.translate(["Amen."], **kwargs)
    for kwargs in [{"beam": 1.5}, {"beam": True}, {"max_length": "5"}]:
        with pytest.raises(TypeError, match=f"{next(iter(kwargs))} must be an int"):
            tr.translate(["Amen."], **kwargs)
    with pytest.raises(ValueError, match="threads=-1: pass a number of threads >= 1, or 0 / None"):
        Translator.from_pretrained(dense_dir, engine=engine, threads=-1)


def test_quantize_is_refused_where_it_would_be_ignored(dense_dir, onnx_dir):
    with pytest.raises(ValueError, match="quantize='int8' needs engine='onnxruntime' or 'ctranslate2'"):
        Translator.from_pretrained(dense_dir, quantize="int8")
    with pytest.raises(ValueError, match="is an fp32 export; it cannot run with quantize='int8'"):
        Translator.from_pretrained(onnx_dir, quantize="int8")
    assert Translator.from_pretrained(onnx_dir, quantize=None).engine == "onnxruntime"


class _LayerOutput(torch.nn.Module):
    """A feed-forward layer's output alone (what an exported layer graph returns)."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)[0]


def test_compact_layer_computes_the_reference_top1_moe(tmp_path):
    """The exact form of a top-1 MoE layer (fp32 exports, and every graph but the int8 beam graph's
    decoder) computes `automoe.moe.top1_moe` in ONNX Runtime, on whole sources and one-token rows,
    with and without the router scale; every expert gets rows."""
    import onnxruntime as ort

    from automoe.export.onnx_moe import moe_form
    from automoe.moe import MoEFeedForward, top1_moe

    torch.manual_seed(0)
    for router_scale in (True, False):
        layer = _LayerOutput(MoEFeedForward(37, (48, 21, 40), router_scale=router_scale).eval())
        for one_token, shape in ((False, (3, 5)), (True, (6, 1))):
            path = tmp_path / f"layer-{router_scale}-{one_token}.onnx"
            with torch.no_grad(), moe_form(layer, "compact", one_token=one_token):
                torch.onnx.export(layer, (torch.randn(*shape, 37),), str(path), input_names=["x"],
                                  dynamic_axes={"x": {0: "b"} if one_token else {0: "b", 1: "t"}}, opset_version=17,
                                  dynamo=False)
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            x = torch.randn(40, *shape[1:], 37) * 3
            m = layer.layer
            with torch.no_grad():
                reference, _, choice = top1_moe(x.reshape(-1, 37), m.router.weight, list(m.experts), router_scale)
            got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0]).reshape(-1, 37)
            assert set(choice.tolist()) == {0, 1, 2}
            torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)


def _beam_decoder(folder: Path, tmp_path: Path) -> Path:
    """The decoder graph inside `folder`'s beam_search.onnx, saved as a model of its own."""
    import onnx

    beam = onnx.load(str(folder / "beam_search.onnx"))
    graph = next(a.g for a in beam.graph.node[0].attribute if a.name == "decoder")
    path = tmp_path / f"{folder.name}-beam-decoder" / "decoder.onnx"
    path.parent.mkdir()
    onnx.save(onnx.helper.make_model(graph, opset_imports=beam.opset_import, ir_version=beam.ir_version), str(path))
    return path


GOLDEN = DATA.parent / "export_golden.json"


def export_tokens(root: Path) -> dict:
    """Token ids that a tiny dense and a tiny MoE model translate SOURCES to (beam 4, at most 16
    tokens) through their fp32 and int8 ONNX exports, in one batch (decoder.onnx) and one sentence at
    a time (the beam graph): {model: {export: {"batched": [...], "single": [...]}}}."""
    from automoe.export.onnx import to_onnx

    moe = TINY.largest().replace(vocab_size=1000, max_positions=96, decoder_embed_dim=16,
                                 encoder_ffn=((40, 8), (24,), (8, 24, 40)), decoder_ffn=((24, 40, 8), (40,), (8, 8)),
                                 decoder_cross_last_k=(2, 1, 2), decoder_heads=(2, 4, 2))
    dense = moe.replace(encoder_ffn=((40,), (8,), (24,)), decoder_ffn=((8,), (40,), (24,)))
    out = {}
    for name, arch in (("moe", moe), ("dense", dense)):
        model_dir = _save(arch, root / name)
        out[name] = {}
        for quantize in (None, "int8"):
            backend = Translator.from_pretrained(to_onnx(model_dir, root / f"{name}-{quantize}", quantize=quantize)).backend
            backend.batch_min = 2  # "batched": through decoder.onnx (lists go one at a time by default)
            ids = [s for s in Translator.from_pretrained(model_dir)._encode(SOURCES) if s]
            out[name][quantize or "fp32"] = {
                "batched": backend.translate_ids(ids, beam=4, max_length=16).tokens,
                "single": [backend.translate_ids([s], beam=4, max_length=16).tokens[0] for s in ids]}
    return out


def test_exports_translate_to_the_pinned_tokens(tmp_path):
    """fp32 and int8 exports of a tiny dense and a tiny MoE model translate to the token ids recorded
    in tests/data/export_golden.json (by `python tests/test_export.py`, before issue #29 changed how
    exports store their weights and which MoE forms exist): a change to the export must not change a
    translation. The int8 MoE beam graph runs automoe's operator where it builds (else the compact
    form, whose int8 tokens may differ: the pin is skipped there)."""
    from automoe.export import kernel

    golden = json.loads(GOLDEN.read_text())
    got = export_tokens(tmp_path)
    if not kernel.available():
        got["moe"]["int8"]["single"] = golden["moe"]["int8"]["single"]
    assert got == golden


if __name__ == "__main__":  # write the pinned tokens (only when an intended change alters translations)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.write_text(json.dumps(export_tokens(Path(tmp))) + "\n")
