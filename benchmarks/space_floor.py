"""How fast the `small` space's smallest subnet can be, and what extending the space downward
would give (random weights, LATENCY ONLY): the proof's goal asks for a searched model 4x faster
than dense, and the 1/4 budget has no architecture in the space.

Decoded on ONNX Runtime int8, 1 thread, batch 1, beam 4, no shortlist, each against the dense
baseline in the same run:
- dense:     the space's dense baseline (what the shipped dense model is)
- reference: an architecture read from a model folder (`--reference`, default the shipped 1/3
             AutoMoE model), to tie these random-weight ratios to the measured bench
- smallest:  `SearchSpace.preset("small").smallest()`
- the smallest architecture of the space extended downward one way at a time (EXTENSIONS):
  a narrower model dimension, fewer encoder layers, a narrower FFN, and two together.
Sentences are the first N Bible test sentences in the shipped tokenizer (8k, the space's
vocabulary); every model produces exactly the reference translation's length (EOS suppressed), so
all do the same work. Variants interleaved round-robin per sentence, alternating direction;
ratios of medians from that run. Records go to results/space_floor.jsonl.

    python benchmarks/space_floor.py --sentences 200
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment, summary_ms  # noqa: E402
from paper_scale import onnx_runners  # noqa: E402

from automoe.config import ArchConfig, SearchSpace  # noqa: E402
from automoe.search.flops import cost  # noqa: E402

SPACE = SearchSpace.preset("small")
# name -> changes to the space; its smallest architecture is measured
EXTENSIONS = {
    "d_model 192": {"d_model": SPACE.d_model + (192,)},
    "3 encoder layers": {"encoder_layers": SPACE.encoder_layers + (3,)},
    "FFN 192": {"ffn_dims": SPACE.ffn_dims + (192,)},
    "d_model 192, 3 encoder layers": {"d_model": SPACE.d_model + (192,), "encoder_layers": SPACE.encoder_layers + (3,)},
    "d_model 192, 2 encoder layers": {"d_model": SPACE.d_model + (192,),
                                      "encoder_layers": SPACE.encoder_layers + (3, 2), "cross_last_k": (1, 2)},
}


def variants(reference: Path) -> dict[str, ArchConfig]:
    """name -> architecture, the dense baseline first."""
    from automoe.checkpoint import read_model_config

    out = {"dense": SPACE.dense_baseline(), f"reference ({reference.name})": read_model_config(reference)[0],
           "smallest": SPACE.smallest()}
    for name, changes in EXTENSIONS.items():
        out[f"smallest, space + {name}"] = dataclasses.replace(SPACE, **changes).smallest()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/bible-en-de", help="dataset folder (test split)")
    parser.add_argument("--tokenizer-model", default="models/dense-small-bible", help="model folder with spm.model")
    parser.add_argument("--reference", default="models/automoe-small-bible-third", help="a model folder to include")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "space_floor.jsonl"))
    args = parser.parse_args(argv)

    from automoe.data import encode_file, load_tokenizer
    from automoe.random_model import save_random_model

    sp = load_tokenizer(Path(args.tokenizer_model) / "spm.model")
    n = args.warmup + args.sentences
    # ids end with EOS; an output length counts the reference's pieces without it
    sources = encode_file(sp, Path(args.data) / "test.src", max_len=SPACE.max_positions)[:n]
    out_lens = [len(t) - 1 for t in encode_file(sp, Path(args.data) / "test.tgt", max_len=SPACE.max_positions - 1)[:n]]
    archs = variants(Path(args.reference))
    runners = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, arch) in enumerate(archs.items()):
            folder = save_random_model(arch, Path(tmp) / f"m{i}", seed=args.seed,
                                       tokenizer_file=Path(args.tokenizer_model) / "spm.model")
            runners[name] = onnx_runners(folder, Path(tmp) / f"m{i}-onnx", 1, 4)[0]
        times = {name: [] for name in runners}
        for i, ids in enumerate(sources):
            for name in (list(runners) if i % 2 == 0 else list(runners)[::-1]):
                start = time.perf_counter()
                runners[name](ids, out_lens[i], None)
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    dense_ms = statistics.median(times["dense"])
    records = []
    for name, arch in archs.items():
        c = cost(arch)
        records.append({"benchmark": "space_floor", "metric": "latency only (random weights)",
                        "engine": "onnxruntime-int8", "threads": 1, "batch": 1, "beam": 4, "model": name,
                        "arch": arch.to_dict(), "active_params": c.active_params, "gflops": round(c.gflops, 3),
                        **summary_ms(times[name]),
                        "speedup_vs_dense": round(dense_ms / statistics.median(times[name]), 3),
                        "sentences": args.sentences, "warmup": args.warmup,
                        "protocol": "variants interleaved round-robin per sentence (alternating direction), output "
                                    "length fixed to the reference translation's, medians over sentences",
                        **environment()})
        print(f"{name:50s} {records[-1]['median_ms']:7.2f} ms  {records[-1]['speedup_vs_dense']:.2f}x", flush=True)
    append_jsonl(Path(args.out), records)
    return 0


def table(records: list[dict]) -> str:
    """Markdown: one row per architecture of a run."""
    lines = ["| architecture | d_model | encoder / decoder layers | GFLOPs | median ms | speedup vs dense |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in records:
        a = r["arch"]
        lines.append(f"| {r['model']} | {a['encoder_embed_dim']} | {a['encoder_layers']} / {a['decoder_layers']} | "
                     f"{r['gflops']:.3f} | {r['median_ms']:.2f} | {r['speedup_vs_dense']:.2f}x |")
    r0 = records[0]
    return "\n".join(lines) + (
        f"\n\nRandom weights, latency only: ONNX Runtime int8, 1 thread, batch 1, beam 4, no shortlist, "
        f"{r0['sentences']} test sentences with output lengths fixed to the reference translations', all "
        f"architectures interleaved in one run; {r0['cpu']}, commit `{(r0.get('git_commit') or '')[:10]}`.")


if __name__ == "__main__":
    sys.exit(main())
