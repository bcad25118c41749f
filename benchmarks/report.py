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
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "moe_dispatch.md", ROOT / "docs" / "throughput.md",
             ROOT / "docs" / "darts.md", ROOT / "docs" / "mos.md", ROOT / "docs" / "shortlist.md")
FORMS = ("kernel", "compact")  # the MoE forms automoe exports (int8 default first); records of others stay as data


def _read(name: str) -> list[dict]:
    path = RESULTS / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _last_run(records: list[dict], field: str, hours: float | None = None) -> list[dict]:
    """Records of the last record's run: same commit, same hour and same `field` value. A benchmark
    launched as several scripts one after another, which may start under different commits of
    other files, passes `hours`: then the run is every record with the same `field` value written
    within that many hours before the last one, whatever its commit."""
    if not records:
        return []
    if hours is not None:
        end = datetime.fromisoformat(records[-1]["date"])
        return [r for r in records if r.get(field) == records[-1].get(field)
                and timedelta(0) <= end - datetime.fromisoformat(r["date"]) <= timedelta(hours=hours)]
    key = lambda r: (r.get("git_commit"), r.get("date", "")[:13], r.get(field))  # noqa: E731
    return [r for r in records if key(r) == key(records[-1])]


def _commits(run: list[dict]) -> str:
    """The distinct commits of a run's records, short, in order of appearance."""
    return ", ".join(f"`{c[:10]}{'-dirty' if c.endswith('-dirty') else ''}`"
                     for c in dict.fromkeys(r.get("git_commit") or "" for r in run))


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


def _run_of(name: str, field: str, hours: float, form: str | None = None) -> list[dict]:
    """The last run (see `_last_run`) among the records of results/`name`.jsonl that have `field`
    set: trained-weight records name their `supernet`, random-weight ones their `space`. With
    `form`, only records of that MoE export form (`_form`)."""
    return _last_run([r for r in _read(name) if r.get(field) and form in (None, _form(r))], field, hours=hours)


def _form(r: dict) -> str:
    """The MoE export form a timing record measured; records older than the field timed "compact"."""
    return r.get("moe_dispatch") or "compact"


def _pct(value: float) -> str:
    return f"{100 * value:+.1f}%"


def _overhead_cell(value: float, least: float | None) -> str:
    """An overhead and, after a semicolon, its ratio of per-step minima (when measured)."""
    return _pct(value) + ("" if least is None else f"; {_pct(least)}")


def _step_cell(r: dict, key: str, over: str) -> str:
    """A timing record's pooled median step ms of `key` and its overhead `over` (; per-step minima)."""
    return f"{r[key]['median_ms']:.3f} ({_overhead_cell(r[over], r.get(f'{over}_min'))})"


def _control_cell(r: dict) -> str:
    """A timing record's A/A control: median (quartiles); per-step minima."""
    q1, q3 = r["control_overhead_quartiles"]
    return f"{_pct(r['control_overhead'])} ({100 * q1:+.0f}% .. {100 * q3:+.0f}%); {_pct(r['control_overhead_min'])}"


def _opening(r: dict) -> str:
    """How a timing record's sessions were opened (moe_harness.open_interleaved, or all of a model's together)."""
    return "opened in rotation" if r.get("opening") == "interleaved" else "each model's opened together"


def _overhead_rows(run: list[dict], sizes: bool, forms: bool = False) -> str:
    """The table of a run's last record per FFN width (and MoE form, with `forms`: a first column,
    forms in FORMS order), widest first: dense step, the MoE model, all tokens to expert 0, the
    other experts on top, the A/A control (and with `sizes` the decoder.onnx sizes)."""
    lines = [("| MoE form " if forms else "") + "| FFN width | dense step ms | 4 experts: step ms (overhead) | all tokens "
             "to expert 0 (fixed dispatch cost) | other experts (the beams' extra distinct experts) | dense against "
             "itself (A/A control) |" + (" int8 decoder MiB dense / MoE |" if sizes else ""),
             ("|---" if forms else "") + "|---:|---:|---:|---:|---:|---:|" + ("---:|" if sizes else "")]
    latest = {(_form(r), r["width"]): r for r in run}
    for (form, width), r in sorted(latest.items(), key=lambda item: (FORMS.index(item[0][0]), -item[0][1])):
        lines.append((f"| {form} " if forms else "") + f"| {width} | {r['dense_step']['median_ms']:.3f} | "
                     f"{_step_cell(r, 'moe_step', 'overhead')} | {_step_cell(r, 'moe_one_expert_step', 'dispatch_overhead')} | "
                     f"{_overhead_cell(r['expert_overhead'], r.get('expert_overhead_min'))} | {_control_cell(r)} |"
                     + (f" {r['decoder_mib']['dense']} / {r['decoder_mib']['moe']} |" if sizes else ""))
    return "\n".join(lines)


def _protocol(r: dict, unit: str = "step") -> str:
    """The replay protocol of a timing record, in words."""
    return (f"{r['rounds']} passes in turns of {r['turn']} sentences (the first {r['warmup']} untimed; "
            f"{r['paired_turns']} paired turns), {r.get('instances', 1)} sessions per model ({_opening(r)}) in "
            f"rotation; overhead: the median over turns of the ratio to the same turn of the dense model; after the "
            f"semicolon, the ratio of per-{unit} minima over passes; the control's quartiles show how far one paired "
            f"turn strays on this host")


def moe_overhead_table(random: bool = False) -> str:
    """The latest decoder.onnx dispatch overhead (study overhead), one row per FFN width: with trained
    weights, or with `random` the random weights of a larger preset space (`--space`)."""
    run = _run_of("moe_overhead", "space" if random else "supernet", hours=1.5)
    run = [r for r in run if "paired_turns" in r]  # the oldest records timed unpaired blocks
    if not run:
        return "_Not measured yet (benchmarks/moe_dispatch.py --study overhead" + (" --space)._" if random else ")._")
    last = run[-1]
    weights = (f"The `{last['space']}` space's largest model (d_model {last['d_model']}, {last['decoder_layers']} decoder "
               f"layers) with random weights (seed {last['seed']}) and random routers, so its routing is not a trained "
               f"router's, at most {last['max_length']} tokens per sentence" if random else
               f"Weights and routers of `{last['supernet']}`")
    return (_overhead_rows(run, sizes=True) + f"\n\nDecoder step (decoder.onnx, the compact form), ONNX Runtime "
            f"{last['quantization'] or 'fp32'}, {last['threads']} thread, batch 1, beam {last['beam']}; the recorded steps "
            f"of {last['sentences']} real test sentences replayed through every model, {_protocol(last)}; ms are pooled "
            f"medians. {weights}; L3 cache {last.get('l3_cache')}, commit {_commits(run)}.")


def _beam_runs() -> list[list[dict]]:
    """Per MoE form (FORMS order), the last run of the beam study with trained weights."""
    return [run for form in FORMS if (run := _run_of("moe_overhead_beam", "supernet", hours=1.5, form=form))]


def moe_overhead_beam_table() -> str:
    """The latest decode-step overhead inside the exported beam graph (study beam, trained weights):
    one row per MoE form automoe exports and FFN width."""
    runs = _beam_runs()
    if not runs:
        return "_Not measured yet (benchmarks/moe_dispatch.py --study beam)._"
    repeats = _repeated_runs(runs)
    runs = [list({r["width"]: r for r in form_run}.values()) for form_run in runs]  # the records shown
    run = [r for form_run in runs for r in form_run]
    last = max(run, key=lambda r: r["date"])
    short, long = last["lengths"]
    dates = "; ".join(f"{_form(r[-1])} {r[-1]['date'][:10]}, commit {_commits(r)}" for r in runs)
    return (_overhead_rows(run, sizes=False, forms=True) + f"\n\nDecoder step inside the exported beam graph "
            f"(`com.microsoft.BeamSearch`, what `Translator` runs at batch 1), ONNX Runtime "
            f"{last['quantization'] or 'fp32'}, {last['threads']} thread, beam {last['beam']}: each of "
            f"{last['sentences']} real test sentences decoded to {short} and to {long} tokens (end token suppressed), "
            f"step = (time at {long} - time at {short}) / {long - short}; {_protocol(last, 'sentence')}. Weights and "
            f"routers of `{last['supernet']}`, L3 cache {last.get('l3_cache')}. MoE form: `kernel`, automoe's int8 "
            f"operator (the int8 default); `compact`, the exact graph (the default without a C++ compiler); the last "
            f"run of each: {dates}." + _form_ratios(run) + repeats)


def _repeated_runs(runs: list[list[dict]]) -> str:
    """A sentence per MoE form whose shown run timed a width more than once (the study run again
    within the run's hours): every overhead measured, oldest first, so a table row that is only the
    last of several is not read as the only one (empty when no width was repeated)."""
    def cell(r: dict) -> str:
        least = r.get("overhead_min")
        return _pct(r["overhead"]) + ("" if least is None else f" [{_pct(least)}]")

    out = ""
    for form_run in runs:
        by_width = {}
        for r in form_run:
            by_width.setdefault(r["width"], []).append(r)
        if all(len(records) == 1 for records in by_width.values()):
            continue
        cells = "; ".join(f"{width}: " + ", ".join(cell(r) for r in records)
                          for width, records in sorted(by_width.items(), key=lambda item: -item[0]))
        out += (f" The {_form(form_run[-1])} rows are the last of repeated runs; the 4-expert overhead of every run, "
                f"oldest first (median [per-sentence minima]), by FFN width: {cells}.")
    return out


def _form_ratios(run: list[dict]) -> str:
    """Sentences on the records timed with `--against-form` (another form automoe exports), one per
    pair of forms: the MoE step in the record's form over the other, paired turn by turn in one run."""
    paired = sorted((r for r in run if r.get("form_ratio") is not None and r["against_form"] in FORMS),
                    key=lambda r: -r["width"])
    out = ""
    for form, against in dict.fromkeys((_form(r), r["against_form"]) for r in paired):
        cells = ", ".join(f"{r['width']}: {_overhead_cell(r['form_ratio'], r.get('form_ratio_min'))}"
                          for r in paired if (_form(r), r["against_form"]) == (form, against))
        out += (f" The {form} rows also timed the same MoE model exported as {against} in the same turns; "
                f"{form} over {against}, by FFN width: {cells}.")
    return out


def moe_summary_table() -> str:
    """The README's summary: the step of the 4-expert model against dense as users decode (the beam
    graph, int8, the default form), and what the int8 form costs in BLEU."""
    runs = _beam_runs()
    if not runs:
        return "_Not measured yet (benchmarks/moe_dispatch.py --study beam)._"
    run = list({r["width"]: r for r in runs[0]}.values())
    r = run[-1]
    bleu = _read("moe_bleu")
    change = (bleu[-1]["scores"].get(f"onnxruntime-int8-{_form(r)}") or {}).get("bleu_change") if bleu else None
    return (_overhead_rows(run, sizes=False) + f"\n\nDecoder step of a model with {r['experts']} top-1 experts per layer against the "
            f"same model with one dense FFN, inside the exported beam graph (what `Translator` runs for one sentence), "
            f"ONNX Runtime {r['quantization'] or 'fp32'} with the `{_form(r)}` MoE form, {r['threads']} thread, beam "
            f"{r['beam']}; weights and routers of `{r['supernet']}`; {_protocol(r, 'sentence')}; commit {_commits(run)}."
            + ("" if change is None else f" BLEU of this form against PyTorch fp32: {change:+.2f}.")
            + " Protocol, the other forms and the other studies: [docs/moe_dispatch.md](docs/moe_dispatch.md).")


def moe_forms_table() -> str:
    """The latest comparison of the compact and kernel forms graph by graph (study forms): one row per
    FFN width, one column per graph timed (the encoder, then decoder.onnx by batch size)."""
    records = [r for r in _read("moe_forms") if all("kernel" in g.get("ratios", {}) for g in r["graphs"].values())]
    run = list({r["width"]: r for r in _last_run([r for r in records if r.get("supernet")], "supernet",
                                                  hours=1.5)}.values())
    if not run:
        return "_Not measured yet (benchmarks/moe_dispatch.py --study forms)._"
    order = lambda g: (0, 0) if g == "encoder" else (1, int(g.split("@")[1]))  # noqa: E731  (decoder@B by B)
    graphs = sorted({g for r in run for g in r["graphs"]}, key=order)
    last = max(run, key=lambda r: r["date"])
    label = lambda g: ("encoder (one source)" if g == "encoder" else  # noqa: E731
                       f"decoder.onnx, batch {g.split('@')[1]} ({last['graphs'][g]['rows_per_call']} rows per step)")
    lines = ["| FFN width | " + " | ".join(label(g) for g in graphs) + " |", "|---:|" + "---:|" * len(graphs)]
    for r in sorted(run, key=lambda r: -r["width"]):
        cells = []
        for g in graphs:
            c = r["graphs"].get(g)
            kernel = c and c["ratios"]["kernel"]
            cells.append("" if c is None else f"{c['compact_call']['median_ms']:.3f} / {c['kernel_call']['median_ms']:.3f} "
                                              f"({_overhead_cell(kernel['ratio'], kernel['min'])})")
        lines.append(f"| {r['width']} | " + " | ".join(cells) + " |")
    return ("\n".join(lines) + "\n\nms per call, `compact` / `kernel`, and in brackets kernel over compact (negative: "
            "faster than compact): the median over turns of the ratio of the two forms' times in the same turn; after "
            f"the semicolon, the ratio of per-item minima over passes. One model with {last['experts']} top-1 experts "
            f"per layer (weights and routers of `{last['supernet']}`), exported int8 in each form, ONNX Runtime, "
            f"{last['threads']} thread, beam {last['beam']}; the encoder runs {last['sentences']} real test sources "
            f"one at a time, decoder.onnx replays the steps recorded while translating them in batches; "
            f"{last['rounds']} passes; commit {_commits(run)}, {last['date'][:10]}.")


def moe_dispatch_parts_table(random: bool = False) -> str:
    """The latest in-place breakdown of the fixed dispatch cost (study parts): one row per FFN width,
    each column cutting more of the all-tokens-to-expert-0 graph's dispatch. With `random`, the
    latest run on random weights of a preset space (`--space`) instead of a trained supernet's."""
    run = _run_of("moe_dispatch_parts", "space" if random else "supernet", hours=1.5 if random else 1)
    if not run:
        return "_Not measured yet (benchmarks/moe_dispatch.py --study parts" + (" --space)._" if random else ")._")
    latest = {r["width"]: r for r in run}
    last = run[-1]
    cuts = ("no-empty", "no-split", "router-only")

    def cell(part: dict) -> str:
        return _overhead_cell(part["overhead"], part.get("overhead_min"))

    def removed(cut: str) -> str:
        ops = last["removed_ops"][cut]
        return ", ".join(f"{n // last['moe_layers']} {op}" for op, n in sorted(ops.items()))

    lines = ["| FFN width | dense step ms | whole dispatch (all tokens to expert 0) | without the empty experts | "
             "also without Split / Concat | router and gate only | dense against itself (A/A control) |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for width, r in sorted(latest.items(), reverse=True):
        parts = r["parts"]
        lines.append(f"| {width} | {r['dense_step']['median_ms']:.3f} | {cell(parts['moe-one'])} | "
                     + " | ".join(cell(parts[c]) for c in cuts) + f" | {cell(parts['dense-again'])} |")
    return ("\n".join(lines) + f"\n\nOverhead of each graph's decoder step over the dense model's (ONNX Runtime int8, "
            f"{last['threads']} thread, batch 1, beam {last['beam']}, {last['moe_layers']} MoE decoder layers): the median "
            f"over {last['parts']['moe-one']['turns']} paired turns, then the ratio of per-step minima over "
            f"{last['rounds']} passes; the recorded steps of {last['sentences']} real test sentences in turns of "
            f"{last['turn']} (the first {last['warmup']} untimed), {last.get('instances', 1)} session(s) per graph "
            f"({_opening(last)}) in rotation. Nodes removed per layer, cumulative: without the empty experts "
            f"{removed('no-empty')}; also without Split / Concat {removed('no-split')}; router and gate only "
            f"{removed('router-only')}. " + (f"Random weights (seed {last['seed']}) of the `{last['space']}` space's largest model "
                                            f"(d_model {last['d_model']}), at most {last['max_length']} tokens per sentence"
                                            if random else f"Weights of `{last['supernet']}`") + f", commit {_commits(run)}.")


def moe_bleu_table() -> str:
    """The latest BLEU of a trained MoE model's int8 MoE forms at batch 1 (study bleu): one row per
    engine and form automoe exports, PyTorch fp32 first."""
    records = _read("moe_bleu")
    if not records:
        return "_Not measured yet (benchmarks/moe_dispatch.py --study bleu)._"
    r = records[-1]
    lines = ["| engine | BLEU | change vs torch fp32 | chrF |", "|---|---:|---:|---:|"]
    for name, s in r["scores"].items():
        if name == "torch-fp32" or name.rsplit("-", 1)[-1] in FORMS:
            lines.append(f"| {name} | {s['bleu']:.2f} | {s['bleu_change']:+.2f} | {s['chrf']:.2f} |")
    return ("\n".join(lines) + f"\n\nThe model with {r['experts']} top-1 experts of width {r['width']} in every layer "
            f"(weights and routers of `{r['supernet']}`), {r['sentences']} test sentences, beam {r['beam']}; the ONNX "
            f"Runtime exports translate one sentence at a time (the beam graph, where the int8 MoE forms differ), "
            f"PyTorch in batches; BLEU `{r['bleu_signature']}`; commit {_commits([r])}, {r['date'][:10]}.")


def _spread(values: list[float]) -> str:
    """A list of ratios as its range (or its one value)."""
    lo, hi = min(values), max(values)
    return _pct(lo) if lo == hi else f"{_pct(lo)} .. {_pct(hi)}"


def moe_deleted_forms_table() -> str:
    """The measurements that decided which MoE forms automoe stopped exporting (issue #29): PyTorch's
    traced dispatch and ONNX Runtime's QMoE operator, each against the forms kept, from the records
    the studies wrote while those forms existed."""
    rows = []
    traced = [r for r in _read("moe_overhead") if r.get("traced_overhead") is not None and "paired_turns" in r]
    for field in ("supernet", "space"):
        records = [r for r in traced if r.get(field)]
        run = list({r["width"]: r for r in _last_run(records, field, hours=1.5)}.values())
        if run:
            cells = ", ".join(f"{r['width']}: {_pct(r['traced_overhead'])} vs {_pct(r['overhead'])}"
                              for r in sorted(run, key=lambda r: -r["width"]))
            weights = f"`{run[-1]['supernet']}`" if field == "supernet" else f"random `{run[-1]['space']}` weights"
            slower = sum(r["traced_overhead"] > r["overhead"] for r in records)
            rows.append(f"| traced | decoder.onnx step over dense, traced vs compact, {weights} (moe_overhead, last run; "
                        f"traced slower in {slower} of all {len(records)} such records) | {cells} |")
    beam = [r for r in _read("moe_overhead_beam") if r.get("form_ratio") is not None]
    for form, against in (("qmoe", "compact"), ("kernel", "qmoe")):
        paired = [r for r in beam if (_form(r), r["against_form"]) == (form, against)]
        by_width = {}
        for r in paired:
            by_width.setdefault(r["width"], []).append(r["form_ratio"])
        if by_width:
            cells = ", ".join(f"{w}: {_spread(v)}" for w, v in sorted(by_width.items(), key=lambda kv: -kv[0]))
            rows.append(f"| qmoe | beam-graph step, {form} over {against}, paired (moe_overhead_beam, {len(paired)} runs) "
                        f"| {cells} |")
    forms = [r for r in _read("moe_forms") if all("qmoe" in g.get("ratios", {}) for g in r["graphs"].values())]
    if forms:
        last = list({r["width"]: r for r in forms}.values())
        for graph in sorted(last[-1]["graphs"], key=lambda g: (g != "encoder", g)):
            cells = ", ".join(f"{r['width']}: {_pct(r['graphs'][graph]['ratios']['qmoe']['ratio'])} "
                              f"(kernel {_pct(r['graphs'][graph]['ratios']['kernel']['ratio'])})"
                              for r in sorted(last, key=lambda r: -r["width"]) if graph in r["graphs"])
            rows.append(f"| qmoe | {graph}, qmoe over compact (kernel over compact), paired (moe_forms) | {cells} |")
    bleu = _read("moe_bleu")
    if bleu and "onnxruntime-int8-qmoe" in bleu[-1]["scores"]:
        cells = ", ".join(f"{name.rsplit('-', 1)[-1]} {s['bleu']:.2f}" for name, s in bleu[-1]["scores"].items())
        rows.append(f"| qmoe | BLEU, one sentence at a time (moe_bleu, width {bleu[-1]['width']}) | {cells} |")
    if not rows:
        return "_No records of the deleted forms._"
    return "| deleted form | measured | by FFN width |\n|---|---|---|\n" + "\n".join(rows)


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
    goals = proof_goals(run)
    return markdown_table(run) + ("\n\n" + goals if goals else "") + plots


def headline() -> str:
    """The README's first result: each searched MoE model of the last bench run against the dense
    and Switch baselines on ONNX Runtime int8, 1 thread (with its shortlist where measured)."""
    from automoe.bench_results import last_run

    run = [r for r in last_run(_read("bench")) if r["engine"] == "onnxruntime-int8" and r["threads"] == 1
           and "skipped" not in r]
    models = [r for r in run if r["family"] == "automoe" and not r.get("shortlist")]
    if not models:
        return ("_No searched MoE model is benchmarked yet: the dense and Switch baselines are shipped, the "
                "searched models are in training (issue #25)._")
    lines = []
    for a in models:
        dense, switch, _ = _baselines(run, a)
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
        lines.append(text + ".")
    r0 = models[0]
    return ("\n".join(lines) + f"\n\nONNX Runtime int8, 1 thread, batch 1, beam 4, {r0['sentences']} test sentences "
            f"(Acts), {r0['cpu']}; all models in one `automoe bench` run. The whole comparison: "
            "[below](#the-comparison-searched-moe-vs-dense-vs-switch).")


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
        f"\n\nWall hours on this machine (2 cores); the latency predictor both searches use is not counted. "
        f"Evolution: its supernet's training (every stage) + the search; DARTS trains its own relaxed supernet "
        f"inside the search. Models: each searched architecture trained by the shipped models' recipe; BLEU and "
        f"speedup from one bench run with the dense model ({r0['engine']}, {r0['threads']} thread, beam 4, "
        f"{r0['sentences']} test sentences, `{r0['bleu_signature']}`); {r0['cpu']}, commit {_commits(run)}.")


def supernets_table() -> str:
    """Inherited-weight test BLEU of the same four subnets in the prefix, mos-layer and mos-neuron
    supernets trained alike (supernets.jsonl, issue #27)."""
    records = _read("supernets")
    rows = [r for r in records if "bleu" in r]
    if not rows:
        return ("_Not measured yet: the three comparison supernets, each started from supernet v3, are step 7 "
                "of tools/proof_queue.py (docs/mos.md)._")
    latest: dict[tuple, dict] = {}
    for r in rows:
        name = Path(r["model"]).name
        kind = name.removeprefix("cmp-") if name.startswith("cmp-") else f"`{name}`"
        latest[(Path(str(r.get("arch_name"))).stem, kind)] = r
    kinds = list(dict.fromkeys(k for _, k in latest))
    archs = list(dict.fromkeys(a for a, _ in latest))
    key = lambda arch: json.dumps(arch, sort_keys=True)  # noqa: E731
    # the shipped model of the same architecture, trained on its own (its latest test evaluation)
    alone = {key(r["arch"]): r for r in _read("eval") if r.get("split") == "test" and r.get("arch_name") is None
             and r.get("arch") and (ROOT / r["model"]).is_dir()}
    lines = ["| subnet | " + " | ".join(kinds) + " | trained on its own (shipped model) |",
             "|---|" + "---:|" * len(kinds) + "---|"]
    for arch in archs:
        cells = [f"{latest[(arch, k)]['bleu']:.2f}" if (arch, k) in latest else "" for k in kinds]
        shipped = next((alone[key(r["arch"])] for (a, _), r in latest.items() if a == arch and r.get("arch")
                        and key(r["arch"]) in alone), None)
        cells.append(f"{shipped['bleu']:.2f} (`{Path(shipped['model']).name}`)" if shipped else "none shipped")
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    r0 = next(iter(latest.values()))
    return ("\n".join(lines) + f"\n\nTest BLEU with inherited weights, no fine-tuning ({r0['sentences']} sentences, "
            f"beam {r0['beam']}, `{r0['bleu_signature']}`). prefix, mos-layer and mos-neuron each start from the "
            "shipped prefix supernet v3 (`supernet-small-bible-v3`) and train 3M target tokens more with the "
            "sandwich rule on the same batches, schedule and seed; `mos-neuron-scratch` is a neuron-wise MoS "
            "supernet trained from scratch on v3's own schedule and budget (docs/mos.md). Last column: the shipped model whose architecture is "
            "this subnet's, trained by its own recipe on 18.2M target tokens (its card), for the gap to close."
            + _supernet_training([r for r in records if r.get("benchmark") == "supernet_training"]))


def _supernet_training(records: list[dict]) -> str:
    """The training side of the supernet comparison: each supernet's last validation perplexities
    and how far its router tells the evaluated subnets apart (its latest record)."""
    latest = {r["model"]: r for r in records}
    if not latest:
        return ""
    lines = ["| supernet | weight sharing | target tokens (this run) | dev ppl, largest | dev ppl, smallest | "
             "router spread |", "|---|---|---:|---:|---:|---:|"]
    for r in latest.values():
        name = Path(r["model"]).name + (f" ({r['note']})" if r.get("note") else "")
        spread = "" if r.get("mixing_spread") is None else f"{r['mixing_spread']:.4f}"
        lines.append(f"| `{name}` | {r['weight_sharing']['kind']} | {r['tokens_seen'] / 1e6:.2f}M | "
                     f"{r['valid']['largest']['ppl']:.2f} | {r['valid']['smallest']['ppl']:.2f} | {spread} |")
    return ("\n\n" + "\n".join(lines) + "\n\nDev perplexity on the first 300 dev sentences at the end of each run. "
            "Router spread: the largest difference between the mixing coefficients that two of the four subnets "
            "above get for the same matrix (0: the router gives every architecture the same mixture; "
            "`automoe.mos.mixing_spread`).")


def paper_scale_table() -> str:
    """Paper-scale latency (random weights): the wmt14 dense baseline against a paper-like AutoMoE
    subnet, with and without a shortlist, the last run of each engine (paper_scale.jsonl, issue #26)."""
    records = _read("paper_scale")
    engines = list(dict.fromkeys(r["engine"] for r in records))
    runs = [_last_run([r for r in records if r["engine"] == e], "engine") for e in engines]
    if not runs:
        return "_Not measured yet: `benchmarks/paper_scale.py`._"
    lines = ["| engine | model | active / total params | GFLOPs | median ms | with shortlist | shortlist's own "
             "speedup | speedup vs dense (both alike) | vs dense without a shortlist |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        by = {(r["model"], r["shortlist"]): r for r in run}
        for model in dict.fromkeys(r["model"] for r in run):
            full, short = by.get((model, False)), by.get((model, True))
            if not (full and short):
                continue
            form = short.get("shortlist_form") or ("scattered" if full["engine"] == "onnxruntime" else "vmap")
            form = f" ({form.split(' (')[0]})"
            lines.append(
                f"| {full['engine']}{form} | {model} | {full['active_params'] / 1e6:.1f}M / "
                f"{full['total_params'] / 1e6:.1f}M | {full['gflops']:.2f} | {full['median_ms']:.0f} | "
                f"{short['median_ms']:.0f} | {full['median_ms'] / short['median_ms']:.2f}x | "
                f"{full['speedup_vs_dense_same_shortlist']:.2f}x / {short['speedup_vs_dense_same_shortlist']:.2f}x | "
                f"{short['speedup_vs_dense_full']:.2f}x |")
    r0 = next(r for r in runs[-1] if r["shortlist"])
    sizes = "; ".join(f"{r['engine']}: {r['shortlist_avg_size']:.0f} against {r['real_shortlist_avg_size']:.0f}"
                      for r in (next(r for r in run if r["shortlist"]) for run in runs))
    return "\n".join(lines) + (
        f"\n\n**Latency only** (random weights): int8, {r0['threads']} thread, batch {r0['batch']}, beam {r0['beam']}, "
        f"{r0['sentences']} sentences of the Bible test split's lengths (mean {r0['src_len_mean']} source / "
        f"{r0['out_len_mean']} output tokens, every decode of the reference's length), the variants of one engine "
        f"interleaved per sentence, ratios within one engine's run; a synthetic 32k shortlist of the real one's mean "
        f"size (ids per sentence, {sizes}). \"both alike\": without / with a shortlist on "
        f"both models. On CTranslate2, which has no MoE layer, the subnet runs as its dense equivalent. "
        f"{r0['cpu']}, commit {_commits([r for run in runs for r in run])}.")


def darts_memory() -> str:
    """Peak training memory of the DARTS supernet, reversible vs stored activations (darts_memory.jsonl)."""
    from darts_memory import darts_memory_table

    return darts_memory_table()


def decode_profile() -> str:
    """Where the int8 beam graph's time goes, by part of the model (decode_profile.jsonl)."""
    from decode_profile import table

    run = _last_run(_read("decode_profile"), "benchmark")
    return table(run) if run else "_No decode profile yet (benchmarks/decode_profile.py)._"


def mos_cost() -> str:
    """Training cost of each weight-sharing kind (mos_cost.jsonl, benchmarks/mos_cost.py)."""
    from mos_cost import table

    return table(_read("mos_cost"))


def throughput_table() -> str:
    """Sentences/s per batch size of the latest throughput run (benchmarks/throughput.py)."""
    sys.path.insert(0, str(ROOT))
    from automoe.bench_results import throughput_table as table

    runs = [r for r in _read("throughput") if r.get("benchmark") == "throughput"]
    run = [r for r in runs if r.get("run_id") == runs[-1].get("run_id")] if runs else []
    return table(run) if run else "_No throughput run yet (benchmarks/throughput.py)._"


def int8_forms_table() -> str:
    """int8 forms of a linear layer, latest run of benchmarks/int8_forms.py."""
    run = _last_run(_read("int8_forms"), "benchmark")
    if not run:
        return "_No int8 forms run yet (benchmarks/int8_forms.py)._"
    lines = ["| form | us per MatMul, 4 rows | us per MatMul, 128 rows | max error vs fp32 (4 rows) | batch-independent |",
             "|---|---:|---:|---:|---|"]
    for r in run:
        lines.append(f"| {r['form']} | {r['us_per_matmul_4_rows']:.1f} | {r['us_per_matmul_128_rows']:.1f} | "
                     f"{r['rel_error_4_rows']:.4f} | {'yes' if r['batch_independent'] else 'no'} |")
    r0 = run[0]
    return "\n".join(lines) + (f"\n\n{r0['layers']} FFNs {r0['d']} -> {r0['width']} -> {r0['d']}, random weights, "
                               f"1 thread, forms interleaved, the minimum of {r0['repeats']} runs; error relative to "
                               f"the largest fp32 output; {r0['cpu']}, commit {_commits(run)}.")


def memory_floor_table() -> str:
    """A decode step at batch 1 against the memory floor, latest run of benchmarks/throughput.py."""
    floors = [r for r in _read("throughput") if r.get("benchmark") == "memory_floor"]
    run = _last_run(floors, "benchmark", hours=1)
    if not run:
        return "_No memory-floor run yet (benchmarks/throughput.py)._"
    lines = ["| model | int8 weights read per step | floor ms (DRAM copy GB/s) | floor ms, cache-sized copy | "
             "measured step ms | step / floor |", "|---|---:|---:|---:|---:|---:|"]
    for r in run:
        lines.append(f"| `{r['model']}` ({r['family']}) | {r['weight_bytes']['total'] / 1e6:.2f} MB | "
                     f"{r['floor_ms']:.3f} ({r['bandwidth_gbps']:.1f}) | {r['floor_cache_ms']:.3f} | "
                     f"{r['step_ms']:.3f} | {r['ratio']:.2f}x |")
    r0 = run[0]
    return "\n".join(lines) + (f"\n\nONNX Runtime int8, batch 1, beam {r0['beam']}, 1 thread, decoder.onnx steps of "
                               f"{r0['sentences']} test sentences; bandwidth measured in the same run; {r0['cpu']}, "
                               f"commit {_commits(run)}.")


TABLES = {"headline": headline, "comparison": comparison_table, "recipes": recipes_table, "supernets": supernets_table, "search_methods": search_methods_table, "darts_memory": darts_memory, "mos_cost": mos_cost, "decode_profile": decode_profile, "models": models_table, "search": search_table, "predictor": predictor_table, "engines": engines_table,
          "load_demo": load_demo_table, "moe_summary": moe_summary_table, "moe_overhead": moe_overhead_table,
          "moe_overhead_scale": lambda: moe_overhead_table(random=True), "moe_overhead_beam": moe_overhead_beam_table,
          "moe_forms": moe_forms_table, "moe_dispatch_parts": moe_dispatch_parts_table,
          "moe_dispatch_parts_scale": lambda: moe_dispatch_parts_table(random=True), "moe_bleu": moe_bleu_table,
          "moe_deleted_forms": moe_deleted_forms_table, "throughput": throughput_table,
          "int8_forms": int8_forms_table,
          "memory_floor": memory_floor_table, "paper_scale": paper_scale_table}


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
