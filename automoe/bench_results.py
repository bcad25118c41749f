"""What `automoe bench` measured, as results: the last run of a results file, Markdown tables and plots.

`automoe.bench` measures; this module turns its records (one JSONL record per model x engine x
threads, see there) into what people read: the comparison table (best speedup first), the
throughput table, and PNG plots of BLEU against latency (with the Pareto front) and against GFLOPs.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import ConfigError


def append_records(path: str | Path, records: list[dict]) -> Path:
    """Append records to a JSONL results file (created with its folder if missing)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    return path


def throughput_table(records: list[dict]) -> str:
    """A Markdown table of one `throughput` run: sentences/s (tokens/s) per batch size, one row per
    model x engine x threads, with the speedup of the largest batch over batch 1."""
    runs = [r for r in records if r.get("benchmark") == "throughput"]
    if not runs:
        return "_No throughput run yet (`automoe bench --throughput`)._"
    batches = sorted({r["batch"] for r in runs})
    rows = ["| model | engine | threads | " + " | ".join(f"batch {b}: sent/s (tok/s)" for b in batches)
            + f" | batch {batches[-1]} / batch {batches[0]} | same as batch 1 |",
            "|---|---|---:|" + "---:|" * len(batches) + "---:|---:|"]
    keys = list(dict.fromkeys((r["model"], r["engine"], r["threads"]) for r in runs))
    for model, engine, threads in keys:
        cells = {r["batch"]: r for r in runs if (r["model"], r["engine"], r["threads"]) == (model, engine, threads)}
        first = cells[batches[0]]
        if "skipped" in first:
            rows.append(f"| `{model}` | {engine} | {threads} | skipped: {first['skipped']} |"
                        + " |" * (len(batches) + 1))
            continue
        line = " | ".join(f"{cells[b]['sentences_per_s']:.1f} ({cells[b]['tokens_per_s']:.0f})" for b in batches)
        ratio = cells[batches[-1]]["sentences_per_s"] / first["sentences_per_s"]
        same = cells[batches[-1]].get("same_as_batch_1")
        rows.append(f"| `{model}` | {engine} | {threads} | {line} | {ratio:.2f}x | "
                    f"{'' if same is None else f'{same:.0%}'} |")
    r0 = runs[0]
    return "\n".join(rows) + (f"\n\n{r0['sentences']} test sentences of `{r0['data']}`, beam {r0['beam']}, "
                              "every model x engine interleaved round-robin list by list in one run; "
                              f"{r0['cpu']}, commit `{(r0['git_commit'] or '')[:10]}`.")


def last_run(records: list[dict]) -> list[dict]:
    """The records of the last bench run in a results file (same run_id as the last record)."""
    runs = [r for r in records if r.get("benchmark") == "bench"]
    return [r for r in runs if r.get("run_id") == runs[-1].get("run_id")] if runs else []


def _params(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def label(record: dict) -> str:
    """A record's model name as tables and plots show it ("NAME + shortlist" for shortlist decoding)."""
    return record["model"] + (" + shortlist" if record.get("shortlist") else "")


def cpu_table(records: list[dict]) -> str:
    """A Markdown table of the same models on each CPU that ran a bench: for every CPU its last bench
    run, each model's median ms and speedup vs dense per engine (those with a measured row), so one
    sees how much a speedup owes to the processor. Speedups compare models of one run only."""
    cpus = dict.fromkeys(r["cpu"] for r in records if r.get("benchmark") == "bench")
    runs = {c: last_run([r for r in records if r.get("cpu") == c]) for c in cpus}
    if len(runs) < 2:
        return "_Every bench run so far ran on one processor._"
    cpus = sorted(runs, key=lambda c: runs[c][0]["date"])
    measured = [r for c in cpus for r in runs[c] if "skipped" not in r]
    models = list(dict.fromkeys(label(r) for r in measured))
    cell = {(c, label(r), r["engine"]): r for c in cpus for r in runs[c] if "skipped" not in r and r["threads"] == 1}
    columns = list(dict.fromkeys((c, e) for c, _, e in cell))  # each processor's engines, in run order
    head = [f"{e}, {c}" for c, e in columns]
    rows = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for m in models:
        cells = []
        for c, e in columns:
            r = cell.get((c, m, e))
            cells.append(f"{r['median_ms']:.1f} ms ({r['speedup']:.2f}x)" if r and r.get("speedup") else "")
        rows.append(f"| `{m}` | " + " | ".join(cells) + " |")
    notes = "; ".join(f"{c}: run of {runs[c][0]['date'][:10]}, commit `{(runs[c][0]['git_commit'] or '')[:10]}`"
                      for c in cpus)
    return "\n".join(rows) + ("\n\nMedian latency and speedup vs the dense model of the same run (1 thread, batch 1, "
                              f"beam 4, {runs[cpus[-1]][0]['sentences']} test sentences); {notes}.")


def int8_row_table(records: list[dict], tensor: str = "onnxruntime-int8", row: str = "onnxruntime-int8-row") -> str:
    """A Markdown table of the last bench run's models in ONNX Runtime's two int8 forms (per-tensor
    `quantize_dynamic` and automoe's per-row operator), timed in the same run: median ms, the
    per-row form's speedup over the per-tensor one, and both test BLEU scores."""
    run = [r for r in last_run(records) if "skipped" not in r and r["threads"] == 1]
    cell = {(label(r), r["engine"]): r for r in run}
    models = [m for m in dict.fromkeys(label(r) for r in run) if (m, tensor) in cell and (m, row) in cell]
    if not models:
        return f"_The last bench run timed no model on both {tensor} and {row}._"
    rows = [f"| model | {tensor} ms | {row} ms | {row} speedup | BLEU, {tensor} | BLEU, {row} |",
            "|---|---:|---:|---:|---:|---:|"]
    for m in models:
        a, b = cell[(m, tensor)], cell[(m, row)]
        rows.append(f"| `{m}` | {a['median_ms']:.1f} | {b['median_ms']:.1f} | {a['median_ms'] / b['median_ms']:.2f}x | "
                    f"{a['bleu']:.2f} | {b['bleu']:.2f} |")
    r0 = cell[(models[0], row)]
    return "\n".join(rows) + (f"\n\nMedian latency per sentence (1 thread, batch 1, beam {r0['beam']}, {r0['sentences']} "
                              f"test sentences), models and engines interleaved in one `automoe bench` run; {r0['cpu']}, "
                              f"commit `{(r0['git_commit'] or '')[:10]}`.")


def markdown_table(records: list[dict]) -> str:
    """A Markdown table of one run's records: engines in the run's order, best speedup first within
    each engine and thread count."""
    if not records:
        return "_No bench run yet (`automoe bench`)._"
    listed = any(r.get("shortlist") for r in records)
    extra_head, extra_rule = (" shortlist: own speedup / BLEU cost / size |", "---:|") if listed else ("", "")
    rows = ["| model | family | engine | threads | BLEU | chrF | median ms | p90 ms | speedup vs dense | "
            "sent/s @ batch | GFLOPs | active / total params |" + extra_head,
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + extra_rule]
    engines = list(dict.fromkeys(r["engine"] for r in records))  # in the run's order (`--engines`)
    order = sorted(records, key=lambda r: (engines.index(r["engine"]), r["threads"], "skipped" in r,
                                           -(r.get("speedup") or 0)))
    for r in order:
        params = f"{_params(r['active_params'])} / {_params(r['total_params'])}"
        tail = ""
        if listed:
            tail = (f" {r['shortlist_speedup']:.2f}x / {r['shortlist_bleu_cost']:+.2f} / {r['shortlist_size']:.0f} |"
                    if "shortlist_speedup" in r else " |")
        if "skipped" in r:
            rows.append(f"| `{label(r)}` | {r['family']} | {r['engine']} | {r['threads']} | skipped: "
                        f"{r['skipped']} | | | | | | {r['gflops']:.3f} | {params} |" + tail)
            continue
        rows.append(f"| `{label(r)}` | {r['family']} | {r['engine']} | {r['threads']} | {r['bleu']:.2f} | "
                    f"{r['chrf']:.2f} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['speedup']:.2f}x | "
                    f"{r['throughput_sps']:.1f} @ {r['throughput_batch']} | {r['gflops']:.3f} | {params} |" + tail)
    r0 = records[0]
    caption = (f"\n{r0['sentences']} test sentences of `{r0['data']}`, beam {r0['beam']}, batch 1, models interleaved "
               f"round-robin in one run; speedup = `{r0['baseline']}`'s median latency / the model's, same engine "
               f"and threads. BLEU on the batch-1 translations ({r0.get('bleu_signature', 'sacrebleu')}). "
               f"{r0['cpu']}, commit `{(r0['git_commit'] or '')[:10]}`.")
    if listed:
        caption += (" Shortlist rows decode over the model's lexical shortlist: their speedup vs dense divides the "
                    "dense model's latency *without* one; own speedup and BLEU cost compare the same model without "
                    "it; size is the average shortlist per sentence (pieces).")
    return "\n".join(rows) + caption


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points (latency, bleu) no other point beats on both (lower latency, higher BLEU),
    ordered by latency."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


_STYLE = {"dense": ("s", "black"), "switch": ("D", "tab:red"), "hat": ("^", "tab:blue"),
          "automoe": ("o", "tab:green")}


def plot(records: list[dict], out_prefix: str | Path) -> list[Path]:
    """Two PNGs from one run's records: BLEU vs latency (one panel per engine/threads, Pareto
    front drawn, dense and Switch marked) and BLEU vs GFLOPs (the first engine's BLEU).
    Returns the paths written."""
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("plots need matplotlib: pip install 'automoe[bench]'") from e
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if "skipped" not in r]
    if not done:
        raise ConfigError("no measured record to plot (every model was skipped)")
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    panels = list(dict.fromkeys((r["engine"], r["threads"]) for r in done))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (engine, threads) in zip(axes[0], panels):
        rows = [r for r in done if (r["engine"], r["threads"]) == (engine, threads)]
        _scatter(ax, rows, "median_ms")
        front = pareto_front([(r["median_ms"], r["bleu"]) for r in rows])
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="gray", ls="--",
                label="Pareto front")
        ax.set_title(f"{engine}, {threads} thread(s)", fontsize=10)
        ax.set_xlabel(f"median ms per sentence (batch 1, beam {rows[0]['beam']})")
        ax.set_ylabel("test BLEU")
        ax.legend(fontsize=8)
    fig.tight_layout()
    latency_png = out_prefix.with_name(out_prefix.name + "-latency.png")
    fig.savefig(latency_png, dpi=110)
    plt.close(fig)

    first = [r for r in done if (r["engine"], r["threads"]) == panels[0]]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    _scatter(ax, first, "gflops")
    ax.set_xlabel("GFLOPs (30-token source and target, routed experts only)")
    ax.set_ylabel(f"test BLEU ({panels[0][0]})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    gflops_png = out_prefix.with_name(out_prefix.name + "-gflops.png")
    fig.savefig(gflops_png, dpi=110)
    plt.close(fig)
    return [latency_png, gflops_png]


def label_offsets(anchors: list[tuple[float, float]], texts: list[str], fontsize: float) -> list[tuple[float, float]]:
    """Offsets (points) that keep point labels from overlapping: each label starts up and to the
    right of its anchor (anchors in points) and moves down a line at a time while its box, its
    width estimated from its length, overlaps a label already placed (the highest anchors first)."""
    height, char = fontsize * 1.25, fontsize * 0.55
    placed: list[tuple[float, float, float, float]] = []  # x0, y0, x1, y1 of the labels placed
    offsets: list[tuple[float, float]] = [(4.0, 4.0)] * len(anchors)
    for i in sorted(range(len(anchors)), key=lambda i: -anchors[i][1]):
        (x, y), dy = anchors[i], 4.0
        width = char * len(texts[i])
        while any(x + 4 < b[2] and b[0] < x + 4 + width and y + dy < b[3] and b[1] < y + dy + height for b in placed):
            dy -= height
        placed.append((x + 4, y + dy, x + 4 + width, y + dy + height))
        offsets[i] = (4.0, dy)
    return offsets


def _scatter(ax, rows: list[dict], x_field: str) -> None:
    """One marker per model, styled by family, labelled with the model name (labels kept apart)."""
    labelled = set()
    for r in rows:
        marker, color = _STYLE.get(r["family"], ("o", "tab:gray"))
        legend = r["family"] if r["family"] not in labelled else None
        labelled.add(r["family"])
        ax.scatter(r[x_field], r["bleu"], marker=marker, color=color, s=60, label=legend, zorder=3)
    ax.autoscale_view()
    to_points = 72.0 / ax.figure.dpi
    anchors = [tuple(p * to_points) for p in ax.transData.transform([(r[x_field], r["bleu"]) for r in rows])]
    texts = [label(r) for r in rows]
    for r, text, offset in zip(rows, texts, label_offsets(anchors, texts, 7)):
        ax.annotate(text, (r[x_field], r["bleu"]), fontsize=7, xytext=offset, textcoords="offset points")
    ax.grid(alpha=0.3)


def write_outputs(records: list[dict], results_dir: str | Path, name: str, *, plots: bool = True) -> dict[str, Path]:
    """Append the records to `results_dir/name.jsonl`, write `name.md` (table) and, with `plots`,
    `name-latency.png` and `name-gflops.png`. Returns the paths by kind."""
    results_dir = Path(results_dir)
    paths = {"jsonl": append_records(results_dir / f"{name}.jsonl", records)}
    table = results_dir / f"{name}.md"
    table.write_text(markdown_table(records) + "\n", encoding="utf-8")
    paths["table"] = table
    if plots:
        paths["latency_plot"], paths["gflops_plot"] = plot(records, results_dir / name)
    return paths
