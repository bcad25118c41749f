"""Shared helpers of the benchmark scripts: machine description, timing statistics, JSONL output.

The protocol helpers live in `automoe.bench` (the library's benchmark harness); this module
re-exports them under the names the scripts use.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from automoe.artifacts import git_commit  # noqa: F401  (re-exported: the scripts' provenance)
from automoe.bench_results import append_records as append_jsonl  # noqa: F401  (re-exported)
from automoe.bench import cpu_name, percentile, run_environment  # noqa: F401  (re-exported)

RESULTS = Path(__file__).parent / "results"


def summary_ms(seconds: list[float]) -> dict:
    """Median, p90 and mean of a list of durations, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(percentile(ms, 90), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


def environment(**extra) -> dict:
    """What every result record carries about where and when it was measured."""
    return {**run_environment(), **extra}
