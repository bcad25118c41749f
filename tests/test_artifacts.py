"""automoe.artifacts: checksums, verification, output folders and the git commit of a checkout."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automoe.artifacts import (ArtifactError, IntegrityError, check_file_name, file_hashes, finish_out_dir,
                               folder_hashes, prepare_out_dir, sha256_file, staged_out_dir, verify_files,
                               write_export_info)


def test_sha256_and_verify_name_the_file(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"abc")
    (tmp_path / "b.txt").write_text("x")
    assert sha256_file(tmp_path / "a.bin") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    recorded = file_hashes(tmp_path, ["a.bin", "b.txt"])
    assert verify_files(tmp_path, recorded, source="x.json") == recorded
    assert verify_files(tmp_path, None, source="x.json") == {}  # written before checksums: not checked
    (tmp_path / "a.bin").write_bytes(b"abd")
    with pytest.raises(IntegrityError, match=r"a\.bin is corrupt or was changed.*recorded in x\.json.*verify=False"):
        verify_files(tmp_path, recorded, source="x.json")
    (tmp_path / "a.bin").unlink()
    with pytest.raises(IntegrityError, match=r"a\.bin is missing \(it is listed in x\.json\)"):
        verify_files(tmp_path, recorded, source="x.json")
    with pytest.raises(ArtifactError, match="must map file names to sha256"):
        verify_files(tmp_path, {"a.bin": 5}, source="x.json")
    with pytest.raises(ArtifactError, match="not a plain file name"):
        verify_files(tmp_path, {"../a.bin": "0" * 64}, source="x.json")


@pytest.mark.parametrize("name", ["../spm.model", "/etc/passwd", "sub/spm.model", "..", "", 5, None])
def test_file_names_from_configs_stay_inside_the_folder(name):
    with pytest.raises(ArtifactError, match="not a plain file name inside the folder"):
        check_file_name(name, "config.json")
    assert check_file_name("spm.model", "config.json") == "spm.model"


def test_folder_hashes_skip_the_info_file(tmp_path):
    (tmp_path / "export_info.json").write_text("{}")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x").write_text("x")
    (tmp_path / "y").write_text("y")
    assert list(folder_hashes(tmp_path)) == ["sub/x", "y"]


def test_output_folders_are_replaced_only_when_they_are_exports(tmp_path):
    out = tmp_path / "out"
    tmp = prepare_out_dir(out, force=False)
    (tmp / "export_info.json").write_text("{}")
    finish_out_dir(tmp, out)
    assert (out / "export_info.json").exists() and not tmp.exists()
    with pytest.raises(FileExistsError, match="pass force=True"):
        prepare_out_dir(out, force=False)
    finish_out_dir(prepare_out_dir(out, force=True), out)
    assert not any(out.iterdir())
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not an export folder"):
        prepare_out_dir(tmp_path / "model", force=True)


def test_a_staged_export_replaces_its_folder_only_when_complete(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"w")
    out = tmp_path / "out"
    with staged_out_dir(out, force=False) as tmp:
        (tmp / "a.bin").write_bytes(b"a")
        info = write_export_info(tmp, model, {"format": "x"}, tokenizer=None, tools=())
    assert json.loads((out / "export_info.json").read_text()) == info
    assert info["sha256"] == {"a.bin": sha256_file(out / "a.bin")} and info["source_sha256"] == sha256_file(
        model / "model.safetensors")
    with pytest.raises(RuntimeError, match="half"):
        with staged_out_dir(out, force=True) as tmp:
            (tmp / "b.bin").write_bytes(b"b")
            raise RuntimeError("half-written")
    assert not tmp.exists() and sorted(p.name for p in out.iterdir()) == ["a.bin", "export_info.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]  # no temporary folder left


def test_verifying_the_shipped_model_takes_tens_of_ms():
    """The integrity check is cheap enough to run on every load (35 MB of weights)."""
    from automoe.checkpoint import model_files

    folder = Path(__file__).parent.parent / "models" / "dense-small-bible"
    names = model_files(json.loads((folder / "config.json").read_text()))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        file_hashes(folder, names)
        best = min(best, time.perf_counter() - start)
    assert best < 0.5, f"hashing {names} took {best * 1000:.0f} ms"


def test_helpers_need_no_trainer_or_corpus_builder():
    code = ("import sys, automoe.artifacts, automoe.checkpoint, automoe.hub, automoe.serve.translator\n"
            "bad = [m for m in ('automoe.train', 'automoe.corpora', 'automoe.data', 'torch') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_git_commit_ignores_generated_results_but_not_source(tmp_path):
    """A benchmark chain appends to results files and regenerates the README between runs; only a
    changed source file marks the commit dirty."""
    from automoe.artifacts import git_commit

    git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=tmp_path,  # noqa: E731
                                    check=True, capture_output=True)
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "pkg").mkdir()
    files = {"README.md": "table\n", "benchmarks/results/x.jsonl": "{}\n", "pkg/code.py": "x = 1\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "init")
    commit = git("rev-parse", "HEAD").stdout.decode().strip()
    assert git_commit(tmp_path / "pkg") == commit
    (tmp_path / "benchmarks/results/x.jsonl").write_text("{}\n{}\n")
    (tmp_path / "README.md").write_text("new table\n")
    assert git_commit(tmp_path / "pkg") == commit
    (tmp_path / "pkg/code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "pkg") == commit + "-dirty"

