"""The proof queue (tools/proof_queue.py): its plan is well formed, and its MoS-from-scratch run
follows supernet v3's recorded schedule."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import proof_queue  # noqa: E402


def test_mos_scratch_legs_follow_supernet_v3s_recorded_schedule():
    info = json.loads((ROOT / proof_queue.MOS_START / "supernet_info.json").read_text())
    legs, leg = [], info
    while leg:  # newest first: v3's own leg, then what it was started from
        legs.append(leg["tokens_seen"])
        leg = leg.get("previous")
    assert [t for *_, t in proof_queue.MOS_SCRATCH_LEGS] == legs[::-1]
    lr, warmup, balance, seed, _ = proof_queue.MOS_SCRATCH_LEGS[-1]
    cfg = info["train_config"]
    assert (float(lr), int(warmup), float(balance), int(seed)) == (
        cfg["lr"], cfg["warmup_updates"], cfg["balance_coef"], cfg["seed"])


def test_mos_scratch_legs_chain_and_resume(tmp_path, monkeypatch):
    monkeypatch.setattr(proof_queue, "RUNS", tmp_path)
    first, last = proof_queue.mos_scratch_command(1), proof_queue.mos_scratch_command(3)
    assert "--init-from" not in first and "--resume" not in first
    assert last[last.index("--init-from") + 1] == str(tmp_path / "mos-neuron-scratch-leg2")
    assert last[last.index("--run-dir") + 1] == str(tmp_path / "mos-neuron-scratch")
    (tmp_path / "mos-neuron-scratch").mkdir()
    (tmp_path / "mos-neuron-scratch" / "checkpoint.safetensors").write_bytes(b"")
    assert proof_queue.mos_scratch_command(3)[-1] == "--resume"


def test_every_step_is_a_command_an_in_process_step_or_the_recipe_pick():
    """The queue tells in-process steps (evaluations) from commands by their type, not by a second
    list of names: the evaluation steps are InProcess, every other step but pick-recipe a callable."""
    plan = proof_queue.steps()
    assert len({name for name, _ in plan}) == len(plan)
    in_process = {name for name, action in plan if isinstance(action, proof_queue.InProcess)}
    assert in_process == {"supernets-eval", "supernets-stats", "darts-quarter-eval", "mos-scratch-eval",
                          "mos-finetune-eval", "mos-full-eval", "mos-half-eval"}
    assert all(callable(action.work) for name, action in plan if name in in_process)
    assert [name for name, action in plan if action is None] == ["pick-recipe"]
    assert all(callable(action) for name, action in plan if name not in in_process and action is not None)


def test_mos_scratch_searches_run_on_the_mos_supernet_at_the_shipped_budgets(tmp_path, monkeypatch):
    monkeypatch.setattr(proof_queue, "RUNS", tmp_path)
    plan = dict(proof_queue.steps())
    names = [name for name, _ in proof_queue.steps()]
    assert names.index("mos-neuron-scratch") < names.index("mos-scratch-search-half") < names.index("mos-scratch-eval")
    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "results" / "search.jsonl").read_text().splitlines()]
    for name, fraction in (("mos-scratch-search-half", 0.5), ("mos-scratch-search-third", 0.3333)):
        cmd = plan[name]()
        assert cmd[cmd.index("--supernet") + 1] == str(tmp_path / "mos-neuron-scratch")
        assert cmd[cmd.index("--out") + 1] == str(tmp_path / name) and "--resume" not in cmd
        shipped = next(r for r in rows if r.get("search") == "automoe" and r.get("fraction") == fraction)
        assert float(cmd[cmd.index("--latency-ms") + 1]) == shipped["budget_ms"]
    v3 = proof_queue.evolution_search_command()  # the timed 1/3 search of supernet v3, as before
    assert v3[v3.index("--supernet") + 1] == proof_queue.SUPERNET
    assert v3[v3.index("--out") + 1] == str(tmp_path / "evolution-search-third")


def test_mos_finetune_is_the_recipe_comparisons_inherit_run_from_the_mos_supernet(tmp_path, monkeypatch):
    """The fine-tune from the MoS supernet differs from the recipe comparison's inherit run (from v3)
    in its starting weights only: same architecture, recipe, seed and token budget."""
    monkeypatch.setattr(proof_queue, "RUNS", tmp_path)
    plan = dict(proof_queue.steps())
    mos = plan[proof_queue.MOS_FINETUNE]()
    v3 = plan["automoe-small-bible-third-inherit"]()
    assert mos[mos.index("--init-from") + 1] == str(tmp_path / "mos-neuron-scratch")
    assert v3[v3.index("--init-from") + 1] == proof_queue.SUPERNET

    def settings(cmd):  # every option with its value, but the run's own folders and starting weights
        options, i = {}, cmd.index("model") + 1
        while i < len(cmd):
            takes_value = i + 1 < len(cmd) and not cmd[i + 1].startswith("--")
            options[cmd[i]] = cmd[i + 1] if takes_value else True
            i += 2 if takes_value else 1
        return {k: v for k, v in options.items() if k not in ("--out", "--run-dir", "--init-from")}

    assert settings(mos) == settings(v3)
    names = [name for name, _ in proof_queue.steps()]
    assert names.index("mos-scratch-eval") < names.index(proof_queue.MOS_FINETUNE) < names.index("mos-finetune-eval")

    # continued to the full budget in its own folder, still recorded as inherited from the MoS supernet
    (tmp_path / proof_queue.MOS_FINETUNE).mkdir()
    for file in ("checkpoint.safetensors", "train.jsonl"):
        (tmp_path / proof_queue.MOS_FINETUNE / file).write_text(file)
    full = plan[proof_queue.MOS_FULL]()
    assert (tmp_path / proof_queue.MOS_FULL / "train.jsonl").read_text() == "train.jsonl"
    assert full[full.index("--init-from") + 1] == str(tmp_path / "mos-neuron-scratch") and full[-1] == "--resume"
    assert full[full.index("--max-tokens-seen") + 1] == str(proof_queue.TOKENS)

    # the 1/2 architecture: the shipped automoe-small-bible-half's run but for its starting weights
    half, shipped = plan[proof_queue.MOS_HALF](), plan["automoe-small-bible-half"]()
    assert half[half.index("--init-from") + 1] == str(tmp_path / "mos-neuron-scratch")
    assert shipped[shipped.index("--init-from") + 1] == proof_queue.SUPERNET
    assert settings(half) == settings(shipped) and half[half.index("--max-tokens-seen") + 1] == str(proof_queue.TOKENS)
    assert names.index(proof_queue.MOS_HALF) < names.index("mos-half-eval")


def test_a_lost_runs_folder_does_not_undo_what_the_work_tree_holds(tmp_path, monkeypatch):
    """With RUNS empty (a new machine), the steps whose models are shipped or whose results are
    committed are done; the searches of #28 are done only once their outputs are kept in the tree."""
    monkeypatch.setattr(proof_queue, "RUNS", tmp_path / "runs")
    kept = {name: tmp_path / "kept" / name for name in proof_queue.KEPT_SEARCHES}
    monkeypatch.setattr(proof_queue, "KEPT_SEARCHES", kept)
    for name in ("switch-small-bible", "pick-recipe", "automoe-small-bible-third-distill",
                 "hat-small-bible-third", "cmp-mos-neuron", "supernets-stats"):
        assert proof_queue.done(name), name
    for name in ("darts-small-bible", "darts-small-bible-model", "mos-neuron-scratch", "mos-scratch-eval",
                 proof_queue.MOS_FULL):
        assert not proof_queue.done(name), name
    run = tmp_path / "runs" / "darts-small-bible"
    run.mkdir(parents=True)
    (run / "best.json").write_text("{}")
    (run / "best_info.json").write_text('{"finished": true}')
    (run / "checkpoint.safetensors").write_bytes(b"weights stay in RUNS")
    proof_queue.keep_search("darts-small-bible")
    assert sorted(p.name for p in kept["darts-small-bible"].iterdir()) == ["best.json", "best_info.json"]
    assert proof_queue.done("darts-small-bible")
    quarter = dict(proof_queue.steps())[proof_queue.DARTS_QUARTER]()
    assert quarter[quarter.index("--arch") + 1] == str(kept["darts-small-bible"] / "best.json")
    assert quarter[quarter.index("--max-tokens-seen") + 1] == str(proof_queue.COMPARE_TOKENS)
    assert quarter[quarter.index("--init-from") + 1] == proof_queue.SUPERNET  # the chosen recipe: inherit


def test_the_full_darts_model_continues_its_quarter_run_in_its_own_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(proof_queue, "RUNS", tmp_path)
    quarter = tmp_path / proof_queue.DARTS_QUARTER
    quarter.mkdir()
    (quarter / "checkpoint.safetensors").write_bytes(b"quarter")
    (quarter / "train.jsonl").write_text("{}\n")
    cmd = dict(proof_queue.steps())["darts-small-bible-model"]()
    run = tmp_path / "darts-small-bible-model"
    assert (run / "checkpoint.safetensors").read_bytes() == b"quarter" and cmd[-1] == "--resume"
    assert cmd[cmd.index("--max-tokens-seen") + 1] == str(proof_queue.TOKENS)
    assert cmd[cmd.index("--run-dir") + 1] == str(run)
    (quarter / "checkpoint.safetensors").write_bytes(b"changed")  # copied once: a resumed run keeps its own
    dict(proof_queue.steps())["darts-small-bible-model"]()
    assert (run / "checkpoint.safetensors").read_bytes() == b"quarter"


def test_until_stops_after_its_step_and_refuses_an_unknown_one(tmp_path, monkeypatch, capsys):
    """`--until NAME` runs the steps up to NAME and no further (to free the cores for a benchmark);
    a name that is no step is refused before anything runs."""
    import pytest

    ran = []
    plan = [(name, proof_queue.InProcess(lambda name=name: ran.append(name))) for name in ("a", "b", "c")]
    monkeypatch.setattr(proof_queue, "steps", lambda: plan)
    monkeypatch.setattr(proof_queue, "done", lambda name: False)
    monkeypatch.setattr(proof_queue, "RUNS", tmp_path)
    assert proof_queue.main(["--until", "b"]) == 0
    assert ran == ["a", "b"]
    with pytest.raises(SystemExit):
        proof_queue.main(["--until", "d"])
    assert "'d' is not a step" in capsys.readouterr().err and ran == ["a", "b"]
