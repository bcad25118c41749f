"""Sequence-level distillation data: teacher outputs as train.tgt, resume after a crash, CLI."""

import json
import shutil
from pathlib import Path

import pytest

from automoe.cli import main
from automoe.config import ConfigError, SearchSpace
from automoe.distill import distill_dataset
from automoe.random_model import save_random_model
from automoe.serve import Translator

FIXTURE = Path(__file__).parent / "data" / "bible-en-de"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The fixture dataset with 7 training pairs (a small teacher workload)."""
    folder = tmp_path_factory.mktemp("data") / "d"
    shutil.copytree(FIXTURE, folder)
    for side in ("src", "tgt", "domain"):
        path = folder / f"train.{side}"
        path.write_text("".join(f"{line}\n" for line in path.read_text().splitlines()[:7]))
    return folder


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    arch = SearchSpace.preset("tiny").largest().replace(vocab_size=1000, max_positions=24)
    return save_random_model(arch, tmp_path_factory.mktemp("teacher") / "t", tokenizer_file=FIXTURE / "spm.model",
                             sharpen=4.0)


class Crash(RuntimeError):
    pass


class CrashingTranslator:
    """Translates `budget` chunks, then raises (a killed run)."""

    def __init__(self, inner, budget):
        self.inner, self.budget, self.engine = inner, budget, inner.engine

    def translate(self, sentences, beam):
        if self.budget == 0:
            raise Crash
        self.budget -= 1
        return self.inner.translate(sentences, beam=beam)


def test_distill_and_resume(dataset, teacher, tmp_path):
    tr = Translator.from_pretrained(teacher)
    full = distill_dataset(dataset, teacher, tmp_path / "full", beam=2, chunk=3, translator=tr, progress=False)
    sources = (dataset / "train.src").read_text().splitlines()
    expected = tr.translate(sources, beam=2)
    refs = (dataset / "train.tgt").read_text().splitlines()
    assert (full / "train.tgt").read_text().splitlines() == [e if e.strip() else r for e, r in zip(expected, refs)]
    for name in ("train.src", "dev.tgt", "test.tgt", "spm.model"):
        assert (full / name).read_bytes() == (dataset / name).read_bytes()
    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["distillation"]["teacher"] == str(teacher) and manifest["distillation"]["sentences"] == 7
    assert manifest["files"]["train.tgt"]["lines"] == 7
    assert not (full / "distill_state.json").exists() and not (full / "train.tgt.partial").exists()

    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        distill_dataset(dataset, teacher, out, beam=2, chunk=3, translator=CrashingTranslator(tr, 1), progress=False)
    assert len((out / "train.tgt.partial").read_text().splitlines()) == 3 and not (out / "manifest.json").exists()
    with pytest.raises(ConfigError, match="interrupted distillation with other settings"):
        distill_dataset(dataset, teacher, out, beam=3, chunk=3, translator=tr, progress=False)
    distill_dataset(dataset, teacher, out, beam=2, chunk=3, translator=CrashingTranslator(tr, 2), progress=False)
    assert (out / "train.tgt").read_bytes() == (full / "train.tgt").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a finished dataset"):
        distill_dataset(dataset, teacher, out, beam=2, translator=tr, progress=False)


def test_cli(dataset, teacher, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "distill", "--data", str(dataset), "--teacher", str(teacher), "--out", str(out),
                 "--engine", "torch", "--beam", "2"]) == 0
    assert (out / "manifest.json").exists() and str(out) in capsys.readouterr().out
    assert main(["data", "distill", "--data", str(tmp_path / "nope"), "--teacher", str(teacher),
                 "--out", str(tmp_path / "x")]) == 2
    assert "train.src not found" in capsys.readouterr().err
