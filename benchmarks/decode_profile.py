"""Where the decode time goes: ONNX Runtime's profile of the int8 beam graph, by part of the model.

For each model folder: its ONNX Runtime int8 export (the export cache, as `Translator` makes it)
runs beam_search.onnx with ONNX Runtime's profiler on (1 thread, beam 4) over the first N test
sentences, one at a time, after untimed warm-up sentences. Every node's kernel time is put in one
part:
  output projection   the MatMul whose output is vocabulary-wide (the logits)
  encoder             nodes of the encoder layers (the encoder subgraph's own work)
  attention           self- and cross-attention: projections, scores, softmax, and the
                      cross-attention keys/values computed once per sentence
  FFN / MoE           FFN layers, routers and experts (automoe's MoE operator included)
  norms               LayerNormalization / SkipLayerNormalization
  other nodes         embeddings, positions, casts, reshapes
  beam search         the BeamSearch operator's own time: its total minus its subgraphs' nodes
                      (log-softmax and top-k over the vocabulary, hypotheses, cache copies)
Shares of the operator's total. The profiler adds several microseconds to every node, which in
a small model's decoder step is as much as the node's own work, inside the kernel timers and
outside them (where it counts as the operator's own work), so these shares overstate both the
small nodes and the beam search's own work; a second measurement, without the profiler, splits
the same sentences into
  encoder + first step   encoder.onnx (the encoder subgraph: encoder, cross-attention keys and
                         values, the first decoder step)
  decoder steps          decoder.onnx run as many times as the beam search runs its decoder for that
                         sentence (counted under automoe's beam search over the step graphs, the
                         same algorithm and translation as the operator's at batch 1), with the
                         beam's cache shapes (a Python loop, so its few microseconds per call
                         count here)
  beam search            the beam graph's time minus both
timed back to back per sentence, three times (the fastest of each counts), shares of the sum over
sentences. Appends one record per model to benchmarks/results/decode_profile.jsonl.

    python benchmarks/decode_profile.py models/dense-small-bible models/automoe-small-bible-third --data data/bible-en-de
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment  # noqa: E402

PARTS = ("output projection", "encoder", "attention", "FFN / MoE", "norms", "other nodes", "beam search")
SPLIT = ("encoder + first step", "decoder steps", "beam search")


def part_of(op: str, name: str, out_shapes: list, vocab_size: int) -> str:
    """The part of the model (see PARTS) a profiled node belongs to."""
    if "MatMul" in op and any(shape and shape[-1] == vocab_size for shape in out_shapes):
        return "output projection"
    if "encoder" in name:
        return "encoder"
    if op in ("LayerNormalization", "SkipLayerNormalization"):
        return "norms"
    if "attn" in name or any(p in name for p in ("q_proj", "k_proj", "v_proj", "out_proj")):
        return "attention"
    if "ffn" in name or "moe" in name.lower() or "expert" in name:
        return "FFN / MoE"
    return "other nodes"


def _shapes(args: dict) -> list:
    return [next(iter(t.values())) for t in args.get("output_type_shape", []) if t]


def profile(folder: Path, family: str, sources: list[str], warmup: int, beam: int) -> dict:
    """One record: the parts' shares of the beam graph's time over `sources`."""
    from automoe.export.onnx import BEAM_FILE
    from automoe.serve import Translator

    tr = Translator.from_pretrained(folder, engine="onnxruntime", quantize="int8", threads=1)
    engine = tr.backend
    vocab = tr.config.vocab_size
    for s in sources[:warmup]:
        tr.translate([s], beam=beam)
    split = timed_split(engine, [tr.tokenizer.encode(s.strip(), out_type=int) for s in sources], beam)
    with tempfile.TemporaryDirectory() as tmp:
        # the engine's own session options (threads, automoe's operator library), profiling on
        engine.options.enable_profiling, engine.options.profile_file_prefix = True, str(Path(tmp) / "profile")
        engine.beam = engine.open_graph(BEAM_FILE)
        for s in sources:
            tr.translate([s], beam=beam)
        events = json.loads(Path(engine.beam.end_profiling()).read_text(encoding="utf-8"))
    total, inner = 0.0, collections.Counter()
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        op = e["args"].get("op_name", "")
        if op == "BeamSearch":
            total += e["dur"]
        else:
            inner[part_of(op, e["name"], _shapes(e["args"]), vocab)] += e["dur"]
    inner["beam search"] = total - sum(inner.values())
    return {"benchmark": "decode_profile", "model": folder.name, "family": family,
            "engine": "onnxruntime-int8", "threads": 1, "beam": beam, "sentences": len(sources),
            "profiled_ms_per_sentence": round(total / 1000 / len(sources), 3),
            "shares": {p: round(inner.get(p, 0.0) / total, 4) for p in PARTS}, **split}


class _Counted:
    """An ONNX Runtime session that counts its runs."""

    def __init__(self, session):
        self.session, self.runs = session, 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.session.run(*args, **kwargs)


def decoder_runs(engine, ids: list[int], beam: int, max_length: int) -> int:
    """How many times beam search runs decoder.onnx for one sentence (the first step, in the
    encoder graph, not counted): automoe's beam search over the step graphs, the same search as
    the BeamSearch operator's at batch 1, with the engine's decoder session counted."""
    decoder, graph = engine.decoder, engine.use_beam_graph
    engine.decoder, engine.use_beam_graph = _Counted(decoder), False
    try:
        engine.translate_ids([ids], beam=beam, max_length=max_length)
        return engine.decoder.runs
    finally:
        engine.decoder, engine.use_beam_graph = decoder, graph


def timed_split(engine, sources: list[list[int]], beam: int, repeats: int = 3) -> dict:
    """Without the profiler: each sentence's beam-graph time, then its encoder graph and as many
    decoder-graph steps as the beam graph took, timed back to back `repeats` times; the fastest
    of each counts (other work on the machine only ever adds time). Returns ms per sentence of
    the beam graph and the shares of SPLIT (see the module docstring)."""
    import numpy as np

    from automoe.generate import default_max_length

    cfg = engine.config
    n = engine.layers
    times = dict.fromkeys(("total",) + SPLIT, 0.0)
    total_runs = 0
    for ids in sources:
        ids = ids[: cfg.max_positions - 1] + [cfg.eos_id]  # as Translator encodes a sentence
        src = np.array([ids], dtype=np.int64)  # one sentence: nothing to pad
        mask = (src != cfg.pad_id).astype(np.int32)
        limit = default_max_length(engine, len(ids))
        runs = decoder_runs(engine, ids, beam, limit)
        total_runs += runs + 1  # + the first step, in the encoder graph
        best = dict.fromkeys(("total", "encoder + first step", "decoder steps"), float("inf"))
        for _ in range(repeats):
            start = time.perf_counter()
            engine.run_beam_graph(src, beam, limit)
            best["total"] = min(best["total"], time.perf_counter() - start)
            # The graphs are run directly, not through OnnxStepper: its per-step feed copies and
            # torch conversions cost more than the operator's own work, which the split measures.
            start = time.perf_counter()
            outs = engine.encoder.run(None, {"encoder_input_ids": src.astype(np.int32),
                                             "encoder_attention_mask": mask,
                                             "decoder_input_ids": np.full((1, 1), cfg.bos_id, np.int32)})
            best["encoder + first step"] = min(best["encoder + first step"], time.perf_counter() - start)
            feeds = {"encoder_attention_mask": np.repeat(mask, beam, 0),
                     "input_ids": np.full((beam, 1), cfg.eos_id + 1, np.int32)}
            feeds.update(zip(engine.past_cross_names, (np.repeat(a, beam, 0) for a in outs[2 + 2 * n:])))
            cache = [np.repeat(a, beam, 0) for a in outs[2: 2 + 2 * n]]
            start = time.perf_counter()
            for _ in range(runs):
                feeds.update(zip(engine.past_self_names, cache))
                cache = engine.decoder.run(None, feeds)[1:]
            best["decoder steps"] = min(best["decoder steps"], time.perf_counter() - start)
        for part, seconds in best.items():
            times[part] += seconds
    times["beam search"] = times["total"] - times["encoder + first step"] - times["decoder steps"]
    return {"ms_per_sentence": round(times["total"] * 1000 / len(sources), 3), "repeats": repeats,
            "steps_per_sentence": round(total_runs / len(sources), 2),
            "timed_shares": {p: round(times[p] / times["total"], 4) for p in SPLIT}}


def table(records: list[dict]) -> str:
    """Markdown: the unprofiled split (records that have one), then the profiler's parts."""
    r0, out = records[0], []
    timed = [r for r in records if "timed_shares" in r]
    if timed:
        lines = ["| model | ms per sentence | decoder steps per sentence | " + " | ".join(SPLIT) + " |",
                 "|---|---:|---:|" + "---:|" * len(SPLIT)]
        for r in timed:
            lines.append(f"| `{r['model']}` ({r['family']}) | {r['ms_per_sentence']:.2f} | {r['steps_per_sentence']:.1f} | "
                         + " | ".join(f"{r['timed_shares'][p]:.0%}" for p in SPLIT) + " |")
        out.append("\n".join(lines) + "\n\nWithout the profiler: the beam graph's time per sentence, split by timing "
                   "the encoder graph and as many decoder-graph steps as the beam search runs, back to back; `beam search` is "
                   "the rest (log-softmax and top-k over the vocabulary, hypotheses, cache copies).")
    lines = ["| model | " + " | ".join(PARTS) + " |", "|---|" + "---:|" * len(PARTS)]
    for r in records:
        lines.append(f"| `{r['model']}` ({r['family']}) | " + " | ".join(f"{r['shares'][p]:.0%}" for p in PARTS) + " |")
    out.append("\n".join(lines) + (
        f"\n\nThe profiler's kernel times by part, shares of the BeamSearch operator's time with the profiler on; "
        f"`beam search` is the operator's time outside its nodes' kernels. The profiler adds several microseconds "
        f"per node, in the kernel timers and outside them, so in a small model's decode both the small nodes and "
        f"`beam search` look larger than they are (the split without the profiler, where one is shown, is the one "
        f"to read). int8, 1 thread, beam {r0['beam']}, {r0['sentences']} test sentences one at a time, "
        f"{r0['cpu']}, commit `{(r0.get('git_commit') or '')[:10]}`."))
    return "\n\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="model folders")
    p.add_argument("--data", required=True, help="dataset folder (test split)")
    p.add_argument("--sentences", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--out", default=str(RESULTS / "decode_profile.jsonl"))
    args = p.parse_args(argv)
    from automoe.evaluate import read_split

    sources, _ = read_split(args.data, "test", args.sentences)
    env = environment()
    from automoe.bench import load_models
    from automoe.config import ConfigError

    try:  # families as the bench names them (a dense model other than the baseline: hat)
        models, _ = load_models(args.models)
    except ConfigError:  # no dense model among them, so no family to rename
        models, _ = load_models(args.models, baseline=args.models[0])
    records = [{**profile(m.folder, m.family, sources, args.warmup, args.beam), "model": m.name, **env}
               for m in models]
    print(table(records))
    append_jsonl(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
