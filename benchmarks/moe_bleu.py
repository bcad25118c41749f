"""Translation quality of a MoE model's int8 MoE forms, where users meet them: one sentence at a time.

At batch 1 `Translator` (engine onnxruntime) decodes with the exported beam graph, whose decoder
writes the MoE layers in the export's form (automoe.export.onnx.export_graphs): `kernel`
(automoe's own int8 operator, the int8 default), `qmoe` (ONNX Runtime's fused QMoE operator), or
`compact` (ONNX Runtime's int8 matrix products in the sort / split / scatter graph). This script
takes the `moe` model of moe_overhead.py (`--experts` experts of `--width` in every layer, weights
and routers of a trained supernet), translates the first `--sentences` test sentences with PyTorch
fp32 (in batches) and with an int8 export in each form, each sentence alone (beam `--beam`), and records
BLEU / chrF of each and the change against PyTorch fp32. Appends to
benchmarks/results/moe_bleu.jsonl.

    python benchmarks/moe_bleu.py --supernet models/supernet-small-bible-v3 --data data/bible-en-de --width 768
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, environment  # noqa: E402
from moe_overhead import build_models  # noqa: E402

FORMS = ("kernel", "qmoe", "compact")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--supernet", required=True, help="trained supernet folder (supernet.safetensors + space.json)")
    p.add_argument("--data", required=True, help="dataset folder (test split, spm.model)")
    p.add_argument("--width", type=int, default=None, help="expert width (default: the widest of the space)")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--sentences", type=int, default=None, help="the first N test sentences (default: all)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    p.add_argument("--out", default=str(RESULTS / "moe_bleu.jsonl"))
    args = p.parse_args(argv)
    env = environment()

    from tqdm import tqdm

    from automoe.evaluate import corpus_scores, read_split
    from automoe.export.onnx import to_onnx
    from automoe.serve import Translator
    from automoe.train import load_supernet

    supernet = load_supernet(args.supernet)
    width = args.width or max(supernet.space.ffn_dims)
    model = build_models(supernet, width, args.experts, traced=False)[f"moe-{args.experts}"]
    sources, references = read_split(args.data, "test", limit=args.sentences)
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "moe"
        model.save_pretrained(folder, tokenizer_file=Path(args.data) / "spm.model")
        translators = {"torch-fp32": Translator.from_pretrained(folder, threads=1)}
        for form in args.forms:
            exported = to_onnx(folder, Path(tmp) / f"onnx-int8-{form}", quantize="int8", moe_dispatch=form)
            translators[f"onnxruntime-int8-{form}"] = Translator.from_pretrained(exported, threads=1)
        for name, tr in translators.items():
            if name == "torch-fp32":  # batched: PyTorch's beam search gives the same tokens alone or in a batch
                hyps = tr.translate(sources, beam=args.beam)
            else:
                hyps = [tr.translate([s], beam=args.beam)[0] for s in tqdm(sources, desc=name, leave=False)]
            scores[name] = corpus_scores(hyps, references)
    base = scores["torch-fp32"]
    record = {"benchmark": "moe_bleu", "supernet": args.supernet, "experts": args.experts, "width": width,
              "beam": args.beam, "batch": 1, "sentences": len(sources),
              "scores": {name: {"bleu": s["bleu"], "chrf": s["chrf"], "bleu_change": round(s["bleu"] - base["bleu"], 2)}
                         for name, s in scores.items()},
              "bleu_signature": base.get("bleu_signature"), **env}
    append_jsonl(Path(args.out), [record])
    for name, s in record["scores"].items():
        print(f"{name:28s} BLEU {s['bleu']:6.2f} ({s['bleu_change']:+.2f})  chrF {s['chrf']:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
