"""`automoe bench --throughput`: sentences/s at several batch sizes, dense and MoE, every engine."""

import json
from pathlib import Path

import pytest

from automoe import bench, bench_results
from automoe.cli import main
from automoe.config import ConfigError, SearchSpace
from automoe.random_model import save_random_model

DATA = Path(__file__).parent / "data" / "bible-en-de"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny MoE model first (no dense baseline is needed) and a tiny dense one."""
    root = tmp_path_factory.mktemp("throughput-models")
    base = SearchSpace.preset("tiny").largest().replace(vocab_size=1000, max_positions=24)
    archs = {"moe": base.replace(decoder_ffn=((40, 8),) * base.decoder_layers),
             "dense": base.replace(encoder_ffn=((40,),) * base.encoder_layers,
                                   decoder_ffn=((40,),) * base.decoder_layers)}
    return {name: save_random_model(a, root / name, tokenizer_file=DATA / "spm.model") for name, a in archs.items()}


def test_throughput_records_and_table(models, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOMOE_CACHE", str(tmp_path / "cache"))
    records = bench.throughput(list(models.values()), DATA, engines=("torch", "ctranslate2-int8"), threads=(1,),
                               batches=(1, 3), sentences=5, warmup=1, beam=2, progress=False)
    assert len(records) == 2 * 2 * 2  # model x engine x batch
    by_key = {(r["model"], r["engine"], r["batch"]): r for r in records}
    assert "expert" in by_key[("moe", "ctranslate2-int8", 3)]["skipped"].lower()
    for model in models:
        for batch in (1, 3):
            r = by_key[(model, "torch", batch)]
            assert r["benchmark"] == "throughput" and r["threads"] == 1 and r["sentences"] == 5
            assert r["sentences_per_s"] > 0 and r["tokens_per_s"] > 0 and r["same_as_batch_1"] == 1.0
    table = bench_results.throughput_table(records)
    assert "batch 3: sent/s (tok/s)" in table and "`moe` | torch | 1 |" in table and "100%" in table
    with pytest.raises(ConfigError, match="batches"):
        bench.throughput(list(models.values()), DATA, batches=(0,))


def test_cli_throughput_appends_to_the_bench_jsonl(models, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOMOE_CACHE", str(tmp_path / "cache"))
    assert main(["bench", str(models["moe"]), "--data", str(DATA), "--engines", "torch", "--throughput",
                 "--batches", "1,2", "--sentences", "3", "--beam", "2", "--results-dir", str(tmp_path),
                 "--no-progress"]) == 0
    lines = [json.loads(x) for x in (tmp_path / "bench.jsonl").read_text().splitlines()]
    assert [(r["benchmark"], r["batch"]) for r in lines] == [("throughput", 1), ("throughput", 2)]
    assert "batch 2 / batch 1" in capsys.readouterr().out
