"""The `automoe shortlist ...` verbs (registered on the main parser by `automoe.cli`)."""

from __future__ import annotations

import argparse
import json
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


def cmd_shortlist_info(args: argparse.Namespace) -> int:
    """Check a model folder's shortlist against its tokenizer and print its header."""
    from .shortlist import load_for_model

    print(json.dumps(load_for_model(args.model).header))
    return 0


def add_shortlist_verbs(verbs) -> None:
    """Add `shortlist build` and `shortlist info` to the `automoe` verbs."""
    from .shortlist import SCORES

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
    i = sl.add_parser("info", help="check a model folder's shortlist and print its header",
                      description=cmd_shortlist_info.__doc__)
    i.add_argument("model", help="model or export folder")
    i.set_defaults(func=cmd_shortlist_info)
