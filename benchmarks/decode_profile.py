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
Shares of the operator's total. Profiling adds a little time per node, so the shares, not the
times, are the result. Appends one record per model to benchmarks/results/decode_profile.jsonl.

    python benchmarks/decode_profile.py models/dense-small-bible models/automoe-small-bible-third --data data/bible-en-de
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment  # noqa: E402

PARTS = ("output projection", "encoder", "attention", "FFN / MoE", "norms", "other nodes", "beam search")


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


def profile(folder: Path, sources: list[str], warmup: int, beam: int) -> dict:
    """One record: the parts' shares of the beam graph's time over `sources`."""
    from automoe.bench import model_family
    from automoe.export.onnx import BEAM_FILE
    from automoe.serve import Translator

    tr = Translator.from_pretrained(folder, engine="onnxruntime", quantize="int8", threads=1)
    engine = tr.backend
    vocab = tr.config.vocab_size
    with tempfile.TemporaryDirectory() as tmp:
        for s in sources[:warmup]:
            tr.translate([s], beam=beam)
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
    return {"benchmark": "decode_profile", "model": folder.name, "family": model_family(tr.config),
            "engine": "onnxruntime-int8", "threads": 1, "beam": beam, "sentences": len(sources),
            "profiled_ms_per_sentence": round(total / 1000 / len(sources), 3),
            "shares": {p: round(inner.get(p, 0.0) / total, 4) for p in PARTS}}


def table(records: list[dict]) -> str:
    """Markdown: one row per model, one column per part."""
    lines = ["| model | " + " | ".join(PARTS) + " |", "|---|" + "---:|" * len(PARTS)]
    for r in records:
        lines.append(f"| `{r['model']}` ({r['family']}) | " + " | ".join(f"{r['shares'][p]:.0%}" for p in PARTS) + " |")
    r0 = records[0]
    return "\n".join(lines) + (f"\n\nShares of the time of ONNX Runtime's BeamSearch operator (int8, 1 thread, beam "
                               f"{r0['beam']}, {r0['sentences']} test sentences one at a time, profiler on); "
                               f"`beam search` is the operator's own work outside the model's nodes. "
                               f"{r0['cpu']}, commit `{(r0.get('git_commit') or '')[:10]}`.")


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
    records = [{**profile(Path(m), sources, args.warmup, args.beam), **env} for m in args.models]
    print(table(records))
    append_jsonl(args.out, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
