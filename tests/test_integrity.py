"""Corrupted model and export folders, on every engine, from Python and the CLI; stale export caches.

Every case gives the documented error naming the file (IntegrityError where the folder recorded
the file's sha256, CheckpointError for a file that cannot be read), and nothing is half-written.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from automoe.artifacts import ArtifactError, IntegrityError
from automoe.checkpoint import CheckpointError
from automoe.cli import main
from automoe.config import SearchSpace
from automoe.random_model import save_random_model
from automoe.serve import Translator

DATA = Path(__file__).parent / "data" / "bible-en-de"
TINY = SearchSpace.preset("tiny")
SENTENCES = ["Jesus wept.", "In the beginning God created the heavens and the earth."]


def _dense_arch():
    return TINY.largest().replace(vocab_size=1000, max_positions=48, decoder_embed_dim=16,
                                  encoder_ffn=((40,), (8,), (24,)), decoder_ffn=((8,), (40,), (24,)),
                                  encoder_heads=(2, 4, 2), decoder_heads=(4, 2, 2), decoder_cross_heads=(2, 2, 4),
                                  decoder_cross_last_k=(1, 1, 1))


def _moe_arch():
    return TINY.largest().replace(vocab_size=1000, max_positions=48, encoder_ffn=((40, 8), (24,), (8, 24, 40)),
                                  decoder_ffn=((24, 40, 8), (40,), (8, 8)))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A dense and a MoE model folder, an ONNX Runtime export of the MoE one and a CTranslate2 export
    of the dense one (fp32: quick to make)."""
    from automoe.export.ctranslate2 import to_ctranslate2
    from automoe.export.onnx import to_onnx

    root = tmp_path_factory.mktemp("integrity")
    dense = save_random_model(_dense_arch(), root / "dense", seed=1, sharpen=4.0, tokenizer_file=DATA / "spm.model")
    moe = save_random_model(_moe_arch(), root / "moe", seed=2, sharpen=4.0, tokenizer_file=DATA / "spm.model")
    return {"dense": dense, "moe": moe, "onnx": to_onnx(moe, root / "moe-onnx"),
            "ct2": to_ctranslate2(dense, root / "dense-ct2")}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOMOE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "exports"


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def corrupt(path: Path, how: str) -> None:
    """Damage a file the way a bad download, disk or hand edit does."""
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # 4 KiB of inverted bytes in the middle (the weights stay finite)
        mid = len(data) // 2
        path.write_bytes(data[:mid] + bytes(b ^ 0xFF for b in data[mid: mid + 4096]) + data[mid + 4096:])
    elif how == "deleted":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 64)
    elif how == "binary":
        path.write_bytes(b"\xff\xfe\x00\x81garbage\x00" * 10)
    elif how == "empty":
        path.write_bytes(b"")
    else:
        edit = json.loads(data)
        if how == "wrong-typed":
            edit["arch"]["vocab_size"] = "many"
        elif how == "tokenizer-typed":
            edit["tokenizer"] = "spm.model"
        elif how == "vocab-mismatch":  # a vocabulary that no longer matches the weights or the tokenizer
            edit["arch"]["vocab_size"] = 999
        path.write_text(json.dumps(edit))


# (file, damage, error type, what the message says); the file is named in every message
MODEL_CASES = [
    ("model.safetensors", "truncated", IntegrityError, "corrupt or was changed"),
    ("model.safetensors", "flipped", IntegrityError, "corrupt or was changed"),
    ("spm.model", "deleted", IntegrityError, "is missing"),
    ("spm.model", "garbage", IntegrityError, "corrupt or was changed"),
    ("config.json", "binary", CheckpointError, "not a text file"),
    ("config.json", "empty", CheckpointError, "not valid JSON"),
    ("config.json", "wrong-typed", CheckpointError, "not a valid architecture"),
    ("config.json", "tokenizer-typed", CheckpointError, "must be a JSON object"),
    ("config.json", "vocab-mismatch", CheckpointError, "has 1000 pieces but the model's vocab_size is 999"),
]
# the same damage to a folder written before checksums were recorded
UNCHECKED_CASES = [
    ("model.safetensors", "truncated", CheckpointError, "not a readable safetensors file"),
    ("spm.model", "deleted", CheckpointError, "not found"),
    ("spm.model", "garbage", CheckpointError, "not a readable SentencePiece model"),
]


def _engines(name: str) -> list[str]:
    return ["torch", "onnxruntime"] + (["ctranslate2"] if name == "dense" else [])


@pytest.mark.parametrize("name", ["dense", "moe"])
@pytest.mark.parametrize("file,how,error,message", MODEL_CASES)
def test_corrupt_model_folder_every_engine(folders, name, file, how, error, message, tmp_path, cache):
    folder = _copy(folders[name], tmp_path)
    corrupt(folder / file, how)
    for engine in _engines(name):
        with pytest.raises(error, match=message) as e:
            Translator.from_pretrained(folder, engine=engine, quantize="int8" if engine != "torch" else None)
        assert str(folder / file) in str(e.value), (engine, str(e.value))
    assert not cache.exists() or not any(cache.iterdir())  # refused before any export: nothing half-written


@pytest.mark.parametrize("file,how,error,message", UNCHECKED_CASES)
def test_corrupt_unchecked_model_folder(folders, file, how, error, message, tmp_path, cache):
    folder = _unchecked(_copy(folders["dense"], tmp_path))
    assert Translator.from_pretrained(folder).translate(["Amen."], beam=1, max_length=4)  # loads, unchecked
    corrupt(folder / file, how)
    for engine in _engines("dense"):
        with pytest.raises(error, match=message) as e:
            Translator.from_pretrained(folder, engine=engine)
        assert str(folder / file) in str(e.value), (engine, str(e.value))
    assert not cache.exists() or not any(p.name.startswith(".") for p in cache.iterdir())


def test_verify_false_loads_an_edited_folder(folders, tmp_path):
    folder = _copy(folders["moe"], tmp_path)
    corrupt(folder / "model.safetensors", "flipped")
    with pytest.raises(IntegrityError):
        Translator.from_pretrained(folder)
    assert len(Translator.from_pretrained(folder, verify=False).translate(SENTENCES, beam=1, max_length=4)) == 2


EXPORT_CASES = [
    ("onnx", "encoder.onnx", "truncated", IntegrityError, "corrupt or was changed"),
    ("onnx", "beam_search.onnx", "flipped", IntegrityError, "corrupt or was changed"),
    ("onnx", "spm.model", "deleted", IntegrityError, "is missing"),
    ("onnx", "spm.model", "garbage", IntegrityError, "corrupt or was changed"),
    ("onnx", "config.json", "binary", CheckpointError, "not a text file"),
    ("onnx", "config.json", "empty", CheckpointError, "not valid JSON"),
    ("onnx", "config.json", "wrong-typed", CheckpointError, "not a valid architecture"),
    ("onnx", "config.json", "vocab-mismatch", IntegrityError, "corrupt or was changed"),
    ("onnx", "export_info.json", "binary", CheckpointError, "not a text file"),
    ("onnx", "export_info.json", "empty", CheckpointError, "not valid JSON"),
    ("ct2", "model.bin", "truncated", IntegrityError, "corrupt or was changed"),
    ("ct2", "model.bin", "flipped", IntegrityError, "corrupt or was changed"),
    ("ct2", "spm.model", "deleted", IntegrityError, "is missing"),
    ("ct2", "spm.model", "garbage", IntegrityError, "corrupt or was changed"),
    ("ct2", "config.json", "binary", CheckpointError, "not a text file"),
    ("ct2", "config.json", "wrong-typed", CheckpointError, "not a valid architecture"),
    ("ct2", "shared_vocabulary.json", "empty", IntegrityError, "corrupt or was changed"),
    ("ct2", "export_info.json", "binary", CheckpointError, "not a text file"),
]


@pytest.mark.parametrize("name,file,how,error,message", EXPORT_CASES)
def test_corrupt_export_folder(folders, name, file, how, error, message, tmp_path):
    folder = _copy(folders[name], tmp_path)
    corrupt(folder / file, how)
    with pytest.raises(error, match=message) as e:
        Translator.from_pretrained(folder)
    assert str(folder / file) in str(e.value)


def test_custom_operator_library_only_from_inside_the_export(folders, tmp_path):
    from automoe.serve.engines import custom_ops_library

    folder = _copy(folders["onnx"], tmp_path / "a")
    outside = tmp_path / "libautomoe_ops.so"
    outside.write_bytes(b"\x7fELF not really")
    info = json.loads((folder / "export_info.json").read_text())
    for named in (str(outside), "../libautomoe_ops.so", "libother.so"):
        (folder / "export_info.json").write_text(json.dumps({**info, "custom_ops_library": named}))
        with pytest.raises(ArtifactError, match="automoe loads native code only from there"):
            Translator.from_pretrained(folder)
    (folder / "libautomoe_ops.so").symlink_to(outside)  # the fixed name, but the file lies elsewhere
    with pytest.raises(ArtifactError, match="not the file libautomoe_ops.so inside the export folder"):
        custom_ops_library(folder, "libautomoe_ops.so")


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.parametrize("file,how,error,message", MODEL_CASES[:5] + MODEL_CASES[8:])
def test_cli_corrupt_model_folder_exits_2_naming_the_file(folders, file, how, error, message, tmp_path, cache,
                                                          capsys):
    folder = _copy(folders["dense"], tmp_path)
    corrupt(folder / file, how)
    for engine in _engines("dense"):
        assert main(["translate", str(folder), "--engine", engine, "Amen."]) == 2
        err = capsys.readouterr().err
        assert err.startswith("automoe translate: error: ") and str(folder / file) in err and message in err, err
        assert "Traceback" not in err
    assert main(["export", str(folder), "--to", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert str(folder / file) in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("name,file,how,error,message", [EXPORT_CASES[0], EXPORT_CASES[4], EXPORT_CASES[11]])
def test_cli_corrupt_export_folder_exits_2(folders, name, file, how, error, message, tmp_path, capsys):
    folder = _copy(folders[name], tmp_path)
    corrupt(folder / file, how)
    assert main(["translate", str(folder), "Amen."]) == 2
    err = capsys.readouterr().err
    assert str(folder / file) in err and message in err and "Traceback" not in err


def test_cli_process_garbage_tokenizer_no_traceback(folders, tmp_path):
    """The issue's case as a user meets it: a real process, exit 2, one line naming the file."""
    folder = _unchecked(_copy(folders["dense"], tmp_path))
    corrupt(folder / "spm.model", "garbage")
    exe = shutil.which("automoe")
    cmd = [exe] if exe else [sys.executable, "-m", "automoe"]
    out = subprocess.run([*cmd, "translate", str(folder), "Amen."], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert "not a readable SentencePiece model" in out.stderr and str(folder / "spm.model") in out.stderr
    assert "Traceback" not in out.stderr


def test_missing_local_folder_is_named_as_such(tmp_path, monkeypatch):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=r"models/NAME: no such local folder \(models/ holds no model"):
        Translator.from_pretrained("models/NAME")
    with pytest.raises(CheckpointError, match="no such model folder"):
        Translator.from_pretrained("models/a/b")


# ------------------------------------------------------------------------------------ export cache
def _cached(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _torch(folder, **kw):
    return Translator.from_pretrained(folder, **kw).translate(SENTENCES, beam=2, max_length=8)


def _train_tokenizer(out: Path) -> Path:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(input=str(DATA / "train.tgt"), model_prefix=str(out / "other"), vocab_size=1000,
                                   pad_id=0, unk_id=1, bos_id=2, eos_id=3, minloglevel=2)
    return out / "other.model"


def test_export_cache_follows_every_input(folders, tmp_path, cache):
    folder = _copy(folders["dense"], tmp_path)
    ort = lambda **kw: Translator.from_pretrained(folder, engine="onnxruntime", **kw)  # noqa: E731
    first = ort().translate(SENTENCES, beam=2, max_length=8)
    assert first == _torch(folder) and len(_cached(cache)) == 1
    assert ort().translate(SENTENCES, beam=2, max_length=8) == first and len(_cached(cache)) == 1  # reused

    save_random_model(_dense_arch(), folder, seed=7, sharpen=4.0, tokenizer_file=DATA / "spm.model")  # new weights
    assert ort().translate(SENTENCES, beam=2, max_length=8) == _torch(folder) != first
    assert len(_cached(cache)) == 2

    config = json.loads((folder / "config.json").read_text())
    config["training"]["note"] = "edited"  # any change of config.json is a new export
    (folder / "config.json").write_text(json.dumps(config))
    ort()
    assert len(_cached(cache)) == 3

    shutil.copyfile(_train_tokenizer(tmp_path), folder / "spm.model")  # another tokenizer of the same size
    with pytest.raises(IntegrityError, match="spm.model is corrupt or was changed"):
        ort()
    tr = ort(verify=False)  # edited on purpose: exported again with the new tokenizer, never the old export
    assert len(_cached(cache)) == 4
    assert (Path(tr.backend.folder) / "spm.model").read_bytes() == (folder / "spm.model").read_bytes()

    (folder / "spm.model").unlink()
    with pytest.raises(CheckpointError, match="spm.model not found"):
        ort(verify=False)
    assert len(_cached(cache)) == 4


def test_config_change_refused_although_an_export_is_cached(folders, tmp_path, cache):
    folder = _copy(folders["dense"], tmp_path)
    Translator.from_pretrained(folder, engine="onnxruntime")
    corrupt(folder / "config.json", "vocab-mismatch")
    for engine in ("torch", "onnxruntime"):
        with pytest.raises(CheckpointError, match="vocab_size is 999"):
            Translator.from_pretrained(folder, engine=engine)


def test_corrupt_cached_export_is_made_again(folders, tmp_path, cache, caplog):
    folder = _copy(folders["dense"], tmp_path)
    expected = Translator.from_pretrained(folder, engine="onnxruntime").translate(SENTENCES, beam=2, max_length=8)
    (export,) = cache.iterdir()
    corrupt(export / "encoder.onnx", "flipped")
    tr = Translator.from_pretrained(folder, engine="onnxruntime")
    assert "is not used" in caplog.text and "exporting again" in caplog.text
    assert tr.translate(SENTENCES, beam=2, max_length=8) == expected


def test_cache_key_covers_quantization_and_versions(folders, monkeypatch):
    import automoe
    from automoe.checkpoint import read_folder
    from automoe.serve.translator import export_cache_key

    source = read_folder(folders["dense"])
    key = export_cache_key(source, "onnxruntime", None)
    assert export_cache_key(source, "onnxruntime", "int8") != key
    assert export_cache_key(source, "ctranslate2", None) != key
    monkeypatch.setattr(automoe, "__version__", "99.0")
    assert export_cache_key(source, "onnxruntime", None) != key


def _unchecked(folder: Path) -> Path:
    config = json.loads((folder / "config.json").read_text())
    del config["sha256"]  # as written before checksums were recorded (models/dense-small-bible)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_unchecked_weights_with_nan_are_refused(folders, tmp_path, cache):
    import torch
    from safetensors.torch import load_file, save_file

    folder = _unchecked(_copy(folders["dense"], tmp_path))
    state = load_file(str(folder / "model.safetensors"))
    name = "encoder_layers.0.self_attn.q_proj.weight"
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(folder / "model.safetensors"))
    for engine in ("torch", "onnxruntime"):
        with pytest.raises(CheckpointError, match=f"model.safetensors is corrupt: tensors .'{name}'. hold NaN"):
            Translator.from_pretrained(folder, engine=engine, quantize="int8" if engine != "torch" else None)
    assert not cache.exists() or not any(cache.iterdir())


def test_exporter_failure_on_unchecked_weights_is_one_clear_error(folders, tmp_path, cache, monkeypatch, capsys):
    """Without recorded checksums, weights the quantizer chokes on (onnxruntime's `AssertionError:
    scale issue`) give one error that says the folder may be corrupt, and exit 2 from the CLI."""
    import automoe.export.onnx as onnx_export

    def choke(*args, **kwargs):
        raise AssertionError("scale issue")

    monkeypatch.setattr(onnx_export, "to_onnx", choke)
    folder = _unchecked(_copy(folders["dense"], tmp_path))
    with pytest.raises(ArtifactError, match=r"failed: AssertionError: scale issue; .* records no checksums"):
        Translator.from_pretrained(folder, engine="onnxruntime", quantize="int8")
    assert main(["translate", str(folder), "--engine", "onnxruntime", "Amen."]) == 2
    assert "Traceback" not in capsys.readouterr().err
