"""Peak training memory of the DARTS supernet with reversible layers and with stored activations.

For 4, 8 and 12 layers per stack, each with and without reversibility, runs DARTS steps (one
weight step on a train batch + one architecture step on a dev batch, `DartsSearch.step`) on the
same random batches and appends one record per run to benchmarks/results/darts_memory.jsonl:
`reversible`, `layers`, `peak_mb`, `step_peak_mb`, `static_mb`, `step_seconds` and the environment.

How memory is measured, and why so. Each configuration runs in a fresh child process (this script
with `--child`), so no earlier configuration's memory is left in the heap, and reads the kernel's
account of the process:
- `peak_mb`: the peak resident set size (VmHWM in /proc/self/status, what ru_maxrss reports) minus
  the resident size after the imports, before anything is built: all that training needed
  (weights, gradients, Adam moments, activations, temporaries).
- `step_peak_mb`: before the measured steps (after one warm-up step, so gradients and Adam moments
  exist) the peak is reset by writing 5 to /proc/self/clear_refs; it is the peak during the
  measured steps minus the resident size just before them: what a step adds on top of what lives
  between steps, i.e. activations and temporaries. This is the part reversibility acts on.
- `static_mb`: the exact bytes of weights, gradients and Adam moments (numel x element size).
tracemalloc sees only allocations of Python objects, not torch's C++ allocator, so it cannot see
tensors. torch.profiler(profile_memory=True) sees tensor allocations but not the allocator's
overhead, and its peak must be rebuilt from the event stream; the resident set is what the machine
must actually provide. glibc keeps freed memory for reuse, which would let the resident set lag
behind the live tensors, so the children run with MALLOC_MMAP_THRESHOLD_=65536: every block over
64 KiB is its own mapping and returns to the system when freed.

The network is the DARTS supernet of a search space with the `small` preset's structure (heads
{4, 2}, up to 4 experts of 3 widths, 8000-token vocabulary) at a width that keeps 12+12 layers with
stored activations within this shared machine's memory: d_model 128, FFN widths {512, 256, 128},
encoder depth L, decoder depth choices 1..L. One thread; batches of 64 sentences x 32 source and
target tokens (2048 tokens, below the search's default budget of 3000 padded tokens per batch).

    nice -n 19 python benchmarks/darts_memory.py            # all six configurations
    nice -n 19 python benchmarks/darts_memory.py --layers 4 --steps 2 --out /tmp/try.jsonl
    python benchmarks/darts_memory.py --docs-only          # rebuild docs/darts.md's table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
RESULTS_FILE = RESULTS / "darts_memory.jsonl"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "darts.md"
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


def _status_kb(field: str) -> int:
    """A memory field (VmRSS, VmHWM) of /proc/self/status in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} line: this benchmark needs Linux")


def _reset_peak() -> bool:
    """Reset the kernel's peak RSS of this process (Linux >= 4.0); False if not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def bench_space(layers: int):
    """The search space of the benchmark supernet (see the module docstring)."""
    from automoe.config import SearchSpace

    return SearchSpace(name=f"darts-bench-{layers}", vocab_size=8000, d_model=(128,), qkv_dim=128,
                       encoder_layers=(layers,), decoder_layers=tuple(range(1, layers + 1)), ffn_dims=(512, 256, 128),
                       heads=(4, 2), cross_last_k=(1,), max_experts=4, max_positions=64)


def child(layers: int, reversible: bool, *, batch: int, length: int, steps: int, splits: int) -> dict:
    """Measure one configuration in this (fresh) process; returns the record's measured fields."""
    import torch

    from automoe.search.darts import DartsConfig, DartsSearch

    torch.set_num_threads(1)
    base_kb = _status_kb("VmRSS")  # after the imports, before anything is built
    space = bench_space(layers)
    search = DartsSearch(space, DartsConfig(splits=splits, reversible=reversible, warmup=1, seed=1))
    g = torch.Generator().manual_seed(0)

    def make_batch() -> dict:
        src = torch.randint(4, space.vocab_size, (batch, length), generator=g)
        tgt = torch.randint(4, space.vocab_size, (batch, length + 1), generator=g)
        return {"src": src, "tgt_in": tgt[:, :-1], "tgt_out": tgt[:, 1:]}

    train, dev = make_batch(), make_batch()
    search.step(train, dev)  # warm-up: gradients and Adam moments now exist
    tensors = [p for p in search.weights] + list(search.alphas.parameters())
    state = [v for opt in (search.weight_opt, search.arch_opt) for s in opt.state.values() for v in s.values()
             if torch.is_tensor(v)]
    static = sum(t.numel() * t.element_size() for t in tensors + [t.grad for t in tensors if t.grad is not None]
                 + state)
    before_kb = _status_kb("VmRSS")
    reset = _reset_peak()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        search.step(train, dev)
        seconds.append(time.perf_counter() - start)
    peak_kb = _status_kb("VmHWM")
    return {"peak_mb": round((peak_kb - base_kb) / 1024, 1),
            "step_peak_mb": round((peak_kb - before_kb) / 1024, 1) if reset else None,
            "static_mb": round(static / 2**20, 1), "step_seconds": round(statistics.median(seconds), 3),
            "step_seconds_all": [round(s, 3) for s in seconds],
            "weights": sum(p.numel() for p in search.weights), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "peak_reset": reset}


def measure(layers: int, reversible: bool, *, batch: int, length: int, steps: int, splits: int) -> dict:
    """Run `child` in a fresh process (with the malloc settings of the docstring) and return its result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--layers", str(layers), "--batch", str(batch),
           "--length", str(length), "--steps", str(steps), "--splits", str(splits)]
    cmd.append("--reversible" if reversible else "--stored")
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **MALLOC_ENV})
    if out.returncode != 0:
        raise RuntimeError(f"child {' '.join(cmd[2:])} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _last_run(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("run") == records[-1].get("run")] if records else []


def darts_memory_table(path: str | Path = RESULTS_FILE) -> str:
    """Markdown table of the latest run in `path`: peak memory and time per step by depth, both modes."""
    path = Path(path)
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.exists() else []
    run = _last_run(records)
    if not run:
        return "_Not measured yet (benchmarks/darts_memory.py)._"
    by = {(r["layers"], r["reversible"]): r for r in run}
    depths = sorted({r["layers"] for r in run})
    lines = ["| layers per stack | peak MB, stored | peak MB, reversible | stored / reversible | step MB, stored | "
             "step MB, reversible | static MB | s/step, stored | s/step, reversible |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    cell = lambda r, k, f="{:.0f}": "" if r is None or r.get(k) is None else f.format(r[k])  # noqa: E731
    for n in depths:
        stored, rev = by.get((n, False)), by.get((n, True))
        ratio = f"{stored['peak_mb'] / rev['peak_mb']:.2f}x" if stored and rev else ""
        static = (rev or stored)["static_mb"]
        lines.append(f"| {n} | {cell(stored, 'peak_mb')} | {cell(rev, 'peak_mb')} | {ratio} | "
                     f"{cell(stored, 'step_peak_mb')} | {cell(rev, 'step_peak_mb')} | {static:.0f} | "
                     f"{cell(stored, 'step_seconds', '{:.2f}')} | {cell(rev, 'step_seconds', '{:.2f}')} |")
    r0 = run[0]
    text = "\n".join(lines) + "\n\n"
    revs = [by[(n, True)] for n in depths if (n, True) in by]
    if len(revs) >= 2:
        first, last = revs[0], revs[-1]

        def growth(key: str) -> str:
            return f"{100 * (last[key] / first[key] - 1):+.0f}%" if first.get(key) and last.get(key) else "n/a"
        text += (f"Reversible, {first['layers']} to {last['layers']} layers per stack: peak {growth('peak_mb')}, "
                 f"step peak (activations and temporaries) {growth('step_peak_mb')}. ")
    text += (f"DARTS supernet of d_model {r0['d_model']}, FFN widths {r0['ffn_dims']}, up to {r0['max_experts']} "
             f"experts, {r0['splits']} streams; one step = a weight step and an architecture step on "
             f"{r0['batch']} x {r0['length']}-token batches; {r0['threads']} thread, {r0['cpu']}, commit "
             f"`{(r0.get('git_commit') or '')[:10]}`, {r0['date'][:10]}. Peak = resident-set peak over the "
             "process after the imports; step = peak during the measured steps over the resident set before them; "
             "static = weights, gradients and Adam moments.")
    return text


def write_docs_table(doc: str | Path = DOCS, path: str | Path = RESULTS_FILE) -> None:
    """Rebuild the table between `<!-- results:darts_memory -->` markers of `doc` from `path`."""
    import re

    doc = Path(doc)
    text = doc.read_text(encoding="utf-8")
    pattern = re.compile(r"(<!-- results:darts_memory -->\n).*?(\n<!-- /results:darts_memory -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"{doc} has no <!-- results:darts_memory --> ... <!-- /results:darts_memory --> block")
    doc.write_text(pattern.sub(lambda m: m.group(1) + darts_memory_table(path) + m.group(2), text), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, nargs="+", default=[4, 8, 12])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--length", type=int, default=32, help="source and target tokens per sentence")
    p.add_argument("--steps", type=int, default=2, help="measured DARTS steps (after one warm-up step)")
    p.add_argument("--splits", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS_FILE))
    p.add_argument("--docs-only", action="store_true", help="only rebuild the table in docs/darts.md from the results")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--reversible", dest="reversible", action="store_true", default=None, help=argparse.SUPPRESS)
    mode.add_argument("--stored", dest="reversible", action="store_false", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    setting = dict(batch=args.batch, length=args.length, steps=args.steps, splits=args.splits)
    if args.child:
        print(json.dumps(child(args.layers[0], bool(args.reversible), **setting)))
        return 0
    if args.docs_only:
        write_docs_table(path=args.out)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import append_jsonl, environment

    space = bench_space(1)
    run_id = time.strftime("%Y-%m-%dT%H:%M:%S")
    for layers in args.layers:
        for reversible in (False, True):
            result = measure(layers, reversible, **setting)
            record = {"benchmark": "darts_memory", "run": run_id, "reversible": reversible, "layers": layers,
                      **result, **setting, "d_model": space.d_model[0], "ffn_dims": list(space.ffn_dims),
                      "max_experts": space.max_experts, "vocab_size": space.vocab_size,
                      "memory_method": "rss peak of a fresh process (VmHWM), MALLOC_MMAP_THRESHOLD_=65536",
                      **environment()}
            append_jsonl(Path(args.out), [record])
            print(json.dumps({k: record[k] for k in ("layers", "reversible", "peak_mb", "step_peak_mb", "static_mb",
                                                      "step_seconds")}), flush=True)
    print(darts_memory_table(args.out))
    if Path(args.out) == RESULTS_FILE and DOCS.exists():
        write_docs_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
