"""The `automoe bench` verb: a thin CLI over `automoe.bench`."""

from __future__ import annotations

import argparse
from pathlib import Path

from .config import ConfigError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 1,2") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmark models together: test BLEU/chrF, latency (batch 1, beam 4) and throughput on each engine,
    models interleaved in one run; speedup vs the dense baseline; writes JSONL, a Markdown table and plots."""
    from . import bench, bench_results

    engines = tuple(e.strip() for e in (args.engines or bench.default_engine()).split(",") if e.strip())
    for name in engines:
        bench.parse_engine(name)
    if args.quick and args.sentences:
        raise ConfigError("--quick means --sentences 300: give one of them")
    sentences = bench.QUICK_SENTENCES if args.quick else args.sentences
    if args.throughput:  # sentences/s at several batch sizes, appended to the same JSONL
        records = bench.throughput(args.models, args.data, engines=engines, threads=args.threads,
                                   batches=args.batches, sentences=sentences or 96, beam=args.beam,
                                   progress=not args.no_progress)
        path = bench_results.append_records(Path(args.results_dir) / f"{args.out}.jsonl", records)
        print(bench_results.throughput_table(records))
        print(f"jsonl: {path}")
        return 0
    records = bench.bench(args.models, args.data, engines=engines, threads=args.threads, sentences=sentences,
                          warmup=args.warmup, beam=args.beam, throughput_batch=args.throughput_batch,
                          baseline=args.baseline, shortlist=args.shortlist, progress=not args.no_progress)
    paths = bench_results.write_outputs(records, args.results_dir, args.out, plots=not args.no_plots)
    print(bench_results.markdown_table(records))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def add_bench_verb(verbs) -> None:
    """Register `automoe bench` on the CLI's verb subparsers."""
    from .bench import ENGINES

    p = verbs.add_parser("bench", help="compare models: BLEU, latency, speedup vs dense, GFLOPs, plots",
                         description=cmd_bench.__doc__, intermixed=True)
    p.add_argument("models", nargs="+", help="model folders or Hub ids (a supernet folder is skipped with a note)")
    p.add_argument("--data", default="data/bible-en-de", help="dataset folder whose test split is translated")
    p.add_argument("--engines", default=None,
                   help=f"comma-separated engines from {', '.join(ENGINES)} (default onnxruntime-int8-row, or "
                        "onnxruntime-int8 where no C++ compiler builds automoe's int8 operator)")
    p.add_argument("--threads", type=_int_list, default=(1,), help="comma-separated intra-op thread counts (default 1)")
    p.add_argument("--quick", action="store_true", help="the first 300 test sentences only")
    p.add_argument("--sentences", type=int, default=None, help="the first N test sentences (default: all)")
    p.add_argument("--warmup", type=int, default=20, help="untimed warm-up sentences per model and engine")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--throughput-batch", type=int, default=32, help="batch size of the throughput measurement")
    p.add_argument("--throughput", action="store_true",
                   help="measure throughput only: sentences/s and tokens/s at each of --batches, every model "
                        "(dense or MoE) x engine x --threads interleaved; default 96 sentences")
    p.add_argument("--batches", type=_int_list, default=(1, 8, 32),
                   help="comma-separated batch sizes of --throughput (default 1,8,32)")
    p.add_argument("--baseline", default=None,
                   help="the model speedups are relative to (default: the dense model with the most parameters)")
    p.add_argument("--shortlist", action="store_true",
                   help="also decode every model that has a shortlist.safetensors over its lexical shortlist "
                        "(same run): BLEU cost and speedup of the shortlist")
    p.add_argument("--out", default="bench", help="results name: RESULTS_DIR/NAME.jsonl, NAME.md, NAME-*.png")
    p.add_argument("--results-dir", default="benchmarks/results", help="where results are written")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_bench)
