"""The trainings of the proof (issue #25), run one after another in the background, resumable.

Every model is trained on `bible` en-de with the dense baseline's recipe and token budget
(18.2M target tokens, 3,000-token batches, peak lr 9e-4, 200 warm-up updates, inverse-sqrt,
dropout 0.1, label smoothing 0.1, bf16 autocast, seed 1) into `RUNS/models/NAME` (the release
step, tools/ship.py, converts a finished one to fp16 with its card into `models/`). RUNS is
$AUTOMOE_RUNS or ~/.cache/automoe/runs: outside the work tree, which a new session lays anew. RUNS
may itself be lost with the machine (it was once, between two sessions), so a step whose product
the work tree holds (a shipped model, committed results: `done_in_tree`) counts as done.

Steps, in order (a finished step is skipped, an interrupted training resumes from its checkpoint,
so the queue can be stopped at any time and started again):
  1. switch-small-bible: `SearchSpace.switch_baseline(4)` from scratch (the longest run).
  2. data/bible-en-de-distill: the dense model's beam-4 translations of the training sources.
  3. The recipe comparison on the 1/3-latency AutoMoE subnet, the same quarter of the budget each
     (4.55M target tokens): inherit (supernet v3's weights, fine-tuned), scratch, distill (scratch
     on the distilled data).
  4. The pick: dev BLEU of each recipe (test BLEU recorded too) -> benchmarks/results/recipes.jsonl;
     the best by dev BLEU is the recipe of every searched model.
  5. automoe-small-bible-third: the winning run continued to the full budget. The inverse-sqrt
     schedule does not depend on the budget, so continuing it is the same run as one started with
     the full budget, and three quarters of two runs are saved.
  6. automoe-small-bible-half with that recipe.
  7. cmp-prefix, cmp-mos-layer, cmp-mos-neuron: the three weight-sharing kinds trained alike
     (all started from supernet v3, sandwich, 3M target tokens more, seed 3); supernets-eval: inherited-weight test BLEU of the
     largest, smallest and searched 1/2 and 1/3 subnets of each -> benchmarks/results/supernets.jsonl;
     supernets-stats: each one's validation perplexities and router spread, same file
     (issue #27; three short runs, so it completes before the two long HAT runs).
  8. hat-small-bible-half, hat-small-bible-third with the chosen recipe.
  9. evolution-search-third: the evolutionary 1/3 search run again as it was run for
     benchmarks/results/search/automoe-0.333.json (population 40, 8 iterations, seed 0), now
     timed (its best_info.json records the search's wall and CPU seconds).
 10. darts-small-bible: the DARTS search (reversible) under the evolutionary search's 1/3 budget,
     sized to finish inside one session (DARTS_STEPS); the search resumes from its checkpoint like
     the trainings. darts-small-bible-model-quarter: its architecture trained with the chosen recipe
     on the recipe comparison's budget; darts-quarter-eval: its dev and test BLEU beside the
     evolutionary architecture's chosen recipe run (same recipe, same budget)
     -> benchmarks/results/search_quarter.jsonl; darts-small-bible-model: continued to the full budget.
     Both searches, once finished, keep their small outputs in benchmarks/results/search/
     (KEPT_SEARCHES), so what follows needs nothing of theirs from RUNS.
 11. search-methods: benchmarks/search_methods.py, both searches' cost and both trained models
     benched with the dense one -> benchmarks/results/search_methods.jsonl.
 12. mos-neuron-scratch-leg1, -leg2, mos-neuron-scratch: a neuron-wise MoS supernet trained from
     scratch on supernet v3's own three-leg schedule (same seeds, learning rates and token counts,
     18.3M target tokens); mos-scratch-search-half, -third: the two evolutionary searches run again
     on it (the shipped searches' budgets and settings); mos-scratch-eval: the test BLEU of its four
     subnets and of its two searched ones (these also on v3), and its training record
     -> benchmarks/results/supernets.jsonl (issue #27: MoS against prefix sharing at v3's budget);
     mos-scratch-inherit-third, mos-finetune-eval: the shipped 1/3 architecture fine-tuned from it
     like the recipe comparison's inherit run from v3, both scored -> the same file;
     automoe-small-bible-third-mos: that run continued to the full budget, to ship if it beats
     automoe-small-bible-third (the same architecture, started from v3); mos-full-eval: both scored
     alike -> the same file.

    nohup .venv/bin/python tools/proof_queue.py >> ~/.cache/automoe/runs/queue.log 2>&1 &
    python tools/proof_queue.py --list      # what is done, what is next
    python tools/proof_queue.py --until search-methods   # stop after that step (free the cores)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from automoe.bench_results import append_records
from automoe.card import read_records
from queue_records import model_record, supernet_record

ROOT = Path(__file__).resolve().parent.parent
# Outside the work tree: a session's checkout is laid anew, while the machine's other files may stay
RUNS = Path(os.environ.get("AUTOMOE_RUNS") or Path.home() / ".cache" / "automoe" / "runs")
DATA = "data/bible-en-de"
DISTILLED = str(RUNS / "data" / "bible-en-de-distill")
DENSE = "models/dense-small-bible"
SUPERNET = "models/supernet-small-bible-v3"
SEARCH = ROOT / "benchmarks" / "results" / "search"
RECIPES = ROOT / "benchmarks" / "results" / "recipes.jsonl"
PREDICTOR = str(ROOT / "benchmarks" / "results" / "latency-ort-v3.safetensors")
TOKENS = 18_200_000  # the dense baseline saw 18.18M target tokens
COMPARE_TOKENS = TOKENS // 4  # each recipe of the comparison; the winner is continued to TOKENS
RECIPE = ["--lr", "9e-4", "--warmup-updates", "200", "--schedule", "inverse_sqrt",
          "--bf16", "--seed", "1", "--save-every-minutes", "5", "--threads", "2", "--valid-every", "100",
          "--valid-sentences", "300", "--max-tokens", "3000", "--dropout", "0.1", "--label-smoothing", "0.1",
          "--clip-norm", "1.0", "--balance-coef", "0.01"]
RECIPE_NAMES = ("inherit", "scratch", "distill")
SEARCHED = {"automoe-small-bible-half": "automoe-0.500.json", "hat-small-bible-half": "hat-0.500.json",
            "hat-small-bible-third": "hat-0.333.json"}


# From scratch, 4M tokens left a prefix supernet at dev perplexity 222 (largest subnet: 0.24 dev BLEU):
# too early to rank anything. So all three kinds start from supernet v3 (18.3M tokens; a MoS supernet
# runs each subnet as v3 does at the start: MixtureOfSupernets.load_prefix_supernet) and train 3M
# tokens more with v3's own continuation schedule (lr 3e-4, 50 warmup updates)
MOS_START = str(ROOT / "models" / "supernet-small-bible-v3")
SUPERNET_COMMON = ["--data", DATA, "--space", "small", "--sandwich", "--bf16", "--max-tokens", "3000",
                   "--schedule", "inverse_sqrt", "--save-every-minutes", "5", "--threads", "2"]
MOS_COMMON = SUPERNET_COMMON + ["--lr", "3e-4", "--warmup-updates", "50", "--balance-coef", "0.1", "--seed", "3",
                                "--max-tokens-seen", "3000000"]
SHARING = {"prefix": [], "mos-layer": ["--mos-sets", "2", "--mos-hidden", "128"],
           "mos-neuron": ["--mos-sets", "2", "--mos-hidden", "128"]}
# MoS from scratch on supernet v3's own schedule (#27: the paper's setting, the same budget as v3):
# v3 was trained in three legs, each started from the last (git: 3f9bbad, 7b7fbfe, e1d100e); the
# same legs, same seeds and token counts, with neuron-wise MoS (the MoS paper's variant for MT)
MOS_SCRATCH_KIND = "mos-neuron"
MOS_SCRATCH_LEGS = (  # (--lr, --warmup-updates, --balance-coef, --seed, target tokens of the leg)
    ("9e-4", "200", "0.01", "1", 9_970_863), ("3.6e-4", "100", "0.1", "2", 4_924_854),
    ("3e-4", "50", "0.1", "3", 3_402_069))
# the two searches run again on the MoS-from-scratch supernet (#27), at the shipped searches' budgets
MOS_SCRATCH_SEARCHES = {"mos-scratch-search-half": 0.5, "mos-scratch-search-third": 0.3333}
# the shipped 1/3 architecture fine-tuned from it as the recipe comparison's inherit run was from v3
# (same recipe, seed and budget): how much retraining each supernet's weights still need
MOS_FINETUNE = "mos-scratch-inherit-third"
MOS_FULL = "automoe-small-bible-third-mos"  # that run continued to the full budget: a candidate to ship
# the shipped 1/2 architecture trained as automoe-small-bible-half was (same recipe, seed, full budget)
# but from the MoS supernet: the other candidate to ship
MOS_HALF = "automoe-small-bible-half-mos"
# the searches of #28's comparison keep their small outputs (best.json, best_info.json, logs) in the work
# tree once finished: the models trained from them and the comparison need nothing else from RUNS
KEPT_SEARCHES = {"evolution-search-third": SEARCH / "evolution-0.333-timed",
                 "darts-small-bible": SEARCH / "darts-0.333"}
KEPT_FILES = ("best.json", "best_info.json", "search.jsonl", "darts.jsonl", "alphas.json")
EVAL_ARCHS = ("largest", "smallest", str(SEARCH / "automoe-0.500.json"), str(SEARCH / "automoe-0.333.json"))
SUPERNETS = ROOT / "benchmarks" / "results" / "supernets.jsonl"
# darts_step_time.jsonl (1 thread): ~10 s per weight step, ~16 s per weight + architecture step, so the
# default 4,000 steps would take ~17 CPU hours. On 2 threads a weight step took 6.4 s and a weight +
# architecture step 10.1 s (the first 634 steps of a 1,500-step search, whose run folder was lost with
# the machine between two sessions). So the search is sized to finish inside one session: 700 steps,
# 250 of them weight-only, about 1.7 hours; the architecture learning rate doubled (6e-3) for the 450
# architecture steps (the 1,500-step plan had 1,000 at 3e-3), so Adam can move the architecture
# weights nearly as far
DARTS_STEPS = 700
# its architecture first trained on the recipe comparison's budget, evaluated beside the evolutionary
# architecture's run of the same recipe and budget, then continued to the full budget
DARTS_QUARTER = "darts-small-bible-model-quarter"
SEARCH_QUARTER = ROOT / "benchmarks" / "results" / "search_quarter.jsonl"
DARTS_SETTINGS = ["--steps", str(DARTS_STEPS), "--arch-start", "250", "--arch-lr", "6e-3"]


def automoe(*args: str) -> list[str]:
    """The automoe command of this environment."""
    return [sys.executable, "-m", "automoe", *args]


def train_command(name: str, arch: str, recipe: str, extra: list[str] = (), tokens: int = TOKENS,
                  supernet: str = SUPERNET) -> list[str]:
    """`automoe train model` for one run under the shared recipe (the inherit recipe starts from
    `supernet`'s weights); resumes when a checkpoint exists."""
    data = DISTILLED if recipe == "distill" else DATA
    cmd = automoe("train", "model", "--arch", arch, "--data", data, "--out", str(RUNS / "models" / name),
                  "--run-dir", str(RUNS / name), "--max-tokens-seen", str(tokens), *RECIPE, *extra)
    if recipe == "inherit":
        cmd += ["--init-from", supernet]
    if (RUNS / name / "checkpoint.safetensors").exists():
        cmd.append("--resume")
    return cmd


def done(name: str) -> bool:
    """Whether a step is finished: its DONE mark in RUNS, or its product in the work tree."""
    if name == "data":  # the work tree's data folder, rebuilt when a new checkout lacks it
        return (ROOT / DATA / "manifest.json").exists()
    return (RUNS / name / "DONE").exists() or done_in_tree(name)


def done_in_tree(name: str) -> bool:
    """Whether the work tree holds what a step produced (a shipped model, committed results), so a
    machine whose RUNS was lost (it happened between two sessions) does not run it again. The
    recipe runs and the distilled data exist only for the pick, which recipes.jsonl records."""
    if name in SEARCHED or name in ("switch-small-bible", "automoe-small-bible-third"):
        return (ROOT / "models" / name / "model.safetensors").exists()
    if name in ("pick-recipe", "distill", *(f"automoe-small-bible-third-{recipe}" for recipe in RECIPE_NAMES)):
        return chosen_recipe() is not None
    if name in KEPT_SEARCHES:
        return (KEPT_SEARCHES[name] / "best_info.json").exists()
    if name == "darts-quarter-eval":
        return bool(read_records(SEARCH_QUARTER, method="darts"))
    if name in (MOS_FINETUNE, "mos-finetune-eval"):
        return bool(read_records(SUPERNETS, benchmark="supernet_finetune"))
    if name.startswith("cmp-") or name.startswith("supernets-"):
        models = {r.get("model") for r in read_records(SUPERNETS)}
        return all(any(m and m.endswith(f"cmp-{kind}") for m in models) for kind in SHARING)
    return False


def run_step(name: str, cmd: list[str]) -> None:
    """Run one step to the end and mark it done (an interrupted step leaves no mark)."""
    print(f"[{datetime.datetime.now():%H:%M:%S}] {name}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    if name == "data":
        return
    (RUNS / name).mkdir(parents=True, exist_ok=True)
    (RUNS / name / "DONE").write_text(datetime.datetime.now().isoformat() + "\n")


def pick_recipe() -> str:
    """Score the three recipe runs (dev and test), append their records, return the best by dev BLEU."""
    records = [model_record(RUNS / "models" / f"automoe-small-bible-third-{recipe}", "recipes", DATA,
                            arch_name="automoe-third", recipe=recipe) for recipe in RECIPE_NAMES]
    best = max(records, key=lambda r: r["dev_bleu"])
    for r in records:
        r["chosen"] = r is best
    append_records(RECIPES, records)
    return best["recipe"]


def evaluate_darts_quarter() -> None:
    """The DARTS architecture after the recipe comparison's budget (a quarter of the full one),
    beside the evolutionary one's chosen run of the same recipe and budget (recipes.jsonl):
    one record each -> benchmarks/results/search_quarter.jsonl."""
    evolution = read_records(RECIPES, chosen=True)[-1]
    darts = model_record(RUNS / "models" / DARTS_QUARTER, "search_quarter", DATA, method="darts",
                         arch=str((KEPT_SEARCHES["darts-small-bible"] / "best.json").relative_to(ROOT)),
                         recipe=evolution["recipe"])
    evolution = {**evolution, "benchmark": "search_quarter", "method": "evolution",
                 "arch": str((SEARCH / "automoe-0.333.json").relative_to(ROOT)), "from": str(RECIPES.relative_to(ROOT))}
    append_records(SEARCH_QUARTER, [evolution, darts])


def chosen_recipe() -> str | None:
    """The recipe the last pick chose (None before the pick)."""
    chosen = read_records(RECIPES, chosen=True)
    return chosen[-1]["recipe"] if chosen else None


def continue_run(name: str, source: str, arch: str, supernet: str = SUPERNET) -> list[str]:
    """The command that continues a shorter run of the chosen recipe (`source`, started from
    `supernet`'s weights if it inherited) to the full budget in its own run folder (the shorter run
    is copied once, so it stays as it was measured). The inverse-sqrt schedule does not depend on
    the budget, so this is the run a full budget would be."""
    run = RUNS / name
    if not (run / "checkpoint.safetensors").exists():
        run.mkdir(parents=True, exist_ok=True)
        for file in ("checkpoint.safetensors", "train.jsonl"):
            shutil.copyfile(RUNS / source / file, run / file)
    return train_command(name, arch, chosen_recipe(), supernet=supernet)


def supernet_command(kind: str) -> list[str]:
    """`automoe train supernet` of one weight-sharing kind for the controlled comparison (#27)."""
    run = RUNS / f"cmp-{kind}"
    cmd = automoe("train", "supernet", *MOS_COMMON, "--run-dir", str(run), "--weight-sharing", kind, *SHARING[kind])
    # --init-from on a resume too: the weights come from the checkpoint, the provenance still names v3
    return cmd + ["--init-from", MOS_START] + (["--resume"] if (run / "checkpoint.safetensors").exists() else [])


def mos_scratch_command(leg: int) -> list[str]:
    """Leg `leg` (1-3) of the MoS supernet trained from scratch on v3's schedule; leg 3's folder is
    `mos-neuron-scratch`, the supernet compared with v3."""
    lr, warmup, balance, seed, tokens = MOS_SCRATCH_LEGS[leg - 1]
    run = RUNS / mos_scratch_name(leg)
    cmd = automoe("train", "supernet", *SUPERNET_COMMON, "--lr", lr, "--warmup-updates", warmup, "--balance-coef",
                  balance, "--seed", seed, "--max-tokens-seen", str(tokens), "--valid-every", "100",
                  "--run-dir", str(run), "--weight-sharing", MOS_SCRATCH_KIND, *SHARING[MOS_SCRATCH_KIND])
    if leg > 1:
        cmd += ["--init-from", str(RUNS / mos_scratch_name(leg - 1))]
    return cmd + (["--resume"] if (run / "checkpoint.safetensors").exists() else [])


def mos_scratch_name(leg: int) -> str:
    """The run folder name of a leg of the MoS-from-scratch supernet."""
    return f"{MOS_SCRATCH_KIND}-scratch" + ("" if leg == len(MOS_SCRATCH_LEGS) else f"-leg{leg}")


def mos_scratch_supernet() -> str:
    """The folder of the MoS-from-scratch supernet: its last leg's run."""
    return str(RUNS / mos_scratch_name(len(MOS_SCRATCH_LEGS)))


def comparison_supernets() -> list[str]:
    """Supernet v3 (where the three warm-started kinds start) and the three comparison supernets."""
    return [MOS_START] + [str(RUNS / f"cmp-{kind}") for kind in SHARING]


def evaluate_mos_scratch() -> None:
    """Test BLEU of the four subnets and of the MoS supernet's own searched subnets (on it and, for the
    same architectures, on supernet v3), and the training record of the MoS-from-scratch supernet."""
    scratch = mos_scratch_supernet()
    searched = []
    for name, fraction in MOS_SCRATCH_SEARCHES.items():  # named for the tables: every search writes best.json
        best = RUNS / name / "best.json"
        named = RUNS / name / f"mos-scratch-{fraction:.3f}.json"
        shutil.copyfile(best, named)
        searched.append(str(named))
    evaluate_supernets([scratch], EVAL_ARCHS + tuple(searched))
    evaluate_supernets([MOS_START], tuple(searched))
    legs = len(MOS_SCRATCH_LEGS)
    supernet_stats({str(RUNS / mos_scratch_name(leg)): f"from scratch, v3's schedule, leg {leg} of {legs}"
                    for leg in range(1, legs + 1)})


def evaluate_mos_finetune() -> None:
    """Dev and test BLEU of the 1/3 architecture fine-tuned from the MoS-from-scratch supernet, beside
    the recipe comparison's run of the same architecture, recipe and budget from v3 (recipes.jsonl):
    one `supernet_finetune` record each -> benchmarks/results/supernets.jsonl."""
    v3 = next(r for r in read_records(RECIPES) if r["recipe"] == "inherit")
    v3 = {**v3, "benchmark": "supernet_finetune", "supernet": MOS_START, "from": str(RECIPES.relative_to(ROOT))}
    mos = model_record(RUNS / "models" / MOS_FINETUNE, "supernet_finetune", DATA, arch_name="automoe-third",
                       recipe="inherit", supernet=mos_scratch_supernet())
    append_records(SUPERNETS, [v3, mos])


def evaluate_mos_full(shipped: str = "automoe-small-bible-third", run: str = MOS_FULL,
                      arch_name: str = "automoe-third") -> None:
    """The same comparison at the full budget: the shipped model `shipped` (started from v3) and the
    run `run` of its architecture (started from the MoS supernet), both scored alike ->
    `supernet_finetune` records."""
    records = [model_record(ROOT / "models" / shipped, "supernet_finetune", DATA,
                            arch_name=arch_name, recipe="inherit", supernet=MOS_START),
               model_record(RUNS / "models" / run, "supernet_finetune", DATA, arch_name=arch_name,
                            recipe="inherit", supernet=mos_scratch_supernet())]
    append_records(SUPERNETS, records)


def evaluate_supernets(supernets: list[str], archs: tuple[str, ...] = EVAL_ARCHS) -> None:
    """Inherited-weight test BLEU (beam 4, all test sentences, no fine-tuning) of the same subnets
    (by default the four of EVAL_ARCHS) of each supernet folder, appended to
    benchmarks/results/supernets.jsonl."""
    for supernet in supernets:
        for arch in archs:
            subprocess.run(automoe("eval", supernet, "--arch", arch, "--data", DATA, "--split", "test",
                                   "--threads", "2", "--results", str(SUPERNETS)), cwd=ROOT, check=True)


def budget_ms(fraction: float) -> float:
    """The predicted-latency budget of the searches at `fraction` (0.5 or 0.3333) of the dense
    latency (benchmarks/results/search.jsonl)."""
    rows = read_records(ROOT / "benchmarks" / "results" / "search.jsonl", search="automoe", fraction=fraction)
    return rows[0]["budget_ms"]


def third_budget_ms() -> float:
    """The predicted-latency budget of the 1/3 searches."""
    return budget_ms(0.3333)


def evolution_search_command(supernet: str = SUPERNET, out: Path | None = None, fraction: float = 0.3333) -> list[str]:
    """The evolutionary search of `supernet` at `fraction` of the dense latency with the settings of
    benchmarks/search_pareto.py's run (population 40: 8 parents, 16 mutations, 16 crossovers;
    8 iterations; seed 0; 200 fitness sentences), timed; by default the 1/3 search of supernet v3."""
    out = out or RUNS / "evolution-search-third"
    resume = (out / "search_state.json").exists()
    return automoe("search", "run", "--supernet", supernet, "--data", DATA, "--out", str(out),
                   "--latency-ms", str(budget_ms(fraction)), "--predictor", PREDICTOR, "--population", "40",
                   "--parents", "8", "--mutations", "16", "--crossovers", "16", "--iterations", "8", "--seed", "0",
                   "--fitness-sentences", "200", *(["--resume"] if resume else []))


def search_methods_command() -> list[str]:
    """benchmarks/search_methods.py over the two searches and their trained models."""
    return [sys.executable, str(ROOT / "benchmarks" / "search_methods.py"), "--dense-model", DENSE,
            "--supernet", SUPERNET, "--evolution-run", str(KEPT_SEARCHES["evolution-search-third"]),
            "--evolution-model", str(ROOT / "models" / "automoe-small-bible-third"),
            "--darts-run", str(KEPT_SEARCHES["darts-small-bible"]),
            "--darts-model", str(RUNS / "models" / "darts-small-bible-model"), "--data", DATA]


def darts_command() -> list[str]:
    """The DARTS search (#28) under the evolutionary search's 1/3 latency budget, at its width."""
    budget = third_budget_ms()
    d_model = json.loads((SEARCH / "automoe-0.333.json").read_text())["encoder_embed_dim"]
    out = RUNS / "darts-small-bible"
    resume = (out / "checkpoint.safetensors").exists()
    if out.exists() and not resume:  # killed before its first checkpoint: kept aside, started again
        out.rename(out.with_name(f"{out.name}.interrupted-{datetime.datetime.now():%Y%m%d-%H%M%S}"))
    return automoe("search", "run", "--method", "darts", "--supernet", SUPERNET, "--data", DATA,
                   "--out", str(RUNS / "darts-small-bible"), "--predictor", PREDICTOR, "--latency-ms", str(budget),
                   "--d-model", str(d_model), *DARTS_SETTINGS, "--seed", "1", *(["--resume"] if resume else []))


def keep_search(name: str) -> None:
    """Copy a finished search's small outputs from RUNS into the work tree (KEPT_SEARCHES)."""
    kept = KEPT_SEARCHES[name]
    kept.mkdir(parents=True, exist_ok=True)
    for file in KEPT_FILES:
        if (RUNS / name / file).exists():
            shutil.copyfile(RUNS / name / file, kept / file)


class InProcess:
    """A step done in the queue's own process (an evaluation writing results), not a command."""

    def __init__(self, work):
        self.work = work


def steps() -> list[tuple[str, object]]:
    """(name, action) in order; an action is a callable that returns the step's command, an
    `InProcess` step, or None (pick-recipe)."""
    plan = [("data", lambda: automoe("data", "build", "--corpus", "bible", "--out", DATA)),
            ("switch-small-bible", lambda: train_command("switch-small-bible", "switch", "scratch",
                                                         ["--num-experts", "4"])),
            ("distill", lambda: automoe("data", "distill", "--data", DATA, "--teacher", DENSE, "--out", DISTILLED,
                                        "--threads", "2"))]
    third = str(SEARCH / "automoe-0.333.json")
    for recipe in RECIPE_NAMES:
        name = f"automoe-small-bible-third-{recipe}"
        plan.append((name, lambda name=name, recipe=recipe: train_command(name, third, recipe,
                                                                          tokens=COMPARE_TOKENS)))
    plan.append(("pick-recipe", None))
    plan.append(("automoe-small-bible-third", lambda: continue_run("automoe-small-bible-third",
                                                                   f"automoe-small-bible-third-{chosen_recipe()}",
                                                                   third)))
    def searched(name: str) -> tuple[str, object]:
        return name, lambda: train_command(name, str(SEARCH / SEARCHED[name]), chosen_recipe())

    plan.append(searched("automoe-small-bible-half"))
    # the weight-sharing comparison (3 x 4M tokens) before the two HAT models (2 x 18.2M): it completes a study
    for kind in SHARING:
        plan.append((f"cmp-{kind}", lambda kind=kind: supernet_command(kind)))
    plan.append(("supernets-eval", InProcess(lambda: evaluate_supernets(comparison_supernets()))))
    # the first mos-layer run, whose weight sets started as plain copies, is kept for its router spread
    plan.append(("supernets-stats", InProcess(lambda: supernet_stats(
        {MOS_START: "start", str(RUNS / "symmetric-cmp-mos-layer"): "weight sets started as copies"}
        | {str(RUNS / f"cmp-{kind}"): "" for kind in SHARING}))))
    plan += [searched("hat-small-bible-half"), searched("hat-small-bible-third")]
    plan.append(("evolution-search-third", evolution_search_command))
    plan.append(("darts-small-bible", darts_command))
    darts_arch = str(KEPT_SEARCHES["darts-small-bible"] / "best.json")
    plan.append((DARTS_QUARTER, lambda: train_command(DARTS_QUARTER, darts_arch, chosen_recipe(),
                                                      tokens=COMPARE_TOKENS)))
    plan.append(("darts-quarter-eval", InProcess(evaluate_darts_quarter)))
    plan.append(("darts-small-bible-model", lambda: continue_run("darts-small-bible-model", DARTS_QUARTER,
                                                                 darts_arch)))
    plan.append(("search-methods", search_methods_command))
    for leg in range(1, len(MOS_SCRATCH_LEGS) + 1):
        plan.append((mos_scratch_name(leg), lambda leg=leg: mos_scratch_command(leg)))
    scratch = mos_scratch_supernet()
    for name, fraction in MOS_SCRATCH_SEARCHES.items():
        plan.append((name, lambda name=name, fraction=fraction: evolution_search_command(scratch, RUNS / name,
                                                                                         fraction)))
    plan.append(("mos-scratch-eval", InProcess(evaluate_mos_scratch)))
    plan.append((MOS_FINETUNE, lambda: train_command(MOS_FINETUNE, third, "inherit", tokens=COMPARE_TOKENS,
                                                     supernet=scratch)))
    plan.append(("mos-finetune-eval", InProcess(evaluate_mos_finetune)))
    plan.append((MOS_FULL, lambda: continue_run(MOS_FULL, MOS_FINETUNE, third, supernet=scratch)))
    plan.append(("mos-full-eval", InProcess(evaluate_mos_full)))
    plan.append((MOS_HALF, lambda: train_command(MOS_HALF, str(SEARCH / SEARCHED["automoe-small-bible-half"]),
                                                 chosen_recipe(), supernet=scratch)))
    plan.append(("mos-half-eval", InProcess(lambda: evaluate_mos_full("automoe-small-bible-half", MOS_HALF,
                                                                      "automoe-half"))))
    return plan


def supernet_stats(supernets: dict[str, str]) -> None:
    """One training record per supernet folder (folder -> note; `queue_records.supernet_record`, the
    router spread over the four evaluated subnets) -> benchmarks/results/supernets.jsonl."""
    records = [supernet_record(folder, note, EVAL_ARCHS[2:]) for folder, note in supernets.items()]
    if any(records):
        append_records(SUPERNETS, [r for r in records if r])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list", action="store_true", help="print each step and whether it is done")
    p.add_argument("--only", default=None, help="run only this step")
    p.add_argument("--until", default=None, help="stop after this step (e.g. to free the cores for a benchmark)")
    args = p.parse_args(argv)
    names = [name for name, _ in steps()]
    for flag in ("only", "until"):
        if getattr(args, flag) not in (None, *names):
            p.error(f"--{flag} {getattr(args, flag)!r} is not a step; --list shows them")
    for name, action in steps():
        if args.until and names.index(name) > names.index(args.until):
            break
        if args.list:
            state = "done" if done(name) else ("started" if (RUNS / name).exists() else "to do")
            print(f"{name:36s} {state}")
            continue
        if done(name) or (args.only and name != args.only):
            continue
        if name == "pick-recipe":
            recipe = pick_recipe()
            print(f"recipe chosen by dev BLEU: {recipe}", flush=True)
            (RUNS / name).mkdir(parents=True, exist_ok=True)
            (RUNS / name / "DONE").write_text(recipe + "\n")
            continue
        if isinstance(action, InProcess):
            print(f"[{datetime.datetime.now():%H:%M:%S}] {name}", flush=True)
            action.work()
            (RUNS / name).mkdir(parents=True, exist_ok=True)
            (RUNS / name / "DONE").write_text(datetime.datetime.now().isoformat() + "\n")
            continue
        run_step(name, action())
        if name in KEPT_SEARCHES:
            keep_search(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
