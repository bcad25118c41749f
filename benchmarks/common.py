"""Shared helpers of the benchmark scripts: machine description, timing statistics, JSONL output."""

from __future__ import annotations

import datetime
import json
import platform
import statistics
from pathlib import Path

from automoe.artifacts import git_commit  # noqa: F401  (re-exported: the scripts' provenance)

RESULTS = Path(__file__).parent / "results"


def cpu_name() -> str:
    """The CPU model name of this machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary_ms(seconds: list[float]) -> dict:
    """Median, p90 and mean of a list of durations, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {"median_ms": round(statistics.median(ms), 3), "p90_ms": round(percentile(ms, 90), 3),
            "mean_ms": round(statistics.fmean(ms), 3), "n": len(ms)}


def environment(**extra) -> dict:
    """What every result record carries about where and when it was measured."""
    return {"cpu": cpu_name(), "git_commit": git_commit(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **extra}


def append_jsonl(path: Path, records: list[dict]) -> None:
    """Append records to a JSONL results file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
