"""Shared helpers of the benchmark scripts: machine description, timing statistics, JSONL output.

The protocol helpers live in `automoe.bench` (the library's benchmark harness); this module
re-exports them under the names the scripts use.
"""

from __future__ import annotations

import statistics
from datetime import datetime, timedelta
from pathlib import Path

from automoe.artifacts import git_commit  # noqa: F401  (re-exported: the scripts' provenance)
from automoe.bench_results import append_records as append_jsonl  # noqa: F401  (re-exported)
from automoe.bench import cpu_name, percentile, run_environment  # noqa: F401  (re-exported)
from automoe.card import read_records

RESULTS = Path(__file__).parent / "results"


def summary_ms(seconds: list[float]) -> dict:
    """Median, p90 and mean of a list of durations, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(percentile(ms, 90), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


def environment(**extra) -> dict:
    """What every result record carries about where and when it was measured."""
    return {**run_environment(), **extra}


def read_results(name: str, folder: Path = RESULTS) -> list[dict]:
    """The records of `folder`/`name`.jsonl, oldest first ([] when the file does not exist)."""
    return read_records(folder / f"{name}.jsonl")


def last_run(records: list[dict], field: str, hours: float | None = None) -> list[dict]:
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


def commits(run: list[dict]) -> str:
    """The distinct commits of a run's records, short, in order of appearance."""
    return ", ".join(f"`{c[:10]}{'-dirty' if c.endswith('-dirty') else ''}`"
                     for c in dict.fromkeys(r.get("git_commit") or "" for r in run))
