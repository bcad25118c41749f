"""Throughput of a dense and a MoE model on every engine, and a decode step against the memory floor.

Throughput (`automoe.bench.throughput`): sentences/s and target tokens/s at batch 1, 8 and 32
with 1 and 2 threads, every model x engine interleaved round-robin list by list, and the share of
sentences translated as at batch 1.

Memory floor, per model at batch 1 (beam 4, so a step decodes 4 rows), ONNX Runtime int8:
  bytes   the int8 weights one decoder step reads: per decoder layer the self-attention q/k/v/out
          and cross-attention q/out projections, the FFN (a MoE layer: its fp32 router and the
          experts the step's rows route to, counted per step with the PyTorch model on the same
          sentences), and the output projection (embedding rows, d x vocabulary)
  floor   bytes / this machine's single-core memory bandwidth, measured in the same run (numpy
          copy of 2 x 128 MiB, best of 5, bytes read + written); `floor_cache_ms` uses the
          bandwidth of a copy the size of the step's weights, which the cache may hold
  step    the median time of one decoder.onnx step (the graph inside beam_search.onnx), 1 thread,
          over the decoding of the same sentences; `ratio` = step / floor (goal <= 3)
Records go to benchmarks/results/throughput.jsonl; `python benchmarks/report.py` renders the
README table from it.

    python benchmarks/throughput.py models/dense-small-bible MOE_MODEL --data data/bible-en-de
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, commits, environment  # noqa: E402
from routing import experts_read  # noqa: E402


def copy_bandwidth(nbytes: int, repeats: int = 5) -> float:
    """Single-core bandwidth in bytes/s of numpy copying `nbytes` into another buffer: bytes read +
    written / the best of `repeats` times (other load on the machine only makes a copy slower)."""
    src = np.ones(max(nbytes // 4, 1024), np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch both buffers first
    best = min(_timed(np.copyto, dst, src) for _ in range(repeats))
    return 2 * src.nbytes / best


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def step_weight_bytes(arch, routed: list[list[list[int]]]) -> dict:
    """Bytes of weights one decoder step reads (mean over the `routed` steps for MoE layers), by part."""
    d, qkv = arch.decoder_embed_dim, arch.qkv_dim
    attention = arch.decoder_layers * 6 * d * qkv  # int8: self q, k, v, out + cross q, out
    ffn = []
    for experts_per_layer in routed:
        total = 0
        for i, widths in enumerate(arch.decoder_ffn):
            chosen = experts_per_layer[i] if len(widths) > 1 else [0]
            total += sum(2 * d * widths[e] for e in chosen)
            if len(widths) > 1:
                total += 4 * d * len(widths)  # the fp32 router
        ffn.append(total)
    parts = {"attention": attention, "ffn": statistics.fmean(ffn), "output_projection": d * arch.vocab_size}
    return {**parts, "total": sum(parts.values())}


def decoder_step_times(model_dir: Path, sources: list[str], beam: int) -> list[float]:
    """Seconds of every decoder.onnx step of ONNX Runtime int8 (1 thread; the model folder's export
    in the export cache, as `automoe bench` uses it) decoding `sources` one at a time under
    automoe's beam search (the step graph is the one inside beam_search.onnx)."""
    from automoe.serve import Translator

    tr = Translator.from_pretrained(model_dir, engine="onnxruntime", quantize="int8", threads=1)
    engine = tr.backend
    engine.use_beam_graph = False  # run the same decoder graph step by step, timed
    times = []
    session = engine.decoder

    class Timed:
        def run(self, names, feeds):
            start = time.perf_counter()
            out = session.run(names, feeds)
            times.append(time.perf_counter() - start)
            return out

    engine.decoder = Timed()
    tr.translate(sources[:2], beam=beam)
    times.clear()
    for s in sources:
        tr.translate([s], beam=beam)
    engine.decoder = session
    return times


def memory_floor(model_dir: Path, sources: list[str], beam: int) -> dict:
    """The memory-floor record of one model (see the module docstring)."""
    from automoe.bench import model_family
    from automoe.checkpoint import load_model_tokenizer
    from automoe.modeling import MoETransformer

    model = MoETransformer.from_pretrained(model_dir).eval()
    tokenizer = load_model_tokenizer(model_dir, model.meta, vocab_size=model.config.vocab_size)
    routed = experts_read(model, tokenizer, sources, beam)
    weights = step_weight_bytes(model.config, routed)
    steps = decoder_step_times(model_dir, sources, beam)
    dram = copy_bandwidth(128 << 20)
    cache = copy_bandwidth(int(weights["total"]))
    step_ms = statistics.median(steps) * 1000
    floor_ms = weights["total"] / dram * 1000
    return {"benchmark": "memory_floor", "model": model_dir.name, "family": model_family(model.config),
            "engine": "onnxruntime-int8", "threads": 1, "batch": 1, "beam": beam, "sentences": len(sources),
            "steps": len(steps), "weight_bytes": {k: round(v) for k, v in weights.items()},
            "bandwidth_gbps": round(dram / 1e9, 2), "cache_bandwidth_gbps": round(cache / 1e9, 2),
            "floor_ms": round(floor_ms, 4), "floor_cache_ms": round(weights["total"] / cache * 1000, 4),
            "step_ms": round(step_ms, 4), "step_p90_ms": round(float(np.percentile(steps, 90)) * 1000, 4),
            "ratio": round(step_ms / floor_ms, 2)}


def memory_floor_table(run: list[dict]) -> str:
    """Markdown for report.py: a decode step at batch 1 against the memory floor, one run
    (the memory_floor records of throughput.jsonl)."""
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
                               f"commit {commits(run)}.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model folders (a dense and a MoE model)")
    p.add_argument("--data", required=True, help="dataset folder (test split)")
    p.add_argument("--engines", default="torch,onnxruntime,onnxruntime-int8,onnxruntime-int8-row,ctranslate2,ctranslate2-int8")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--batches", default="1,8,32")
    p.add_argument("--sentences", type=int, default=64, help="throughput sentences (first N of the test split)")
    p.add_argument("--floor-sentences", type=int, default=20, help="sentences decoded for the floor")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-floor", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "throughput.jsonl"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from automoe import bench, bench_results
    from automoe.evaluate import read_split

    env = environment()
    records = []
    if not args.skip_floor:
        sources, _ = read_split(args.data, "test", args.floor_sentences)
        for folder in args.models:
            record = {**memory_floor(Path(folder), sources, args.beam), **env}
            print(record)
            records.append(record)
    if not args.skip_throughput:
        records += bench.throughput(args.models, args.data, engines=tuple(args.engines.split(",")),
                                    threads=tuple(int(t) for t in args.threads.split(",")),
                                    batches=tuple(int(b) for b in args.batches.split(",")),
                                    sentences=args.sentences, beam=args.beam)
        print(bench_results.throughput_table(records))
    append_jsonl(args.out, records)
    print(f"appended {len(records)} records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
