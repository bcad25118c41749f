"""The stepped batch path of an int8-row export against one sentence at a time, and where its time goes.

int8-row exports (export/int8_rows.py) quantize every row alone, so a list may run through
decoder.onnx under automoe's beam search in batches (`OnnxEngine.batch_min`) and still give every
sentence its translation alone. Whether that is faster decides `serve.engines.BATCH_MIN`. Per
model, the same test sentences are translated (1 thread, beam 4) one at a time through
beam_search.onnx, in lists of 8 and 32 through the stepped path, and in the same lists through
beam_search.onnx at batch > 1 (ONNX Runtime's BeamSearch operator over a whole list), the ways
interleaved list by list, and compared sentence by sentence. Then the stepped path at the largest batch runs once
more under cProfile and ONNX Runtime's profiler: the decoder graph's kernel time by operator
type, and the Python-side time of the beam search, per step.
Appends one record per model to benchmarks/results/stepped_path.jsonl.

    python benchmarks/stepped_path.py models/dense-small-bible models/automoe-small-bible-third --data data/bible-en-de
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import json
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, commits, environment  # noqa: E402


def _stepped(translator, batch_min: int | None):
    translator.backend.batch_min = batch_min
    return translator


def _timed_lists(translator, sources: list[str], size: int, batch_min: int | None) -> tuple[float, list[str]]:
    """Seconds to translate `sources` in lists of `size` (one at a time when batch_min is None)."""
    _stepped(translator, batch_min)
    out, start = [], time.perf_counter()
    for i in range(0, len(sources), size):
        out += translator.translate(sources[i: i + size])
    return time.perf_counter() - start, out


def _beam_graph_lists(translator, sources: list[str], size: int) -> tuple[float, list[str]]:
    """Seconds to translate `sources` in lists of `size` with ONNX Runtime's BeamSearch operator run
    on each whole list (the beam graph at batch > 1, which `OnnxEngine` does not use: the operator
    reads a later sentence's stopping score from a shifted window, docs/throughput.md)."""
    from automoe.generate import default_max_length
    from automoe.serve.engines import _pad

    engine, out, start = translator.backend, [], time.perf_counter()
    for i in range(0, len(sources), size):
        encoded = translator._encode(sources[i: i + size])
        texts = [""] * len(encoded)
        for batch in translator._batches(encoded):
            ids = [encoded[j] for j in batch]
            limit = default_max_length(translator, max(len(x) for x in ids))
            generation = engine._beam_graph(_pad(ids, engine.config.pad_id), 4, limit)
            for j, tokens in zip(batch, generation.tokens):
                texts[j] = translator.tokenizer.decode(tokens)
        out += texts
    return time.perf_counter() - start, out


def profile(translator, sources: list[str], size: int) -> dict:
    """The stepped path over `sources` in lists of `size`, profiled: decoder steps, ms per step in
    ONNX Runtime's kernels by operator type (the top ones), and ms per step outside session.run."""
    engine = _stepped(translator, 2).backend
    with tempfile.TemporaryDirectory() as tmp:
        engine.options.enable_profiling = True
        engine.options.profile_file_prefix = str(Path(tmp) / "decoder")
        engine.decoder = engine.open_graph("decoder.onnx")
        engine.options.enable_profiling = False
        stats = cProfile.Profile()
        stats.enable()
        for i in range(0, len(sources), size):
            translator.translate(sources[i: i + size])
        stats.disable()
        events = json.loads(Path(engine.decoder.end_profiling()).read_text())
        engine.decoder = engine.open_graph("decoder.onnx")
    kernels = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            kernels[e["args"]["op_name"]] += e["dur"]
    steps = sum(1 for e in events if e.get("name") == "model_run")
    table = pstats.Stats(stats).stats
    total = sum(tt for _, _, tt, _, _ in table.values())
    run = sum(tt for (_, _, name), (_, _, tt, _, _) in table.items() if "onnxruntime_pybind11_state.run" in name)
    return {"steps": steps, "kernel_ms_per_step": {op: round(us / steps / 1e3, 3) for op, us in kernels.most_common(6)},
            "kernel_total_ms_per_step": round(sum(kernels.values()) / steps / 1e3, 3),
            "python_ms_per_step": round((total - run) / steps * 1e3, 3)}


def table(run: list[dict]) -> str:
    """Markdown for report.py: the stepped path against one sentence at a time (stepped_path.jsonl)."""
    if not run:
        return "_Not measured yet (benchmarks/stepped_path.py)._"
    sizes = sorted({int(k) for r in run for k in r["stepped_ms"]})
    graph = [s for s in sizes if all(str(s) in r.get("beam_graph_ms", {}) for r in run)]
    lines = ["| model | one at a time, ms/sentence | " + " | ".join(f"stepped, lists of {s}: ms/sentence (same)"
                                                                    for s in sizes)
             + "".join(f" | beam graph, lists of {s} (same)" for s in graph)
             + " | decoder step at the largest list: kernels ms (top operators) | Python ms per step |",
             "|---|---:|" + "---:|" * (len(sizes) + len(graph)) + "---|---:|"]
    for r in run:
        cells = [f"{r['stepped_ms'][str(s)]:.1f} ({r['same'][str(s)]}/{r['sentences']})" for s in sizes]
        cells += [f"{r['beam_graph_ms'][str(s)]:.1f} ({r['beam_graph_same'][str(s)]}/{r['sentences']})" for s in graph]
        ops = ", ".join(f"{op} {ms:.2f}" for op, ms in r["profile"]["kernel_ms_per_step"].items())
        lines.append(f"| `{r['model']}` | {r['single_ms']:.1f} | " + " | ".join(cells)
                     + f" | {r['profile']['kernel_total_ms_per_step']:.2f}: {ops} | {r['profile']['python_ms_per_step']:.2f} |")
    r0 = run[0]
    return "\n".join(lines) + (f"\n\nONNX Runtime int8-row, 1 thread, beam 4, {r0['sentences']} test sentences; the ways "
                               f"interleaved list by list, the best of {r0['repeats']} passes; (same): sentences "
                               "translated exactly as one at a time. Profile: the stepped path over the same lists "
                               f"once more ({r0['profile']['steps']} decoder steps for the first model); {r0['cpu']}, "
                               f"commit {commits(run)}.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model folders")
    p.add_argument("--data", required=True)
    p.add_argument("--sentences", type=int, default=96)
    p.add_argument("--sizes", default="8,32", help="list sizes of the stepped path")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS / "stepped_path.jsonl"))
    args = p.parse_args(argv)
    from automoe.evaluate import read_split
    from automoe.serve import Translator

    sources, _ = read_split(args.data, "test", args.sentences)
    sizes = [int(s) for s in args.sizes.split(",")]
    translators = {m: Translator.from_pretrained(m, engine="onnxruntime", quantize="int8-row", threads=1)
                   for m in args.models}
    for tr in translators.values():  # warm up both paths
        _timed_lists(tr, sources[:8], 8, None)
        _timed_lists(tr, sources[:8], 8, 2)
    ways = [None, *sizes, *(f"beam-graph-{s}" for s in sizes)]
    best = {(m, way): float("inf") for m in translators for way in ways}
    outputs = {}
    for _ in range(args.repeats):
        for m, tr in translators.items():
            for way in ways:
                if isinstance(way, str):
                    seconds, out = _beam_graph_lists(tr, sources, int(way.rsplit("-", 1)[1]))
                else:
                    seconds, out = _timed_lists(tr, sources, way or 1, None if way is None else 2)
                best[(m, way)] = min(best[(m, way)], seconds)
                outputs[(m, way)] = out
    env = environment()
    records = []
    for m, tr in translators.items():
        single = outputs[(m, None)]
        records.append({
            "benchmark": "stepped_path", "model": Path(m).name, "engine": "onnxruntime-int8-row", "threads": 1, "beam": 4,
            "sentences": len(sources), "repeats": args.repeats,
            "single_ms": round(best[(m, None)] / len(sources) * 1e3, 2),
            "stepped_ms": {str(s): round(best[(m, s)] / len(sources) * 1e3, 2) for s in sizes},
            "same": {str(s): sum(a == b for a, b in zip(single, outputs[(m, s)])) for s in sizes},
            "beam_graph_ms": {str(s): round(best[(m, f"beam-graph-{s}")] / len(sources) * 1e3, 2) for s in sizes},
            "beam_graph_same": {str(s): sum(a == b for a, b in zip(single, outputs[(m, f"beam-graph-{s}")]))
                                for s in sizes},
            "profile": profile(tr, sources, sizes[-1]), **env})
        _stepped(tr, None)
        print(json.dumps({k: records[-1][k] for k in ("model", "single_ms", "stepped_ms", "same", "profile")}))
    append_jsonl(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
