"""Cost of sparse MoE dispatch at decode time: one decoder step of a model whose every layer holds
`--experts` top-1 experts versus the same model with one dense FFN of the routed width.

All models come from one trained supernet, so routing is the trained router's and varies with
real sentences:
  dense      its largest subnet with every FFN of width `--width`
  moe        the same architecture with `--experts` experts of that width per layer
  moe-one    `moe` with its routers zeroed: every token goes to expert 0, so it runs the whole
             dispatch but reads one expert per layer, like `dense` (the fixed cost of dispatch)
  moe-traced `moe` exported with PyTorch's own gather / scatter dispatch instead of the compact
             form of export/onnx_moe.py (what the compact form saves)
Each is exported to ONNX Runtime (int8 by default) and run with 1 thread. The first `--sentences`
test sentences are translated by `moe` (batch 1, beam 4) and every decoder-step input is
recorded. Then the sentences are replayed in blocks of `--block`: each model in turn (the order
rotating per block) runs the block's recorded steps in order, as in real decoding, the first
sentence as untimed warm-up so that the cache holds that model's weights as it would in a server
running one model; every other `session.run` is timed. All models see identical inputs.
  overhead          moe / dense - 1 (the figure the project is judged by)
  dispatch_overhead moe-one / dense - 1
  expert_overhead   moe / moe-one - 1 (reading and running the other distinct experts the beams chose)
  traced_overhead   moe-traced / dense - 1
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


class RecordingSession:
    """Wraps an onnxruntime session and keeps a copy of every `run`'s inputs."""

    def __init__(self, session):
        self.session = session
        self.feeds: list[dict] = []

    def run(self, output_names, feed):
        self.feeds.append({name: value.copy() for name, value in feed.items()})
        return self.session.run(output_names, feed)


def time_steps(session, feeds: list[dict]) -> list[float]:
    """Seconds of each `session.run` over the recorded steps, in order."""
    seconds = []
    for feed in feeds:
        start = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - start)
    return seconds


def l3_cache() -> str | None:
    """The L3 cache size the kernel reports for CPU 0 (e.g. '32768K'), or None."""
    path = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    return path.read_text().strip() if path.exists() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True, help="supernet folder (supernet.safetensors + space.json)")
    p.add_argument("--data", required=True, help="dataset folder (test split, spm.model)")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--width", type=int, default=None, help="expert / dense FFN width (default: the widest of the space)")
    p.add_argument("--sentences", type=int, default=100)
    p.add_argument("--block", type=int, default=10, help="sentences per model turn, the first untimed (>= 2)")
    p.add_argument("--quantize", default="int8", choices=["int8", "none"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--out", default=str(RESULTS / "moe_overhead.jsonl"))
    args = p.parse_args(argv)
    if args.block < 2 or args.sentences < args.block:
        p.error("--block must be at least 2 and at most --sentences")
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
    moe_name, one_name, traced_name = (f"moe-{args.experts}{s}" for s in ("", "-one", "-traced"))
    models = {"dense": extract_subnet(supernet, dense_arch), moe_name: extract_subnet(supernet, moe_arch),
              one_name: extract_subnet(supernet, moe_arch), traced_name: extract_subnet(supernet, moe_arch)}
    for layer in list(models[one_name].encoder_layers) + list(models[one_name].decoder_layers):
        # equal logits: every token takes expert 0 (a new tensor: extracted weights may share storage)
        layer.ffn.router.weight.data = torch.zeros_like(layer.ffn.router.weight)
    decoders, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            folder = Path(tmp) / name
            model.save_pretrained(folder, tokenizer_file=Path(args.data) / "spm.model")
            exported = to_onnx(folder, Path(tmp) / f"{name}-onnx", quantize=quant,
                               moe_dispatch="traced" if name == traced_name else "compact")
            sizes[name] = round((exported / "decoder.onnx").stat().st_size / 2**20, 1)
            tr = Translator.from_pretrained(exported, threads=args.threads)
            decoders[name] = tr.backend.decoder
            if name == moe_name:
                tr.backend.use_beam_graph = False  # decode through decoder.onnx so its steps are recorded
                recorder = tr.backend.decoder = RecordingSession(tr.backend.decoder)
                sentences = []  # per sentence, the inputs of its decoder steps
                for sentence in sources:
                    recorder.feeds = []
                    tr.translate([sentence], beam=args.beam)
                    sentences.append(recorder.feeds)
    names = list(decoders)
    seconds = {name: [] for name in names}
    for i, start in enumerate(range(0, len(sentences), args.block)):
        block = sentences[start: start + args.block]
        for name in names[i % len(names):] + names[: i % len(names)]:
            time_steps(decoders[name], block[0])  # warm-up: this model's weights into the cache
            for steps in block[1:]:
                seconds[name] += time_steps(decoders[name], steps)
    stats = {name: summary_ms(s) for name, s in seconds.items()}
    median = {name: stats[name]["median_ms"] for name in names}
    record = {"benchmark": "moe_overhead", "supernet": str(args.supernet), "experts": args.experts,
              "width": width, "quantization": quant, "threads": args.threads, "beam": args.beam,
              "rows_per_step": args.beam, "sentences": len(sources), "method": "replayed steps",
              "block": args.block, "timed_steps": len(seconds["dense"]),
              "dense_step": stats["dense"], "moe_step": stats[moe_name], "moe_one_expert_step": stats[one_name],
              "moe_traced_step": stats[traced_name],
              "overhead": round(median[moe_name] / median["dense"] - 1, 4),
              "dispatch_overhead": round(median[one_name] / median["dense"] - 1, 4),
              "expert_overhead": round(median[moe_name] / median[one_name] - 1, 4),
              "traced_overhead": round(median[traced_name] / median["dense"] - 1, 4),
              "decoder_mib": {"dense": sizes["dense"], "moe": sizes[moe_name]}, "l3_cache": l3_cache(), **env}
    append_jsonl(Path(args.out), [record])
    print(f"decoder step median: dense {median['dense']:.3f} ms, {moe_name} {median[moe_name]:.3f} ms "
          f"(overhead {100 * record['overhead']:.1f}%), all tokens to one expert {median[one_name]:.3f} ms "
          f"(dispatch {100 * record['dispatch_overhead']:.1f}%, other experts {100 * record['expert_overhead']:.1f}%); "
          f"traced dispatch {median[traced_name]:.3f} ms (overhead {100 * record['traced_overhead']:.1f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
