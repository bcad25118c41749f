"""Write the result tables of README.md and docs/*.md from the committed results files (never by hand).

Each table sits between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in one of DOCUMENTS and
is rebuilt from benchmarks/results/*.jsonl (the latest run of each benchmark). `--check` exits 1 if
a document is out of date.

    python benchmarks/report.py            # rewrite them
    python benchmarks/report.py --check
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from common import commits as _commits
from common import last_run as _last_run
from common import read_results
from moe_tables import (moe_bleu_table, moe_deleted_forms_table, moe_dispatch_parts_table, moe_forms_table,
                        moe_overhead_beam_table, moe_overhead_table, moe_summary_table)
from search_methods import quarter_table, searches_table
from supernet_tables import supernets_table

from automoe.bench_results import cpu_table, int8_row_table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "moe_dispatch.md", ROOT / "docs" / "throughput.md",
             ROOT / "docs" / "darts.md", ROOT / "docs" / "mos.md", ROOT / "docs" / "shortlist.md")


def _read(name: str) -> list[dict]:
    """The records of results/`name`.jsonl (RESULTS read at call time: tests point it elsewhere)."""
    return read_results(name, RESULTS)


def engines_table() -> str:
    """Latency / throughput / BLEU per engine of the latest engines.jsonl run."""
    rows = _last_run(_read("engines"), "model")
    if not rows:
        return "_No engine benchmark has been run yet (benchmarks/engines.py)._"
    r0 = rows[0]
    head = (f"Model `{r0['model']}`, {r0['cpu']}, {r0['threads']} thread(s), batch 1, beam {r0['beam']}, "
            f"{r0['latency_sentences']} test sentences, engines interleaved; throughput at batch "
            f"{r0['throughput_batch']}; BLEU/chrF on {r0.get('bleu_sentences', 'the')} test sentences "
            f"(`{r0.get('bleu_signature', '')}`), commit `{(r0.get('git_commit') or '')[:10]}`.\n\n")
    lines = ["| engine | median ms | p90 ms | speedup vs torch fp32 | sentences/s @32 | BLEU | chrF |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | "
                     f"{r['speedup_vs_torch_fp32'] or 0:.2f}x | {r['throughput_sps']:.1f} | "
                     f"{r.get('bleu', float('nan')):.2f} | {r.get('chrf', float('nan')):.2f} |")
    return head + "\n".join(lines)


def load_demo_table() -> str:
    """The latest load test of the demo."""
    rows = _read("load_demo")
    if not rows:
        return "_Not measured yet (benchmarks/load_demo.py)._"
    r = rows[-1]
    return (f"{r.get('requests')} requests, {r.get('concurrency')} concurrent, engine {r.get('engine')}: "
            f"p50 {r.get('latency_ms_p50')} ms, p95 {r.get('latency_ms_p95')} ms, {r.get('errors')} errors "
            f"(model `{r.get('model')}`).")


def _training_budget(folder: Path) -> str:
    """Updates, target tokens and hours of a shipped folder's training (all segments together)."""
    from automoe.card import total_training

    info = folder / "supernet_info.json"
    if info.exists():
        training = json.loads(info.read_text(encoding="utf-8"))
    else:
        config = folder / "config.json"
        training = json.loads(config.read_text(encoding="utf-8")).get("training") if config.exists() else None
    if not training or "updates" not in training:
        return "not recorded"
    t = total_training(training)
    return f"{t['updates']:,} updates, {t['tokens_seen'] / 1e6:.2f}M target tokens, {t['wall_seconds'] / 3600:.2f} h"


def models_table() -> str:
    """Test BLEU/chrF of every shipped model (and supernet subnet): its latest eval.jsonl record."""
    latest: dict[tuple, dict] = {}
    for r in _read("eval"):
        if r.get("split") == "test" and (ROOT / r["model"]).is_dir():
            latest[(r["model"], r.get("arch_name"))] = r
    if not latest:
        return "_No shipped model has been evaluated yet (tools/ship.py)._"
    lines = ["| model | subnet | parameters | BLEU | chrF | training (same data, 2-core CPU) |",
             "|---|---|---:|---:|---:|---|"]
    for (model, name), r in sorted(latest.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        lines.append(f"| `{model}` | {name or 'model'} | {r['params'] / 1e6:.2f}M | {r['bleu']:.2f} | "
                     f"{r['chrf']:.2f} | {_training_budget(ROOT / model)} |")
    r0 = next(iter(latest.values()))
    return ("\n".join(lines) + f"\n\n{r0['sentences']} test sentences (Acts), beam {r0['beam']}, torch fp32 from the "
            f"fp16 weights, `{r0['bleu_signature']}`. Supernet rows are subnets with inherited weights, no fine-tuning.")


def search_table() -> str:
    """Best architecture of every latency budget, AutoMoE vs HAT-style search (latest record each)."""
    latest: dict[tuple, dict] = {}
    for r in _read("search"):
        if r.get("search") in ("automoe", "hat"):
            latest[(r["fraction"], r["search"])] = r
    if not latest:
        return "_No search has been run yet (benchmarks/search_pareto.py)._"
    lines = ["| budget (x dense) | search | predicted ms | measured ms | speedup vs dense | dev BLEU | GFLOPs | "
             "active params | expert FFNs |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (fraction, kind), r in sorted(latest.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
        if r.get("infeasible"):
            lines.append(f"| 1/{1 / fraction:.0f} ({r['budget_ms']:.2f} ms) | {kind} | infeasible: the smallest "
                         f"architecture predicts {r['smallest_predicted_ms']:.2f} ms | | | | | | |")
            continue
        lines.append(f"| 1/{1 / fraction:.0f} ({r['budget_ms']:.2f} ms) | {kind} | {r['predicted_ms']:.2f} | "
                     f"{r['measured_ms']:.2f} | {r['speedup_vs_dense']:.2f}x | {r['dev_bleu']:.2f} | "
                     f"{r['gflops']:.3f} | {r['active_params'] / 1e6:.2f}M | {r['experts']} |")
    r0 = next(r for r in latest.values() if not r.get("infeasible"))
    checks = [r for r in _read("search") if r.get("search") == "dense-check" and r.get("supernet") == r0["supernet"]]
    again = f" ({checks[-1]['dense_ms_after']:.2f} ms measured again after the searches)" if checks else ""
    return ("\n".join(lines) + f"\n\nSupernet `{r0['supernet']}`, dense baseline `{r0['dense_model']}` at "
            f"{r0['dense_ms']:.2f} ms{again}; {r0['engine']} {r0['quantization'] or 'fp32'}, {r0['threads']} thread, batch 1, "
            f"beam 4, {r0['latency_sentences']} dev sentences decoded to {r0['out_len']} tokens; population "
            f"{r0['population']}, {r0['iterations']} iterations; dev BLEU with inherited weights, no fine-tuning. "
            "hat = the same search restricted to one expert per layer.")


def predictor_table() -> str:
    """Held-out error of the latency predictor vs HAT's on the latest predictor.jsonl run."""
    run = _last_run(_read("predictor"), "table")
    if not run:
        return "_Not measured yet (benchmarks/predictor.py)._"
    splits = [r for r in run if r["kind"] == "split"]
    lines = ["| predictor | " + " | ".join(f"split {r['split_seed']}" for r in splits) + " | mean |",
             "|---|" + "---:|" * (len(splits) + 1)]
    names = {"automoe": "automoe, used", "automoe_mlp": "automoe features, MLP ensemble",
             "automoe_linear": "automoe features, log-linear", "hat": "HAT 10-feature, MLP (as HAT)",
             "hat_linear": "HAT 10-feature, log-linear"}
    for kind in [k for k in names if k in splits[0]]:
        label = names[kind] if kind != "automoe" else f"automoe ({splits[0].get('model', 'mlp')}), used"
        cells = [f"{r[kind]['mape']:.2f}% / {r[kind]['kendall_tau']:.3f}" for r in splits]
        mean_mape = sum(r[kind]["mape"] for r in splits) / len(splits)
        mean_tau = sum(r[kind]["kendall_tau"] for r in splits) / len(splits)
        lines.append(f"| {label} (MAPE / tau) | " + " | ".join(cells) + f" | **{mean_mape:.2f}% / {mean_tau:.3f}** |")
    r0 = splits[0]
    text = ("\n".join(lines) + f"\n\n`{r0['table']}`: {r0['rows']} architectures ({r0['weights']} weights), "
            f"{r0['engine']} {r0['quantization'] or 'fp32'}, {r0['threads']} thread, beam {r0['beam']}, "
            f"{r0['sentences']} dev sentences decoded to {r0['out_len']} tokens, fastest of {r0['repeats']} per "
            f"sentence, timed against a reference model; held out {r0['test']} of {r0['rows']} per split, "
            f"{r0['members']} MLPs per MLP ensemble; commit `{(r0.get('git_commit') or '')[:10]}`.")
    repeat = [r for r in run if r["kind"] == "repeat"]
    if repeat:
        r = repeat[-1]
        text += (f" The same {r['archs']} architectures measured twice agree to MAPE {r['mape']:.2f}% / tau "
                 f"{r['kendall_tau']:.3f} ({r['measure']}; raw medians {r['raw_mape']:.2f}% / "
                 f"{r['raw_kendall_tau']:.3f}).")
    return text


def comparison_table() -> str:
    """The proof table: the last full `automoe bench` run over the shipped models (results/bench.jsonl)."""
    from automoe.bench_results import last_run, markdown_table

    run = last_run(_read("bench"))
    if not run:
        return ("_No `automoe bench` run over the shipped models is committed yet: the dense and Switch baselines "
                "are shipped (test BLEU in Performance details below); the HAT-style and AutoMoE models are in "
                "training (issue #25)._")
    plots = "".join(f"\n\n![{kind}](benchmarks/results/bench-{kind}.png)" for kind in ("latency", "gflops")
                    if (RESULTS / f"bench-{kind}.png").exists())
    goals = proof_goals(run, headline_engine(run))
    return markdown_table(run) + ("\n\n" + goals if goals else "") + plots


# The engine the headline and the proof goals read: automoe's per-row int8 form where the run has it
# (faster than ONNX Runtime's per-tensor one on every shipped model, docs/throughput.md), else that one.
HEADLINE_ENGINES = ("onnxruntime-int8-row", "onnxruntime-int8")


def headline_engine(run: list[dict]) -> str:
    """The first of HEADLINE_ENGINES that a bench run measured."""
    measured = {r["engine"] for r in run if "skipped" not in r}
    return next((e for e in HEADLINE_ENGINES if e in measured), HEADLINE_ENGINES[-1])


def headline() -> str:
    """The README's first result: each searched MoE model of the last bench run against the dense
    and Switch baselines and the HAT-style model of its budget, on ONNX Runtime int8 (`headline_engine`),
    1 thread (with its shortlist where measured)."""
    from automoe.bench_results import last_run

    run = last_run(_read("bench"))
    engine = headline_engine(run)
    run = [r for r in run if r["engine"] == engine and r["threads"] == 1 and "skipped" not in r]
    models = [r for r in run if r["family"] == "automoe" and not r.get("shortlist")]
    if not models:
        return ("_No searched MoE model is benchmarked yet: the dense and Switch baselines are shipped, the "
                "searched models are in training (issue #25)._")
    lines = []
    for a in models:
        dense, switch, hat = _baselines(run, a)
        listed = next((r for r in run if r["model"] == a["model"] and r.get("shortlist")), None)
        text = f"- **`{a['model']}`**: BLEU {a['bleu']:.2f}"
        if dense:
            text += f" against the dense baseline's {dense['bleu']:.2f}, **{dense['median_ms'] / a['median_ms']:.2f}x faster**"
        if listed and dense:
            text += (f" ({dense['median_ms'] / listed['median_ms']:.2f}x with its lexical shortlist, "
                     f"BLEU {listed['bleu']:.2f})")
        if switch:
            text += (f"; the Switch baseline: BLEU {switch['bleu']:.2f}, {switch['median_ms'] / a['median_ms']:.2f}x "
                     "slower than it")
        if hat:
            text += (f"; the HAT-style dense model searched for the same budget: BLEU {hat['bleu']:.2f}, "
                     f"{hat['median_ms'] / a['median_ms']:.2f}x this model's latency")
        lines.append(text + ".")
    r0 = models[0]
    form = "int8-row (automoe's per-row int8 operator)" if engine == "onnxruntime-int8-row" else "int8"
    return ("\n".join(lines) + f"\n\nONNX Runtime {form}, 1 thread, batch 1, beam 4, {r0['sentences']} test sentences "
            f"(Acts), {r0['cpu']}; all models in one `automoe bench` run. The whole comparison: "
            "[below](#the-comparison-searched-moe-vs-dense-switch-and-hat).")


def _baselines(rows: list[dict], a: dict) -> tuple[dict | None, dict | None, dict | None]:
    """The dense, Switch and HAT (the same budget: the same name suffix, e.g. `-third`) rows of a
    bench run decoded as row `a` was (same threads, same shortlist setting; the caller picks the
    engine): (dense, switch, hat), None where absent."""
    peers = [r for r in rows if r["threads"] == a["threads"] and bool(r.get("shortlist")) == bool(a.get("shortlist"))]
    suffix = a["model"].rsplit("-", 1)[-1]
    return (next((r for r in peers if r["model"] == a["baseline"]), None),
            next((r for r in peers if r["family"] == "switch"), None),
            next((r for r in peers if r["family"] == "hat" and r["model"].rsplit("-", 1)[-1] == suffix), None))


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def proof_goals(run: list[dict], engine: str = "onnxruntime-int8") -> str:
    """The goals of the proof (issue #25) for each AutoMoE model of a bench run, against the
    baselines decoded the same way (same engine, threads and shortlist setting): at least 4x faster
    than dense with BLEU at most 0.5 below; within 1 BLEU of Switch and at least 3x faster; against
    the HAT model of the same budget (same name suffix), 0.5 BLEU better or 20% fewer GFLOPs."""
    from automoe.bench_results import label

    rows = [r for r in run if r["engine"] == engine and "skipped" not in r]
    lines, met = [], {"dense": [], "Switch": []}
    for a in (r for r in rows if r["family"] == "automoe"):
        dense, switch, hat = _baselines(rows, a)
        cells = []
        if dense:
            speed, drop = dense["median_ms"] / a["median_ms"], a["bleu"] - dense["bleu"]
            cells.append(f"{speed:.2f}x, {drop:+.2f} BLEU: {_mark(speed >= 4 and drop >= -0.5)}")
            met["dense"] += [f"`{label(a)}`"] if speed >= 4 and drop >= -0.5 else []
        else:
            cells.append("no dense run")
        if switch:
            speed, drop = switch["median_ms"] / a["median_ms"], a["bleu"] - switch["bleu"]
            cells.append(f"{speed:.2f}x, {drop:+.2f} BLEU: {_mark(speed >= 3 and drop >= -1)}")
            met["Switch"] += [f"`{label(a)}`"] if speed >= 3 and drop >= -1 else []
        else:
            cells.append("no Switch run")
        if hat:
            gain, flops = a["bleu"] - hat["bleu"], a["gflops"] / hat["gflops"]
            cells.append(f"{gain:+.2f} BLEU, {flops:.2f}x GFLOPs: {_mark(gain >= 0.5 or flops <= 0.8)}")
        else:
            cells.append(f"no HAT model of this budget (`*-{a['model'].rsplit('-', 1)[-1]}`) in the run")
        lines.append(f"| `{label(a)}` | " + " | ".join(cells) + " |")
    if not lines:
        return ""
    return ("Goals of the proof, each AutoMoE model against the baselines decoded the same way "
            f"({engine}, 1 thread, with or without the shortlist alike):\n\n"
            "| AutoMoE model | vs dense (goal: >= 4x, >= -0.5 BLEU) | vs Switch (goal: >= 3x, >= -1 BLEU) | "
            "vs HAT, same budget (goal: >= +0.5 BLEU or <= 0.8x GFLOPs) |\n|---|---|---|---|\n" + "\n".join(lines)
            + "\n\nThe dense and Switch goals are asked of the best AutoMoE model, the HAT goal of each budget: "
            + "; ".join(f"vs {base}: met by {', '.join(names)}" if names else f"vs {base}: **met by none**"
                        for base, names in met.items()) + ".")


def recipes_table() -> str:
    """The recipe comparison of the proof (tools/proof_queue.py): the 1/3-latency AutoMoE subnet
    trained three ways on the same budget, the last pick in recipes.jsonl."""
    rows = _read("recipes")
    if not rows:
        return "_Not measured yet: the three recipe runs follow the Switch training in tools/proof_queue.py._"
    pick = rows[-3:]  # one pick appends its three recipes together
    lines = ["| recipe | start | training data | target tokens | updates | hours | dev BLEU | test BLEU | test chrF | chosen |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in pick:
        start = f"`{r['init_from']}` (inherited)" if r.get("init_from") else "random init"
        data = Path(r["data"]).name
        lines.append(f"| {r['recipe']} | {start} | `{data}` | {r['tokens_seen'] / 1e6:.2f}M | {r['updates']:,} | "
                     f"{r['wall_seconds'] / 3600:.2f} | {r['dev_bleu']:.2f} | {r['test_bleu']:.2f} | "
                     f"{r['test_chrf']:.2f} | {'**yes**' if r.get('chosen') else ''} |")
    r0 = pick[0]
    return ("\n".join(lines) + f"\n\nThe 1/3-latency AutoMoE subnet (`benchmarks/results/search/automoe-0.333.json`), "
            f"same budget, schedule and seed for each recipe; beam {r0['beam']}, {r0['sentences']['dev']} dev / "
            f"{r0['sentences']['test']} test sentences, `{r0['bleu_signature']}`. The recipe is chosen by dev BLEU "
            "and used for every searched model; the chosen run is then continued to the full budget.")


def search_methods_table() -> str:
    """Evolutionary search against DARTS: cost and resulting model (search_methods.jsonl, issue #28)."""
    run = _last_run(_read("search_methods"), "benchmark")
    if not run:
        return ("_Not measured yet: the DARTS search and its model follow the HAT models in "
                "tools/proof_queue.py; then `benchmarks/search_methods.py` (docs/darts.md)._")
    lines = ["| method | supernet training, h | search, h | total, h | active params | GFLOPs | target tokens | "
             "test BLEU | test chrF | speedup vs dense |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in run:
        tokens = f"{r['tokens_seen'] / 1e6:.1f}M" if r.get("tokens_seen") else "?"
        lines.append(f"| {r['method']} | {r['supernet_wall_hours']:.2f} | {r['search_wall_hours']:.2f} | "
                     f"{r['total_wall_hours']:.2f} | {r['active_params'] / 1e6:.2f}M | {r['gflops']:.3f} | {tokens} | "
                     f"{r['bleu']:.2f} | {r['chrf']:.2f} | {r['speedup']:.2f}x |")
    r0 = run[0]
    return "\n".join(lines) + (
        f"\n\nWall hours on 2 cores, each part on the machine that ran it (the supernet's training: the time its "
        f"supernet_info.json records, from the machine that trained it; the searches and this bench: the processor "
        f"named below); the latency predictor both searches use is not counted. "
        f"Evolution: its supernet's training (every stage) + the search; DARTS trains its own relaxed supernet "
        f"inside the search. Models: each searched architecture trained by the shipped models' recipe; BLEU and "
        f"speedup from one bench run with the dense model ({r0['engine']}, {r0['threads']} thread, beam 4, "
        f"{r0['sentences']} test sentences, `{r0['bleu_signature']}`); {r0['cpu']}, commit {_commits(run)}.")


def darts_memory() -> str:
    """Peak training memory of the DARTS supernet, reversible vs stored activations (darts_memory.jsonl)."""
    from darts_memory import darts_memory_table

    return darts_memory_table()


def _script_table(name: str, last: bool = True, missing: str | None = None) -> str:
    """The `table` function of benchmarks/NAME.py over results/NAME.jsonl: its last run (`last`) or
    every record; `missing`, where given, stands in for an empty file."""
    import importlib

    records = _read(name)
    run = _last_run(records, "benchmark") if last else records
    return missing if missing is not None and not run else importlib.import_module(name).table(run)


def shortlist_tune_table() -> str:
    """Dev BLEU cost of each shortlist size per model (shortlist_tune.jsonl, `automoe shortlist tune`)."""
    sys.path.insert(0, str(ROOT))
    from automoe.shortlist_tune import latest_per_model, tune_table

    latest = latest_per_model(_read("shortlist_tune"))
    return tune_table(latest, ROOT) + (f", commit {_commits(latest)}." if latest else "")


def throughput_table() -> str:
    """Sentences/s per batch size of the latest throughput run (benchmarks/throughput.py)."""
    sys.path.insert(0, str(ROOT))
    from automoe.bench_results import throughput_table as table

    runs = [r for r in _read("throughput") if r.get("benchmark") == "throughput"]
    run = [r for r in runs if r.get("run_id") == runs[-1].get("run_id")] if runs else []
    return table(run) if run else "_No throughput run yet (benchmarks/throughput.py)._"


def paper_scale_table() -> str:
    """Paper-scale latency, random weights (paper_scale.jsonl, benchmarks/paper_scale.py; issue #26)."""
    return _script_table("paper_scale", last=False)


def memory_floor_table() -> str:
    """A decode step at batch 1 against the memory floor, latest run of benchmarks/throughput.py."""
    from throughput import memory_floor_table as table

    run = _last_run([r for r in _read("throughput") if r.get("benchmark") == "memory_floor"], "benchmark", hours=1)
    return table(list({r["model"]: r for r in run}.values()))  # each model's last record of that hour


TABLES = {  # block name -> the function that writes it (the blocks sit in README.md and docs/*.md)
    "headline": headline, "comparison": comparison_table, "recipes": recipes_table, "models": models_table,
    "supernets": supernets_table, "search_methods": search_methods_table, "search": search_table,
    "predictor": predictor_table, "engines": engines_table, "load_demo": load_demo_table,
    "paper_scale": paper_scale_table, "darts_memory": darts_memory, "throughput": throughput_table,
    "shortlist_tune": shortlist_tune_table, "memory_floor": memory_floor_table,
    # tables of benchmark scripts over their own results file
    "decode_profile": lambda: _script_table("decode_profile",
                                            missing="_No decode profile yet (benchmarks/decode_profile.py)._"),
    "space_floor": lambda: _script_table("space_floor", missing="_Not measured yet (benchmarks/space_floor.py)._"),
    "mos_cost": lambda: _script_table("mos_cost", last=False), "int8_forms": lambda: _script_table("int8_forms"),
    "stepped_path": lambda: _script_table("stepped_path"),
    # the shipped models on each processor; the searches of #28 (search_methods.py)
    "cpus": lambda: cpu_table(_read("bench")), "int8_row": lambda: int8_row_table(_read("bench")),
    "searches": lambda: searches_table(RESULTS / "search"),
    "search_quarter": lambda: quarter_table(_read("search_quarter")),
    # the MoE-dispatch study (moe_tables.py)
    "moe_summary": moe_summary_table, "moe_overhead": moe_overhead_table,
    "moe_overhead_scale": lambda: moe_overhead_table(random=True), "moe_overhead_beam": moe_overhead_beam_table,
    "moe_forms": moe_forms_table, "moe_dispatch_parts": moe_dispatch_parts_table,
    "moe_dispatch_parts_scale": lambda: moe_dispatch_parts_table(random=True), "moe_bleu": moe_bleu_table,
    "moe_deleted_forms": moe_deleted_forms_table,
}


def render(text: str) -> str:
    """A document's text with every results block rebuilt."""
    for name, make in TABLES.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
        text = pattern.sub(lambda m: m.group(1) + make() + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if a document is not up to date (and name it)")
    args = p.parse_args(argv)
    stale = []
    for path in DOCUMENTS:
        old = path.read_text(encoding="utf-8")
        new = render(old)
        if new != old:
            stale.append(path)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("out of date: " + ", ".join(path.name for path in stale) + " (run benchmarks/report.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
