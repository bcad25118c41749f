"""How well the latency predictor predicts, and how well the measurements it learns from repeat.

For each of `--splits` seeded 80/20 splits of a latency table, fits automoe's predictor (log-
linear on whole-model sums, and the MLP ensemble on per-layer features) and HAT's 10-feature
predictor (MLP as in HAT, and log-linear) on the same 80% and reports held-out MAPE and Kendall
tau of each. With `--repeat-table` (the first N architectures of the same table measured again,
e.g. `automoe search latency-table ... --samples N --out REPEAT`), also reports how well two
measurements of the same architectures agree: the floor under any predictor's error.

Appends one record per split (and one for the repeat) to benchmarks/results/predictor.jsonl.

    python benchmarks/predictor.py --table runs/latency-ort.jsonl --space small \\
        --repeat-table runs/latency-ort-repeat.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment  # noqa: E402


def repeatability(table: str | Path, repeat: str | Path) -> dict:
    """Agreement (MAPE of the second against the first, Kendall tau) of two measurements of the
    same architectures: the latency each table's predictor would learn, and the raw medians."""
    from automoe.search.latency import kendall_tau, mape
    from automoe.search.run import table_rows

    first = {r["index"]: r for r in table_rows(table)}
    second = [r for r in table_rows(repeat) if r["index"] in first]
    if len(second) < 3:
        raise SystemExit(f"{repeat} shares {len(second)} architectures with {table}; need at least 3")
    if any(first[r["index"]]["arch"] != r["arch"] for r in second):
        raise SystemExit(f"{repeat} measured other architectures than {table} under the same index: "
                         "measure it with the same --space and --seed")
    pairs = [(first[r["index"]], r) for r in second]
    if len({json.dumps(r.get("reference"), sort_keys=True) for pair in pairs for r in pair}) != 1:
        raise SystemExit(f"{table} and {repeat} were not all timed against one reference: their ratios do not compare")
    # each table scales its ratios by its own reference time: compare ratios (scale-free) directly
    measure = "ratio" if "ratio" in second[0] else "median_ms"
    a, b = [x[measure] for x, _ in pairs], [y[measure] for _, y in pairs]
    raw_a, raw_b = [x["median_ms"] for x, _ in pairs], [y["median_ms"] for _, y in pairs]
    return {"archs": len(second), "measure": measure,
            "mape": round(mape(b, a), 2), "kendall_tau": round(kendall_tau(b, a), 4),
            "raw_mape": round(mape(raw_b, raw_a), 2), "raw_kendall_tau": round(kendall_tau(raw_b, raw_a), 4)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, help="latency table (JSONL) of `automoe search latency-table`")
    p.add_argument("--space", default="small", help="preset or space.json the table was measured on")
    p.add_argument("--splits", type=int, default=5, help="seeded 80/20 splits")
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--model", default="linear", choices=["linear", "mlp"], help="the predictor automoe uses")
    p.add_argument("--epochs", type=int, default=2000)
    p.add_argument("--repeat-table", default=None, help="the first N architectures measured a second time")
    p.add_argument("--out", default=str(RESULTS / "predictor.jsonl"))
    args = p.parse_args(argv)

    from automoe.config import ArchConfig, SearchSpace
    from automoe.search.run import fit_predictor, table_rows

    rows = table_rows(args.table)
    base = SearchSpace.load(args.space) if Path(args.space).is_file() else SearchSpace.preset(args.space)
    space = dataclasses.replace(base, vocab_size=ArchConfig.from_dict(rows[0]["arch"]).vocab_size)
    env = environment()
    common = {"benchmark": "predictor", "table": str(args.table), "rows": len(rows),
              "weights": rows[0].get("weights", "random"), "repeats": rows[0].get("repeats", 1),
              "sentences": rows[0].get("sentences"), **env}
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.splits):
            report = fit_predictor(space, args.table, Path(tmp) / "p.safetensors", holdout=args.holdout, seed=seed,
                                   epochs=args.epochs, members=args.members, model=args.model)
            setting = {k: v for k, v in report["measured_on"].items() if k != "reference"}
            variants = {k: v for k, v in report.items() if isinstance(v, dict) and "mape" in v}
            records.append({**common, "kind": "split", "split_seed": seed, "train": report["train"],
                            "test": report["test"], "model": args.model, "members": args.members, **variants,
                            **setting})
            print(f"split {seed}: " + " | ".join(f"{k} MAPE {v['mape']:.2f}% tau {v['kendall_tau']:.3f}"
                                                  for k, v in variants.items()), flush=True)
    if args.repeat_table:
        rep = repeatability(args.table, args.repeat_table)
        records.append({**common, "kind": "repeat", "repeat_table": str(args.repeat_table), **rep})
        print(f"repeat of {rep['archs']} archs: MAPE {rep['mape']:.2f}% tau {rep['kendall_tau']:.3f} "
              f"({rep['measure']}); raw medians {rep['raw_mape']:.2f}% / {rep['raw_kendall_tau']:.3f}")
    append_jsonl(Path(args.out), records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
