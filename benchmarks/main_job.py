"""The main job of `make run`: what the shipped models are, an export of each to ONNX Runtime
int8, a sample translation on every engine, and the benchmark tables from the results files.

    python benchmarks/main_job.py [--models models] [--exports exports]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import (  # noqa: E402
    engines_table, load_demo_table, models_table, moe_forms_table, moe_overhead_beam_table, moe_overhead_table)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "tests" / "data" / "bible-en-de" / "test.src"


def describe(name: str, arch) -> str:
    """One line: experts, widths and cost of an architecture."""
    from automoe.search.flops import cost

    c = cost(arch)
    return (f"{name:34s} enc {arch.encoder_layers}x{arch.encoder_embed_dim} dec {arch.decoder_layers}x"
            f"{arch.decoder_embed_dim} experts {sum(arch.encoder_experts) + sum(arch.decoder_experts):2d} | "
            f"{c.total_params / 1e6:6.2f}M params, {c.active_params / 1e6:5.2f}M active, {c.gflops:.3f} GFLOPs")


def sample_translations(model_dir: Path, exports: Path, sentences: list[str]) -> None:
    """Translate `sentences` with torch and ONNX Runtime int8 (and CTranslate2 int8 when dense)."""
    from automoe.checkpoint import read_model_config
    from automoe.export.checks import ctranslate2_violations
    from automoe.export.onnx import to_onnx
    from automoe.serve import Translator

    arch, _ = read_model_config(model_dir)
    onnx_dir = exports / f"{model_dir.name}-onnx-int8"
    if not (onnx_dir / "export_info.json").exists():
        to_onnx(model_dir, onnx_dir, quantize="int8", force=True)
    engines = {"torch fp32": Translator.from_pretrained(model_dir, threads=1),
               "onnxruntime int8": Translator.from_pretrained(onnx_dir, threads=1)}
    if not ctranslate2_violations(arch):
        from automoe.export.ctranslate2 import to_ctranslate2

        ct2_dir = exports / f"{model_dir.name}-ct2-int8"
        if not (ct2_dir / "export_info.json").exists():
            to_ctranslate2(model_dir, ct2_dir, quantize="int8", force=True)
        engines["ctranslate2 int8"] = Translator.from_pretrained(ct2_dir, threads=1)
    for engine, tr in engines.items():
        tr.translate(sentences[:1])  # warm-up
        start = time.perf_counter()
        out = tr.translate(sentences, beam=4)
        ms = (time.perf_counter() - start) * 1000 / len(sentences)
        print(f"  {engine:18s} {ms:7.1f} ms/sentence  -> {out[0]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--exports", default=str(ROOT / "exports"))
    args = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING)
    from automoe.checkpoint import read_model_config
    from automoe.config import SearchSpace

    space = SearchSpace.preset("small")
    print("== search space 'small' (DESIGN.md §4)")
    for name, arch in (("dense baseline", space.dense_baseline()), ("switch baseline (4 experts)",
                                                                    space.switch_baseline(4)),
                       ("smallest subnet", space.smallest())):
        print(describe(name, arch))
    models = sorted(d for d in Path(args.models).glob("*") if (d / "config.json").exists())
    supernets = sorted(d for d in Path(args.models).glob("*") if (d / "supernet.safetensors").exists())
    sentences = SAMPLES.read_text(encoding="utf-8").splitlines()[:3]
    print(f"\n== shipped models in {args.models}")
    if not models and not supernets:
        print("none yet")
    for d in supernets:
        print(describe(f"{d.name} (supernet)", SearchSpace.load(d / "space.json").supernet_arch()))
    for d in models:
        print(describe(d.name, read_model_config(d)[0]))
    exports = Path(args.exports)
    for d in supernets:  # a supernet's largest subnet, with inherited weights, stands in for a model
        folder = exports / f"{d.name}-largest"
        if not (folder / "model.safetensors").exists():
            from automoe.extract import extract_subnet
            from automoe.train import load_supernet

            supernet = load_supernet(d)
            extract_subnet(supernet, supernet.space.largest()).save_pretrained(
                folder, tokenizer_file=d / "spm.model", training={"extracted_from": str(d), "arch_name": "largest"})
        models.append(folder)
    for d in models:
        print(f"\n== {d.name}: export to ONNX Runtime int8 and translate {len(sentences)} test sentences "
              f"(beam 4, 1 thread)\n  source: {sentences[0]}")
        sample_translations(d, exports, sentences)
    print("\n== shipped models, test BLEU (benchmarks/results/eval.jsonl)\n" + models_table())
    print("\n== engines benchmark (benchmarks/results/engines.jsonl)\n" + engines_table())
    print("\n== MoE dispatch overhead (benchmarks/results/moe_overhead.jsonl)\n" + moe_overhead_table())
    print("\n== MoE dispatch overhead inside the beam graph, as Translator decodes (benchmarks/results/moe_overhead_beam.jsonl)\n"
          + moe_overhead_beam_table())
    print("\n== MoE forms graph by graph: why int8 exports fuse MoE layers only in the beam graph "
          "(benchmarks/results/moe_forms.jsonl)\n" + moe_forms_table())
    print("\n== demo load test (benchmarks/results/load_demo.jsonl)\n" + load_demo_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
