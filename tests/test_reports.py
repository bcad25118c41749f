"""README tables and model cards come from results files, never from hand-typed numbers."""

from pathlib import Path

import pytest

from automoe.card import model_card, read_records
from automoe.config import SearchSpace

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def benchmarks_importable(monkeypatch):
    """The benchmark scripts import as their folder's modules (as when run: python benchmarks/x.py)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))


def test_result_tables_are_generated_from_results(tmp_path, monkeypatch, capsys):
    """README.md and docs/moe_dispatch.md are what report.py renders now; `--check` says which
    document is stale (exit 1) and passes on fresh ones."""
    import report

    for path in report.DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        assert report.render(text) == text, f"{path.name} is out of date: run `make report` (benchmarks/report.py)"
    assert report.main(["--check"]) == 0
    stale = tmp_path / "moe_dispatch.md"
    stale.write_text("<!-- results:moe_bleu -->\n<!-- /results:moe_bleu -->\n", encoding="utf-8")  # a new, empty block
    monkeypatch.setattr(report, "DOCUMENTS", (report.DOCUMENTS[0], stale))
    assert report.main(["--check"]) == 1 and "out of date: moe_dispatch.md (run" in capsys.readouterr().out
    assert report.main([]) == 0 and report.main(["--check"]) == 0 and "onnxruntime-int8-kernel" in stale.read_text()


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


def test_model_card_shows_the_newest_run_of_each_measurement():
    """Results files keep every run; a card lists the last engines run and the last score of each row."""
    arch = SearchSpace.preset("small").largest()
    sig = {"bleu_signature": "b", "chrf_signature": "c", "arch_name": None, "split": "test", "sentences": 1007, "beam": 4}
    evals = [{**sig, "bleu": 11.11, "chrf": 40.0, "engine": "torch"}, {**sig, "bleu": 12.22, "chrf": 41.0, "engine": "torch"},
             {**sig, "bleu": 13.33, "chrf": 42.0, "engine": "onnxruntime"}]
    run = {"cpu": "cpu", "threads": 1, "beam": 4, "latency_sentences": 100}
    latency = [{**run, "engine": e, "median_ms": ms, "speedup_vs_torch_fp32": 1.0, "date": d}
               for d, ms in (("2026-12-01", 111.0), ("2026-12-03", 222.0)) for e in ("torch", "onnxruntime-int8")]
    card = model_card("Title", "Summary.", arch, {}, evals, latency)
    assert "11.11" not in card and "| 12.22 |" in card and "| 13.33 |" in card
    assert "111.0" not in card and card.count("| 222.0 |") == 2


def test_card_states_the_whole_budget_of_a_continued_run():
    arch = SearchSpace.preset("small").largest()
    first = {"updates": 1273, "tokens_seen": 9_970_863, "wall_seconds": 5800.9, "previous": None}
    training = {"data": "data/x", "updates": 500, "tokens_seen": 4_000_000, "epochs": 1, "wall_seconds": 1500.0,
                "seed": 1, "train_config": {}, "init_from": "models/s", "previous": first}
    card = model_card("Title", "Summary.", arch, training, [])
    assert "earlier run of 1273 updates" in card
    assert "all 2 segments together: 1773 updates, 13,970,863 target tokens processed, 2.03 h" in card


def test_card_names_the_supernet_an_inherited_model_started_from():
    """The recipe line says which supernet (its folder's name, never this machine's path) and the
    shipper's note on it; a model trained from scratch names none."""
    arch = SearchSpace.preset("small").largest()
    base = {"data": "data/x", "updates": 5, "tokens_seen": 100, "epochs": 1, "wall_seconds": 1.0, "seed": 1,
            "train_config": {}}
    inherit = {**base, "recipe": "inherit", "init_from": "/root/runs/mos-neuron-scratch", "init_note": "not shipped"}
    card = model_card("Title", "Summary.", arch, inherit, [])
    assert ("Recipe: fine-tuned from the inherited weights (extracted subnet) of the supernet "
            "`mos-neuron-scratch` (not shipped). Trained on") in card and "/root" not in card
    card = model_card("Title", "Summary.", arch, {**base, "recipe": "scratch", "init_from": "models/s"}, [])
    assert "Recipe: trained from scratch." in card and "`s`" not in card


class _FakeSession:
    """Stands in for an onnxruntime session: logs which step it ran."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    def run(self, output_names, feed):
        self.log.append((self.name, feed["step"]))


def test_moe_overhead_replay_times_the_same_steps_for_every_model_with_warmup_untimed():
    from moe_harness import replay

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
    from moe_harness import ratio_stats

    # 2 rounds x 3 turns; round 1 was contended for both models; the last turn times nothing
    seconds = {"dense": [[[1.0, 1.0], [1.0, 1.0], []], [[2.0, 2.0], [2.0, 2.0], []]],
               "moe": [[[1.1, 1.1], [1.3, 1.1], []], [[2.4, 2.4], [2.0, 2.2], []]]}
    stats = ratio_stats(seconds, "moe", "dense")
    assert stats["turns"] == 4 and stats["overhead"] == 0.15  # pairs: 1.1, 1.2, 1.2, 1.05
    # per-step minima over rounds: turn 0 (1.1, 1.1) vs (1, 1); turn 1 (1.3, 1.1) vs (1, 1)
    assert stats["overhead_min"] == 0.15
    assert ratio_stats({k: v[1:] for k, v in seconds.items()}, "moe", "dense")["overhead_min"] is None


def test_moe_dispatch_parts_cuts_are_exact_only_while_every_token_takes_expert_0(tmp_path):
    """Each cut of the parts study (benchmarks/moe_dispatch.py) leaves a decoder graph that computes what the
    all-tokens-to-expert-0 graph computes, and removes the nodes it names; with a real router the
    check refuses the cut graph."""
    import onnx
    import torch

    from automoe.config import SearchSpace
    from automoe.modeling import MoETransformer
    from automoe.serve import Translator

    from moe_dispatch import VARIANTS, check_equal, cut_dispatch, optimized_graph, plain_session
    from moe_harness import export_model, record_steps

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
        optimized = optimized_graph(exported / "decoder.onnx", tmp_path / f"{name}.onnx", threads=1)
        onnx.save(optimized, str(tmp_path / f"{name}.onnx"))
        sessions = {"whole": plain_session(tmp_path / f"{name}.onnx", 1)}
        for variant in VARIANTS:
            model_proto = onnx.ModelProto()
            model_proto.CopyFrom(optimized)
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


def _overhead_record(**fields) -> dict:
    step = {"median_ms": 1.0}
    stats = {k: 0.1 for k in ("overhead", "dispatch_overhead", "expert_overhead", "control_overhead")}
    return {"benchmark": "moe_overhead", "experts": 4, "width": 384, "quantization": "int8", "threads": 1, "beam": 4,
            "sentences": 60, "max_length": 32, "rounds": 4, "turn": 20, "warmup": 4, "instances": 3, "paired_turns": 12,
            "timed_steps": 100, "dense_step": step, "moe_step": step, "moe_one_expert_step": step,
            **stats, **{f"{k}_min": 0.1 for k in stats}, "control_overhead_quartiles": [0.0, 0.1],
            "decoder_mib": {"dense": 1.0, "moe": 2.0}, "git_commit": "abc", "date": "2026-12-03T00:00:00+00:00", **fields}


def test_moe_overhead_tables_keep_trained_and_random_weights_apart(monkeypatch):
    """A run on random weights (--space) fills its own table and does not replace the trained run's."""
    import moe_tables

    trained = _overhead_record(supernet="models/trained", width=768)
    random = _overhead_record(supernet=None, space="wmt14", seed=0, d_model=640, decoder_layers=6, width=3072,
                              date="2026-12-03T00:30:00+00:00")
    monkeypatch.setattr(moe_tables, "_read", lambda name: [trained, random] if name == "moe_overhead" else [])
    table, scale = moe_tables.moe_overhead_table(), moe_tables.moe_overhead_table(random=True)
    assert "| 768 |" in table and "3072" not in table and "models/trained" in table
    assert "| 3072 |" in scale and "| 768 |" not in scale and "d_model 640, 6 decoder layers" in scale
    assert "at most 32 tokens per sentence" in scale
    monkeypatch.setattr(moe_tables, "_read", lambda name: [trained] if name == "moe_overhead" else [])
    assert moe_tables.moe_overhead_table(random=True).startswith("_Not measured yet")


def test_moe_overhead_weights_come_from_exactly_one_source():
    """--supernet (trained) or --space (random weights of a preset, the data's vocabulary): exactly one."""
    import argparse

    from automoe.data import load_tokenizer

    from moe_harness import add_replay_arguments, check_replay_arguments, load_weights

    data = ROOT / "tests" / "data" / "bible-en-de"
    p = argparse.ArgumentParser()
    add_replay_arguments(p, turn=6, warmup=2)
    for argv in ([], ["--supernet", "x", "--space", "tiny"]):
        with pytest.raises(SystemExit):
            check_replay_arguments(p, p.parse_args(["--data", str(data), *argv]))
    args = p.parse_args(["--data", str(data), "--space", "tiny", "--seed", "3", "--sentences", "6"])
    check_replay_arguments(p, args)
    supernet, fields = load_weights(args)
    assert supernet.space.vocab_size == load_tokenizer(data).vocab_size() != SearchSpace.preset("tiny").vocab_size
    assert fields == {"supernet": None, "space": "tiny", "seed": 3, "d_model": 24, "decoder_layers": 3}
    again, _ = load_weights(args)
    assert all(a.equal(b) for a, b in zip(supernet.state_dict().values(), again.state_dict().values()))


def test_moe_dispatch_parts_tables_keep_trained_and_random_weights_apart(monkeypatch):
    """The in-place breakdown on random weights (--space) has its own table, as in moe_overhead."""
    import moe_tables

    part = {"overhead": 0.1, "overhead_min": 0.1, "turns": 12}
    cuts = {"moe-one": part, "no-empty": part, "no-split": part, "router-only": part, "dense-again": part}
    base = {"benchmark": "moe_dispatch_parts", "threads": 1, "beam": 4, "moe_layers": 6, "rounds": 4, "sentences": 60,
            "turn": 20, "warmup": 4, "instances": 3, "dense_step": {"median_ms": 1.0}, "parts": cuts,
            "removed_ops": {c: {"Split": 6} for c in ("no-empty", "no-split", "router-only")}, "git_commit": "abc"}
    trained = {**base, "supernet": "models/trained", "width": 768, "date": "2026-12-03T00:00:00+00:00"}
    random = {**base, "supernet": None, "space": "wmt14", "seed": 0, "d_model": 640, "max_length": 32, "width": 2048,
              "date": "2026-12-03T00:30:00+00:00"}
    monkeypatch.setattr(moe_tables, "_read", lambda name: [trained, random] if name == "moe_dispatch_parts" else [])
    table, scale = moe_tables.moe_dispatch_parts_table(), moe_tables.moe_dispatch_parts_table(random=True)
    assert "| 768 |" in table and "| 2048 |" not in table and "models/trained" in table
    assert "| 2048 |" in scale and "| 768 |" not in scale and "`wmt14` space's largest model (d_model 640)" in scale


def test_moe_overhead_beam_decodes_to_fixed_lengths_and_differences_them(tmp_path):
    """The beam study (benchmarks/moe_dispatch.py): the feeds make the exported beam graph decode a real source to
    exactly the asked number of tokens (end token suppressed), so a long and a short decode differ by
    a known number of steps; step_costs turns [short, long] seconds per sentence into seconds per step."""
    import numpy as np
    import torch

    from automoe.config import SearchSpace
    from automoe.modeling import MoETransformer
    from automoe.serve import Translator

    from moe_dispatch import fixed_length_feeds, step_costs
    from moe_harness import export_model

    data = ROOT / "tests" / "data" / "bible-en-de"
    base = SearchSpace.preset("tiny").largest()
    arch = base.replace(vocab_size=1000, max_positions=64, decoder_ffn=((24,) * 3,) * base.decoder_layers)
    torch.manual_seed(0)
    model = MoETransformer(arch)
    with torch.no_grad():  # every step's output is the end token's embedding: left alone, it ends at once
        norm = model.decoder_layers[-1].ffn_norm
        norm.weight.zero_()
        norm.bias.copy_(10 * model.embed_tokens.weight[arch.eos_id])
    translator = Translator.from_pretrained(export_model(model, tmp_path / "moe", data / "spm.model", "int8"), threads=1)
    source = (data / "test.src").read_text().splitlines()[0].strip()
    ids = translator.tokenizer.encode(source, out_type=int) + [translator.config.eos_id]
    ended = (arch.eos_id, arch.pad_id)
    free = fixed_length_feeds(ids, 5, beam=4) | {"min_length": np.array([1], np.int32)}
    assert set(translator.backend.beam.run(None, free)[0][0, 0, 1:].tolist()) <= set(ended)
    with pytest.raises(ValueError, match="length >= 2"):
        fixed_length_feeds(ids, 1, beam=4)
    for length in (2, 5, 17):
        sequences, _ = translator.backend.beam.run(None, fixed_length_feeds(ids, length, beam=4))
        assert sequences.shape == (1, 1, length + 1)  # the start token and `length` generated ones
        assert not set(sequences[0, 0, 1:].tolist()) & set(ended)
    assert step_costs([1.0, 3.0, 2.0, 2.5], short=8, long=40) == [2.0 / 32, 0.5 / 32]


def test_moe_overhead_beam_table_reads_the_last_trained_run(monkeypatch):
    """The beam-graph table shows the last run's widths and says how a step was obtained."""
    import moe_tables

    records = [_overhead_record(benchmark="moe_overhead_beam", supernet="models/trained", width=w, lengths=[8, 40])
               for w in (384, 768)]
    monkeypatch.setattr(moe_tables, "_read", lambda name: records if name == "moe_overhead_beam" else [])
    table = moe_tables.moe_overhead_beam_table()
    assert "| 768 |" in table and "| 384 |" in table and "(time at 40 - time at 8) / 32" in table
    assert "models/trained" in table
    monkeypatch.setattr(moe_tables, "_read", lambda name: [])
    assert moe_tables.moe_overhead_beam_table().startswith("_Not measured yet")


def test_moe_overhead_beam_table_shows_the_last_run_of_each_moe_form(monkeypatch):
    """Kernel rows (the int8 default) come first, then the last compact run; records older than the
    moe_dispatch field timed the compact form; a newer run of one form does not hide another, and
    records of a form automoe no longer exports (qmoe) are not shown, nor their paired ratios."""
    import moe_tables

    beam = {"benchmark": "moe_overhead_beam", "supernet": "models/trained", "lengths": [8, 40]}
    records = [_overhead_record(**beam, width=384, dense_step={"median_ms": 1.5}),  # compact, before the field
               _overhead_record(**beam, width=384, moe_dispatch="qmoe", dense_step={"median_ms": 2.5},
                                git_commit="def", date="2026-12-04T00:00:00+00:00"),
               _overhead_record(**beam, width=384, moe_dispatch="kernel", dense_step={"median_ms": 3.5},
                                against_form="qmoe", form_ratio=-0.3, git_commit="fed", date="2026-12-05T00:00:00+00:00")]
    monkeypatch.setattr(moe_tables, "_read", lambda name: records if name == "moe_overhead_beam" else [])
    table = moe_tables.moe_overhead_beam_table()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| MoE form | FFN width |") and len(rows) == 3
    assert rows[1].startswith("| kernel | 384 | 3.500 |") and rows[2].startswith("| compact | 384 | 1.500 |")
    assert "kernel 2026-12-05, commit `fed`; compact 2026-12-03, commit `abc`" in table
    assert "qmoe" not in table


def test_moe_overhead_beam_table_reports_the_paired_form_ratio(monkeypatch):
    """Records timed with --against-form add one sentence: each width's ratio of the two forms."""
    import moe_tables

    beam = {"benchmark": "moe_overhead_beam", "supernet": "models/trained", "lengths": [8, 40], "moe_dispatch": "kernel",
            "against_form": "compact"}
    records = [_overhead_record(**beam, width=w, form_ratio=r, form_ratio_min=m) for w, r, m in ((384, -0.1, -0.05),
                                                                                             (768, -0.2, -0.15))]
    monkeypatch.setattr(moe_tables, "_read", lambda name: records if name == "moe_overhead_beam" else [])
    assert "kernel over compact, by FFN width: 768: -20.0%; -15.0%, 384: -10.0%; -5.0%." in moe_tables.moe_overhead_beam_table()


def _forms_cell(compact: float, kernel: float, ratio: float, least: float, rows: int | None) -> dict:
    return {"compact_call": {"median_ms": compact}, "kernel_call": {"median_ms": kernel}, "rows_per_call": rows,
            "ratios": {"kernel": {"ratio": ratio, "min": least, "quartiles": [ratio, ratio]}}}


def test_moe_forms_table_has_a_column_per_graph_in_decode_order(monkeypatch):
    """The forms table: one row per width (widest first), the encoder then decoder.onnx by batch
    size, each cell compact / kernel ms with the paired ratio and the ratio of minima; records
    written before the kernel form was timed are left out."""
    import moe_tables

    graphs = {"decoder@8": _forms_cell(2.0, 1.0, -0.5, -0.4, 32), "encoder": _forms_cell(2.0, 1.0, -0.5, -0.4, None),
              "decoder@1": _forms_cell(2.0, 1.0, -0.5, -0.4, 4)}
    records = [{"benchmark": "moe_forms", "supernet": "models/trained", "experts": 4, "width": w, "threads": 1, "beam": 4,
                "sentences": 96, "rounds": 3, "graphs": graphs, "git_commit": "abc", "date": "2026-12-03T00:00:00+00:00"}
               for w in (384, 1536)]
    old = {**records[0], "width": 768, "graphs": {"encoder": {"compact_call": {"median_ms": 2.0}, "ratio": -0.1}}}
    monkeypatch.setattr(moe_tables, "_read", lambda name: records + [old] if name == "moe_forms" else [])
    table = moe_tables.moe_forms_table()
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert rows[0] == ("| FFN width | encoder (one source) | decoder.onnx, batch 1 (4 rows per step) "
                       "| decoder.onnx, batch 8 (32 rows per step) |")
    assert rows[2] == "| 1536 | " + " | ".join(["2.000 / 1.000 (-50.0%; -40.0%)"] * 3) + " |"
    assert rows[3].startswith("| 384 |") and len(rows) == 4
    assert "ms per call, `compact` / `kernel`, and in brackets kernel over compact" in table
    monkeypatch.setattr(moe_tables, "_read", lambda name: [])
    assert moe_tables.moe_forms_table().startswith("_Not measured yet")


def test_recording_session_shares_inputs_equal_to_the_previous_step():
    """Recorded decoder steps keep one copy of an input that did not change since the previous step
    (cross-attention caches), a copy of each new one, and never the caller's array itself."""
    import numpy as np

    from moe_harness import RecordingSession

    class Session:
        def run(self, output_names, feed):
            return [feed["cross"].sum()]

    recorder, cross = RecordingSession(Session()), np.ones((2, 3), np.float32)
    for step in range(3):
        recorder.run(None, {"cross": cross.copy(), "past": np.full((2, step + 1), step, np.float32)})
    steps = recorder.feeds
    assert steps[0]["cross"] is steps[1]["cross"] is steps[2]["cross"]
    assert [s["past"].shape for s in steps] == [(2, 1), (2, 2), (2, 3)] and steps[2]["past"].max() == 2
    cross[:] = 5  # the caller's array changes later; the recording does not
    recorder.run(None, {"cross": cross, "past": np.zeros((2, 4), np.float32)})
    assert steps[2]["cross"].max() == 1 and steps[3]["cross"] is not cross and steps[3]["cross"].max() == 5


def test_moe_bleu_table_lists_every_form_against_torch(monkeypatch):
    import moe_tables

    record = {"benchmark": "moe_bleu", "supernet": "models/trained", "experts": 4, "width": 768, "beam": 4,
              "sentences": 10, "bleu_signature": "sig", "git_commit": "abc", "date": "2026-12-03T00:00:00+00:00",
              "scores": {"torch-fp32": {"bleu": 7.0, "chrf": 28.0, "bleu_change": 0.0},
                         "onnxruntime-int8-kernel": {"bleu": 6.75, "chrf": 27.5, "bleu_change": -0.25}}}
    monkeypatch.setattr(moe_tables, "_read", lambda name: [record] if name == "moe_bleu" else [])
    rows = moe_tables.moe_bleu_table().splitlines()
    assert rows[2] == "| torch-fp32 | 7.00 | +0.00 | 28.00 |"
    assert rows[3] == "| onnxruntime-int8-kernel | 6.75 | -0.25 | 27.50 |"
    assert "4 top-1 experts of width 768" in moe_tables.moe_bleu_table()
    monkeypatch.setattr(moe_tables, "_read", lambda name: [])
    assert moe_tables.moe_bleu_table().startswith("_Not measured yet")


def test_moe_overhead_beam_table_lists_every_repeated_run(monkeypatch):
    """When the shown run timed a width several times, the row is the last one and one sentence lists
    every run's overhead, oldest first; a form timed once gets no such sentence."""
    import moe_tables

    beam = {"benchmark": "moe_overhead_beam", "supernet": "models/trained", "lengths": [8, 40], "moe_dispatch": "kernel"}
    records = [_overhead_record(**beam, width=w, overhead=o, overhead_min=m, date=f"2026-12-05T00:{20 * i:02d}:00+00:00")
               for i, (w, o, m) in enumerate([(384, 0.05, 0.01), (768, 0.07, 0.02), (384, 0.09, 0.03)])]
    records.append(_overhead_record(**{**beam, "moe_dispatch": "compact"}, width=384, overhead=0.2))
    monkeypatch.setattr(moe_tables, "_read", lambda name: records if name == "moe_overhead_beam" else [])
    table = moe_tables.moe_overhead_beam_table()
    rows = [line for line in table.splitlines() if line.startswith("| kernel | 384 |")]
    assert len(rows) == 1 and "(+9.0%; +3.0%)" in rows[0]
    assert ("The kernel rows are the last of repeated runs; the 4-expert overhead of every run, oldest first "
            "(median [per-sentence minima]), by FFN width: 768: +7.0% [+2.0%]; 384: +5.0% [+1.0%], +9.0% [+3.0%].") in table
    assert "The compact rows are the last of repeated runs" not in table


def test_deleted_forms_table_states_the_measurements_that_decided(monkeypatch):
    """The forms deleted in issue #29 keep their deciding numbers in docs/moe_dispatch.md, rendered
    from the records: traced against compact in the decoder step, qmoe against compact and kernel
    (paired), qmoe's BLEU."""
    import moe_tables

    overhead = [_overhead_record(supernet="models/trained", width=w, overhead=0.25, traced_overhead=t, paired_turns=40)
                for w, t in ((768, 0.35), (384, 0.2))]
    beam = {"benchmark": "moe_overhead_beam", "supernet": "models/trained", "lengths": [8, 40]}
    paired = [_overhead_record(**beam, width=384, moe_dispatch="qmoe", against_form="compact", form_ratio=-0.1),
              _overhead_record(**beam, width=384, moe_dispatch="kernel", against_form="qmoe", form_ratio=-0.2),
              _overhead_record(**beam, width=384, moe_dispatch="kernel", against_form="qmoe", form_ratio=-0.05)]
    bleu = {"width": 768, "scores": {"torch-fp32": {"bleu": 7.0}, "onnxruntime-int8-kernel": {"bleu": 7.1},
                                     "onnxruntime-int8-qmoe": {"bleu": 7.2}}}
    files = {"moe_overhead": overhead, "moe_overhead_beam": paired, "moe_bleu": [bleu]}
    monkeypatch.setattr(moe_tables, "_read", lambda name: files.get(name, []))
    rows = moe_tables.moe_deleted_forms_table().splitlines()
    assert rows[2].startswith("| traced | decoder.onnx step over dense, traced vs compact, `models/trained`")
    assert "traced slower in 1 of all 2 such records) | 768: +35.0% vs +25.0%, 384: +20.0% vs +25.0% |" in rows[2]
    assert rows[3].endswith("qmoe over compact, paired (moe_overhead_beam, 1 runs) | 384: -10.0% |")
    assert rows[4].endswith("kernel over qmoe, paired (moe_overhead_beam, 2 runs) | 384: -20.0% .. -5.0% |")
    assert rows[5].endswith("| fp32 7.00, kernel 7.10, qmoe 7.20 |") and len(rows) == 6
    monkeypatch.setattr(moe_tables, "_read", lambda name: [])
    assert moe_tables.moe_deleted_forms_table().startswith("_No records")


def test_moe_summary_is_the_kernel_beam_rows_with_their_bleu_and_a_link(monkeypatch):
    import moe_tables

    beam = {"benchmark": "moe_overhead_beam", "supernet": "models/trained", "lengths": [8, 40], "moe_dispatch": "kernel"}
    records = [_overhead_record(**beam, width=w, overhead=o) for w, o in ((384, 0.05), (768, 0.07))]
    records.append(_overhead_record(**{**beam, "moe_dispatch": "compact"}, width=384, overhead=0.3))
    bleu = {"scores": {"onnxruntime-int8-kernel": {"bleu_change": -0.25}}}
    files = {"moe_overhead_beam": records, "moe_bleu": [bleu]}
    monkeypatch.setattr(moe_tables, "_read", lambda name: files.get(name, []))
    table = moe_tables.moe_summary_table()
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert [row[:45] for row in rows[1:]] == ["| 768 | 1.000 | 1.000 (+7.0%; +10.0%) | 1.000",
                                              "| 384 | 1.000 | 1.000 (+5.0%; +10.0%) | 1.000"]
    assert "`kernel` MoE form" in table and "against PyTorch fp32: -0.25" in table
    assert "[docs/moe_dispatch.md](docs/moe_dispatch.md)" in table


def test_search_methods_records_each_search_cost_and_model(tmp_path, monkeypatch):
    """benchmarks/search_methods.py: the evolutionary cost counts every stage of its supernet's
    training plus the search, DARTS its own run; both models are benched with the dense one in one
    run; a search folder without its time is refused; the table renders the records."""
    import json

    import report
    import search_methods

    from automoe.random_model import save_random_model

    monkeypatch.setenv("AUTOMOE_CACHE", str(tmp_path / "cache"))
    data = ROOT / "tests" / "data" / "bible-en-de"
    base = SearchSpace.preset("tiny").largest().replace(vocab_size=1000, max_positions=24)
    dense = base.replace(encoder_ffn=((40,),) * base.encoder_layers, decoder_ffn=((40,),) * base.decoder_layers)
    folders = {name: save_random_model(arch, tmp_path / name, tokenizer_file=data / "spm.model")
               for name, arch in (("dense", dense), ("evo", base.replace(decoder_ffn=((40, 8),) * base.decoder_layers)),
                                  ("darts", dense.replace(decoder_ffn=((8,),) * base.decoder_layers)))}
    supernet = tmp_path / "supernet"
    supernet.mkdir()
    (supernet / "supernet_info.json").write_text(json.dumps({"wall_seconds": 3600, "previous": {"wall_seconds": 1800}}))
    runs = {}
    for name, info in (("evo-run", {"wall_seconds": 360, "cpu_seconds": 700}),
                       ("darts-run", {"wall_seconds": 7200, "cpu_seconds": 14000, "steps": 10})):
        runs[name] = tmp_path / name
        runs[name].mkdir()
        (runs[name] / "best_info.json").write_text(json.dumps(info))
    out = tmp_path / "search_methods.jsonl"
    argv = ["--dense-model", str(folders["dense"]), "--supernet", str(supernet), "--evolution-run", str(runs["evo-run"]),
            "--evolution-model", str(folders["evo"]), "--darts-run", str(runs["darts-run"]), "--darts-model",
            str(folders["darts"]), "--data", str(data), "--sentences", "3", "--out", str(out)]
    assert search_methods.main(argv) == 0
    evo, darts = (json.loads(line) for line in out.read_text().splitlines())
    assert (evo["method"], evo["supernet_wall_hours"], evo["search_wall_hours"], evo["total_wall_hours"]) == (
        "evolution", 1.5, 0.1, 1.6)
    assert (darts["method"], darts["supernet_wall_hours"], darts["total_wall_hours"], darts["search_steps"]) == (
        "darts", 0.0, 2.0, 10)
    assert evo["bench_run_id"] == darts["bench_run_id"] and evo["sentences"] == 3 and darts["speedup"] > 0
    assert evo["model"] == str(folders["evo"]) and evo["engine"] == "onnxruntime-int8"
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    table = report.search_methods_table()
    assert "| evolution | 1.50 | 0.10 | 1.60 |" in table and "| darts | 0.00 | 2.00 | 2.00 |" in table
    (runs["darts-run"] / "best_info.json").write_text(json.dumps({"steps": 10}))
    with pytest.raises(SystemExit, match="records no wall_seconds"):
        search_methods.main(argv)


def test_proof_goals_compare_each_automoe_model_with_baselines_decoded_alike():
    import report

    def rec(model, family, ms, bleu, gflops=1.0, shortlist=False, engine="onnxruntime-int8"):
        return {"model": model, "family": family, "engine": engine, "threads": 1, "shortlist": shortlist,
                "median_ms": ms, "bleu": bleu, "gflops": gflops, "baseline": "dense-small-bible"}

    run = [rec("dense-small-bible", "dense", 40.0, 19.0), rec("switch-small-bible", "switch", 36.0, 17.5),
           rec("automoe-small-bible-third", "automoe", 9.0, 18.6, gflops=0.3),
           rec("hat-small-bible-third", "hat", 8.0, 18.0, gflops=0.4),
           rec("dense-small-bible", "dense", 30.0, 19.0, shortlist=True),
           rec("automoe-small-bible-third", "automoe", 6.0, 18.0, shortlist=True),
           rec("automoe-small-bible-third", "automoe", 1.0, 0.0, engine="torch")]
    table = report.proof_goals(run)
    first, listed = [line for line in table.splitlines() if line.startswith("| `automoe")]
    assert first == ("| `automoe-small-bible-third` | 4.44x, -0.40 BLEU: yes | 4.00x, +1.10 BLEU: yes | "
                     "+0.60 BLEU, 0.75x GFLOPs: yes |")
    assert listed.startswith("| `automoe-small-bible-third + shortlist` | 5.00x, -1.00 BLEU: **no** | no Switch run |")
    assert "no HAT model of this budget (`*-third`)" in listed
    assert table.endswith("vs dense: met by `automoe-small-bible-third`; vs Switch: met by `automoe-small-bible-third`.")
    assert report.proof_goals(run[:3]).endswith("vs dense: met by `automoe-small-bible-third`; vs Switch: met by "
                                                "`automoe-small-bible-third`.")
    slow = [r for r in run if r["model"] != "automoe-small-bible-third"] + [rec("automoe-small-bible-third", "automoe",
                                                                                 20.0, 18.6)]
    assert report.proof_goals(slow).endswith("vs dense: **met by none**; vs Switch: **met by none**.")
    assert report.proof_goals([rec("dense-small-bible", "dense", 40.0, 19.0)]) == ""


def test_headline_states_each_searched_model_against_dense_and_switch(tmp_path, monkeypatch):
    import json

    import report

    def rec(model, family, ms, bleu, shortlist=False, engine="onnxruntime-int8"):
        return {"benchmark": "bench", "run_id": "r1", "model": model, "family": family, "engine": engine, "threads": 1,
                "shortlist": shortlist, "median_ms": ms, "bleu": bleu, "baseline": "dense", "sentences": 1007,
                "cpu": "AMD EPYC"}

    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert "No searched MoE model" in report.headline()
    run = [rec("dense", "dense", 40.0, 19.0), rec("switch", "switch", 36.0, 17.5), rec("moe-third", "automoe", 10.0, 18.6),
           rec("moe-third", "automoe", 8.0, 18.4, shortlist=True), rec("moe-third", "automoe", 1.0, 1.0, engine="torch"),
           rec("moe-half", "automoe", 20.0, 19.2), rec("hat-third", "hat", 10.5, 18.1),
           rec("hat-third", "hat", 9.0, 18.0, shortlist=True)]
    (tmp_path / "bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in run))
    text = report.headline()
    assert ("- **`moe-third`**: BLEU 18.60 against the dense baseline's 19.00, **4.00x faster** (5.00x with its "
            "lexical shortlist, BLEU 18.40); the Switch baseline: BLEU 17.50, 3.60x slower than it; the HAT-style "
            "dense model searched for the same budget: BLEU 18.10, 1.05x this model's latency.") in text
    # a budget without a HAT model says nothing of one
    assert ("- **`moe-half`**: BLEU 19.20 against the dense baseline's 19.00, **2.00x faster**; the Switch baseline: "
            "BLEU 17.50, 1.80x slower than it.") in text
    assert "1007 test sentences" in text and text.count("- **") == 2


def test_decode_profile_puts_each_node_in_one_part():
    from decode_profile import part_of

    vocab = 8000
    assert part_of("DynamicQuantizeMatMul", "/MatMul_quant_kernel_time", [[4, 1, 8000]], vocab) == "output projection"
    assert part_of("MatMulIntegerToFloat", "/encoder_layers.0/self_attn/q_proj/MatMul_quant", [[1, 9, 256]], vocab) \
        == "encoder"
    assert part_of("MatMulIntegerToFloat", "/k_proj_2/MatMul_quant", [[1, 9, 384]], vocab) == "attention"
    assert part_of("Softmax", "/decoder_layers.1/cross_attn/Softmax", [[4, 4, 1, 9]], vocab) == "attention"
    assert part_of("AutomoeMoE", "/decoder_layers.0/ffn/moe", [[4, 1, 384]], vocab) == "FFN / MoE"
    assert part_of("SkipLayerNormalization", "SkipLayerNormalization_token_2", [[4, 1, 384]], vocab) == "norms"
    assert part_of("Cast", "/Cast_1", [[4, 1]], vocab) == "other nodes"


def test_decode_profile_timed_split_accounts_for_the_whole_beam_graph(tmp_path):
    """Without the profiler: encoder, decoder steps and the operator's own work are shares of the
    beam graph's time that add up to it, for a tiny int8 MoE export."""
    import numpy as np
    from decode_profile import SPLIT, decoder_runs, timed_split

    from automoe.export.onnx import to_onnx
    from automoe.random_model import save_random_model
    from automoe.serve.engines import OnnxEngine

    data = ROOT / "tests" / "data" / "bible-en-de"
    arch = SearchSpace.preset("tiny").largest().replace(vocab_size=1000, max_positions=64)
    model = save_random_model(arch.replace(decoder_ffn=((24, 8),) * arch.decoder_layers), tmp_path / "m", seed=1,
                              sharpen=4.0, tokenizer_file=data / "spm.model")
    engine = OnnxEngine(to_onnx(model, tmp_path / "onnx", quantize="int8"), threads=1)
    for ids in ([5, 6, 7, 8, 3], [9, 10, 11, 12, 13, 14, 3]):  # the search runs a step per token it emits, or more
        sequences, _ = engine.run_beam_graph(np.array([ids]), 4, 20)
        emitted = int((sequences[0, 0, 1:] != arch.pad_id).sum())
        assert emitted >= 3 and decoder_runs(engine, ids, 4, 20) + 1 >= emitted
    assert engine.use_beam_graph and not hasattr(engine.decoder, "runs")  # the engine is left as it was
    split = timed_split(engine, [[5, 6, 7, 8], [9, 10, 11, 12, 13, 14]], beam=4)
    assert set(split["timed_shares"]) == set(SPLIT) and split["ms_per_sentence"] > 0
    assert sum(split["timed_shares"].values()) == pytest.approx(1.0, abs=2e-4) and split["steps_per_sentence"] >= 3
    assert split["timed_shares"]["encoder + first step"] > 0 and split["timed_shares"]["decoder steps"] > 0


def test_card_speed_rows_say_how_they_decode_and_name_a_skipped_engine_once():
    arch = SearchSpace.preset("small").largest()
    base = {"benchmark": "bench", "run_id": "r", "cpu": "cpu", "beam": 4, "sentences": 1007, "baseline": "dense",
            "threads": 1, "git_commit": "abc"}
    bench = [{**base, "engine": "onnxruntime-int8", "shortlist": False, "median_ms": 9.8, "p90_ms": 14.8,
              "speedup": 3.2, "bleu": 20.02, "chrf": 45.7},
             {**base, "engine": "onnxruntime-int8", "shortlist": True, "median_ms": 10.1, "p90_ms": 15.8,
              "speedup": 3.12, "bleu": 19.85, "chrf": 45.64, "shortlist_size": 696.2},
             {**base, "engine": "ctranslate2-int8", "shortlist": False, "skipped": "MoE layers"},
             {**base, "engine": "ctranslate2-int8", "shortlist": True, "skipped": "MoE layers"}]
    card = model_card("Title", "Summary.", arch, {}, [], bench_records=bench)
    assert "| onnxruntime-int8 | 1 | full vocabulary | 9.8 | 14.8 | 3.20x | 20.02 | 45.70 |" in card
    assert "| onnxruntime-int8 | 1 | lexical shortlist (696 pieces per sentence on average) | 10.1 |" in card
    assert card.count("skipped: MoE layers") == 1


def test_supernets_table_sets_each_subnet_beside_the_shipped_model_of_its_architecture(monkeypatch):
    import supernet_tables as report

    largest, smallest = SearchSpace.preset("small").largest().to_dict(), SearchSpace.preset("small").smallest().to_dict()
    common = {"split": "test", "sentences": 1007, "beam": 4, "bleu_signature": "sig"}
    records = {
        "supernets": [dict(common, model="models/supernet-v3", arch_name="largest", arch=largest, bleu=8.0),
                      dict(common, model="/runs/cmp-prefix", arch_name="largest", arch=largest, bleu=8.5),
                      dict(common, model="/runs/cmp-mos-layer", arch_name="largest", arch=largest, bleu=9.25),
                      dict(common, model="/runs/cmp-prefix", arch_name="smallest", arch=smallest, bleu=5.0)],
        "eval": [dict(common, model="models/dense-small-bible", arch_name=None, arch=largest, bleu=18.97),
                 dict(common, model="models/not-shipped-here", arch_name=None, arch=smallest, bleu=30.0)],
    }
    monkeypatch.setattr(report, "_read", lambda name: records.get(name, []))
    lines = report.supernets_table().splitlines()
    assert lines[0] == "| subnet | `supernet-v3` | prefix | mos-layer | trained on its own (shipped model) |"
    assert lines[2] == "| largest | 8.00 | 8.50 | 9.25 | 18.97 (`dense-small-bible`) |"
    assert lines[3] == "| smallest |  | 5.00 |  | none shipped |"  # that model folder is not in models/
    assert "router spread" not in report.supernets_table()  # no training record yet

    valid = {"largest": {"ppl": 33.26}, "smallest": {"ppl": 52.24}}
    training = dict(benchmark="supernet_training", tokens_seen=3_004_569, valid=valid, note="")
    records["supernets"] += [dict(training, model="/runs/cmp-prefix", weight_sharing={"kind": "prefix"},
                                  mixing_spread=None),
                             dict(training, model="/runs/cmp-mos-layer", weight_sharing={"kind": "mos-layer"},
                                  mixing_spread=0.0047, note="copies")]
    table = report.supernets_table()
    assert "| `cmp-prefix` | prefix | 3.00M | 33.26 | 52.24 |  |" in table
    assert "| `cmp-mos-layer (copies)` | mos-layer | 3.00M | 33.26 | 52.24 | 0.0047 |" in table
    assert table.splitlines()[:5] == lines[:5]  # the BLEU table ignores the training records

    third = dict(common, arch_name="benchmarks/results/search/automoe-0.333.json", arch=smallest)
    records["supernets"] += [dict(third, model="models/supernet-v3", bleu=5.5),
                             dict(third, model="/runs/mos-neuron-scratch", bleu=9.0)]
    tuned = dict(benchmark="supernet_finetune", tokens_seen=4_550_894, wall_seconds=1800, beam=4,
                 arch_name="automoe-third")
    records["supernets"] += [dict(tuned, supernet="/work/models/supernet-v3", dev_bleu=15.16, test_bleu=14.87),
                             dict(tuned, supernet="/runs/mos-neuron-scratch", dev_bleu=16.0, test_bleu=15.5)]
    table = report.supernets_table()
    assert "| automoe-0.333 | `supernet-v3` | 5.50 | 4.55M | 0.50 | 15.16 | 14.87 |" in table
    assert "| automoe-0.333 | `mos-neuron-scratch` | 9.00 | 4.55M | 0.50 | 16.00 | 15.50 |" in table
    assert "continued to the full one" not in table
    records["supernets"] += [dict(tuned, supernet="/runs/mos-neuron-scratch", tokens_seen=18_201_418,
                                  dev_bleu=21.0, test_bleu=20.5),
                             dict(tuned, supernet="/runs/mos-neuron-scratch", tokens_seen=18_201_418,
                                  arch_name="automoe-half", dev_bleu=22.0, test_bleu=21.5)]
    rows = [line for line in report.supernets_table().splitlines() if line.startswith("| automoe-0.")]
    assert rows[-4:] == ["| automoe-0.333 | `supernet-v3` | 5.50 | 4.55M | 0.50 | 15.16 | 14.87 |",  # one row per
                         "| automoe-0.333 | `mos-neuron-scratch` | 9.00 | 4.55M | 0.50 | 16.00 | 15.50 |",  # budget
                         "| automoe-0.333 | `mos-neuron-scratch` | 9.00 | 18.20M | 0.50 | 21.00 | 20.50 |",
                         "| automoe-0.500 | `mos-neuron-scratch` |  | 18.20M | 0.50 | 22.00 | 21.50 |"]
    assert "continued to the full one" in report.supernets_table()


def test_paper_scale_table_pairs_each_model_with_and_without_its_shortlist(monkeypatch):
    import report

    def record(engine, model, shortlist, ms, vs_same, vs_full, form=None):
        return {"engine": engine, "model": model, "shortlist": shortlist, "median_ms": ms, "active_params": 43e6,
                "total_params": 99e6, "gflops": 3.84, "speedup_vs_dense_same_shortlist": vs_same,
                "speedup_vs_dense_full": vs_full, "shortlist_form": form, "threads": 1, "batch": 1, "beam": 4,
                "sentences": 20, "src_len_mean": 35.4, "out_len_mean": 36.0, "shortlist_avg_size": 714 if shortlist
                else None, "real_shortlist_avg_size": 702, "cpu": "CPU", "git_commit": "abc", "date": "2026-12-06T14"}
    runs = [record("onnxruntime", "dense", False, 800, 1.0, 1.0), record("onnxruntime", "dense", True, 400, 1.0, 2.0, "w"),
            record("onnxruntime", "automoe", False, 500, 1.6, 1.6), record("onnxruntime", "automoe", True, 200, 2.0, 4.0, "w")]
    monkeypatch.setattr(report, "_read", lambda name: runs if name == "paper_scale" else [])
    lines = report.paper_scale_table().splitlines()
    assert lines[2] == "| onnxruntime (w) | dense | 43.0M / 99.0M | 3.84 | 800 | 400 | 2.00x | 1.00x / 1.00x | 2.00x |"
    assert lines[3] == "| onnxruntime (w) | automoe | 43.0M / 99.0M | 3.84 | 500 | 200 | 2.50x | 1.60x / 2.00x | 4.00x |"


def test_space_floor_measures_the_smallest_architecture_of_each_extended_space():
    """The floor study's variants: the dense baseline first, the reference model, the space's
    smallest, then for each extension the smallest architecture of the extended space, which the
    `small` space itself does not hold; its table has a row per record."""
    import dataclasses

    import space_floor

    archs = space_floor.variants(ROOT / "models" / "automoe-small-bible-third")
    names = list(archs)
    assert names[:3] == ["dense", "reference (automoe-small-bible-third)", "smallest"]
    assert archs["dense"] == space_floor.SPACE.dense_baseline()
    for name, changes in space_floor.EXTENSIONS.items():
        arch, extended = archs[f"smallest, space + {name}"], dataclasses.replace(space_floor.SPACE, **changes)
        assert extended.contains(arch) and not space_floor.SPACE.contains(arch)
        assert arch == extended.smallest()
    records = [{"model": n, "arch": a.to_dict(), "gflops": 1.0, "median_ms": 2.0, "speedup_vs_dense": 1.5,
                "sentences": 10, "cpu": "cpu", "git_commit": "abc"} for n, a in archs.items()]
    table = space_floor.table(records)
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == len(archs) + 1
    assert "| smallest, space + d_model 192, 2 encoder layers | 192 | 2 / 1 | 1.000 | 2.00 | 1.50x |" in table


def test_shortlist_tune_table_takes_each_models_latest_record_and_its_shipped_size(tmp_path, monkeypatch):
    import json

    import numpy as np
    import report

    from automoe.shortlist import FORMAT, FORMAT_VERSION, SHORTLIST_FILE, Shortlist

    model = tmp_path / "m1"
    model.mkdir()
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "vocab_size": 10, "special_ids": [0, 1, 2, 3],
              "top_k": 75, "frequent": 150}
    Shortlist(np.full((10, 2), -1, dtype=np.int32), np.arange(4, dtype=np.int32), header).save(model / SHORTLIST_FILE)
    env = {"benchmark": "shortlist_tune", "data": "d", "split": "dev", "sentences": 433, "engine": "onnxruntime-int8",
           "beam": 4, "max_cost": 0.2, "cpu": "CPU X", "git_commit": "abc1234567"}
    rows = lambda c1, c2: [{"top_k": 25, "frequent": 50, "avg_size": 300.4, "cost": c1},  # noqa: E731
                           {"top_k": 50, "frequent": 100, "avg_size": 600.0, "cost": c2}]
    records = [{**env, "model": str(model), "full_bleu": 20.0, "candidates": rows(0.9, 0.5), "chosen": None},
               {**env, "model": str(model), "full_bleu": 21.0, "candidates": rows(0.4, 0.1),
                "chosen": {"top_k": 50, "frequent": 100}},
               {**env, "model": str(tmp_path / "m2"), "full_bleu": 19.5, "candidates": rows(0.3, 0.25)[:1],
                "chosen": None, "cpu": "CPU Y"}]
    (tmp_path / "shortlist_tune.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    table = report.shortlist_tune_table().splitlines()
    assert table[0] == "| model | dev BLEU, full vocabulary | 25:50 | 50:100 | chosen | shipped |"
    assert table[2] == "| `m1` | 21.00 | +0.40 (300) | +0.10 (600) | 50:100 | 75:150 |"  # the latest of m1
    assert table[3] == "| `m2` | 19.50 | +0.30 (300) |  | none <= 0.2 | none |"
    assert "433 dev sentences" in table[5] and "within 0.2 BLEU" in table[5]
    assert "CPU X, CPU Y" in table[5]  # every processor the rows were measured on


def test_cpu_table_sets_each_processors_last_run_side_by_side():
    from automoe.bench_results import cpu_table

    def run(run_id, cpu, date, dense_ms, small_ms):
        common = {"benchmark": "bench", "run_id": run_id, "cpu": cpu, "date": date, "git_commit": "abc",
                  "engine": "onnxruntime-int8", "threads": 1, "sentences": 9}
        return [{**common, "model": "dense", "median_ms": dense_ms, "speedup": 1.0},
                {**common, "model": "small", "median_ms": small_ms, "speedup": dense_ms / small_ms},
                {**common, "model": "moe", "skipped": "no MoE layer"}]

    assert "one processor" in cpu_table(run("a", "AMD", "2026-01-01", 30.0, 10.0))
    records = run("a", "AMD", "2026-01-01", 30.0, 10.0) + run("b", "AMD", "2026-01-02", 30.0, 15.0) \
        + run("c", "Xeon", "2026-01-03", 40.0, 20.0)
    table = cpu_table(records)
    header, _, dense, small = table.split("\n\n")[0].splitlines()
    assert header == "| model | onnxruntime-int8, AMD | onnxruntime-int8, Xeon |"
    assert small == "| `small` | 15.0 ms (2.00x) | 20.0 ms (2.00x) |"  # AMD's later run replaced its first
    assert "`moe`" not in table and "run of 2026-01-02" in table
    # an engine only one processor ran gets a column for that processor only
    extra = [dict(r, engine="onnxruntime-int8-row") for r in run("c", "Xeon", "2026-01-03", 30.0, 10.0)]
    header = cpu_table(records + extra).splitlines()[0]
    assert header == "| model | onnxruntime-int8, AMD | onnxruntime-int8, Xeon | onnxruntime-int8-row, Xeon |"


def test_int8_row_table_pairs_each_model_of_the_last_run_in_both_int8_forms():
    from automoe.bench_results import int8_row_table

    def row(run_id, engine, model, ms, bleu, **extra):
        return {"benchmark": "bench", "run_id": run_id, "cpu": "Xeon", "date": "2026-01-01", "git_commit": "abc",
                "engine": engine, "threads": 1, "sentences": 9, "beam": 4, "model": model, "median_ms": ms,
                "bleu": bleu, **extra}

    assert "timed no model" in int8_row_table([row("a", "onnxruntime-int8", "dense", 30.0, 18.0)])
    records = [row("a", "onnxruntime-int8-row", "dense", 1.0, 1.0),  # an earlier run: not read
               row("b", "onnxruntime-int8", "dense", 30.0, 18.86), row("b", "onnxruntime-int8-row", "dense", 25.0, 19.02),
               row("b", "onnxruntime-int8", "dense", 27.0, 18.7, shortlist=True),
               row("b", "onnxruntime-int8-row", "dense", 20.0, 18.9, shortlist=True),
               row("b", "onnxruntime-int8", "moe", 10.0, 20.0), row("b", "ctranslate2-int8", "dense", 20.0, 19.0),
               row("b", "onnxruntime-int8-row", "switch", 0, 0, skipped="reason")]
    lines = int8_row_table(records).split("\n\n")[0].splitlines()
    assert lines[2] == "| `dense` | 30.0 | 25.0 | 1.20x | 18.86 | 19.02 |"
    assert lines[3] == "| `dense + shortlist` | 27.0 | 20.0 | 1.35x | 18.70 | 18.90 |"
    assert len(lines) == 4  # moe has no int8-row row, switch was skipped


def test_search_quarter_table_sets_the_last_run_of_each_search_side_by_side():
    from search_methods import quarter_table

    def record(method, arch, test_bleu):
        return {"benchmark": "search_quarter", "method": method, "arch": arch, "recipe": "inherit",
                "tokens_seen": 4_550_000, "updates": 1747, "wall_seconds": 1800.0, "dev_bleu": 15.0,
                "test_bleu": test_bleu, "test_chrf": 40.0, "init_from": "models/v3", "beam": 4,
                "sentences": {"dev": 433, "test": 1007}, "bleu_signature": "sig", "cpu": "CPU X"}

    assert "Not measured yet" in quarter_table([record("evolution", "s/a.json", 14.0)])
    table = quarter_table([record("darts", "s/old/best.json", 9.0), record("evolution", "s/automoe-0.333.json", 14.87),
                           record("darts", "/elsewhere/benchmarks/results/search/darts-0.333/best.json", 13.5)]
                          ).splitlines()
    assert table[2] == "| evolution | `s/automoe-0.333.json` |  | inherit | 4.55M | 1,747 | 0.50 | 15.00 | 14.87 | 40.00 |"
    from automoe.config import ArchConfig
    from automoe.search.flops import cost

    kept = ROOT / "benchmarks" / "results" / "search" / "darts-0.333" / "best.json"  # found in this checkout
    assert table[3].startswith(f"| darts | `darts-0.333/best.json` | {cost(ArchConfig.load(kept)).gflops:.3f} |")
    assert "| 13.50 |" in table[3]  # the last darts run
    assert len(table) == 6 and "`models/v3`" in table[5]


def test_searches_table_lists_each_kept_search_with_its_cost_and_result(tmp_path):
    import json

    from search_methods import searches_table

    from automoe.config import SearchSpace

    folder = tmp_path / "search" / "darts-0.333"
    folder.mkdir(parents=True)
    SearchSpace.preset("small").smallest().save(folder / "best.json")
    (folder / "best_info.json").write_text(json.dumps({
        "method": "darts", "wall_seconds": 3600.0, "cpu_seconds": 7200.0, "budget_latency_ms": 10.75,
        "predicted_latency_ms": 8.87, "active_params": 2_570_000, "gflops": 0.281}))
    (tmp_path / "search" / "unfinished").mkdir()  # no best_info.json: not listed
    assert "No search kept yet" in searches_table(tmp_path / "none")
    table = searches_table(tmp_path / "search").splitlines()
    assert len(table) == 5  # header, rule, the one kept search, blank, caption
    assert table[2].startswith("| darts | `search/darts-0.333` | 1.00 | 2.00 | 10.75 | 8.87 | [384] [384] [384] [384] | 1: [384] |")
