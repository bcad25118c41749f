"""Where the fixed cost of MoE dispatch goes at decode time, timed in the whole decoder step.

`moe_overhead.py` measures the fixed cost of the compact top-1 dispatch (export/onnx_moe.py) as
*all tokens to expert 0*: a 4-expert model with zeroed routers against the same model with one
dense FFN. That model sends every token to expert 0, so parts of its dispatch can be cut out of
the ONNX Runtime-optimized decoder graph without changing what it computes, and each cut timed in
place: the cost of a node inside a real decoder step (its code and data fetched again after the
step's weights went through the cache) is several times what it costs on its own.

  moe-one        the whole compact dispatch (as exported)
  no-empty       the experts that get no token removed (their empty blocks go straight to Concat)
  no-split       also Split and Concat removed: expert 0 reads the sorted rows, ScatterND writes its output
  router-only    also the sort removed (Shape, TopK, GatherND, OneHot, ReduceSum, ScatterND): what is
                 left of dispatch is the router (MatMul, Softmax, ReduceMax, ArgMax) and the gate Mul
Every variant's decoder outputs are checked against moe-one's on the recorded steps before timing.
The variants are measuring devices, not models: they are exact only while every token takes expert 0.

All graphs (and the dense one, and a second dense session as the A/A control) are optimized once
by ONNX Runtime and loaded with graph optimization off, so each variant differs from moe-one only
by the cut. Steps are recorded and replayed as in moe_overhead.py (same `replay`, pairing and
`--instances` sessions per graph, opened and timed in rotation).
Appends to benchmarks/results/moe_dispatch_parts.jsonl.

    python benchmarks/moe_dispatch_parts.py --supernet models/supernet-small-bible-v3 --data data/bible-en-de --width 384
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment, summary_ms  # noqa: E402
from moe_overhead import (  # noqa: E402
    CONTROL, add_replay_arguments, build_models, check_replay_arguments, export_model, l3_cache, load_weights, open_interleaved,
    ratio_stats, record_steps, replay)

VARIANTS = ("no-empty", "no-split", "router-only")
SORT_OPS = ("Shape", "TopK", "GatherND", "OneHot", "ReduceSum", "ScatterND")


def _expert_chain(consumers: dict, block: str) -> tuple[list, object]:
    """The nodes of one expert, from its Split output to (not including) the Concat it feeds."""
    chain, tensor = [], block
    while True:
        (node,) = consumers[tensor]
        if node.op_type == "Concat":
            return chain, node
        chain.append(node)
        tensor = node.output[0]


def _rename_input(node, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new


def cut_dispatch(graph, variant: str) -> tuple[int, collections.Counter]:
    """Cut `variant` (one of VARIANTS) out of every compact MoE layer of an optimized decoder graph
    (onnx GraphProto, edited in place) whose tokens all take expert 0; returns the number of MoE
    layers and the op types removed."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} must be one of {list(VARIANTS)}")
    consumers, producer = collections.defaultdict(list), {}
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
        for name in node.output:
            producer[name] = node
    drop = []
    splits = [n for n in graph.node if n.op_type == "Split" and producer.get(n.input[0], n).op_type == "GatherND"]
    if not splits:
        raise ValueError("no compact MoE layer (GatherND -> Split) in this graph")
    for split in splits:
        chains = [_expert_chain(consumers, block) for block in split.output]
        concat = chains[0][1]
        for e, (chain, _) in enumerate(chains[1:], 1):  # the experts no token reaches
            drop += chain
            concat.input[e] = split.output[e]
        if variant == "no-empty":
            continue
        y0 = chains[0][0][-1].output[0]
        (scatter,) = consumers[concat.output[0]]
        grouped = split.input[0]
        for node in consumers[split.output[0]]:
            _rename_input(node, split.output[0], grouped)
        _rename_input(scatter, concat.output[0], y0)
        drop += [split, concat]
        if variant == "no-split":
            continue
        gather = producer[grouped]
        for node in consumers[split.output[0]]:  # expert 0, which read `grouped` since the cut above
            _rename_input(node, grouped, gather.input[0])
        for node in consumers[scatter.output[0]]:
            _rename_input(node, scatter.output[0], y0)
        topk = producer[gather.input[1]]
        counts = producer[split.input[1]]
        drop += [gather, scatter, topk, producer[topk.input[1]], counts, producer[counts.input[0]]]
    removed = collections.Counter(n.op_type for n in drop)
    dropped = {id(n) for n in drop}
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    return len(splits), removed


def optimized_graph(path: Path, out: Path, threads: int) -> Path:
    """Write ONNX Runtime's optimized form of the graph at `path` to `out` (on this machine)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return out


def plain_session(path: Path, threads: int):
    """An onnxruntime session that runs the (already optimized) graph at `path` as it is."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_equal(sessions: dict, reference: str, steps: list[dict]) -> None:
    """Refuse to time a variant whose outputs differ from the reference graph's on these steps."""
    import numpy as np

    for feed in steps:
        expected = sessions[reference].run(None, feed)
        for name, session in sessions.items():
            for a, b in zip(session.run(None, feed), expected):
                if not np.array_equal(a, b):
                    raise RuntimeError(f"{name} computes something else than {reference}: the cut is not exact "
                                       "(does every token take expert 0?)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_replay_arguments(p, turn=20, warmup=4, moe_dispatch=False)  # it cuts the compact form apart
    p.add_argument("--out", default=str(RESULTS / "moe_dispatch_parts.jsonl"))
    args = p.parse_args(argv)
    check_replay_arguments(p, args)
    env = environment()

    import onnx
    import torch

    from automoe.evaluate import read_split
    from automoe.serve import Translator

    torch.set_num_threads(args.threads)
    supernet, weights = load_weights(args)
    width = args.width or max(supernet.space.ffn_dims)
    models = build_models(supernet, width, args.experts, traced=False)
    moe_name, one_name = list(models)[1:]
    sources, _ = read_split(args.data, "test", limit=args.sentences)
    removed = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        graphs = {}
        for name, model in models.items():
            exported = export_model(model, tmp / name, Path(args.data) / "spm.model", "int8")
            if name == moe_name:  # real routing, so the recorded steps are those of real decoding
                sentences = record_steps(Translator.from_pretrained(exported, threads=args.threads), sources, args.beam,
                                         args.max_length)
            else:
                graphs[name] = optimized_graph(exported / "decoder.onnx", tmp / f"{name}.onnx", args.threads)
        for variant in VARIANTS:
            model = onnx.load(str(graphs[one_name]))
            layers, cut = cut_dispatch(model.graph, variant)
            removed[variant] = dict(cut)
            onnx.save(model, str(tmp / f"{variant}.onnx"))
            graphs[variant] = tmp / f"{variant}.onnx"
        graphs[CONTROL] = graphs["dense"]  # the A/A control: the same graph in other sessions
        sessions = open_interleaved({name: lambda path=graphs[name]: plain_session(path, args.threads)
                                     for name in ["dense", one_name, *VARIANTS, CONTROL]}, args.instances)
    check_equal({k: sessions[k][0] for k in [one_name, *VARIANTS]}, one_name, [s for steps in sentences[:5] for s in steps])
    seconds = replay(sessions, sentences, args.rounds, args.turn, args.warmup)
    pooled = {name: [t for turns in rounds for steps in turns for t in steps] for name, rounds in seconds.items()}
    parts = {name: {**ratio_stats(seconds, name, "dense"), "step": summary_ms(pooled[name])}
             for name in [one_name, *VARIANTS, CONTROL]}
    record = {"benchmark": "moe_dispatch_parts", **weights, "experts": args.experts,
              "width": width, "quantization": "int8", "threads": args.threads, "beam": args.beam,
              "sentences": len(sources), "max_length": args.max_length, "method": "replayed steps", "rounds": args.rounds,
              "turn": args.turn, "warmup": args.warmup, "instances": args.instances, "opening": "interleaved",
              "moe_layers": layers, "dense_step": summary_ms(pooled["dense"]),
              "parts": {("moe-one" if k == one_name else k): v for k, v in parts.items()},
              "removed_ops": removed, "l3_cache": l3_cache(), **env}
    append_jsonl(Path(args.out), [record])
    pct = lambda v: "n/a" if v is None else f"{100 * v:+.1f}%"  # noqa: E731
    print(f"width {width}, decoder step vs dense (median of {parts[one_name]['turns']} paired turns; per-step minima): "
          + ", ".join(f"{name} {pct(v['overhead'])} ({pct(v['overhead_min'])})" for name, v in record["parts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
