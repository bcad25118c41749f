"""Package a trained supernet run or model folder into models/ (fp16 safetensors + card).

The card's numbers come from config/provenance files and from results records: the test
evaluation this script writes (benchmarks/results/eval.jsonl, `automoe eval --results` semantics)
and the last `automoe bench` run (benchmarks/results/bench.jsonl).

    python tools/ship.py supernet runs/supernet-v3 models/supernet-small-bible-v3 --data data/bible-en-de
    python tools/ship.py model runs/models/switch-small-bible models/switch-small-bible --data data/bible-en-de --family switch
    python tools/ship.py model runs/models/automoe-small-bible-third-distill models/automoe-small-bible-third \\
        --data data/bible-en-de --family automoe --budget 1/3
    python tools/ship.py card models/dense-small-bible     # the card only, from the results files
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from automoe.bench import run_environment
from automoe.bench_results import append_records

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
EVAL = RESULTS / "eval.jsonl"
BENCH = RESULTS / "bench.jsonl"


def evaluate_arch(model, tokenizer, data: str, name: str, source: str, beam: int, limit: int | None) -> dict:
    """BLEU/chrF of a model on the test split, as one eval.jsonl record."""
    from automoe.serve import Translator

    from automoe.evaluate import evaluate
    from automoe.search.flops import cost

    record = evaluate(Translator(model, tokenizer, threads=2), data, split="test", beam=beam, limit=limit)
    return {"model": source, "arch_name": name, **record, "params": cost(model.config).total_params,
            "arch": model.config.to_dict(), **run_environment()}


def ship_supernet(run_dir: Path, out: Path, data: str, beam: int, limit: int | None) -> None:
    """fp16 supernet weights + space + tokenizer + provenance + card with largest/smallest BLEU."""
    import torch

    from automoe.card import model_card, read_records
    from automoe.checkpoint import load_state_dict, save_state_dict
    from automoe.data import load_tokenizer
    from automoe.extract import extract_subnet
    from automoe.supernet_folder import load_supernet

    out.mkdir(parents=True, exist_ok=True)
    save_state_dict(load_state_dict(run_dir / "supernet.safetensors"), out / "supernet.safetensors", dtype=torch.float16)
    for name in ("space.json", "supernet_info.json", "weight_sharing.json"):  # the last: MoS supernets only
        if name != "weight_sharing.json" or (run_dir / name).exists():
            shutil.copyfile(run_dir / name, out / name)
    # runs started before the tokenizer travelled with the supernet lack spm.model: take the data's
    tok = run_dir / "spm.model" if (run_dir / "spm.model").exists() else Path(data) / "spm.model"
    shutil.copyfile(tok, out / "spm.model")
    supernet = load_supernet(out)  # the fp16 copy: what users get
    tokenizer = load_tokenizer(out / "spm.model")
    records = [evaluate_arch(extract_subnet(supernet, arch), tokenizer, data, name, str(out), beam, limit)
               for name, arch in (("largest", supernet.space.largest()), ("smallest", supernet.space.smallest()))]
    append_records(EVAL, records)
    training = json.loads((out / "supernet_info.json").read_text())
    evals = read_records(EVAL, model=str(out))
    card = model_card(
        f"automoe supernet, search space `{supernet.space.name}`, Bible en-de",
        "Weight-sharing supernet: every layer holds up to "
        f"{supernet.space.max_experts} experts of widths {list(supernet.space.ffn_dims)}; any architecture of the "
        "space runs with inherited weights by prefix-slicing. The architecture below is the supernet's own "
        "(every expert at full width); the evaluation rows are subnets with inherited weights, no fine-tuning.",
        supernet.space.supernet_arch(), training, evals,
        usage="```bash\nautomoe eval models/SUPERNET --arch largest --data data/bible-en-de\n"
              "automoe extract models/SUPERNET --arch smallest --out models/my-subnet\n```",
        limitations="Trained for a few CPU hours on the public-domain Bible (WEB -> Elberfelder 1932) only; "
                    "subnets with inherited weights are a starting point for search and fine-tuning, not a "
                    "production translator.")
    (out / "README.md").write_text(card, encoding="utf-8")
    for r in records:
        print(f"{r['arch_name']:10s} BLEU {r['bleu']:.2f} chrF {r['chrf']:.2f} ({r['sentences']} sentences, beam {beam})")


FAMILIES = {
    "dense": ("automoe dense baseline, search space `{space}`, Bible en-de",
              "The dense baseline of DESIGN.md section 4: the largest dense architecture of the space (one FFN "
              "of the widest width per layer), trained from scratch on the same data with the optimiser settings "
              "of the supernet's first training segment (peak lr 9e-4, 200 warm-up updates, inverse-sqrt decay, "
              "3,000-token batches, dropout 0.1, label smoothing 0.1, bf16 autocast)."),
    "switch": ("automoe Switch baseline, search space `{space}`, Bible en-de",
               "The Switch Transformer baseline of DESIGN.md section 4: the dense baseline with top-1 experts of "
               "the widest width in every layer and the load-balancing loss, trained from scratch on the same data "
               "and token budget as the dense baseline."),
    "automoe": ("automoe searched MoE subnet at {budget} of the dense latency, search space `{space}`, Bible en-de",
                "A sparse Mixture-of-Experts subnet found by automoe's evolutionary search (AutoMoE, arXiv "
                "2210.07535) in the supernet of the space under a latency budget of {budget} of the dense "
                "baseline's (ONNX Runtime int8, 1 thread, batch 1, beam 4; benchmarks/results/search/), extracted "
                "into this standalone model and trained on the same data and token budget as the dense baseline."),
    "hat": ("automoe HAT-style dense subnet at {budget} of the dense latency, search space `{space}`, Bible en-de",
            "A dense subnet found by the same evolutionary search restricted to one expert per layer (HAT, arXiv "
            "2005.14187) under a latency budget of {budget} of the dense baseline's, extracted and trained on the "
            "same data and token budget as the dense baseline: the comparison point for the AutoMoE subnets."),
}


def family_card(out: Path, space: str = "small", family: str | None = None, budget: str | None = None) -> str:
    """The card of a shipped model folder from its config.json and the results files. The family
    and budget default to those `ship_model` recorded in the training provenance."""
    from automoe.card import model_card, read_records
    from automoe.checkpoint import read_model_config

    arch, meta = read_model_config(out)
    recorded = meta.get("training") or {}
    family, budget = family or recorded.get("family", "dense"), budget or recorded.get("budget")
    title, summary = FAMILIES[family]
    if "{budget}" in title and not budget:
        raise SystemExit(f"a {family} card names its latency budget: pass --budget, e.g. 1/3")
    return model_card(title.format(space=space, budget=budget), summary.format(budget=budget), arch,
                      meta.get("training") or {}, read_records(EVAL, model=str(out)),
                      read_records(RESULTS / "engines.jsonl", model=str(out)),
                      usage=f'```python\nfrom automoe import Translator\n\ntr = Translator.from_pretrained("{out}", '
                            f'engine="onnxruntime", quantize="int8-row")\nprint(tr.translate(["Jesus wept."]))\n```',
                      limitations="Trained for a few CPU hours on the public-domain Bible (WEB -> Elberfelder 1932) "
                                  "only; expect low quality outside that domain.",
                      bench_records=read_records(BENCH, model=out.name))


def ship_model(src: Path, out: Path, data: str, beam: int, limit: int | None, family: str, space: str,
               budget: str | None, init_note: str | None = None) -> None:
    """A trained model folder -> fp16 copy in `out` (may be `src`), test BLEU record and card
    (`init_note`: what the card says of the supernet the model inherited from, e.g. that it is not
    shipped)."""
    import torch

    from automoe.data import load_tokenizer
    from automoe.modeling import MoETransformer

    model = MoETransformer.from_pretrained(src).eval()  # in memory first: `out` may be `src`
    model.to(torch.float16).float()  # the fp16-rounded weights users get, evaluated before the one write
    tok_file = src / model.meta["tokenizer"]["file"]
    record = evaluate_arch(model, load_tokenizer(tok_file), data, None, str(out), beam, limit)
    append_records(EVAL, [record])
    # the demo opens on the best shipped model by this recorded score
    training = {**(model.meta.get("training") or {}), "family": family, "budget": budget,
                "eval": {k: record[k] for k in ("split", "sentences", "beam", "bleu", "chrf")}}
    if init_note:
        training["init_note"] = init_note
    model.save_pretrained(out, tokenizer_file=tok_file, training=training, dtype=torch.float16)
    (out / "README.md").write_text(family_card(out, space, family, budget), encoding="utf-8")
    print(f"{out}: BLEU {record['bleu']:.2f} chrF {record['chrf']:.2f} ({record['sentences']} sentences, beam {beam})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=["supernet", "model", "card"],
                   help="supernet | model (fp16 copy, test eval, card) | card (rewrite a shipped baseline's card only)")
    p.add_argument("run_dir", help="the trained run or model folder (with card: the shipped folder)")
    p.add_argument("out", nargs="?", help="the folder to write (default: run_dir)")
    p.add_argument("--data", help="dataset folder for the test evaluation (supernet, model)")
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--limit", type=int, default=None, help="evaluate on the first N test pairs only")
    p.add_argument("--family", choices=sorted(FAMILIES), default=None,
                   help="which card text (model: default dense; card: the family recorded when shipped)")
    p.add_argument("--budget", default=None, help="with --family automoe/hat: the latency budget, e.g. 1/3")
    p.add_argument("--space", default="small", help="with `model`: the search space named in the card")
    p.add_argument("--init-note", default=None,
                   help="with `model`: a note on the supernet it inherited from, for the card (e.g. where it is)")
    args = p.parse_args(argv)
    args.out = args.out or args.run_dir
    if args.kind != "card" and not args.data:
        p.error(f"{args.kind} evaluates on the test split: give --data")
    if args.kind == "card":
        (Path(args.out) / "README.md").write_text(family_card(Path(args.out), args.space, args.family, args.budget),
                                                  encoding="utf-8")
    elif args.kind == "supernet":
        ship_supernet(Path(args.run_dir), Path(args.out), args.data, args.beam, args.limit)
    else:
        ship_model(Path(args.run_dir), Path(args.out), args.data, args.beam, args.limit, args.family or "dense", args.space,
                   args.budget, args.init_note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
