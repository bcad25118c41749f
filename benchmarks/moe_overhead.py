"""Cost of sparse MoE dispatch at decode time: one decoder step of a model whose every layer holds
`--experts` top-1 experts versus the same model with one dense FFN of the routed width.

Both models come from one trained supernet (so routing is the trained router's, and varies with
real sentences): the dense one is its largest dense subnet, the MoE one the same architecture
with N experts of the same width per layer. Both are exported to ONNX Runtime (int8 by
default), run with 1 thread, batch 1, beam 4 on the first `--sentences` test sentences, the two
models interleaved per sentence; only the decoder-step `session.run` calls are timed.
Appends to benchmarks/results/moe_overhead.jsonl.

    python benchmarks/moe_overhead.py --supernet models/supernet-small-bible-v3 --data data/bible-en-de
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment, summary_ms  # noqa: E402


class TimedSession:
    """Wraps an onnxruntime session and records the duration of every `run`."""

    def __init__(self, session):
        self.session = session
        self.seconds: list[float] = []

    def run(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.session.run(*args, **kwargs)
        self.seconds.append(time.perf_counter() - start)
        return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True, help="supernet folder (supernet.safetensors + space.json)")
    p.add_argument("--data", required=True, help="dataset folder (test split, spm.model)")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--width", type=int, default=None, help="expert / dense FFN width (default: the widest of the space)")
    p.add_argument("--sentences", type=int, default=100)
    p.add_argument("--quantize", default="int8", choices=["int8", "none"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--out", default=str(RESULTS / "moe_overhead.jsonl"))
    args = p.parse_args(argv)
    env = environment()  # the commit and time the run started with

    import torch

    from automoe.evaluate import read_split
    from automoe.export.onnx import to_onnx
    from automoe.extract import extract_subnet
    from automoe.serve import Translator
    from automoe.train import load_supernet

    torch.set_num_threads(args.threads)
    supernet = load_supernet(args.supernet)
    width = args.width or max(supernet.space.ffn_dims)
    if width not in supernet.space.ffn_dims:
        raise SystemExit(f"--width {width} is not a width of the space: {list(supernet.space.ffn_dims)}")
    largest = supernet.space.largest()
    dense_arch = largest.replace(encoder_ffn=((width,),) * largest.encoder_layers,
                                 decoder_ffn=((width,),) * largest.decoder_layers)
    moe_arch = dense_arch.replace(encoder_ffn=((width,) * args.experts,) * dense_arch.encoder_layers,
                                  decoder_ffn=((width,) * args.experts,) * dense_arch.decoder_layers)
    sources, _ = read_split(args.data, "test", limit=args.sentences)
    quant = None if args.quantize == "none" else args.quantize
    translators, timed = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch in (("dense", dense_arch), (f"moe-{args.experts}", moe_arch)):
            folder = Path(tmp) / name
            extract_subnet(supernet, arch).save_pretrained(folder, tokenizer_file=Path(args.data) / "spm.model")
            tr = Translator.from_pretrained(to_onnx(folder, Path(tmp) / f"{name}-onnx", quantize=quant),
                                            threads=args.threads)
            tr.backend.use_beam_graph = False  # decode through decoder.onnx so its steps can be timed
            tr.translate(sources[:5], beam=args.beam)  # warm-up
            timed[name] = tr.backend.decoder = TimedSession(tr.backend.decoder)
            translators[name] = tr
        timed_names = list(translators)
        for i, sentence in enumerate(sources):
            for name in timed_names[i % 2:] + timed_names[: i % 2]:
                translators[name].translate([sentence], beam=args.beam)
    stats = {name: summary_ms(t.seconds) for name, t in timed.items()}
    dense, moe = stats["dense"], stats[f"moe-{args.experts}"]
    record = {"benchmark": "moe_overhead", "supernet": str(args.supernet), "experts": args.experts,
              "width": width, "quantization": quant, "threads": args.threads, "beam": args.beam,
              "rows_per_step": args.beam, "sentences": len(sources), "dense_step": dense, "moe_step": moe,
              "overhead": round(moe["median_ms"] / dense["median_ms"] - 1, 4), **env}
    append_jsonl(Path(args.out), [record])
    print(f"dense step median {dense['median_ms']:.3f} ms, {args.experts}-expert step median "
          f"{moe['median_ms']:.3f} ms: overhead {100 * record['overhead']:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
