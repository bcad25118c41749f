"""Which MoE form each ONNX graph should use: `compact` against the fused forms, graph by graph.

An int8 export can write a top-1 MoE layer as the exact sort / split / scatter graph (`compact`,
whose experts run as ONNX Runtime's int8 matrix products), as ONNX Runtime's fused QMoE operator
(`qmoe`, one kernel, whose int8 kernels multiply row by row) or as automoe's own operator
(`kernel`, export/csrc/automoe_ops.cc, one thread; timed where its library builds). Which is
faster depends on how many rows a call routes, so this script times every form of one MoE model
(`--experts` top-1 experts of width `--width` per layer, weights and routers of `--supernet`, as
in moe_overhead.py) in each graph as `Translator` uses it, with real test sentences:
  encoder        encoder.onnx on one source at a time (whole sources: tens of rows)
  decoder@B      decoder.onnx steps of `--beam` beams for batches of B sentences (B * beam rows),
                 as the Python beam search runs them for batches; at B = 1, the rows the beam
                 graph's decoder sees
The steps are recorded once from the compact export and every form replays the same inputs in
turns, paired as in moe_overhead.py (`replay`, `ratio_stats`): each figure (`ratios[FORM]`) is the
median over turns of a fused form's turn time over compact's in the same turn, minus 1 (negative:
the fused form is faster), with the ratio of per-item minima over rounds ("min"). Turns hold
`--turn` items (sources or batches), fewer where a graph has few items, so that every graph gets
several pairs.
Appends to benchmarks/results/moe_forms.jsonl.

    python benchmarks/moe_forms.py --supernet models/supernet-small-bible-v3 --data data/bible-en-de --width 1536
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment, summary_ms  # noqa: E402
from moe_overhead import build_models, l3_cache, ratio_stats, record_steps, replay  # noqa: E402

FUSED = ("qmoe", "kernel")


def encoder_feeds(ids: list[int], bos_id: int) -> dict:
    """The inputs of encoder.onnx for one EOS-terminated source."""
    import numpy as np

    src = np.array([ids], np.int32)
    return {"encoder_input_ids": src, "encoder_attention_mask": np.ones_like(src),
            "decoder_input_ids": np.array([[bos_id]], np.int32)}


def export_forms(model, root: Path, tokenizer: Path, fused: tuple[str, ...]) -> dict[str, Path]:
    """int8 exports of `model` with every graph in each form (compact and the `fused` ones); {form:
    folder}. The compact folder is a whole export (the steps are recorded through it), the fused
    ones hold the two graphs."""
    from automoe.export.onnx import fix_custom_op_shapes, export_graphs, quantize_int8, to_onnx

    model.save_pretrained(root / "model", tokenizer_file=tokenizer)
    folders = {"compact": to_onnx(root / "model", root / "compact", quantize="int8", moe_dispatch="compact")}
    for form in fused:
        folders[form] = root / form
        folders[form].mkdir()
        graphs = export_graphs(model, folders[form], forms=dict.fromkeys(("encoder", "decoder", "beam_search"), form))
        for path in (graphs["encoder"], graphs["decoder"]):
            quantize_int8(path)
            fix_custom_op_shapes(path)
    return folders


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True, help="supernet folder: trained weights and routers")
    p.add_argument("--data", required=True, help="dataset folder (test split, spm.model)")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--width", type=int, default=None, help="expert width (default: the widest of the space)")
    p.add_argument("--sentences", type=int, default=96)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8], help="decoder batch sizes (sentences)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3, help="passes over the recorded inputs (at least 2: per-item minima)")
    p.add_argument("--turn", type=int, default=8, help="items (sources or batches) per form turn, warm-up included")
    p.add_argument("--warmup", type=int, default=1, help="untimed items at the start of every turn")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(RESULTS / "moe_forms.jsonl"))
    args = p.parse_args(argv)
    for name in ("experts", "sentences", "beam", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    if args.rounds < 2:
        p.error("--rounds must be at least 2 (the per-item minima are taken over rounds)")
    if min(args.batches) < 1 or not 0 <= args.warmup < args.turn:
        p.error("--batches must be >= 1, and --warmup at least 0 and below --turn")
    env = environment()  # the commit and time the run started with

    import onnxruntime as ort
    import torch

    from automoe.evaluate import read_split
    from automoe.export import kernel
    from automoe.serve import Translator
    from automoe.train import load_supernet

    torch.set_num_threads(args.threads)
    supernet = load_supernet(args.supernet)
    width = args.width or max(supernet.space.ffn_dims)
    model = build_models(supernet, width, args.experts, traced=False)[f"moe-{args.experts}"]
    sources, _ = read_split(args.data, "test", limit=args.sentences)
    fused = tuple(form for form in FUSED if form != "kernel" or kernel.available())
    forms = ("compact", *fused)
    options = {}
    for form in forms:
        options[form] = ort.SessionOptions()
        options[form].intra_op_num_threads, options[form].inter_op_num_threads = args.threads, 1
        if form == "kernel":
            options[form].register_custom_ops_library(str(kernel.build_library()))
    with tempfile.TemporaryDirectory() as tmp:
        folders = export_forms(model, Path(tmp), Path(args.data) / "spm.model", fused)
        translator = Translator.from_pretrained(folders["compact"], threads=args.threads)
        items = {"encoder": [[encoder_feeds(ids, model.config.bos_id)] for ids in translator._encode(sources) if ids]}
        for batch in args.batches:
            items[f"decoder@{batch}"] = record_steps(translator, sources, args.beam, batch=batch)
        sessions = {graph: {form: ort.InferenceSession(str(folders[form] / f"{graph.split('@')[0]}.onnx"), options[form],
                                                       providers=["CPUExecutionProvider"]) for form in forms}
                    for graph in items}
        graphs = {}
        for graph, feeds in items.items():
            turn = min(args.turn, max(2, len(feeds) // 4))  # a few big batches: shorter turns, more pairs
            seconds = replay(sessions[graph], feeds, args.rounds, turn, min(args.warmup, turn - 1))
            pooled = {form: [t for turns in rounds for steps in turns for t in steps] for form, rounds in seconds.items()}
            vs = {form: ratio_stats(seconds, form, "compact") for form in fused}
            graphs[graph] = {"rows_per_call": None if graph == "encoder" else feeds[0][0]["input_ids"].shape[0],
                             "items": len(feeds), "turn": turn, **{f"{form}_call": summary_ms(pooled[form]) for form in forms},
                             "ratios": {form: {"ratio": v["overhead"], "min": v["overhead_min"], "quartiles": v["quartiles"]}
                                        for form, v in vs.items()},
                             "paired_turns": vs[fused[0]]["turns"]}
    record = {"benchmark": "moe_forms", "supernet": str(args.supernet), "experts": args.experts, "width": width,
              "quantization": "int8", "threads": args.threads, "beam": args.beam, "sentences": len(sources),
              "rounds": args.rounds, "turn": args.turn, "warmup": args.warmup, "graphs": graphs,
              "l3_cache": l3_cache(), **env}
    append_jsonl(Path(args.out), [record])
    for graph, g in graphs.items():
        print(f"width {width}, {graph}: " + ", ".join(f"{form} {g[f'{form}_call']['median_ms']:.3f} ms" for form in forms)
              + " per call; " + ", ".join(f"{form} over compact {100 * v['ratio']:+.1f}% (per-item minima "
                                          f"{100 * v['min']:+.1f}%)" for form, v in g["ratios"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
