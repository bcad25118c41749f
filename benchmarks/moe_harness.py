"""The harness of benchmarks/moe_dispatch.py: the models it compares, recorded decoder steps, the
paired replay protocol and its statistics (see docs/moe_dispatch.md for why each is as it is).

Replay protocol: `rounds` passes over the sentences, cut into turns of `turn` sentences. Every
model in turn (the order rotating per turn) replays a turn's sentences in order, the first
`warmup` of them untimed so that the cache holds that model's weights; every other `session.run`
is timed. The host is shared and its speed drifts by tens of percent within seconds, so every
figure pairs a model's turn with the same turn of another model (`ratio_stats`). Each model runs
as `instances` sessions, one per turn in rotation, opened in rotation (`open_interleaved`), since
sessions of one graph differ by several percent among themselves for as long as they live.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from common import RESULTS, append_jsonl, environment, summary_ms  # noqa: F401  (the studies' output helpers)

CONTROL = "dense-again"  # a second set of sessions of the dense graph: its "overhead" is the host's noise


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


def build_models(supernet, width: int, experts: int) -> dict:
    """The models every study compares, extracted from `supernet` (trained or random weights):
      dense      its largest subnet with every FFN of width `width`
      moe-E      the same architecture with `experts` top-1 experts of that width per layer
      moe-E-one  `moe-E` with its routers zeroed: every token goes to expert 0, so it runs the whole
                 dispatch but reads one expert per layer, like `dense` (the fixed cost of dispatch)
    in that order."""
    import torch

    from automoe.extract import extract_subnet

    if width not in supernet.space.ffn_dims:
        raise SystemExit(f"--width {width} is not a width of the space: {list(supernet.space.ffn_dims)}")
    largest = supernet.space.largest()
    dense_arch = largest.replace(encoder_ffn=((width,),) * largest.encoder_layers,
                                 decoder_ffn=((width,),) * largest.decoder_layers)
    moe_arch = dense_arch.replace(encoder_ffn=((width,) * experts,) * dense_arch.encoder_layers,
                                  decoder_ffn=((width,) * experts,) * dense_arch.decoder_layers)
    moe, one = f"moe-{experts}", f"moe-{experts}-one"
    models = {"dense": extract_subnet(supernet, dense_arch), moe: extract_subnet(supernet, moe_arch),
              one: extract_subnet(supernet, moe_arch)}
    for layer in list(models[one].encoder_layers) + list(models[one].decoder_layers):
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
    process (while the parts study opened each model's sessions together, its A/A control,
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
        p.add_argument("--moe-dispatch", default=None, choices=["compact", "kernel"],
                       help="how the MoE layers of the beam graph's decoder export (automoe.export.onnx.export_graphs; "
                            "default: the exporter's for the quantization: kernel for int8 where a C++ compiler "
                            "builds automoe's operator, else compact); kernel needs --quantize int8")
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
    from automoe.supernet_folder import load_supernet

    if args.supernet:
        return load_supernet(args.supernet), {"supernet": str(args.supernet)}
    space = dataclasses.replace(SearchSpace.preset(args.space), vocab_size=load_tokenizer(args.data).vocab_size())
    torch.manual_seed(args.seed)
    return SuperTransformer(space).eval(), {"supernet": None, "space": args.space, "seed": args.seed,
                                            "d_model": max(space.d_model), "decoder_layers": max(space.decoder_layers)}


def study_models(args: argparse.Namespace) -> tuple[dict, dict, int, list[str]]:
    """What a study of `add_replay_arguments` times: the models of `build_models` (FFN `--width`,
    default the widest of the space), the record fields naming their weights (`load_weights`), the
    width, and the first `--sentences` test sources of `--data`."""
    from automoe.evaluate import read_split

    supernet, weights = load_weights(args)
    width = args.width or max(supernet.space.ffn_dims)
    sources, _ = read_split(args.data, "test", limit=args.sentences)
    return build_models(supernet, width, args.experts), weights, width, sources


def pooled_ms(seconds: dict) -> dict:
    """Per model, `summary_ms` of every second `replay` timed for it (all rounds, turns and steps)."""
    return {name: summary_ms([t for turns in rounds for steps in turns for t in steps]) for name, rounds in seconds.items()}
