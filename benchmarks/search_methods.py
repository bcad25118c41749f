"""Evolutionary search against DARTS: what each search cost, and what its model measures.

For each method, one record in benchmarks/results/search_methods.jsonl:
  cost    wall hours on this machine (2 cores) of everything the search needed beyond the shared
          latency predictor: evolution = training its weight-sharing supernet (every stage of
          the supernet's training record) + the search itself (`best_info.json` of its search
          folder); DARTS = its search folder's `best_info.json`, which trains its own relaxed
          supernet. CPU hours where the run recorded them (the search processes only).
  model   the searched architecture trained by the shipped models' recipe: test BLEU/chrF and
          latency ratio to the dense baseline from one `automoe bench` run over the dense model
          and both searched models, interleaved (ONNX Runtime int8, 1 thread, batch 1, beam 4,
          the whole test split; BLEU of the int8 export).
`python benchmarks/report.py` renders the README table from it.

    python benchmarks/search_methods.py --dense-model models/dense-small-bible \\
        --supernet models/supernet-small-bible-v3 \\
        --evolution-run RUNS/evolution-search-third --evolution-model models/automoe-small-bible-third \\
        --darts-run RUNS/darts-small-bible --darts-model RUNS/models/darts-small-bible-model \\
        --data data/bible-en-de
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment  # noqa: E402


def training_seconds(record: dict | None) -> float:
    """Wall seconds of a training record and of every earlier stage it carries ("previous")."""
    total = 0.0
    while record:
        total += float(record.get("wall_seconds") or 0.0)
        record = record.get("previous")
    return total


def search_cost(method: str, run: Path, supernet: Path | None) -> dict:
    """The cost fields of one search (see the module docstring)."""
    info_path = run / "best_info.json"
    if not info_path.is_file():
        raise SystemExit(f"{run} has no best_info.json: the {method} search there has not finished")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if "wall_seconds" not in info:
        raise SystemExit(f"{info_path} records no wall_seconds: run the search again with this version of automoe")
    supernet_s = 0.0
    if method == "evolution":
        if supernet is None:
            raise SystemExit("--supernet is needed: the evolutionary search's cost includes its supernet's training")
        supernet_info = json.loads((supernet / "supernet_info.json").read_text(encoding="utf-8"))
        supernet_s = training_seconds(supernet_info.get("training", supernet_info))
    hours = lambda s: round(s / 3600, 3)  # noqa: E731
    return {"search_wall_hours": hours(info["wall_seconds"]),
            "search_cpu_hours": hours(info["cpu_seconds"]) if info.get("cpu_seconds") is not None else None,
            "supernet_wall_hours": hours(supernet_s), "total_wall_hours": hours(supernet_s + info["wall_seconds"]),
            "search_steps": info.get("steps"), "run": str(run)}


def searches_table(search: Path) -> str:
    """Markdown of the finished searches kept in the work tree: every folder of `search` that holds a
    best.json and best_info.json (tools/proof_queue.py KEPT_SEARCHES), what it cost and found; the
    method is best_info.json's (DARTS records it, the evolutionary search does not)."""
    from automoe.config import ArchConfig

    lines = ["| method | search folder | wall h | CPU h | budget ms | predicted ms | encoder FFN widths | "
             "decoder layers: FFN widths | active params | GFLOPs |", "|---|---|---:|---:|---:|---:|---|---|---:|---:|"]
    kept = [(json.loads(f.read_text(encoding="utf-8")), f.parent) for f in sorted(search.glob("*/best_info.json"))]
    for info, folder in sorted(kept, key=lambda k: k[0].get("method", "evolution") != "evolution"):  # evolution first
        method = info.get("method", "evolution")
        arch = ArchConfig.load(folder / "best.json")
        widths = lambda layers: " ".join("[" + ",".join(map(str, e)) + "]" for e in layers)  # noqa: E731
        cpu = f"{info['cpu_seconds'] / 3600:.2f}" if info.get("cpu_seconds") is not None else ""
        lines.append(f"| {method} | `{folder.parent.name}/{folder.name}` | {info['wall_seconds'] / 3600:.2f} | {cpu} | "
                     f"{info['budget_latency_ms']:.2f} | {info['predicted_latency_ms']:.2f} | "
                     f"{widths(arch.encoder_ffn)} | {arch.decoder_layers}: {widths(arch.decoder_ffn)} | "
                     f"{info['active_params'] / 1e6:.2f}M | {info['gflops']:.3f} |")
    if len(lines) == 2:
        return "_No search kept yet: tools/proof_queue.py keeps each finished search of #28 in benchmarks/results/search/._"
    return "\n".join(lines) + (
        "\n\nThe searches of the 1/3 budget as tools/proof_queue.py ran them: the evolutionary one on supernet v3 "
        "(whose training is not counted here), DARTS training its own relaxed network; seconds of the search "
        "processes (2 threads), from each folder's `best_info.json`. Budget and predicted latency are the "
        "latency predictor's (ONNX Runtime int8, 1 thread, the machine its table was measured on); an expert's widths in "
        "brackets, one bracket per layer.")


def _in_results(path: str) -> Path:
    """A recorded path under benchmarks/results/ found in this checkout (records written elsewhere
    hold another checkout's absolute path)."""
    parts = Path(path).parts
    return RESULTS.joinpath(*parts[parts.index("results") + 1:]) if "results" in parts else Path(path)


def quarter_table(records: list[dict]) -> str:
    """Markdown of search_quarter.jsonl (tools/proof_queue.py): each search's architecture trained by
    the same recipe on the same short budget, dev and test BLEU; the last record of each method."""
    last = {r["method"]: r for r in records if r.get("benchmark") == "search_quarter"}
    if "darts" not in last:
        return ("_Not measured yet: the DARTS architecture's short training follows the search in "
                "tools/proof_queue.py (darts-small-bible-model-quarter, darts-quarter-eval)._")
    from automoe.config import ArchConfig
    from automoe.search.flops import cost

    lines = ["| method | architecture | GFLOPs | recipe | target tokens | updates | hours | dev BLEU | test BLEU | "
             "test chrF |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for method in ("evolution", "darts"):
        r = last.get(method)
        if r:
            arch = _in_results(r["arch"])
            gflops = f"{cost(ArchConfig.load(arch)).gflops:.3f}" if arch.is_file() else ""
            lines.append(f"| {method} | `{arch.parent.name}/{arch.name}` | {gflops} | {r['recipe']} | "
                         f"{r['tokens_seen'] / 1e6:.2f}M | {r['updates']:,} | {r['wall_seconds'] / 3600:.2f} | "
                         f"{r['dev_bleu']:.2f} | {r['test_bleu']:.2f} | {r['test_chrf']:.2f} |")
    d = last["darts"]
    return "\n".join(lines) + (
        f"\n\nBoth architectures fine-tuned from supernet v3's inherited weights (`{d['init_from']}`) with the "
        f"shipped models' schedule and seed on the same budget; torch, beam {d['beam']}, {d['sentences']['dev']} dev / "
        f"{d['sentences']['test']} test sentences, `{d['bleu_signature']}`. Hours: wall time of the training, each "
        "on the machine of its run (evolution's row is its run in the recipe comparison, "
        "benchmarks/results/recipes.jsonl); "
        + ", ".join(f"{m}: {r['cpu']}" for m, r in last.items()) + ".")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dense-model", required=True, help="the dense baseline (latency and BLEU reference)")
    p.add_argument("--supernet", required=True, help="the supernet the evolutionary search ran on")
    p.add_argument("--evolution-run", required=True, help="the evolutionary search folder (best_info.json)")
    p.add_argument("--evolution-model", required=True, help="its architecture, trained (model folder)")
    p.add_argument("--darts-run", required=True, help="the DARTS search folder (best_info.json)")
    p.add_argument("--darts-model", required=True, help="its architecture, trained (model folder)")
    p.add_argument("--data", required=True, help="dataset folder (test split)")
    p.add_argument("--sentences", type=int, default=None, help="first N test sentences (default: all)")
    p.add_argument("--out", default=str(RESULTS / "search_methods.jsonl"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from automoe import bench
    from automoe.checkpoint import read_model_config

    costs = {"evolution": search_cost("evolution", Path(args.evolution_run), Path(args.supernet)),
             "darts": search_cost("darts", Path(args.darts_run), None)}
    models = {"evolution": Path(args.evolution_model), "darts": Path(args.darts_model)}
    dense = Path(args.dense_model)
    records = bench.bench([dense, *models.values()], args.data, engines=("onnxruntime-int8",), threads=(1,),
                          sentences=args.sentences, baseline=dense.name)
    by_folder = {Path(r["folder"]).resolve(): r for r in records}
    env = environment()
    out = []
    for method, folder in models.items():
        r = by_folder[folder.resolve()]
        if "skipped" in r:
            raise SystemExit(f"{folder}: {r['skipped']}")
        training = read_model_config(folder)[1].get("training", {})
        out.append({"benchmark": "search_methods", "method": method, **costs[method], "model": str(folder),
                    "tokens_seen": training.get("tokens_seen"), "init_from": training.get("init_from"),
                    "train_data": training.get("data"),
                    **{k: r[k] for k in ("bleu", "chrf", "bleu_signature", "median_ms", "speedup", "gflops",
                                         "active_params", "total_params", "engine", "threads", "sentences", "arch")},
                    "dense_model": str(dense), "bench_run_id": r["run_id"], **env})
        print(json.dumps({k: v for k, v in out[-1].items() if k != "arch"}))
    append_jsonl(args.out, out)
    print(f"appended {len(out)} records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
