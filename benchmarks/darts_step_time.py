"""Seconds per step of the real DARTS search (#28), to size it before running it.

The configuration of docs/darts.md "Running the real search": the space of a supernet folder
(default models/supernet-small-bible-v3), `--d-model` 256, 3000 padded tokens per batch, reversible
stacks, the latency term of the fitted predictor, one thread, the real train and dev batches of
`--data` in the search's order. Runs `--weight-steps` weight-only steps (the first `arch_start`
steps of a search) and then `--full-steps` weight + architecture steps (the rest), and prints one
JSON line per step with its wall and CPU seconds: on a machine shared with other jobs the CPU
seconds are the better estimate of the step's cost, the wall seconds of how long the search
takes there. With `--results`, appends one summary record (medians, environment, load average
at the start) to benchmarks/results/darts_step_time.jsonl.

    nice -n 19 python benchmarks/darts_step_time.py --data data/bible-en-de --weight-steps 2 --full-steps 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset folder (train and dev splits, spm.model)")
    p.add_argument("--supernet", default="models/supernet-small-bible-v3", help="gives the space (space.json)")
    p.add_argument("--predictor", default="benchmarks/results/latency-ort-v3.safetensors")
    p.add_argument("--d-model", type=int, default=256)
    p.add_argument("--max-tokens", type=int, default=3000)
    p.add_argument("--weight-steps", type=int, default=2)
    p.add_argument("--full-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--results", action="store_true", help="append a summary to benchmarks/results/darts_step_time.jsonl")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_at_start = os.getloadavg()[0]

    from automoe import data as data_lib
    from automoe.config import SearchSpace
    from automoe.search.darts import DartsConfig, DartsSearch
    from automoe.search.darts_run import BatchStream
    from automoe.search.latency import LatencyPredictor

    folder = Path(args.data)
    sp = data_lib.load_tokenizer(folder)
    space = dataclasses.replace(SearchSpace.load(Path(args.supernet) / "space.json"), vocab_size=sp.vocab_size())
    cfg = DartsConfig(d_model=args.d_model, max_tokens=args.max_tokens, reversible=True, seed=1)
    search = DartsSearch(space, cfg, pad_id=sp.pad_id(), predictor=LatencyPredictor.load(args.predictor))

    def read(split: str) -> list:
        return list(zip(*(data_lib.encode_file(sp, folder / f"{split}.{side}", space.max_positions)
                          for side in ("src", "tgt"))))

    train = BatchStream(read("train"), cfg.max_tokens, cfg.seed, sp.pad_id(), sp.bos_id())
    dev = BatchStream(read("dev"), cfg.max_tokens, cfg.seed + 1, sp.pad_id(), sp.bos_id())
    times: dict[str, list] = {"weight": [], "weight+arch": []}
    for i in range(args.weight_steps + args.full_steps):
        kind = "weight" if i < args.weight_steps else "weight+arch"
        train_batch, dev_batch = next(train), next(dev) if kind != "weight" else None
        wall, cpu = time.monotonic(), time.process_time()
        record = search.step(train_batch, dev_batch)
        step = {"step": i + 1, "kind": kind, "wall_seconds": round(time.monotonic() - wall, 2),
                "cpu_seconds": round(time.process_time() - cpu, 2), "train_tokens": record["train_tokens"],
                "dev_tokens": record.get("dev_tokens")}
        times[kind].append(step)
        print(json.dumps(step), flush=True)
    if args.results:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from common import RESULTS, append_jsonl, environment

        median = lambda steps, key: round(statistics.median(s[key] for s in steps), 2) if steps else None  # noqa: E731
        append_jsonl(RESULTS / "darts_step_time.jsonl", [{
            "benchmark": "darts_step_time", "space": str(Path(args.supernet) / "space.json"), "data": folder.name,
            "d_model": args.d_model, "max_tokens": args.max_tokens, "reversible": True, "threads": args.threads,
            **{f"{kind.replace('+', '_')}_{key}": median(steps, key) for kind, steps in times.items()
               for key in ("wall_seconds", "cpu_seconds")},
            "steps": times, "load_average_at_start": round(load_at_start, 2),
            **environment()}])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
