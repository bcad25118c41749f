"""What a Mixture-of-Supernets costs to train against the prefix supernet: parameters, training
memory and the time of one supernet update, for every kind of weight sharing.

Each kind's supernet of the space is built with the same seed; one update is what
`automoe train supernet` does per update (sandwich rule on: the sampled subnet, the largest and
the smallest; bf16 autocast like supernet v3; Adam step), on one real training batch. The kinds
are timed round-robin, the same subnets in every round. An update's CPU time (process time, one
thread) is the cost measure: on this shared machine the wall time of a niced process depends
mostly on the other processes (the wall time of one update varied several-fold between rounds
here), while the CPU time it needs does not. Each record holds the median CPU and wall time per update and the
median per-round ratio of CPU times to prefix. Appends one
record per kind to benchmarks/results/mos_cost.jsonl and rewrites the table of docs/mos.md
(between `<!-- results:mos_cost -->` and `<!-- /results:mos_cost -->`) from the latest run.

    nice -n 19 python benchmarks/mos_cost.py --data /work/main/data/bible-en-de --space small
    python benchmarks/mos_cost.py --render      # only rewrite the docs table from the results file
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment, summary_ms  # noqa: E402

OUT = RESULTS / "mos_cost.jsonl"
DOC = Path(__file__).resolve().parent.parent / "docs" / "mos.md"


def one_batch(data: Path, max_tokens: int, seed: int, lines: int) -> tuple[dict, int, int]:
    """The first training batch (token budget `max_tokens`) drawn from the first `lines` pairs,
    the padding id and the vocabulary size."""
    from automoe import data as data_lib

    sp = data_lib.load_tokenizer(data)
    src = data_lib.encode_file(sp, data / "train.src", 200)[:lines]
    tgt = data_lib.encode_file(sp, data / "train.tgt", 200)[:lines]
    idx = data_lib.make_batches([len(s) for s in src], [len(t) for t in tgt], max_tokens, seed=seed, epoch=0)[0]
    return data_lib.collate([(src[i], tgt[i]) for i in idx], sp.pad_id(), sp.bos_id()), sp.pad_id(), sp.vocab_size()


def parameter_counts(supernet) -> dict:
    """Parameters by role: generated weight sets, the architecture router, prefix-shared tensors."""
    sets = sum(p.numel() for p in supernet.model.parameters() if p.dim() == 3)
    router = sum(p.numel() for p in supernet.arch_router.parameters()) if hasattr(supernet, "arch_router") else 0
    total = sum(p.numel() for p in supernet.parameters())
    # fp32 weights + gradients + Adam's two moments
    return {"params": total, "params_weight_sets": sets, "params_router": router,
            "params_shared": total - sets - router, "train_state_bytes": 16 * total}


def update(task, optimizer, batch: dict, pad_id: int, cfg, number: int) -> tuple[float, float]:
    """(wall, CPU) seconds of one supernet update (every subnet of `task.archs(number)`, clip, Adam step)."""
    import torch

    from automoe.modeling import label_smoothed_nll

    start, cpu = time.perf_counter(), time.process_time()
    optimizer.zero_grad(set_to_none=True)
    for arch in task.archs(number):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            out = task.forward(batch["src"], batch["tgt_in"], arch)
        loss, _, n = label_smoothed_nll(out.logits, batch["tgt_out"], cfg.label_smoothing, pad_id)
        (loss + cfg.balance_coef * out.aux_loss * n).backward()
    params = [p for p in task.module.parameters() if p.grad is not None]
    torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm)
    optimizer.step()
    return time.perf_counter() - start, time.process_time() - cpu


def table(records: list[dict]) -> str:
    """The markdown table of the latest run in `records`, with the setting it was measured in."""
    run = [r for r in records if r["run"] == records[-1]["run"]]
    base = run[0]["weight_sharing"]["kind"]
    lines = [f"| weight sharing | E | H | parameters | of which weight sets | router | prefix-shared | "
             f"training state (fp32 + grads + Adam) | CPU s per update (median) | x {base} (CPU) | "
             f"wall s per update (median) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in run:
        ws = r["weight_sharing"]
        lines.append(f"| {ws['kind']} | {ws['sets'] or ''} | {ws['hidden'] or ''} | {r['params'] / 1e6:.2f}M | "
                     f"{r['params_weight_sets'] / 1e6:.2f}M | {r['params_router'] / 1e6:.2f}M | "
                     f"{r['params_shared'] / 1e6:.2f}M | {r['train_state_bytes'] / 2**30:.2f} GiB | "
                     f"{r['update_cpu']['median_ms'] / 1000:.2f} | {r[f'ratio_to_{base}']:.2f}x | "
                     f"{r['update_wall']['median_ms'] / 1000:.2f} |")
    r, b = run[0], run[0]["batch"]
    lines.append("")
    lines.append(f"`benchmarks/results/mos_cost.jsonl`, run {r['run']}: search space `{r['space']}`, one update = "
                 f"{r['subnets_per_update']} subnets (sandwich), one batch of {b['sentences']} sentences / "
                 f"{b['target_tokens']} target tokens (max_tokens {r['max_tokens']}), bf16 autocast, Adam; "
                 f"{r['update_cpu']['n']} timed updates per kind after one warm-up, kinds interleaved, "
                 f"{r['threads']} thread(s), niceness {r['niceness']}, load average {r['load_1m']} at the start, "
                 f"{r['cpu']}; commit `{_short(r['git_commit'])}`.")
    return "\n".join(lines)


def _short(commit: str | None) -> str:
    if not commit:
        return "unknown"
    return commit[:10] + ("-dirty" if commit.endswith("-dirty") else "")


def render(doc: Path, results: Path) -> None:
    """Rewrite the results block of `doc` from `results`."""
    records = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]
    text = doc.read_text(encoding="utf-8")
    pattern = re.compile(r"(<!-- results:mos_cost -->\n).*?(<!-- /results:mos_cost -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{doc} has no <!-- results:mos_cost --> block")
    doc.write_text(pattern.sub(lambda m: m.group(1) + table(records) + "\n" + m.group(2), text), encoding="utf-8")


def main() -> int:
    """Measure every kind of weight sharing and append the records."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/bible-en-de", help="dataset folder (train split, tokenizer)")
    parser.add_argument("--space", default="small", help="search space preset")
    parser.add_argument("--kinds", default="prefix,mos-layer,mos-neuron")
    parser.add_argument("--sets", type=int, default=None, help="MoS weight sets E (default: WeightSharing's)")
    parser.add_argument("--hidden", type=int, default=None, help="MoS router width H (default: WeightSharing's)")
    parser.add_argument("--max-tokens", type=int, default=3000, help="batch token budget (supernet v3's)")
    parser.add_argument("--rounds", type=int, default=3, help="timed updates per kind (after one warm-up)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--lines", type=int, default=3000, help="training pairs the batch is drawn from")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--doc", default=str(DOC), help="markdown file whose results block is rewritten")
    parser.add_argument("--render", action="store_true", help="only rewrite the doc's table from --out")
    args = parser.parse_args()
    if args.render:
        render(Path(args.doc), Path(args.out))
        return 0
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_1m = round(os.getloadavg()[0], 2)  # the machine is shared: say how busy it was

    import dataclasses

    import torch

    from automoe.config import SearchSpace, TrainConfig
    from automoe.supernet import WeightSharing
    from automoe.train import SupernetTask

    torch.set_num_threads(args.threads)
    batch, pad_id, vocab = one_batch(Path(args.data), args.max_tokens, args.seed, args.lines)
    space = dataclasses.replace(SearchSpace.preset(args.space), vocab_size=vocab)
    cfg = TrainConfig(data=str(args.data), max_tokens=args.max_tokens, sandwich=True, bf16=True, lr=3e-4,
                      balance_coef=0.1, max_updates=args.rounds + 1, seed=args.seed)
    kinds = args.kinds.split(",")
    tasks, optimizers = {}, {}
    for kind in kinds:
        sharing = WeightSharing(kind) if kind == "prefix" else WeightSharing(kind, args.sets, args.hidden)
        torch.manual_seed(args.seed)
        tasks[kind] = SupernetTask(space, cfg, sharing)
        tasks[kind].module.train()
        optimizers[kind] = torch.optim.Adam(tasks[kind].module.parameters(), lr=cfg.lr, betas=cfg.betas)
    wall, cpu = {kind: [] for kind in kinds}, {kind: [] for kind in kinds}
    for number in range(1, args.rounds + 2):  # update 1 warms up (allocations, Adam state)
        for kind in kinds:
            w, c = update(tasks[kind], optimizers[kind], batch, pad_id, cfg, number)
            if number > 1:
                wall[kind].append(w)
                cpu[kind].append(c)
            print(f"update {number} {kind:10s} {c:.2f} s CPU, {w:.2f} s wall", flush=True)
    base = kinds[0]
    records = []
    for kind in kinds:
        ratio = statistics.median(a / b for a, b in zip(cpu[kind], cpu[base]))
        records.append({
            "benchmark": "mos_cost", "run": started, "space": space.name,
            "weight_sharing": tasks[kind].module.sharing.to_dict(),
            **parameter_counts(tasks[kind].module), "update_cpu": summary_ms(cpu[kind]),
            "update_wall": summary_ms(wall[kind]),
            f"ratio_to_{base}": round(ratio, 3), "subnets_per_update": len(tasks[kind].archs(1)),
            "batch": {"sentences": int(batch["src"].shape[0]), "src_len": int(batch["src"].shape[1]),
                      "tgt_len": int(batch["tgt_in"].shape[1]),
                      "target_tokens": int(batch["tgt_out"].ne(pad_id).sum())},
            "max_tokens": args.max_tokens, "bf16": cfg.bf16, "sandwich": cfg.sandwich, "threads": args.threads,
            "niceness": os.nice(0), "load_1m": load_1m, "seed": args.seed, "data": str(args.data),
            "torch": torch.__version__, **environment()})
    append_jsonl(Path(args.out), records)
    if Path(args.doc).exists():
        render(Path(args.doc), Path(args.out))
    print(table(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
