"""Hardware-aware searches on a trained supernet, and what their winners measure.

Budgets are fractions (default 1/2, 1/3, 1/4) of the dense baseline's latency measured on the
engine; for every budget an AutoMoE search (experts allowed) and a HAT-style search
(`--dense-only`) run with the fitted latency predictor as the constraint. Each best
architecture is then measured on the engine with its inherited weights (real dev sentences,
fixed output length, batch 1, beam 4) and scored on the dev split (BLEU/chrF, beam 4,
inherited weights, no fine-tuning). Searches resume from their folders under `--runs`.

Appends one record per search to benchmarks/results/search.jsonl and copies each best.json into
search/ beside it (extract one with `automoe extract SUPERNET --arch FILE --out DIR`).

    python benchmarks/search_pareto.py --supernet models/supernet-small-bible-v3 \\
        --data data/bible-en-de --predictor benchmarks/results/latency-ort-v3.safetensors \\
        --dense-model models/dense-small-bible --runs runs/search --population 50 --iterations 15
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment  # noqa: E402


def measure(arch, model_dir: Path, sentences: list[list[int]], args, predictor) -> dict:
    """Engine latency of `arch` with the trained weights in `model_dir`, in a fresh process.

    When the predictor's table was timed against a reference model, so is this measurement, and
    `ms` is the ratio scaled by the table's reference time: the same unit as the predictions and
    budgets, unmoved by the machine's drift between the table and now."""
    from automoe.config import ArchConfig
    from automoe.search.latency import measure_latency_isolated

    ref = predictor.measured_on.get("reference")
    result = measure_latency_isolated(arch, sentences, engine=args.engine, threads=args.threads,
                                      quantize=None if args.quantize == "none" else args.quantize,
                                      out_len=args.out_len, warmup=args.warmup, repeats=args.repeats,
                                      model_dir=model_dir, reference=ArchConfig.from_dict(ref) if ref else None)
    scale = predictor.measured_on.get("reference_scale_ms")
    result["ms"] = round(result["ratio"] * scale, 3) if ref else result["median_ms"]
    return result


def evolution_config(args):
    """Population split as HAT/AutoMoE: 1/5 parents, the rest half mutations, half crossovers."""
    from automoe.search.evolution import EvolutionConfig

    parents = max(1, args.population // 5)
    mutations = (args.population - parents) // 2
    return EvolutionConfig(population=args.population, parents=parents, mutations=mutations,
                           crossovers=args.population - parents - mutations, iterations=args.iterations,
                           seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True, help="trained supernet folder")
    p.add_argument("--data", required=True, help="dataset folder (dev split: fitness, latency sentences, BLEU)")
    p.add_argument("--predictor", required=True, help="latency predictor fitted for --engine/--threads")
    p.add_argument("--dense-model", required=True, help="trained dense baseline folder (the budget reference)")
    p.add_argument("--runs", required=True, help="folder of the search folders (resumable)")
    p.add_argument("--fractions", type=float, nargs="+", default=[1 / 2, 1 / 3, 1 / 4])
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="fitness processes")
    p.add_argument("--fitness-sentences", type=int, default=200)
    p.add_argument("--engine", default="onnxruntime", choices=["onnxruntime", "ctranslate2", "torch"])
    p.add_argument("--quantize", default="int8", choices=["int8", "none"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--latency-sentences", type=int, default=100, help="dev sentences timed per architecture")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2, help="decodes per sentence; the fastest counts")
    p.add_argument("--out-len", type=int, default=30)
    p.add_argument("--bleu-limit", type=int, default=None, help="score only the first N dev pairs")
    p.add_argument("--out", default=str(RESULTS / "search.jsonl"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    env = environment()

    from automoe.checkpoint import read_model_config
    from automoe.config import ArchConfig
    from automoe.data import encode_file, load_tokenizer
    from automoe.evaluate import evaluate
    from automoe.extract import extract_subnet
    from automoe.search.flops import cost
    from automoe.search.evolution import InfeasibleConstraint
    from automoe.search.latency import LatencyPredictor
    from automoe.search.run import run_search
    from automoe.serve import Translator
    from automoe.supernet_folder import load_supernet

    supernet = load_supernet(args.supernet)
    tokenizer = load_tokenizer(Path(args.supernet) / "spm.model")
    predictor = LatencyPredictor.load(args.predictor)
    wanted = {"engine": args.engine, "threads": args.threads, "quantization": None if args.quantize == "none"
              else args.quantize, "out_len": args.out_len}
    if predictor.measured_on and any(predictor.measured_on.get(k) != v for k, v in wanted.items()):
        raise SystemExit(f"{args.predictor} was fitted on {predictor.measured_on}, not on {wanted}: pass the "
                         "matching --engine/--threads/--quantize/--out-len or fit a predictor for this setting")
    sentences = encode_file(tokenizer, Path(args.data) / "dev.src", supernet.space.max_positions)
    sentences = sentences[: args.latency_sentences]
    dense_arch, _ = read_model_config(args.dense_model)
    dense = measure(dense_arch, Path(args.dense_model), sentences, args, predictor)
    logging.info("dense baseline %s: %.2f ms", args.dense_model, dense["ms"])
    done = 0
    for fraction in args.fractions:
        for kind, dense_only in (("automoe", False), ("hat", True)):
            folder = Path(args.runs) / f"{kind}-{fraction:.3f}"
            budget = round(dense["ms"] * fraction, 3)
            if (folder / "search_settings.json").exists():  # a resumed search keeps the budget it started with
                budget = json.loads((folder / "search_settings.json").read_text())["latency_ms"]
            try:
                run_search(args.supernet, args.data, folder, latency_ms=budget, predictor=args.predictor,
                           dense_only=dense_only, config=evolution_config(args),
                           resume=(folder / "search_state.json").exists(), fitness_sentences=args.fitness_sentences,
                           workers=args.workers)
            except InfeasibleConstraint as e:
                # recorded as a result (the budget is below what the space can reach), not a crash
                smallest_ms = round(predictor.predict([supernet.space.smallest()])[0], 3)
                append_jsonl(Path(args.out), [{
                    "benchmark": "search", "supernet": str(args.supernet), "search": kind, "infeasible": True,
                    "fraction": round(fraction, 4), "budget_ms": budget, "dense_model": str(args.dense_model),
                    "dense_ms": dense["ms"], "smallest_predicted_ms": smallest_ms,
                    "message": str(e), "engine": args.engine, "threads": args.threads,
                    "population": args.population, "iterations": args.iterations, **env}])
                print(f"{kind:8s} 1/{1 / fraction:.0f}: budget {budget:.2f} ms is infeasible (the space's smallest "
                      f"architecture predicts {smallest_ms:.2f} ms)", flush=True)
                continue
            best = ArchConfig.load(folder / "best.json")
            info = json.loads((folder / "best_info.json").read_text())
            model = extract_subnet(supernet, best)
            with tempfile.TemporaryDirectory() as tmp:
                model.save_pretrained(Path(tmp) / "m", tokenizer_file=Path(args.supernet) / "spm.model")
                measured = measure(best, Path(tmp) / "m", sentences, args, predictor)
            bleu = evaluate(Translator(model, tokenizer, threads=2), args.data, split="dev", beam=4,
                            limit=args.bleu_limit)
            c = cost(best)
            name = f"{kind}-{fraction:.3f}.json"
            best_dir = Path(args.out).parent / "search"  # beside the results file
            best_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / "best.json", best_dir / name)
            record = {
                "benchmark": "search", "supernet": str(args.supernet), "search": kind, "fraction": round(fraction, 4),
                "budget_ms": budget, "dense_model": str(args.dense_model), "dense_ms": dense["ms"],
                "predicted_ms": round(predictor.predict([best])[0], 3), "measured_ms": measured["ms"],
                "measured_raw_ms": measured["median_ms"], "measured_p90_ms": measured["p90_ms"],
                "measured_ratio": measured.get("ratio"), "speedup_vs_dense": round(dense["ms"] / measured["ms"], 3),
                "fitness": info["fitness"], "dev_bleu": bleu["bleu"], "dev_chrf": bleu["chrf"],
                "bleu_sentences": bleu["sentences"], "bleu_signature": bleu["bleu_signature"],
                "gflops": c.gflops, "active_params": c.active_params, "total_params": c.total_params,
                "experts": sum(best.encoder_experts) + sum(best.decoder_experts), "best_file": f"search/{name}",
                "engine": args.engine, "threads": args.threads, "quantization": measured["quantization"],
                "latency_sentences": len(sentences), "out_len": args.out_len, "population": args.population,
                "iterations": args.iterations, "arch": best.to_dict(), **env}
            append_jsonl(Path(args.out), [record])  # one at a time: a crash keeps what was measured
            done += 1
            r = record
            print(f"{r['search']:8s} 1/{1 / r['fraction']:.0f}: budget {r['budget_ms']:.2f} ms, predicted "
                  f"{r['predicted_ms']:.2f}, measured {r['measured_ms']:.2f} ({r['speedup_vs_dense']:.2f}x vs dense), "
                  f"dev BLEU {r['dev_bleu']:.2f}, {r['gflops']:.3f} GFLOPs, {r['active_params'] / 1e6:.2f}M active, "
                  f"{r['experts']} expert FFNs", flush=True)
    # the machine's drift over the run: the dense baseline measured again at the end
    again = measure(dense_arch, Path(args.dense_model), sentences, args, predictor)
    append_jsonl(Path(args.out), [{"benchmark": "search", "search": "dense-check", "supernet": str(args.supernet),
                                   "dense_model": str(args.dense_model), "dense_ms": dense["ms"],
                                   "dense_ms_after": again["ms"], "dense_raw_ms": dense["median_ms"],
                                   "dense_raw_ms_after": again["median_ms"], "searches": done, **env}])
    print(f"dense baseline {dense['ms']:.2f} ms before, {again['ms']:.2f} ms after the searches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
