"""Cost of sparse MoE dispatch at decode time as users decode: inside ONNX Runtime's BeamSearch op.

`moe_overhead.py` replays recorded decoder steps through the decoder-step graph from Python. A
translation at batch 1 does not run that way: `Translator` (engine onnxruntime) decodes it with
the exported beam graph, whose `com.microsoft.BeamSearch` op runs the decoder step itself and adds
its own per-step work (log-softmax and top-k over the vocabulary, reordering the beams' caches).
This script times the same models (moe_overhead.build_models: `dense`, `moe-E`, `moe-E-one` with
every token on expert 0, and a second set of dense sessions as the A/A control) through their beam
graphs, with real test sentences so routing varies.

The BeamSearch op returns only the final sequences, so its steps cannot be timed one by one.
Every sentence is decoded twice at fixed output lengths, `--lengths SHORT LONG` tokens (the end
token suppressed until then: min_length = max_length), and its per-step cost is
(time at LONG - time at SHORT) / (LONG - SHORT): the encoder, the op's set-up and the first SHORT
steps cancel. Past the point where a sentence would have ended the tokens are the model's own
continuation, still routed by the trained routers.

Protocol as in moe_overhead.py (its `replay`, `open_interleaved`, `ratio_stats`): `--rounds` passes
over the sentences in turns of `--turn`, the first `--warmup` of each turn untimed, the model order
rotating per turn, `--instances` sessions per model opened and used in rotation; every figure pairs
a model's turn with the same turn of the dense model.
Appends to benchmarks/results/moe_overhead_beam.jsonl (the README table shows the last run with trained
weights, `--supernet`; `--space` runs are recorded and printed only).

    python benchmarks/moe_overhead_beam.py --supernet models/supernet-small-bible-v3 --data data/bible-en-de --width 384
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment, summary_ms  # noqa: E402
from moe_overhead import (  # noqa: E402
    CONTROL, add_replay_arguments, build_models, check_replay_arguments, export_model, l3_cache, load_weights, open_interleaved,
    overhead_fields, ratio_stats, replay)


def fixed_length_feeds(ids: list[int], length: int, beam: int) -> dict:
    """Inputs of an exported beam graph that decode source `ids` (EOS-terminated) to exactly `length`
    tokens: the op counts the start token in its lengths, and min_length = max_length keeps the end
    token out until the last step. Refuses `length` < 2: ORT's BeamSearch op fails on a one-token
    decode (Translator does not use the beam graph for one either)."""
    import numpy as np

    if length < 2:
        raise ValueError(f"a fixed-length beam decode needs length >= 2, got {length}")
    src = np.array([ids], np.int32)
    steps = np.array([length + 1], np.int32)
    return {"input_ids": src, "attention_mask": np.ones_like(src), "max_length": steps, "min_length": steps,
            "num_beams": np.array([beam], np.int32), "num_return_sequences": np.array([1], np.int32),
            "length_penalty": np.array([1.0], np.float32), "repetition_penalty": np.array([1.0], np.float32)}


def step_costs(seconds: list[float], short: int, long: int) -> list[float]:
    """A turn's seconds as `replay` returns them ([t_short, t_long] of each sentence, in order) -> each
    sentence's seconds per decoder step, (t_long - t_short) / (long - short)."""
    return [(b - a) / (long - short) for a, b in zip(seconds[0::2], seconds[1::2])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_replay_arguments(p, turn=20, warmup=4, max_length=False)  # the decodes have fixed --lengths
    p.add_argument("--lengths", type=int, nargs=2, default=[8, 40], metavar=("SHORT", "LONG"),
                   help="the two fixed output lengths every sentence is decoded to")
    p.add_argument("--quantize", default="int8", choices=["int8", "none"])
    p.add_argument("--against-form", default=None, choices=["compact", "qmoe", "kernel"],
                   help="also time the MoE model exported in this other form, paired turn by turn with the "
                        "--moe-dispatch one (record field form_ratio: the first over the second, minus 1)")
    p.add_argument("--out", default=str(RESULTS / "moe_overhead_beam.jsonl"))
    args = p.parse_args(argv)
    check_replay_arguments(p, args)
    short, long = args.lengths
    if not 2 <= short < long:
        p.error(f"--lengths needs 2 <= SHORT < LONG (the beam graph fails on one-token decodes), got {short} {long}")
    env = environment()  # the commit and time the run started with

    import torch

    from automoe.evaluate import read_split
    from automoe.export.onnx import default_moe_dispatch, to_onnx
    from automoe.serve import Translator

    torch.set_num_threads(args.threads)
    supernet, weights = load_weights(args)
    if long + 1 > supernet.space.max_positions:
        p.error(f"--lengths LONG {long} is past the model's {supernet.space.max_positions - 1} target positions")
    width = args.width or max(supernet.space.ffn_dims)
    models = build_models(supernet, width, args.experts, traced=False)
    moe_name, one_name = list(models)[1:]
    sources, _ = read_split(args.data, "test", limit=args.sentences)
    quant = None if args.quantize == "none" else args.quantize
    dispatch = args.moe_dispatch or default_moe_dispatch(quant)
    if args.against_form == dispatch:
        p.error(f"--against-form {dispatch} is the form timed already; choose the other one")
    forms = {name: dispatch for name in models}
    if args.against_form:
        against = f"{moe_name}-{args.against_form}"
        models[against], forms[against] = models[moe_name], args.against_form  # the same weights
    loaders = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            if args.against_form and name == against:  # the MoE model's saved folder, exported in the other form
                exported = to_onnx(Path(tmp) / moe_name, Path(tmp) / f"{name}-onnx", quantize=quant, moe_dispatch=forms[name])
            else:
                exported = export_model(model, Path(tmp) / name, Path(args.data) / "spm.model", quant, forms[name])
            loaders[name] = lambda folder=exported: Translator.from_pretrained(folder, threads=args.threads)
        loaders[CONTROL] = loaders["dense"]  # the A/A control: the same graph in other sessions
        translators = open_interleaved(loaders, args.instances)
    # EOS-terminated ids, truncated as translate() does (None for an empty line)
    encoded = [ids for ids in translators["dense"][0]._encode(sources) if ids]
    sentences = [[fixed_length_feeds(ids, n, args.beam) for n in (short, long)] for ids in encoded]
    beams = {name: [t.backend.beam for t in ts] for name, ts in translators.items()}
    raw = replay(beams, sentences, args.rounds, args.turn, args.warmup)
    seconds = {name: [[step_costs(turn, short, long) for turn in rounds] for rounds in runs] for name, runs in raw.items()}
    pooled = {name: [t for turns in rounds for costs in turns for t in costs] for name, rounds in seconds.items()}
    stats = {name: summary_ms(s) for name, s in pooled.items()}
    vs = {"overhead": ratio_stats(seconds, moe_name, "dense"), "dispatch_overhead": ratio_stats(seconds, one_name, "dense"),
          "expert_overhead": ratio_stats(seconds, moe_name, one_name), "control_overhead": ratio_stats(seconds, CONTROL, "dense")}
    if args.against_form:
        vs["form_ratio"] = ratio_stats(seconds, moe_name, against)
    record = {"benchmark": "moe_overhead_beam", **weights, "experts": args.experts, "width": width,
              "quantization": quant, "moe_dispatch": dispatch, "threads": args.threads, "beam": args.beam, "sentences": len(sentences),
              "lengths": [short, long], "method": "BeamSearch op, two fixed lengths", "rounds": args.rounds,
              "turn": args.turn, "warmup": args.warmup, "instances": args.instances, "opening": "interleaved",
              "dense_step": stats["dense"], "moe_step": stats[moe_name], "moe_one_expert_step": stats[one_name],
              **({"against_form": args.against_form, "moe_against_step": stats[against]} if args.against_form else {}),
              **overhead_fields(vs),
              "l3_cache": l3_cache(), **env}
    append_jsonl(Path(args.out), [record])
    pct = lambda key: "n/a" if record[key] is None else f"{100 * record[key]:+.1f}%"  # noqa: E731
    print(f"width {width}, decoder step inside the BeamSearch op (median over {record['paired_turns']} paired turns of "
          f"the ratio to dense, per-sentence minima in brackets): {moe_name} {pct('overhead')} [{pct('overhead_min')}], "
          f"all tokens to one expert {pct('dispatch_overhead')} [{pct('dispatch_overhead_min')}], other experts "
          f"{pct('expert_overhead')}, dense against itself {pct('control_overhead')}; pooled medians: dense "
          f"{stats['dense']['median_ms']:.3f} ms, {moe_name} {stats[moe_name]['median_ms']:.3f} ms per step")
    if args.against_form:
        print(f"  {moe_name} as {dispatch} against {args.against_form}: {pct('form_ratio')} [{pct('form_ratio_min')}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
