"""The verbs that use a model folder: eval, translate, export, serve, push, pull."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli_search import _arch_from_arg
from .config import ConfigError

def _load_eval_model(args: argparse.Namespace):
    """A Translator for MODEL: a model folder, or a supernet run folder with --arch (inherited weights)."""
    from automoe.serve.translator import Translator

    from .checkpoint import load_tokenizer

    folder = Path(args.model)
    if (folder / "supernet.safetensors").exists():
        from .extract import extract_subnet
        from .supernet_folder import load_supernet

        if not args.arch:
            raise ConfigError(f"{folder} is a supernet run: pass --arch (largest, smallest or an ArchConfig JSON)")
        supernet = load_supernet(folder)
        arch = _arch_from_arg(supernet.space, args.arch)
        model = extract_subnet(supernet, arch)  # in memory only: nothing is written
        if args.engine not in (None, "torch"):
            raise ConfigError("inherited supernet weights are evaluated with the torch engine; extract them first")
        return Translator(model, load_tokenizer(args.data), threads=args.threads), arch
    if args.arch:
        raise ConfigError("--arch applies to a supernet run folder only; a model folder has its own config")
    translator = Translator.from_pretrained(args.model, engine=args.engine, quantize=args.quantize,
                                            threads=args.threads)
    return translator, translator.config


def cmd_eval(args: argparse.Namespace) -> int:
    """Translate a dataset split (beam search) and print BLEU/chrF with sacrebleu signatures as one JSON line."""
    from .evaluate import evaluate
    from .search.flops import cost

    translator, arch = _load_eval_model(args)
    record = evaluate(translator, args.data, split=args.split, beam=args.beam, limit=args.limit,
                      hypotheses_file=args.hypotheses)
    record = {"model": str(args.model), "arch_name": args.arch or None, **record,
              "params": cost(arch).total_params, "arch": arch.to_dict()}
    line = json.dumps(record)
    print(line)
    if args.results:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return 0


def _stdin_lines() -> list[str]:
    """The lines of stdin, strictly UTF-8 (an error names the first bad line); empty stdin has none."""
    raw = sys.stdin.buffer.read()
    if not raw:
        return []
    lines = []
    for n, chunk in enumerate(raw.split(b"\n"), 1):
        try:
            lines.append(chunk.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise ValueError(f"stdin line {n} is not valid UTF-8 (byte 0x{chunk[e.start]:02x} at column "
                             f"{e.start + 1}); re-encode the input as UTF-8") from None
    if lines and lines[-1] == "" and raw.endswith(b"\n"):
        lines.pop()
    return lines


def cmd_translate(args: argparse.Namespace) -> int:
    """Translate sentences given as arguments, or one per line on stdin, to stdout (same order)."""
    from automoe.serve.translator import Translator

    translator = Translator.from_pretrained(args.model, engine=args.engine, quantize=args.quantize,
                                            threads=args.threads, verify=not args.no_verify,
                                            shortlist=args.shortlist)
    sentences = args.sentences or _stdin_lines()
    for line in translator.translate(sentences, beam=args.beam, max_length=args.max_length):
        print(line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model folder for ONNX Runtime (any architecture) or CTranslate2 (dense subnets);
    `automoe translate OUT` then runs the export."""
    out = Path(args.out) if args.out else Path("exports") / f"{Path(args.model).name}-{args.to}-{args.quantize or 'fp32'}"
    if args.to == "onnx":
        from automoe.export.onnx import to_onnx

        to_onnx(args.model, out, quantize=args.quantize, force=args.force, verify=not args.no_verify)
    else:
        from automoe.export.ctranslate2 import to_ctranslate2

        to_ctranslate2(args.model, out, quantize=args.quantize, force=args.force, verify=not args.no_verify)
    print(out)
    print(f"translate with this export: automoe translate {out} \"Jesus wept.\"", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the Gradio demo (translate, compare models, routing view) on 127.0.0.1 unless --host says otherwise."""
    from automoe.serve.app import launch

    launch(args.models or None, host=args.host, port=args.port, default=args.default, data_dir=args.data,
           concurrency_limit=args.concurrency, threads=args.threads)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Upload a model folder (config, safetensors, tokenizer, card, exports) to a Hub repo; print the commit id."""
    from .hub import push

    print(push(args.model_dir, args.repo_id, private=args.private, revision=args.revision,
               commit_message=args.message))
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    """Download a model repo (JSON, safetensors, tokenizer, card and export files only); print its folder."""
    from .hub import pull

    print(pull(args.repo_id, revision=args.revision, local_dir=args.out))
    return 0


def add_model_verbs(verbs) -> None:
    """Register eval, translate, export, serve, push and pull on the CLI's verb subparsers."""
    ev = verbs.add_parser("eval", help="BLEU/chrF of a model on a dataset split", description=cmd_eval.__doc__)
    ev.add_argument("model", help="model folder or Hub id, or a supernet run folder (with --arch)")
    ev.add_argument("--data", required=True, help="dataset folder")
    ev.add_argument("--split", default="test", choices=["train", "dev", "test"])
    ev.add_argument("--beam", type=int, default=4)
    ev.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    ev.add_argument("--arch", default=None, help="with a supernet: largest | smallest | dense | ArchConfig JSON")
    ev.add_argument("--engine", default=None, choices=["torch", "onnxruntime", "ctranslate2"],
                    help="default: torch for a model folder, the export's runtime for an export folder")
    ev.add_argument("--quantize", default=None, choices=["int8", "int8-row"],
                    help="with --engine on a model folder (int8-row: onnxruntime only, see `automoe export`)")
    ev.add_argument("--threads", type=int, default=None)
    ev.add_argument("--hypotheses", default=None, help="also write the translations to this file")
    ev.add_argument("--results", default=None, help="append the JSON line to this JSONL file")
    ev.set_defaults(func=cmd_eval)

    tr = verbs.add_parser("translate", help="translate arguments or stdin lines", description=cmd_translate.__doc__,
                          intermixed=True)
    tr.add_argument("model", help="model folder, export folder (from `automoe export`) or Hub repo id")
    tr.add_argument("sentences", nargs="*", help="sentences (default: read stdin, one per line; empty stdin: no output)")
    tr.add_argument("--engine", default=None, choices=["torch", "onnxruntime", "ctranslate2"],
                    help="default: torch for a model folder, the export's runtime for an export folder; a model "
                         "folder with onnxruntime/ctranslate2 is exported into a cache first")
    tr.add_argument("--quantize", default=None, choices=["int8", "int8-row"],
                    help="with --engine onnxruntime/ctranslate2 on a model folder (default fp32; int8-row: "
                         "onnxruntime only, see `automoe export`)")
    tr.add_argument("--beam", type=int, default=4, help="beam size, 1..128 (default 4)")
    tr.add_argument("--max-length", type=int, default=None, help="output token limit")
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--shortlist", action="store_true",
                    help="decode over the model's lexical shortlist (`automoe shortlist build` or `tune` first)")
    tr.add_argument("--no-verify", action="store_true",
                    help="skip the sha256 check of the weight and tokenizer files (for files edited on purpose)")
    tr.set_defaults(func=cmd_translate)

    ex = verbs.add_parser("export", help="export a model folder for ONNX Runtime or CTranslate2",
                          description=cmd_export.__doc__)
    ex.add_argument("model", help="model folder")
    ex.add_argument("--to", required=True, choices=["onnx", "ct2"], help="target runtime")
    ex.add_argument("--quantize", default=None, choices=["int8", "int8-row", "int16"],
                    help="weight quantization (int16: ct2 only; int8-row: onnx only, every linear layer quantized "
                         "per row by automoe's operator, so a sentence translates alike alone and in a batch)")
    ex.add_argument("--out", default=None, help="output folder (default exports/<model>-<target>-<quantization>)")
    ex.add_argument("--force", action="store_true", help="replace an earlier export in the output folder")
    ex.add_argument("--no-verify", action="store_true",
                    help="skip the sha256 check of the model's weight and tokenizer files (for files edited on purpose)")
    ex.set_defaults(func=cmd_export)

    sv = verbs.add_parser("serve", help="Gradio demo: translate, compare models, routing view",
                          description=cmd_serve.__doc__, intermixed=True)
    sv.add_argument("models", nargs="*", help="model or export folders or Hub repo ids (default: every model folder "
                                              "in ./models); other folders, such as a supernet, are skipped with a note")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=7860)
    sv.add_argument("--default", default=None,
                    help="model selected at start, by folder name (default: the fastest AutoMoE model, else the "
                         "model with the best test BLEU in its config.json, else the first given)")
    sv.add_argument("--data", default=None, help="dataset folder whose test split gives the example sentences")
    sv.add_argument("--concurrency", type=int, default=2, help="requests translated at the same time (queue limit)")
    sv.add_argument("--threads", type=int, default=1, help="intra-op threads per request, on every engine")
    sv.set_defaults(func=cmd_serve)

    ps = verbs.add_parser("push", help="upload a model folder to a Hugging Face Hub repo", description=cmd_push.__doc__)
    ps.add_argument("model_dir", help="model folder (config.json + model.safetensors; no pickles)")
    ps.add_argument("repo_id", help="Hub repo id 'org/name' (created if missing; HF_TOKEN and HF_ENDPOINT honoured)")
    ps.add_argument("--private", action="store_true", help="create the repo as private")
    ps.add_argument("--revision", default=None, help="branch to commit to (default main; created if missing)")
    ps.add_argument("--message", default="Upload automoe model", help="commit message")
    ps.set_defaults(func=cmd_push)

    pl = verbs.add_parser("pull", help="download a model repo from the Hugging Face Hub", description=cmd_pull.__doc__)
    pl.add_argument("repo_id", help="Hub repo id 'org/name'")
    pl.add_argument("--revision", default=None, help="branch, tag or commit id (default main)")
    pl.add_argument("--out", default=None, help="copy into this folder (default: the Hugging Face cache)")
    pl.set_defaults(func=cmd_pull)
