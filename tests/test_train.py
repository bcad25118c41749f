"""Training contracts on the committed fixture: loss goes down, resume is exact, torchrun matches."""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from automoe.config import SearchSpace, TrainConfig
from automoe.modeling import label_smoothed_nll
from automoe.supernet_folder import load_supernet
from automoe.train import lr_at, train_model, train_supernet

DATA = Path(__file__).parent / "data" / "bible-en-de"
SPACE = dataclasses.replace(SearchSpace.preset("tiny"), vocab_size=1000)


def _cfg(**kw):
    base = dict(data=str(DATA), max_tokens=400, warmup_updates=5, lr=3e-3, valid_every=1000,
                valid_sentences=40, save_every_minutes=60.0, seed=7)
    return TrainConfig(**{**base, **kw})


def _cli(*args, **kw):
    exe = shutil.which("automoe")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "automoe", *args]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def test_label_smoothing_matches_torch():
    logits = torch.randn(2, 5, 11)
    target = torch.randint(1, 11, (2, 5))
    target[1, 3:] = 0
    loss, nll, n = label_smoothed_nll(logits, target, 0.1, pad_id=0)
    ref = torch.nn.functional.cross_entropy(logits.view(-1, 11), target.view(-1), ignore_index=0,
                                            label_smoothing=0.1, reduction="sum")
    torch.testing.assert_close(loss, ref)
    assert n == 8


def test_lr_schedules():
    cfg = _cfg(max_updates=100, warmup_updates=10, lr=1e-3)
    assert lr_at(5, cfg) == pytest.approx(5e-4) and lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(40, cfg) == pytest.approx(1e-3 * 0.5)
    cos = dataclasses.replace(cfg, schedule="cosine")
    assert lr_at(55, cos) == pytest.approx(5e-4) and lr_at(100, cos) == pytest.approx(0.0, abs=1e-12)


def test_supernet_training_lowers_validation_loss(tmp_path):
    state = train_supernet(SPACE, _cfg(max_updates=50, valid_every=25, sandwich=True), tmp_path, progress=False)
    first, last = state.history[0], state.history[-1]
    assert last["largest"]["nll"] < first["largest"]["nll"] - 0.2
    assert last["smallest"]["nll"] < first["smallest"]["nll"] - 0.2
    records = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert sum(r["type"] == "train" for r in records) == 50
    assert load_supernet(tmp_path).space == SPACE


def _params(run_dir):
    state = load_file(str(run_dir / "checkpoint.safetensors"))
    return {k: v for k, v in state.items() if k.startswith("model.")}


def test_resume_after_kill_is_bit_identical(tmp_path):
    """40 uninterrupted updates == a run killed (SIGKILL) after >= 20 updates and resumed to 40."""
    args = ["train", "supernet", "--data", str(DATA), "--space", str(tmp_path / "space.json"),
            "--max-tokens", "400", "--lr", "3e-3", "--warmup-updates", "5", "--seed", "7", "--threads", "1",
            "--valid-every", "1000", "--valid-sentences", "20", "--max-updates", "40"]
    SPACE.save(tmp_path / "space.json")
    assert _cli(*args, "--run-dir", str(tmp_path / "full")).returncode == 0
    exe = shutil.which("automoe")
    cmd = [exe] if exe else [sys.executable, "-m", "automoe"]
    proc = subprocess.Popen([*cmd, *args, "--run-dir", str(tmp_path / "killed"), "--save-every-minutes", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "killed" / "train.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines = log.read_text().splitlines() if log.exists() else []
        if len(lines) >= 22:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "killed" / "checkpoint.safetensors").exists()
    resumed = _cli(*args, "--run-dir", str(tmp_path / "killed"), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    full, again = _params(tmp_path / "full"), _params(tmp_path / "killed")
    assert full.keys() == again.keys()
    for k in full:
        assert torch.equal(full[k], again[k]), k
    updates = [json.loads(x)["update"] for x in log.read_text().splitlines() if '"train"' in x]
    assert updates == list(range(1, 41))  # the log has no duplicates after the resume


def test_existing_run_needs_resume(tmp_path):
    train_model(SPACE.smallest().replace(vocab_size=1000), _cfg(max_updates=1), tmp_path / "m", tmp_path / "r",
                progress=False)
    with pytest.raises(FileExistsError, match="pass --resume"):
        train_model(SPACE.smallest().replace(vocab_size=1000), _cfg(max_updates=2), tmp_path / "m", tmp_path / "r",
                    progress=False)


@pytest.mark.timeout(300)
def test_torchrun_two_processes_match_one(tmp_path):
    """2 processes x 1 batch per update == 1 process x 2 accumulated batches (same global batch)."""
    SPACE.save(tmp_path / "space.json")
    common = ["--data", str(DATA), "--space", str(tmp_path / "space.json"), "--arch", "switch",
              "--max-tokens", "300", "--lr", "2e-3", "--warmup-updates", "3", "--seed", "3", "--threads", "1",
              "--valid-every", "1000", "--valid-sentences", "20", "--max-updates", "6", "--dropout", "0"]
    one = _cli("train", "model", *common, "--update-freq", "2", "--out", str(tmp_path / "m1"),
               "--run-dir", str(tmp_path / "r1"))
    assert one.returncode == 0, one.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                "-m", "automoe", "train", "model", *common, "--update-freq", "1", "--out", str(tmp_path / "m2"),
                "--run-dir", str(tmp_path / "r2")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(torchrun, capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    loss1 = [json.loads(x)["loss"] for x in (tmp_path / "r1" / "train.jsonl").read_text().splitlines() if '"train"' in x]
    loss2 = [json.loads(x)["loss"] for x in (tmp_path / "r2" / "train.jsonl").read_text().splitlines() if '"train"' in x]
    assert len(loss1) == len(loss2) == 6
    # rank 0 logs its own half of the batch; compare the global view through the weights instead
    w1, w2 = load_file(str(tmp_path / "m1" / "model.safetensors")), load_file(str(tmp_path / "m2" / "model.safetensors"))
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)
    info1 = json.loads((tmp_path / "m1" / "config.json").read_text())["training"]
    info2 = json.loads((tmp_path / "m2" / "config.json").read_text())["training"]
    assert info1["tokens_seen"] == info2["tokens_seen"] and info2["world_size"] == 2


def test_model_folder_has_provenance_and_loads(tmp_path):
    from automoe.modeling import MoETransformer

    train_model(SPACE.switch_baseline(2).replace(vocab_size=1000), _cfg(max_updates=3), tmp_path / "m",
                tmp_path / "r", progress=False, name="m")
    model = MoETransformer.from_pretrained(tmp_path / "m")
    info = model.meta["training"]
    assert info["updates"] == 3 and info["tokens_seen"] > 0 and len(info["data_manifest_sha256"]) == 64
    assert model.meta["tokenizer"] == {"type": "sentencepiece", "file": "spm.model"}
    assert (tmp_path / "m" / "spm.model").exists()


def test_supernet_init_from_weights(tmp_path):
    train_supernet(SPACE, _cfg(max_updates=2), tmp_path / "a", progress=False)
    train_supernet(SPACE, _cfg(max_updates=1, lr=1e-12), tmp_path / "b", init_from=tmp_path / "a", progress=False)
    a, b = load_supernet(tmp_path / "a"), load_supernet(tmp_path / "b")
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.parameters(), b.parameters()))
    other = dataclasses.replace(SPACE, max_experts=2)
    with pytest.raises(ValueError, match="supernet of another space"):
        train_supernet(other, _cfg(max_updates=1), tmp_path / "c", init_from=tmp_path / "a", progress=False)
