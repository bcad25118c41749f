"""automoe bench on tiny random models: records, skips, speedup reference, table, plots, CLI."""

import json
from pathlib import Path

import pytest

from automoe import bench, bench_results
from automoe.card import read_records
from automoe.cli import main
from automoe.config import ConfigError, SearchSpace
from automoe.random_model import save_random_model

DATA = Path(__file__).parent / "data" / "bible-en-de"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A dense baseline, a smaller dense (HAT-style) model, a Switch model and a heterogeneous MoE."""
    root = tmp_path_factory.mktemp("bench-models")
    base = SearchSpace.preset("tiny").largest().replace(vocab_size=1000, max_positions=24)
    layers = base.encoder_layers
    archs = {
        "dense": base.replace(encoder_ffn=((40,),) * layers, decoder_ffn=((40,),) * base.decoder_layers),
        "small-dense": base.replace(encoder_ffn=((8,),) * layers, decoder_ffn=((8,),) * base.decoder_layers),
        "switch": base.replace(encoder_ffn=((40, 40),) * layers, decoder_ffn=((40, 40),) * base.decoder_layers),
        "moe": base.replace(encoder_ffn=((40, 8),) + ((24,),) * (layers - 1), decoder_ffn=((8,),) * base.decoder_layers),
    }
    return {name: save_random_model(a, root / name, tokenizer_file=DATA / "spm.model") for name, a in archs.items()}


@pytest.fixture(autouse=True)
def export_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOMOE_CACHE", str(tmp_path / "cache"))


def test_families_and_baseline(models, tmp_path):
    (tmp_path / "not-a-model").mkdir()
    found, base = bench.load_models([*models.values(), tmp_path / "not-a-model"])
    assert base.name == "dense"
    assert {m.name: m.family for m in found} == {"dense": "dense", "small-dense": "hat", "switch": "switch",
                                                 "moe": "automoe"}
    _, base = bench.load_models(list(models.values()), baseline="small-dense")
    assert base.name == "small-dense"
    with pytest.raises(ConfigError, match="baseline 'nope' is not among the models"):
        bench.load_models(list(models.values()), baseline="nope")
    with pytest.raises(ConfigError, match="no dense model"):
        bench.load_models([models["moe"]])
    with pytest.raises(ConfigError, match="unknown engine 'onnx'"):
        bench.parse_engine("onnx")


def test_bench_records_table_and_plots(models, tmp_path):
    records = bench.bench(list(models.values()), DATA, engines=("torch", "ctranslate2-int8"), threads=(1,),
                          sentences=5, warmup=1, beam=2, throughput_batch=3, progress=False)
    assert len(records) == 4 * 2  # model x engine x threads, skipped ones included
    by_key = {(r["model"], r["engine"]): r for r in records}
    for name in ("switch", "moe"):  # CTranslate2 has no MoE layer: skipped with the reason
        assert "skipped" in by_key[(name, "ctranslate2-int8")]
        assert "expert" in by_key[(name, "ctranslate2-int8")]["skipped"].lower()
    assert by_key[("dense", "torch")]["speedup"] == 1.0
    assert by_key[("dense", "ctranslate2-int8")]["speedup"] == 1.0
    for r in records:
        assert r["run_id"] == records[0]["run_id"] and r["threads"] == 1 and r["baseline"] == "dense"
        assert r["cpu"] and r["sentences"] == 5 and r["gflops"] > 0 and 0 < r["active_params"] <= r["total_params"]
        if "skipped" not in r:
            assert r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] * 0.999 and r["speedup"] > 0
            assert r["throughput_sps"] > 0 and 0 <= r["bleu"] <= 100 and "nrefs:1" in r["bleu_signature"]
    assert by_key[("switch", "torch")]["active_params"] < by_key[("switch", "torch")]["total_params"]

    paths = bench_results.write_outputs(records, tmp_path / "results", "tiny")
    lines = paths["jsonl"].read_text().splitlines()
    assert [json.loads(line) for line in lines] == records
    table = paths["table"].read_text()
    assert table.count("| `") == 8 and "skipped:" in table and "speedup = `dense`" in table
    for key in ("latency_plot", "gflops_plot"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run appends; the table of the file's last run is that run only
    bench_results.append_records(paths["jsonl"], [dict(r, run_id="second") for r in records[:2]])
    assert [r["run_id"] for r in bench_results.last_run(read_records(paths["jsonl"]))] == ["second", "second"]


def test_pareto_front():
    points = [(10, 20.0), (5, 18.0), (7, 17.0), (20, 19.0), (3, 10.0), (5, 12.0)]
    assert bench_results.pareto_front(points) == [(3, 10.0), (5, 18.0), (10, 20.0)]


def test_cli(models, tmp_path, capsys):
    rc = main(["bench", str(models["dense"]), str(models["moe"]), "--data", str(DATA), "--engines", "torch",
               "--sentences", "3", "--warmup", "0", "--beam", "2", "--throughput-batch", "2", "--out", "cli",
               "--results-dir", str(tmp_path), "--no-plots", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "`moe` | automoe | torch" in out and (tmp_path / "cli.jsonl").exists()
    assert not (tmp_path / "cli-latency.png").exists()
    assert main(["bench", str(models["dense"]), "--data", str(DATA), "--engines", "torch,nope"]) == 2
    assert "unknown engine 'nope'" in capsys.readouterr().err
    assert main(["bench", str(models["dense"]), "--data", str(DATA), "--quick", "--sentences", "5"]) == 2


def test_default_engine_is_int8_row_where_the_operator_builds(monkeypatch):
    from automoe.export import kernel

    monkeypatch.setattr(kernel, "available", lambda: True)
    assert bench.default_engine() == "onnxruntime-int8-row"
    monkeypatch.setattr(kernel, "available", lambda: False)  # no C++ compiler
    assert bench.default_engine() == "onnxruntime-int8"


def test_shortlist_variant_records_its_cost_and_speedup(models, tmp_path):
    """With shortlist=True, a model with a shortlist gets one more record (same run) with the BLEU
    cost and own speedup; a model without one gets a skipped record saying how to build it."""
    import shutil

    from automoe.shortlist import SHORTLIST_FILE, build_shortlist

    dense = tmp_path / "dense"
    shutil.copytree(models["dense"], dense)
    build_shortlist(DATA, dense, top_k=8, frequent=20).save(dense / SHORTLIST_FILE)
    records = bench.bench([dense, models["moe"]], DATA, engines=("torch",), sentences=4, warmup=0, beam=2,
                          throughput_batch=2, shortlist=True, progress=False)
    by_key = {(r["model"], r["shortlist"]): r for r in records}
    assert set(by_key) == {("dense", False), ("dense", True), ("moe", False), ("moe", True)}
    listed = by_key[("dense", True)]
    assert listed["shortlist_speedup"] > 0 and listed["shortlist_size"] > 20
    assert listed["shortlist_bleu_cost"] == round(by_key[("dense", False)]["bleu"] - listed["bleu"], 2)
    assert by_key[("dense", False)]["speedup"] == 1.0  # the reference is the dense model without a shortlist
    assert listed["speedup"] == listed["shortlist_speedup"]
    assert "automoe shortlist build" in by_key[("moe", True)]["skipped"]
    table = bench_results.markdown_table(records)
    assert "`dense + shortlist`" in table and "own speedup / BLEU cost" in table


def test_plot_labels_of_nearby_points_do_not_overlap():
    """Two labels at one anchor: the lower-ranked moves down a line; a distant one keeps its place."""
    from automoe.bench_results import label_offsets

    offsets = label_offsets([(100.0, 200.0), (101.0, 199.0), (400.0, 50.0)], ["model-a", "model-b", "far"], 7)
    (ax, ay), (bx, by), far = offsets
    assert (ax, ay) == (4.0, 4.0) and far == (4.0, 4.0)
    assert bx == 4.0 and (200.0 + ay) - (199.0 + by) >= 7 * 1.25  # b's box lies wholly below a's


def test_reference_dense_is_the_largest_dense_architecture():
    tiny = SearchSpace.preset("tiny")
    assert bench.reference_dense({"small": tiny.smallest(), "big": tiny.largest(), "sw": tiny.switch_baseline(3)}) \
        == "big"
    assert bench.reference_dense({"sw": tiny.switch_baseline(3)}) is None


def test_main_job_picks_the_fastest_record_within_one_bleu_of_the_baseline_without_shortlist():
    """`make run` translates with the fastest model, or model + shortlist, within 1 BLEU of the dense
    baseline decoded over the full vocabulary (not of the baseline's own shortlist row)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from main_job import pick_fast_model

    def rec(model, bleu, ms, engine="onnxruntime-int8-row", shortlist=False):
        return {"model": model, "baseline": "dense", "engine": engine, "bleu": bleu, "median_ms": ms,
                "shortlist": shortlist}

    records = [rec("dense", 21.0, 28.0, shortlist=True),  # listed first: must not be the reference
               rec("dense", 20.0, 30.0),
               rec("small", 19.5, 10.0), rec("small", 19.2, 7.0, shortlist=True),
               rec("tiny", 18.9, 4.0),  # 1.1 BLEU below the baseline
               rec("small", 19.5, 1.0, engine="ctranslate2-int8"),  # another engine
               {"model": "moe", "baseline": "dense", "engine": "onnxruntime-int8-row", "skipped": "no"}]
    fast = pick_fast_model(records, "onnxruntime-int8-row")
    assert (fast["model"], fast["shortlist"]) == ("small", True)
    assert bench_results.label(fast) == "small + shortlist"
    assert pick_fast_model(records, "onnxruntime-int8-row", max_drop=0.4)["model"] == "dense"
