"""The search workflow end to end on a tiny supernet: latency table, predictor, search, extract."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from automoe.config import SearchSpace, TrainConfig
from automoe.train import train_supernet

DATA = Path(__file__).parent / "data" / "bible-en-de"


def _cli(*args):
    exe = shutil.which("automoe")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "automoe", *args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.timeout(300)
def test_latency_table_predictor_search_extract(tmp_path):
    space = dataclasses.replace(SearchSpace.preset("tiny"), vocab_size=1000)
    space.save(tmp_path / "space.json")
    cfg = TrainConfig(data=str(DATA), max_tokens=400, max_updates=15, warmup_updates=3, lr=3e-3, valid_every=1000,
                      valid_sentences=20, seed=1)
    train_supernet(space, cfg, tmp_path / "supernet", progress=False)
    assert (tmp_path / "supernet" / "spm.model").exists()
    from automoe.data import encode_file, load_tokenizer
    from automoe.search.run import fit_predictor, latency_table

    sentences = encode_file(load_tokenizer(DATA), DATA / "dev.src", 60)[:3]
    table = tmp_path / "latency.jsonl"
    kw = dict(sentences=sentences, quantize=None, out_len=6, progress=False)
    latency_table(space, table, samples=6, **kw)
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert len(rows) == 6 and all(r["median_ms"] > 0 for r in rows) and rows[0]["engine"] == "onnxruntime"
    latency_table(space, table, samples=7, **kw)  # resumable: asking for 7 measures only the 7th
    assert [json.loads(line)["index"] for line in table.read_text().splitlines()] == list(range(7))
    with pytest.raises(ValueError, match=r"other settings \(repeats\)"):
        latency_table(space, table, samples=8, **{**kw, "repeats": 3})
    inherited = tmp_path / "inherited.jsonl"
    latency_table(space, inherited, samples=3, supernet_dir=tmp_path / "supernet", **kw)
    assert [json.loads(line)["weights"] for line in inherited.open()] == ["inherited"] * 3
    from automoe.search.latency import measure_latency_isolated

    alone = measure_latency_isolated(space.smallest(), sentences, quantize=None, out_len=6, repeats=3,
                                     reference=space.smallest())
    assert 0.5 < alone["ratio"] < 2 and alone["engine"] == "onnxruntime"  # itself, timed in a fresh process
    report = fit_predictor(space, table, tmp_path / "pred.safetensors", holdout=0.3, epochs=200)
    assert {"automoe", "hat"} <= set(report) and report["test"] == 2
    from automoe.search.latency import LatencyPredictor

    setting = {"engine": "onnxruntime", "threads": 1, "quantization": None, "beam": 4, "out_len": 6}
    measured_on = report["measured_on"]
    assert measured_on == LatencyPredictor.load(tmp_path / "pred.safetensors").measured_on
    assert {k: measured_on[k] for k in setting} == setting
    assert measured_on["reference"] == space.smallest().to_dict() and measured_on["reference_scale_ms"] > 0
    assert all(r["ratio"] > 0 and r["repeats"] == 2 and r["weights"] == "random" for r in rows)
    mixed = tmp_path / "mixed.jsonl"
    rows[-1]["threads"] = 2
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="mixes measurement settings"):
        fit_predictor(space, mixed, tmp_path / "mixed.safetensors", epochs=10)
    budget = sorted(r["median_ms"] for r in rows)[3]
    _cli("search", "run", "--supernet", str(tmp_path / "supernet"), "--data", str(DATA), "--out",
         str(tmp_path / "search"), "--latency-ms", str(budget), "--predictor", str(tmp_path / "pred.safetensors"),
         "--population", "8", "--parents", "2", "--mutations", "3", "--crossovers", "3", "--iterations", "2",
         "--fitness-sentences", "20")
    evaluated = [json.loads(line) for line in (tmp_path / "search" / "search.jsonl").read_text().splitlines()]
    assert evaluated and all(e["predicted_latency_ms"] <= budget for e in evaluated)
    assert {"fitness", "gflops", "active_params", "gene"} <= set(evaluated[0])
    info = json.loads((tmp_path / "search" / "best_info.json").read_text())
    state = json.loads((tmp_path / "search" / "search_state.json").read_text())
    assert 0 < state["seconds"]["wall_seconds"] <= info["wall_seconds"] and info["cpu_seconds"] > 0  # the search's cost
    from automoe.search.evolution import EvolutionConfig
    from automoe.search.run import run_search

    same = EvolutionConfig(population=8, parents=2, mutations=3, crossovers=3, iterations=2)
    with pytest.raises(ValueError, match="other settings \\(latency_ms"):  # a resume must be the same search
        run_search(tmp_path / "supernet", DATA, tmp_path / "search", latency_ms=budget * 2, config=same,
                   predictor=str(tmp_path / "pred.safetensors"), fitness_sentences=20, resume=True)

    run_search(tmp_path / "supernet", DATA, tmp_path / "dense", gflops=1.0, dense_only=True, fitness_sentences=20,
               config=EvolutionConfig(population=8, parents=2, mutations=3, crossovers=3, iterations=1))
    dense_best = json.loads((tmp_path / "dense" / "best.json").read_text())
    assert all(len(w) == 1 for w in dense_best["encoder_ffn"] + dense_best["decoder_ffn"])
    run_search(tmp_path / "supernet", DATA, tmp_path / "dense-2", gflops=1.0, dense_only=True, fitness_sentences=20,
               config=EvolutionConfig(population=8, parents=2, mutations=3, crossovers=3, iterations=1), workers=2)
    assert json.loads((tmp_path / "dense-2" / "best.json").read_text()) == dense_best  # 2 processes, same search
    fits = lambda name: sorted(json.loads(line)["fitness"] for line in (tmp_path / name / "search.jsonl").open())  # noqa: E731
    assert fits("dense-2") == pytest.approx(fits("dense"), abs=1e-6)
    _cli("extract", str(tmp_path / "supernet"), "--arch", str(tmp_path / "search" / "best.json"),
         "--out", str(tmp_path / "model"))
    from automoe.serve import Translator

    assert len(Translator.from_pretrained(tmp_path / "model").translate(["Jesus wept."], beam=2, max_length=5)) == 1
