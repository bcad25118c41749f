"""Translator (torch engine), eval and translate CLI on a tiny random model with the fixture tokenizer."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from automoe.evaluate import corpus_scores, read_split
from automoe.random_model import save_random_model
from automoe.serve import Translator

DATA = Path(__file__).parent / "data" / "bible-en-de"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from automoe.config import SearchSpace

    space = SearchSpace.preset("tiny")
    arch = space.largest().replace(vocab_size=1000, encoder_ffn=((40, 8), (24,), (8, 40)), max_positions=24)
    return save_random_model(arch, tmp_path_factory.mktemp("model") / "tiny", tokenizer_file=DATA / "spm.model")


def _cli(*args, **kw):
    exe = shutil.which("automoe")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "automoe", *args]
    return subprocess.run(cmd, capture_output=True, **kw)


def test_bad_input_and_order(model_dir, caplog):
    tr = Translator.from_pretrained(model_dir)
    sentences = ["In the beginning God created the heavens and the earth.", "", "   ", "Jesus wept.",
                 "word " * 60, "Then the LORD said to Moses."]
    with caplog.at_level(logging.WARNING):
        out = tr.translate(sentences, beam=2, max_length=8)
    assert len(out) == len(sentences) and out[1] == "" and out[2] == ""
    assert "sentence 4 has" in caplog.text and "truncated to the model's 24 source tokens" in caplog.text
    one_by_one = [tr.translate([s], beam=2, max_length=8)[0] for s in sentences]
    assert out == one_by_one
    assert tr.translate([], beam=2) == []
    with pytest.raises(TypeError, match="wrap a single sentence in a list"):
        tr.translate("not a list")
    with pytest.raises(ValueError, match="engine='nope' is not available"):
        Translator.from_pretrained(model_dir, engine="nope")


def test_routing_view(model_dir):
    tr = Translator.from_pretrained(model_dir)
    routed = tr.translate_with_routing(["Jesus wept.", ""], beam=2, max_length=6)
    assert routed[1] is None
    r = routed[0]
    assert len(r.source_pieces) == len(r.encoder_routing) and len(r.encoder_routing[0]) == 3
    assert [row[0] < 2 and row[2] < 2 for row in r.encoder_routing] == [True] * len(r.encoder_routing)
    assert len(r.target_pieces) == len(r.decoder_routing)


def test_corpus_scores_equal_sacrebleu():
    import sacrebleu

    sources, refs = read_split(DATA, "test", limit=50)
    hyps = [" ".join(r.split()[::2]) for r in refs]  # a deterministic imperfect "system"
    scores = corpus_scores(hyps, refs)
    assert scores["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)
    assert scores["chrf"] == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
    assert scores["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")


def test_eval_cli_one_json_line(model_dir, tmp_path):
    out = _cli("eval", str(model_dir), "--data", str(DATA), "--limit", "6", "--beam", "2",
               "--results", str(tmp_path / "r.jsonl"), text=True)
    assert out.returncode == 0, out.stderr
    record = json.loads(out.stdout.strip().splitlines()[-1])
    assert record["sentences"] == 6 and record["beam"] == 2 and "bleu_signature" in record
    assert json.loads((tmp_path / "r.jsonl").read_text()) == record


def test_translate_cli_stdin_and_bad_utf8(model_dir):
    out = _cli("translate", str(model_dir), "--beam", "1", "--max-length", "5",
               input="Jesus wept.\n\nAmen.\n".encode())
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.decode().split("\n")) == 4  # three lines, the empty one kept
    out = _cli("translate", str(model_dir), input=b"fine\nbad \xff byte\n")
    assert out.returncode == 2 and b"stdin line 2 is not valid UTF-8" in out.stderr


def test_translate_cli_options_between_sentences(model_dir, capsys):
    # the README's form: options between the model and the sentences
    from automoe.cli import build_parser, main

    assert main(["translate", str(model_dir), "--beam", "1", "Jesus wept.", "--max-length", "5", "Amen."]) == 0
    mixed = capsys.readouterr().out
    assert main(["translate", str(model_dir), "Jesus wept.", "Amen.", "--beam", "1", "--max-length", "5"]) == 0
    assert mixed == capsys.readouterr().out and len(mixed.splitlines()) == 2
    args = build_parser().parse_args(["serve", "a", "--port", "1", "b"])
    assert args.models == ["a", "b"] and args.port == 1


@pytest.mark.parametrize("engine", [None, "ctranslate2"])
def test_supernet_folder_is_refused_with_the_way_out(tmp_path, engine):
    (tmp_path / "supernet.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="is a supernet folder, not a model folder: .*automoe extract"):
        Translator.from_pretrained(tmp_path, engine=engine)
