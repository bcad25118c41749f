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
recorded; all models replay identical inputs, in order, as in real decoding.

Replay protocol: `--rounds` passes over the sentences, cut into turns of `--turn` sentences.
Every model in turn (the order rotating per turn) replays a turn's sentences in order, the first
`--warmup` of them untimed so that the cache holds that model's weights as in a server running it
alone; every other `session.run` is timed. The host is shared and its speed drifts by tens of
percent within seconds, which swamps a 15% difference between models timed seconds apart, so
every figure pairs a model's turn with the same turn of another model (under a second apart):
  overhead          median over turns of (moe turn time / dense turn time) - 1 (the figure the
                    project is judged by); `_quartiles` give the spread of the paired ratios
  overhead_min      per-step minimum over rounds, summed, moe / dense - 1 (the least-contended
                    cost; needs >= 2 rounds)
  dispatch_overhead the same for moe-one
  expert_overhead   moe / moe-one - 1 (reading and running the other distinct experts the beams chose)
  traced_overhead   the same for moe-traced
  control_overhead  the same for a second session of the dense graph (the A/A control: 0 on a
                    quiet host; its quartiles show how far one paired turn can be off)
Short turns are the pessimistic side for a MoE model: its warm-up sentences bring back only the
experts they pick, and the others are read cold after another model ran (at width 768, 40-sentence
turns gave +9% and +15% where 6-sentence turns gave +32% and +19%, in a scratch comparison whose
long turns were too few to pair reliably). The records before `--rounds` existed used one round
of 10-sentence turns, 1 warm-up, and pooled medians (no pairing).
Sessions of one graph differ by several percent among themselves, for the whole run (each lays out
its weights and buffers in memory differently; three sessions of the dense graph replaying the
same steps differed by up to 6% in a scratch run), which pairing cannot cancel. So every model
runs as `--instances` sessions, one per turn in rotation, and each figure averages over layouts
(the idea of Curtsinger & Berger's Stabilizer, arXiv 1303.3929, by rotation instead of
re-randomizing). The sessions are opened in rotation too (one of every model, then the next), so
that no model owns the early or late openings. Records without "instances" used one session per
model; records without "opening" opened each model's sessions together.
Appends to benchmarks/results/moe_overhead.jsonl.

    python benchmarks/moe_overhead.py --supernet models/supernet-small-bible-v3 --data data/bible-en-de
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment, summary_ms  # noqa: E402


CONTROL = "dense-again"  # a second session of the dense graph: its "overhead" is the host's noise


class RecordingSession:
    """Wraps an onnxruntime session and keeps a copy of every `run`'s inputs. An input equal to the
    previous run's (the cross-attention K/V of a batch, its source mask) shares that copy: recorded
    batches of beams would otherwise hold gigabytes of identical caches."""

    def __init__(self, session):
        self.session = session
        self.feeds: list[dict] = []

    def run(self, output_names, feed):
        last = self.feeds[-1] if self.feeds else {}
        same = lambda old, new: old is not None and old.shape == new.shape and np.array_equal(old, new)  # noqa: E731
        self.feeds.append({name: last[name] if same(last.get(name), value) else value.copy()
                           for name, value in feed.items()})
        return self.session.run(output_names, feed)


def build_models(supernet, width: int, experts: int, traced: bool = True) -> dict:
    """The models of the module docstring, extracted from `supernet`: dense, moe-E, moe-E-one and
    (with `traced`) moe-E-traced, in that order."""
    import torch

    from automoe.extract import extract_subnet

    if width not in supernet.space.ffn_dims:
        raise SystemExit(f"--width {width} is not a width of the space: {list(supernet.space.ffn_dims)}")
    largest = supernet.space.largest()
    dense_arch = largest.replace(encoder_ffn=((width,),) * largest.encoder_layers,
                                 decoder_ffn=((width,),) * largest.decoder_layers)
    moe_arch = dense_arch.replace(encoder_ffn=((width,) * experts,) * dense_arch.encoder_layers,
                                  decoder_ffn=((width,) * experts,) * dense_arch.decoder_layers)
    names = [f"moe-{experts}{s}" for s in ("", "-one", "-traced")][: 3 if traced else 2]
    models = {"dense": extract_subnet(supernet, dense_arch), **{n: extract_subnet(supernet, moe_arch) for n in names}}
    for layer in list(models[names[1]].encoder_layers) + list(models[names[1]].decoder_layers):
        # equal logits: every token takes expert 0 (a new tensor: extracted weights may share storage)
        layer.ffn.router.weight.data = torch.zeros_like(layer.ffn.router.weight)
    return models


def export_model(model, folder: Path, tokenizer: Path, quantize: str | None, moe_dispatch: str = "compact") -> Path:
    """Save `model` to `folder` and export it to ONNX Runtime beside it; returns the export folder."""
    from automoe.export.onnx import to_onnx

    model.save_pretrained(folder, tokenizer_file=tokenizer)
    return to_onnx(folder, folder.with_name(folder.name + "-onnx"), quantize=quantize, moe_dispatch=moe_dispatch)


def record_steps(translator, sources: list[str], beam: int, max_length: int | None = None,
                 batch: int = 1) -> list[list[dict]]:
    """Translate `sources` in batches of `batch` (default: one at a time) with an onnxruntime
    `translator` through its decoder-step graph; per batch, the inputs of every decoder step
    (`max_length` as in `translate`)."""
    translator.backend.use_beam_graph = False  # decode through decoder.onnx so its steps are recorded
    recorder = translator.backend.decoder = RecordingSession(translator.backend.decoder)
    batches = []
    for i in range(0, len(sources), batch):
        recorder.feeds = []
        translator.translate(sources[i: i + batch], beam=beam, max_length=max_length)
        batches.append(recorder.feeds)
    translator.backend.decoder = recorder.session
    return batches


def time_steps(session, feeds: list[dict]) -> list[float]:
    """Seconds of each `session.run` over the recorded steps, in order."""
    seconds = []
    for feed in feeds:
        start = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - start)
    return seconds


def replay(sessions: dict, sentences: list[list[dict]], rounds: int, turn: int, warmup: int) -> dict:
    """Per model, per round, per turn: the seconds of every timed step (the protocol of the module
    docstring). Every model times the same steps in the same order, so turns and rounds can be
    compared step by step. A model given as a list of sessions (instances of one graph) runs each
    turn on the next instance in rotation."""
    names = list(sessions)
    instances = {name: s if isinstance(s, list) else [s] for name, s in sessions.items()}
    blocks = [sentences[i: i + turn] for i in range(0, len(sentences), turn)]
    seconds = {name: [[[] for _ in blocks] for _ in range(rounds)] for name in names}
    slot = 0
    for r in range(rounds):
        for b, block in enumerate(blocks):
            for name in names[slot % len(names):] + names[: slot % len(names)]:
                session = instances[name][slot % len(instances[name])]
                for steps in block[:warmup]:
                    time_steps(session, steps)
                for steps in block[warmup:]:
                    seconds[name][r][b] += time_steps(session, steps)
            slot += 1
    return seconds


def open_interleaved(loaders: dict, instances: int) -> dict:
    """Per model, `instances` sessions from its loader, opened in rotation: one of every model, then
    a second of every model, and so on, so that no model owns the early or the late openings of a
    process (while moe_dispatch_parts.py opened each model's sessions together, its A/A control,
    opened last, ran 6-13% faster than the dense sessions opened first in every run)."""
    sessions = {name: [] for name in loaders}
    for _ in range(instances):
        for name, load in loaders.items():
            sessions[name].append(load())
    return sessions


def ratio_stats(seconds: dict, name: str, base: str) -> dict:
    """`name` against `base`: the median over turns of the ratio of a turn's summed step times to
    the same turn of `base` (one round apart at most, so the host's drift mostly cancels), its
    quartiles, and the ratio of per-step minima over rounds, summed (None with one round)."""
    pairs = [sum(a) / sum(b) for ra, rb in zip(seconds[name], seconds[base]) for a, b in zip(ra, rb) if b]
    q1, median, q3 = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else (pairs[0],) * 3
    steps = lambda runs: [sum(min(step) for step in zip(*turns)) for turns in zip(*runs)]  # noqa: E731
    least = sum(steps(seconds[name])) / sum(steps(seconds[base])) if len(seconds[name]) > 1 else None
    return {"overhead": round(median - 1, 4), "quartiles": [round(q1 - 1, 4), round(q3 - 1, 4)],
            "turns": len(pairs), "overhead_min": None if least is None else round(least - 1, 4)}


def overhead_fields(vs: dict) -> dict:
    """Record fields of named `ratio_stats` results: `NAME`, `NAME_min` and `NAME_quartiles` each,
    and `paired_turns` (those of "overhead")."""
    return {**{key: v["overhead"] for key, v in vs.items()}, **{f"{key}_min": v["overhead_min"] for key, v in vs.items()},
            **{f"{key}_quartiles": v["quartiles"] for key, v in vs.items()}, "paired_turns": vs["overhead"]["turns"]}


def l3_cache() -> str | None:
    """The L3 cache size the kernel reports for CPU 0 (e.g. '32768K'), or None."""
    path = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    return path.read_text().strip() if path.exists() else None


def add_replay_arguments(p: argparse.ArgumentParser, turn: int, warmup: int, max_length: bool = True,
                         moe_dispatch: bool = True) -> None:
    """The model, data and replay-protocol options shared by the decode-step timing scripts
    (`max_length`: offer --max-length, for scripts whose decodes end on their own; `moe_dispatch`:
    offer --moe-dispatch, for scripts that time the exporter's MoE forms as they are)."""
    from automoe.config import PRESETS

    p.add_argument("--supernet", help="supernet folder (supernet.safetensors + space.json): trained weights and routers")
    p.add_argument("--space", choices=sorted(PRESETS),
                   help="instead of --supernet: a random-weight supernet of this preset search space (how the "
                        "overhead scales with model size; routing is that of random routers)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --space weights")
    p.add_argument("--data", required=True, help="dataset folder (test split, spm.model)")
    p.add_argument("--experts", type=int, default=4)
    if moe_dispatch:
        p.add_argument("--moe-dispatch", default=None, choices=["compact", "qmoe", "kernel"],
                       help="how the MoE layers of the beam graph's decoder export (automoe.export.onnx.export_graphs; "
                            "default: the exporter's for the quantization: kernel for int8, or qmoe where no C++ "
                            "compiler builds automoe's operator); qmoe and kernel need --quantize int8")
    p.add_argument("--width", type=int, default=None, help="expert / dense FFN width (default: the widest of the space)")
    p.add_argument("--sentences", type=int, default=100)
    p.add_argument("--rounds", type=int, default=8, help="passes over the sentences")
    p.add_argument("--turn", type=int, default=turn, help="sentences per model turn, the warm-up included")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed sentences at the start of every turn")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--beam", type=int, default=4)
    if max_length:
        p.add_argument("--max-length", type=int, default=None,
                       help="generated tokens per sentence at most (default: translate's; random weights rarely stop "
                            "on their own, so give one with --space)")
    p.add_argument("--instances", type=int, default=3,
                   help="sessions per model, one per turn in rotation (each lays its weights out in memory differently)")


def check_replay_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse a replay protocol that would time nothing (exits through `p.error`)."""
    if (args.supernet is None) == (args.space is None):
        p.error("give exactly one of --supernet (trained weights) and --space (random weights)")
    if args.instances < 1:
        p.error("--instances must be >= 1")
    if args.rounds < 1 or args.warmup < 0 or not args.warmup < args.turn <= args.sentences:
        p.error("need --rounds >= 1 and 0 <= --warmup < --turn <= --sentences (every turn times a sentence)")


def load_weights(args: argparse.Namespace):
    """The supernet the models come from, and the record fields that name it: the trained one of
    `--supernet`, or one with random weights (`--seed`) of the preset `--space`, its vocabulary that
    of `--data`'s spm.model."""
    import dataclasses

    import torch

    from automoe.config import SearchSpace
    from automoe.data import load_tokenizer
    from automoe.supernet import SuperTransformer
    from automoe.train import load_supernet

    if args.supernet:
        return load_supernet(args.supernet), {"supernet": str(args.supernet)}
    space = dataclasses.replace(SearchSpace.preset(args.space), vocab_size=load_tokenizer(args.data).vocab_size())
    torch.manual_seed(args.seed)
    return SuperTransformer(space).eval(), {"supernet": None, "space": args.space, "seed": args.seed,
                                            "d_model": max(space.d_model), "decoder_layers": max(space.decoder_layers)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # decoder.onnx, the graph replayed here (batches of sentences), is compact in every export
    add_replay_arguments(p, turn=6, warmup=2, moe_dispatch=False)
    p.add_argument("--quantize", default="int8", choices=["int8", "none"])
    p.add_argument("--out", default=str(RESULTS / "moe_overhead.jsonl"))
    args = p.parse_args(argv)
    check_replay_arguments(p, args)
    env = environment()  # the commit and time the run started with

    import torch

    from automoe.evaluate import read_split
    from automoe.serve import Translator

    torch.set_num_threads(args.threads)
    supernet, weights = load_weights(args)
    width = args.width or max(supernet.space.ffn_dims)
    models = build_models(supernet, width, args.experts)
    moe_name, one_name, traced_name = list(models)[1:]
    sources, _ = read_split(args.data, "test", limit=args.sentences)
    quant = None if args.quantize == "none" else args.quantize
    dispatch = "compact"
    loaders, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            exported = export_model(model, Path(tmp) / name, Path(args.data) / "spm.model", quant,
                                    "traced" if name == traced_name else dispatch)
            sizes[name] = round((exported / "decoder.onnx").stat().st_size / 2**20, 1)
            loaders[name] = lambda folder=exported: Translator.from_pretrained(folder, threads=args.threads).backend.decoder
            if name == "dense":  # the A/A control: the same graph in other sessions
                loaders[CONTROL] = loaders[name]
            if name == moe_name:
                sentences = record_steps(Translator.from_pretrained(exported, threads=args.threads), sources, args.beam,
                                         args.max_length)
        decoders = open_interleaved(loaders, args.instances)
    seconds = replay(decoders, sentences, args.rounds, args.turn, args.warmup)
    pooled = {name: [t for turns in rounds for steps in turns for t in steps] for name, rounds in seconds.items()}
    stats = {name: summary_ms(s) for name, s in pooled.items()}
    vs = {"overhead": ratio_stats(seconds, moe_name, "dense"), "dispatch_overhead": ratio_stats(seconds, one_name, "dense"),
          "expert_overhead": ratio_stats(seconds, moe_name, one_name), "traced_overhead": ratio_stats(seconds, traced_name, "dense"),
          "control_overhead": ratio_stats(seconds, CONTROL, "dense")}
    record = {"benchmark": "moe_overhead", **weights, "experts": args.experts,
              "width": width, "quantization": quant, "moe_dispatch": dispatch, "threads": args.threads, "beam": args.beam,
              "rows_per_step": args.beam, "sentences": len(sources), "max_length": args.max_length, "method": "replayed steps",
              "rounds": args.rounds, "turn": args.turn, "warmup": args.warmup, "instances": args.instances,
              "opening": "interleaved",
              "timed_steps": len(pooled["dense"]) // args.rounds,
              "dense_step": stats["dense"], "moe_step": stats[moe_name], "moe_one_expert_step": stats[one_name],
              "moe_traced_step": stats[traced_name],
              **overhead_fields(vs),
              "decoder_mib": {"dense": sizes["dense"], "moe": sizes[moe_name]}, "l3_cache": l3_cache(), **env}
    append_jsonl(Path(args.out), [record])
    pct = lambda key: "n/a" if record[key] is None else f"{100 * record[key]:+.1f}%"  # noqa: E731
    spread = lambda key: " .. ".join(f"{100 * q:+.1f}%" for q in record[f"{key}_quartiles"])  # noqa: E731
    print(f"width {width}, decoder step (median over {record['paired_turns']} paired turns of the ratio to dense, "
          f"per-step minimum over rounds in brackets): {moe_name} {pct('overhead')} [{pct('overhead_min')}], all tokens to one expert "
          f"{pct('dispatch_overhead')} [{pct('dispatch_overhead_min')}], other experts {pct('expert_overhead')}, "
          f"traced dispatch {pct('traced_overhead')}; quartiles of the paired ratios: {moe_name} {spread('overhead')}, "
          f"dense against itself {pct('control_overhead')} ({spread('control_overhead')}); pooled medians: dense {stats['dense']['median_ms']:.3f} ms, "
          f"{moe_name} {stats[moe_name]['median_ms']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
