"""The MoE-dispatch study's result tables (docs/moe_dispatch.md and the README's performance
section), built from results/moe_*.jsonl for `report.py`."""

from __future__ import annotations

from common import commits as _commits
from common import last_run as _last_run
from common import read_results as _read

FORMS = ("kernel", "compact")  # the MoE forms automoe exports (int8 default first); records of others stay as data


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
