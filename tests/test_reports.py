"""README tables and model cards come from results files, never from hand-typed numbers."""

import sys
from pathlib import Path

import pytest

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


class _FakeSession:
    """Stands in for an onnxruntime session: logs which step it ran."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def run(self, output_names, feed):
        self.log.append((self.name, feed["step"]))


def test_moe_overhead_replay_times_the_same_steps_for_every_model_with_warmup_untimed():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from moe_overhead import replay

    log = []
    sessions = {n: _FakeSession(n, log) for n in ("dense", "moe")}
    sentences = [[{"step": (s, i)} for i in range(s + 1)] for s in range(5)]  # sentence s has s + 1 steps
    seconds = replay(sessions, sentences, rounds=3, turn=5, warmup=2)
    timed_steps = sum(len(s) for s in sentences[2:])
    assert all(len(seconds[n]) == 3 and all(len(t) == timed_steps for r in seconds[n] for t in r) for n in sessions)
    # every model runs every step of every round (warm-up included), whole turns in a row, order rotating
    assert len(log) == 3 * 2 * sum(len(s) for s in sentences)
    firsts = [log[i][0] for i in range(0, len(log), len(log) // 6)]
    assert firsts == ["dense", "moe", "moe", "dense", "dense", "moe"]
    # short turns: each turn of `turn` sentences starts with `warmup` untimed sentences
    seconds = replay(sessions, sentences, rounds=1, turn=2, warmup=1)
    assert [len(t) for t in seconds["moe"][0]] == [len(sentences[1]), len(sentences[3]), 0]
    # a model given as several sessions runs each turn on the next one, whole turns on one session
    log.clear()
    sessions["dense"] = [_FakeSession("dense0", log), _FakeSession("dense1", log)]
    replay(sessions, sentences, rounds=2, turn=5, warmup=2)
    dense_turns = [name for i, (name, _) in enumerate(log) if name.startswith("dense") and
                   (i == 0 or log[i - 1][0] != name)]
    assert dense_turns == ["dense0", "dense1"]


def test_moe_overhead_ratio_stats_pair_turns():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from moe_overhead import ratio_stats

    # 2 rounds x 3 turns; round 1 was contended for both models; the last turn times nothing
    seconds = {"dense": [[[1.0, 1.0], [1.0, 1.0], []], [[2.0, 2.0], [2.0, 2.0], []]],
               "moe": [[[1.1, 1.1], [1.3, 1.1], []], [[2.4, 2.4], [2.0, 2.2], []]]}
    stats = ratio_stats(seconds, "moe", "dense")
    assert stats["turns"] == 4 and stats["overhead"] == 0.15  # pairs: 1.1, 1.2, 1.2, 1.05
    # per-step minima over rounds: turn 0 (1.1, 1.1) vs (1, 1); turn 1 (1.3, 1.1) vs (1, 1)
    assert stats["overhead_min"] == 0.15
    assert ratio_stats({k: v[1:] for k, v in seconds.items()}, "moe", "dense")["overhead_min"] is None


def test_moe_instructions_reads_cachegrind_totals():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from moe_instructions import parse_cachegrind

    text = """==5230== I   refs:      2,318,361,238
==5230== I1  misses:       20,525,925
==5230== LLi misses:          101,304
==5230== D   refs:      1,350,341,738  (855,888,328 rd   + 494,453,410 wr)
==5230== D1  misses:       31,299,432  ( 24,014,840 rd   +   7,284,592 wr)
==5230== LLd misses:        3,403,335  (    531,784 rd   +   2,871,551 wr)
==5230== Mispredicts:      25,636,013  ( 15,743,141 cond +   9,892,872 ind)"""
    assert parse_cachegrind(text) == {"instructions": 2318361238, "i1_misses": 20525925, "lli_misses": 101304,
                                      "d1_misses": 31299432, "lld_misses": 3403335, "mispredicts": 25636013}
    import pytest

    with pytest.raises(RuntimeError, match="Mispredicts"):
        parse_cachegrind(text.rsplit("\n", 1)[0])


def test_moe_dispatch_parts_cuts_are_exact_only_while_every_token_takes_expert_0(tmp_path):
    """Each cut of benchmarks/moe_dispatch_parts.py leaves a decoder graph that computes what the
    all-tokens-to-expert-0 graph computes, and removes the nodes it names; with a real router the
    check refuses the cut graph."""
    import onnx
    import torch

    from automoe.config import SearchSpace
    from automoe.modeling import MoETransformer
    from automoe.serve import Translator

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from moe_dispatch_parts import VARIANTS, check_equal, cut_dispatch, optimized_graph, plain_session
    from moe_overhead import export_model, record_steps

    data = ROOT / "tests" / "data" / "bible-en-de"
    base = SearchSpace.preset("tiny").largest()
    arch = base.replace(vocab_size=1000, max_positions=64, encoder_ffn=((24,) * 4,) * base.encoder_layers,
                        decoder_ffn=((24,) * 4,) * base.decoder_layers)
    torch.manual_seed(0)
    real = MoETransformer(arch)
    one = MoETransformer(arch)
    one.load_state_dict(real.state_dict())
    for layer in list(one.encoder_layers) + list(one.decoder_layers):
        layer.ffn.router.weight.data = torch.zeros_like(layer.ffn.router.weight)
    sources = [line.strip() for line in (data / "test.src").read_text().splitlines()[:2]]
    for name, model in (("one", one), ("real", real)):
        exported = export_model(model, tmp_path / name, data / "spm.model", "int8")
        translator = Translator.from_pretrained(exported, threads=1)
        steps = [feed for sentence in record_steps(translator, sources, beam=4, max_length=6) for feed in sentence]
        graph = optimized_graph(exported / "decoder.onnx", tmp_path / f"{name}.onnx", threads=1)
        sessions = {"whole": plain_session(graph, 1)}
        for variant in VARIANTS:
            model_proto = onnx.load(str(graph))
            layers, removed = cut_dispatch(model_proto.graph, variant)
            onnx.save(model_proto, str(tmp_path / f"{name}-{variant}.onnx"))
            sessions[variant] = plain_session(tmp_path / f"{name}-{variant}.onnx", 1)
            assert layers == base.decoder_layers
            per_layer = {op: n // layers for op, n in removed.items()}
            assert per_layer["DynamicQuantizeMatMul"] == 6 and per_layer["Relu"] == 3  # 3 empty experts
            assert ("Split" in per_layer) == (variant != "no-empty")
            assert all(op in per_layer for op in ("TopK", "GatherND", "ScatterND", "OneHot")) == (variant == "router-only")
        if name == "one":
            check_equal(sessions, "whole", steps)
        else:
            with pytest.raises(RuntimeError, match="does every token take expert 0"):
                check_equal(sessions, "whole", steps)
