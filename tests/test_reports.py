"""README tables and model cards come from results files, never from hand-typed numbers."""

import sys
from pathlib import Path

from automoe.card import model_card, read_records
from automoe.config import SearchSpace

ROOT = Path(__file__).resolve().parent.parent


def test_readme_tables_are_generated_from_results():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from report import render

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert render(readme) == readme, "README.md is out of date: run `make report` (benchmarks/report.py)"


def test_model_card_uses_the_records(tmp_path):
    arch = SearchSpace.preset("small").switch_baseline(4)
    records = tmp_path / "eval.jsonl"
    records.write_text('{"model": "m", "arch_name": null, "split": "test", "sentences": 1007, "beam": 4, '
                       '"bleu": 12.34, "chrf": 40.5, "engine": "torch", "bleu_signature": "sig-b", '
                       '"chrf_signature": "sig-c"}\n{"model": "other", "bleu": 99}\n')
    evals = read_records(records, model="m")
    training = {"data": "data/x", "updates": 10, "tokens_seen": 1234, "epochs": 1, "wall_seconds": 3600,
                "seed": 1, "train_config": {"lr": 0.001}}
    card = model_card("Title", "Summary.", arch, training, evals)
    assert "| model | test | 1007 | 4 | 12.34 | 40.50 | torch |" in card and "99" not in card
    assert "45.64M parameters" in card and "1,234 target tokens" in card and "sig-b" in card
    assert card.count("| encoder (d=384) |") == 4 and "1536, 1536, 1536, 1536" in card


def test_card_states_the_whole_budget_of_a_continued_run():
    arch = SearchSpace.preset("small").largest()
    first = {"updates": 1273, "tokens_seen": 9_970_863, "wall_seconds": 5800.9, "previous": None}
    training = {"data": "data/x", "updates": 500, "tokens_seen": 4_000_000, "epochs": 1, "wall_seconds": 1500.0,
                "seed": 1, "train_config": {}, "init_from": "models/s", "previous": first}
    card = model_card("Title", "Summary.", arch, training, [])
    assert "earlier run of 1273 updates" in card
    assert "all 2 segments together: 1773 updates, 13,970,863 target tokens processed, 2.03 h" in card
