"""Bad input on every engine (torch, onnxruntime, ctranslate2), from Python and from the CLI: each
case gives a translation or the documented error, the same on every engine, before any decoding."""

import io
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from automoe.cli import main
from automoe.config import SearchSpace
from automoe.random_model import save_random_model
from automoe.serve import Translator

DATA = Path(__file__).parent / "data" / "bible-en-de"
TINY = SearchSpace.preset("tiny")

INVISIBLE = ["", "   \t ", "\x00\x00", "\x01\x07\x08\x1b\x7f", "\u200b\u200c\u200d\ufeff\u2060", "\u200f\u200e",
             "\u3000\u00a0"]
VISIBLE = ["Jesus wept.", "שלום עולם, ברוך הבא", "مرحبا بالعالم", "🙂🙏👍 ✝", "word " * 2000, "Amen.\x00"]
# (input, keyword arguments, error type, message): the documented errors, raised before decoding
ERRORS = [
    (None, {}, TypeError, "translate\\(\\) takes a list of sentences \\(str\\), got NoneType"),
    (5, {}, TypeError, "got int"),
    ("Jesus wept.", {}, TypeError, "wrap a single sentence in a list"),
    (["fine", None], {}, TypeError, "sentence 1 is a NoneType, not a str"),
    (["fine", 5], {}, TypeError, "sentence 1 is a int, not a str"),
    (["fine", "lone \ud800 surrogate"], {}, ValueError,
     "sentence 1 is not valid Unicode text: character 5 is a lone surrogate \\(U\\+D800\\)"),
    (["Jesus wept."], {"beam": 0}, ValueError, "beam=0 is outside 1..128"),
    (["Jesus wept."], {"beam": 1000}, ValueError, "beam=1000 is outside 1..128"),
    ([""], {"beam": 1000}, ValueError, "beam=1000 is outside 1..128"),  # refused even with nothing to decode
    (["Jesus wept."], {"beam": 2.5}, TypeError, "beam must be an int"),
    (["Jesus wept."], {"max_length": 0}, ValueError, "max_length=0 must be in 1..max_positions=32"),
    (["Jesus wept."], {"max_length": 33}, ValueError, "max_length=33 must be in 1..max_positions=32"),
]


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """{engine: folder}: a MoE model folder (torch), its ONNX Runtime export, and a CTranslate2
    export of a dense model."""
    from automoe.export.ctranslate2 import to_ctranslate2
    from automoe.export.onnx import to_onnx

    root = tmp_path_factory.mktemp("bad-input")
    moe = TINY.largest().replace(vocab_size=1000, max_positions=32, encoder_ffn=((40, 8), (24,), (8, 24, 40)),
                                 decoder_ffn=((24, 40, 8), (40,), (8, 8)))
    dense = TINY.largest().replace(vocab_size=1000, max_positions=32, encoder_ffn=((40,), (8,), (24,)),
                                   decoder_ffn=((8,), (40,), (24,)), decoder_cross_last_k=(1, 1, 1))
    moe_dir = save_random_model(moe, root / "moe", seed=3, sharpen=4.0, tokenizer_file=DATA / "spm.model")
    dense_dir = save_random_model(dense, root / "dense", seed=4, sharpen=4.0, tokenizer_file=DATA / "spm.model")
    return {"torch": moe_dir, "onnxruntime": to_onnx(moe_dir, root / "moe-onnx"),
            "ctranslate2": to_ctranslate2(dense_dir, root / "dense-ct2")}


@pytest.fixture(scope="module")
def translators(engines):
    return {name: Translator.from_pretrained(folder) for name, folder in engines.items()}


@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "ctranslate2"])
def test_inputs_translate_or_are_empty(translators, engine, caplog):
    tr = translators[engine]
    assert tr.engine == engine
    with caplog.at_level(logging.WARNING):
        out = tr.translate(INVISIBLE + VISIBLE, beam=2, max_length=6)
    assert out[: len(INVISIBLE)] == [""] * len(INVISIBLE)  # nothing visible: nothing invented
    assert all(isinstance(t, str) for t in out) and len(out) == len(INVISIBLE) + len(VISIBLE)
    assert "truncated to the model's 32 source tokens" in caplog.text  # the 10,000 characters
    assert tr.translate([], beam=2) == []
    assert tr.translate(iter(["Amen."]), beam=1, max_length=4) == tr.translate(["Amen."], beam=1, max_length=4)
    assert len(tr.translate(["Amen."], beam=128, max_length=2)) == 1  # the largest beam, on every engine


@pytest.mark.parametrize("sentences,kwargs,error,message", ERRORS)
def test_documented_errors_are_the_same_on_every_engine(translators, sentences, kwargs, error, message):
    messages = set()
    for tr in translators.values():
        with pytest.raises(error, match=message) as e:
            tr.translate(sentences, **kwargs)
        messages.add(str(e.value))
    assert len(messages) == 1, messages


def test_routing_view_has_the_same_checks(translators):
    tr = translators["torch"]
    assert tr.translate_with_routing(["\u200b", "Amen."], beam=2, max_length=4)[0] is None
    with pytest.raises(ValueError, match="beam=1000 is outside"):
        tr.translate_with_routing(["Amen."], beam=1000)
    with pytest.raises(TypeError, match="got NoneType"):
        tr.translate_with_routing(None)


# ------------------------------------------------------------------------------------------ CLI
def _stdin(monkeypatch, data: bytes) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "ctranslate2"])
def test_cli_stdin_lines(engines, engine, monkeypatch, capsys):
    lines = [s for s in INVISIBLE if "\n" not in s] + VISIBLE
    _stdin(monkeypatch, "\n".join(lines).encode() + b"\n")
    assert main(["translate", str(engines[engine]), "--beam", "2", "--max-length", "6"]) == 0
    out = capsys.readouterr().out.split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines)  # one line out per line in, in order
    assert out[: len(INVISIBLE)] == [""] * len(INVISIBLE)
    _stdin(monkeypatch, b"")
    assert main(["translate", str(engines[engine])]) == 0
    assert capsys.readouterr().out == ""  # empty stdin: nothing printed


@pytest.mark.parametrize("args,message", [
    (["--beam", "0", "Amen."], "beam=0 is outside 1..128"),
    (["--beam", "1000", "Amen."], "beam=1000 is outside 1..128"),
    (["--max-length", "0", "Amen."], "max_length=0 must be in 1..max_positions=32"),
    (["fine", "bad \udcff byte"], "sentence 1 is not valid Unicode text"),  # argv bytes that are not UTF-8
])
def test_cli_errors_exit_2(engines, args, message, capsys):
    for folder in engines.values():
        assert main(["translate", str(folder), *args]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith("automoe translate: error: ") and captured.err.count("\n") == 1
        assert message in captured.err and "Traceback" not in captured.err and captured.out == ""


def test_cli_process_bad_argv_and_empty_stdin(engines):
    exe = shutil.which("automoe")
    cmd = [exe] if exe else [sys.executable, "-m", "automoe"]
    out = subprocess.run([*cmd, "translate", str(engines["torch"]), b"bad \xff byte"], capture_output=True)
    assert out.returncode == 2 and b"not valid Unicode text" in out.stderr and b"Traceback" not in out.stderr
    out = subprocess.run([*cmd, "translate", str(engines["ctranslate2"])], input=b"", capture_output=True)
    assert out.returncode == 0 and out.stdout == b"", out.stderr
