"""Latency, throughput and BLEU of one model on every inference engine (DESIGN.md §6).

Engines: torch fp32, torch dynamic int8, ONNX Runtime fp32 / int8, CTranslate2 fp32 / int8 (when
the architecture is dense). Latency: batch 1, beam 4, the first `--sentences` test sentences in
file order after `--warmup` warm-up sentences, engines interleaved round-robin per sentence so
that every ratio is measured in one run on the same sentences. Throughput: sentences/s at batch
32, also round-robin. BLEU/chrF: sacrebleu on the whole test split (or `--bleu-limit`).
Appends one JSON record per engine to benchmarks/results/engines.jsonl and prints a table.

    python benchmarks/engines.py --model models/NAME --data data/bible-en-de
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment, summary_ms  # noqa: E402

ENGINES = ["torch", "torch-int8", "onnxruntime", "onnxruntime-int8", "ctranslate2", "ctranslate2-int8"]


def torch_int8_translator(model_dir: Path, threads: int):
    """The torch model with dynamic int8 Linear layers (routers kept fp32)."""
    import torch

    from automoe.modeling import MoETransformer
    from automoe.serve import Translator
    from automoe.serve.engines import TorchEngine
    from automoe.serve.translator import load_model_tokenizer

    model = MoETransformer.from_pretrained(model_dir)
    names = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "router" not in name}
    quantized = torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8)
    quantized.config = model.config
    engine = TorchEngine(quantized, threads)
    engine.name = "torch-int8"
    return Translator(engine, load_model_tokenizer(model_dir, model.meta), threads=threads)


def build_translators(model_dir: Path, engines: list[str], threads: int, workdir: Path) -> dict:
    """One Translator per engine name; CTranslate2 is skipped (with a note) for MoE models."""
    from automoe.checkpoint import read_model_config
    from automoe.export.checks import ctranslate2_violations
    from automoe.serve import Translator

    arch, _ = read_model_config(model_dir)
    out = {}
    for name in engines:
        engine, _, quant = name.partition("-")
        if engine == "ctranslate2" and ctranslate2_violations(arch):
            logging.warning("skipping %s: %s", name, "; ".join(ctranslate2_violations(arch)))
            continue
        if name == "torch-int8":
            out[name] = torch_int8_translator(model_dir, threads)
            continue
        if engine == "torch":
            out[name] = Translator.from_pretrained(model_dir, threads=threads)
            continue
        export = workdir / name
        if engine == "onnxruntime":
            from automoe.export.onnx import to_onnx

            to_onnx(model_dir, export, quantize=quant or None, force=True)
        else:
            from automoe.export.ctranslate2 import to_ctranslate2

            to_ctranslate2(model_dir, export, quantize=quant or None, force=True)
        out[name] = Translator.from_pretrained(export, threads=threads)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder")
    p.add_argument("--data", required=True, help="dataset folder (test split)")
    p.add_argument("--engines", default=",".join(ENGINES))
    p.add_argument("--sentences", type=int, default=300, help="latency sentences (first N of the test split)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--throughput-batch", type=int, default=32)
    p.add_argument("--bleu-limit", type=int, default=None, help="score only the first N test pairs")
    p.add_argument("--no-bleu", action="store_true")
    p.add_argument("--out", default=str(RESULTS / "engines.jsonl"))
    args = p.parse_args(argv)
    env = environment()  # the commit and time the run started with
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    import torch

    from automoe.bench import round_robin
    from automoe.evaluate import corpus_scores, read_split
    from automoe.search.flops import cost

    torch.set_num_threads(args.threads)
    model_dir = Path(args.model)
    sources, references = read_split(args.data, "test")
    with tempfile.TemporaryDirectory() as tmp:
        translators = build_translators(model_dir, args.engines.split(","), args.threads, Path(tmp))
        for tr in translators.values():  # warm-up: first sentences, not timed
            for s in sources[: args.warmup]:
                tr.translate([s], beam=args.beam)
        latency, _ = round_robin(translators, [[s] for s in sources[: args.sentences]], args.beam)
        n = args.sentences
        groups = [sources[i: i + args.throughput_batch] for i in range(0, n, args.throughput_batch)]
        throughput, _ = round_robin(translators, groups, args.beam)
        scores = {}
        if not args.no_bleu:
            limit = args.bleu_limit or len(sources)
            for name, tr in translators.items():
                hyps = tr.translate(sources[:limit], beam=args.beam)
                scores[name] = {**corpus_scores(hyps, references[:limit]), "bleu_sentences": limit}
    arch = next(iter(translators.values())).config
    c = cost(arch)
    base = summary_ms(latency["torch"])["median_ms"] if "torch" in latency else None
    records = []
    for name in translators:
        lat = summary_ms(latency[name])
        records.append({
            "benchmark": "engines", "model": str(model_dir), "engine": name, "threads": args.threads,
            "beam": args.beam, "batch": 1, "latency_sentences": n, **lat,
            "speedup_vs_torch_fp32": round(base / lat["median_ms"], 3) if base else None,
            "throughput_batch": args.throughput_batch,
            "throughput_sps": round(n / sum(throughput[name]), 2),
            **scores.get(name, {}), "total_params": c.total_params, "active_params": c.active_params,
            "gflops": round(c.gflops, 4), "arch": arch.to_dict(), **env,
        })
    append_jsonl(Path(args.out), records)
    print(f"{'engine':18s} {'median ms':>10s} {'p90 ms':>8s} {'speedup':>8s} {'sent/s@32':>10s} {'BLEU':>6s} {'chrF':>6s}")
    for r in records:
        print(f"{r['engine']:18s} {r['median_ms']:10.1f} {r['p90_ms']:8.1f} {r['speedup_vs_torch_fp32'] or 0:8.2f} "
              f"{r['throughput_sps']:10.2f} {r.get('bleu', float('nan')):6.2f} {r.get('chrf', float('nan')):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
