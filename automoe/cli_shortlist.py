"""The `automoe shortlist ...` verbs (registered on the main parser by `automoe.cli`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_shortlist_build(args: argparse.Namespace) -> int:
    """Build a lexical vocabulary shortlist from a dataset's training pairs into the model folder
    (shortlist.safetensors); prints its header with the average shortlist size per dev sentence."""
    from .shortlist import SHORTLIST_FILE, build_shortlist

    out = Path(args.model) / SHORTLIST_FILE
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    shortlist = build_shortlist(args.data, args.model, top_k=args.top_k, frequent=args.frequent,
                                score=args.score, max_pairs=args.max_pairs)
    shortlist.save(out)
    print(json.dumps(shortlist.header))
    print(out)
    return 0


def cmd_shortlist_tune(args: argparse.Namespace) -> int:
    """Build a shortlist of each candidate size, decode the dev split with and without each (batch 1,
    as `automoe bench` does) and write the one with the fewest pieces per sentence whose BLEU cost
    is at most --max-cost into the model folder; prints the table of every candidate."""
    from .bench import run_environment
    from .bench_results import append_records
    from .shortlist import SHORTLIST_FILE
    from .shortlist_tune import parse_sizes, tune_shortlist

    out = Path(args.model) / SHORTLIST_FILE
    if out.exists() and not args.force and not args.dry_run:
        raise FileExistsError(f"{out} exists; pass --force to replace it (or --dry-run to only measure)")
    shortlist, record = tune_shortlist(args.data, args.model, sizes=parse_sizes(args.sizes), max_cost=args.max_cost,
                                       engine=args.engine, split=args.split, beam=args.beam, threads=args.threads,
                                       limit=args.limit, score=args.score, progress=not args.no_progress)
    print(f"{record['split']} BLEU {record['full_bleu']} over the full vocabulary ({record['engine']}, "
          f"beam {record['beam']}, {record['sentences']} sentences)")
    print(f"{'top-k':>6} {'frequent':>8} {'avg size':>9} {'BLEU':>6} {'cost':>5}")
    chosen = record["chosen"] and (record["chosen"]["top_k"], record["chosen"]["frequent"])
    for row in record["candidates"]:
        mark = " <- chosen" if (row["top_k"], row["frequent"]) == chosen else ""
        print(f"{row['top_k']:>6} {row['frequent']:>8} {row['avg_size']:>9} {row['bleu']:>6} {row['cost']:>5}{mark}")
    if args.results:
        append_records(args.results, [{"benchmark": "shortlist_tune", "model": str(args.model),
                                       "data": str(args.data), **record,
                                       "written": not args.dry_run and shortlist is not None,
                                       **run_environment()}])
    if shortlist is None:
        cheapest = min(record["candidates"], key=lambda r: r["cost"])
        print(f"error: no size keeps the {record['split']} BLEU cost <= {args.max_cost} (the cheapest, "
              f"{cheapest['top_k']}:{cheapest['frequent']}, costs {cheapest['cost']}); nothing written: try larger "
              "--sizes or a higher --max-cost", file=sys.stderr)
        return 1
    if not args.dry_run:
        shortlist.save(out)
        print(out)
    return 0


def cmd_shortlist_info(args: argparse.Namespace) -> int:
    """Check a model folder's shortlist against its tokenizer and print its header."""
    from .shortlist import load_for_model

    print(json.dumps(load_for_model(args.model).header))
    return 0


def add_shortlist_verbs(verbs) -> None:
    """Add `shortlist build`, `shortlist tune` and `shortlist info` to the `automoe` verbs."""
    from .bench import ENGINES
    from .shortlist import SCORES
    from .shortlist_tune import DEFAULT_SIZES, TUNE_ENGINES

    sl = verbs.add_parser("shortlist", help="lexical vocabulary shortlists for faster decoding").add_subparsers(
        dest="shortlist_verb", metavar="ACTION", required=True)
    b = sl.add_parser("build", help="dataset training pairs -> MODEL/shortlist.safetensors",
                      description=cmd_shortlist_build.__doc__)
    b.add_argument("--data", required=True, help="dataset folder (train.src/train.tgt, dev split for the stats)")
    b.add_argument("--model", required=True, help="model folder (its tokenizer defines the pieces)")
    b.add_argument("--top-k", type=int, default=50, help="target pieces kept per source piece")
    b.add_argument("--frequent", type=int, default=100, help="most frequent target pieces always included")
    b.add_argument("--score", default="dice", choices=list(SCORES), help="co-occurrence score ranking the targets")
    b.add_argument("--max-pairs", type=int, default=None, help="use only the first N training pairs")
    b.add_argument("--force", action="store_true", help="replace an existing shortlist")
    b.set_defaults(func=cmd_shortlist_build)
    t = sl.add_parser("tune", help="size the shortlist on dev: the smallest whose BLEU cost <= --max-cost",
                      description=cmd_shortlist_tune.__doc__)
    t.add_argument("--data", required=True, help="dataset folder (train pairs for the lists, --split to decode)")
    t.add_argument("--model", required=True, help="model folder; the chosen shortlist is written into it")
    t.add_argument("--sizes", default=",".join(f"{k}:{f}" for k, f in DEFAULT_SIZES),
                   help="candidate sizes TOP_K:FREQUENT, comma-separated (default %(default)s)")
    t.add_argument("--max-cost", type=float, default=0.2, help="largest BLEU cost allowed (default %(default)s)")
    t.add_argument("--engine", default="onnxruntime-int8", choices=[e for e in ENGINES if e in TUNE_ENGINES],
                   help="engine to decode with (default %(default)s)")
    t.add_argument("--split", default="dev", help="held-out split to decode (default %(default)s; not test)")
    t.add_argument("--beam", type=int, default=4)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--limit", type=int, default=None, help="decode only the first N sentences of the split")
    t.add_argument("--score", default="dice", choices=list(SCORES), help="co-occurrence score ranking the targets")
    t.add_argument("--results", default=None, help="append the tuning record to this JSONL file")
    t.add_argument("--dry-run", action="store_true", help="measure and print; write no shortlist")
    t.add_argument("--force", action="store_true", help="replace an existing shortlist")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_shortlist_tune)
    i = sl.add_parser("info", help="check a model folder's shortlist and print its header",
                      description=cmd_shortlist_info.__doc__)
    i.add_argument("model", help="model or export folder")
    i.set_defaults(func=cmd_shortlist_info)
