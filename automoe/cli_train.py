"""The `automoe train` verbs: a weight-sharing supernet or one architecture."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .cli_search import _arch_from_arg
from .config import SearchSpace

def _train_config(args: argparse.Namespace):
    """The TrainConfig given by the training flags."""
    from .config import TrainConfig

    fields = ("max_tokens", "update_freq", "lr", "warmup_updates", "schedule", "label_smoothing", "clip_norm",
              "balance_coef", "dropout", "max_updates", "max_tokens_seen", "minutes", "seed",
              "save_every_minutes", "valid_every", "valid_sentences", "bf16")
    extra = {"sandwich": args.sandwich} if hasattr(args, "sandwich") else {}
    return TrainConfig(data=str(args.data), **{f: getattr(args, f) for f in fields}, **extra)


def _data_vocab(data_dir: str) -> int:
    from .checkpoint import load_tokenizer

    return load_tokenizer(data_dir).vocab_size()


def cmd_train_supernet(args: argparse.Namespace) -> int:
    """Train the weight-sharing supernet of a search space on a dataset folder."""
    import dataclasses

    import torch

    from .supernet import WeightSharing
    from .train import init_distributed, train_supernet

    sharing = WeightSharing(args.weight_sharing, args.mos_sets, args.mos_hidden)
    if args.threads:
        torch.set_num_threads(args.threads)
    init_distributed()
    space = SearchSpace.load(args.space) if Path(args.space).is_file() else SearchSpace.preset(args.space)
    vocab = _data_vocab(args.data)
    if vocab != space.vocab_size:
        logging.getLogger("automoe").info("vocabulary of %s is %d: using it instead of the space's %d",
                                          args.data, vocab, space.vocab_size)
        space = dataclasses.replace(space, vocab_size=vocab)
    state = train_supernet(space, _train_config(args), args.run_dir, resume=args.resume, init_from=args.init_from,
                           sharing=sharing)
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


def add_train_verbs(verbs) -> None:
    """Register `automoe train supernet|model` on the CLI's verb subparsers."""
    train = verbs.add_parser("train", help="train a supernet or a model").add_subparsers(
        dest="train_verb", metavar="WHAT", required=True)
    sup = train.add_parser("supernet", help="weight-sharing supernet -> runs/NAME/supernet.safetensors",
                           description=cmd_train_supernet.__doc__)
    sup.add_argument("--run-dir", required=True, help="run folder (checkpoint, log, supernet weights)")
    sup.add_argument("--sandwich", action="store_true", help="also train the largest and smallest subnet each update")
    sup.add_argument("--init-from", default=None,
                     help="start from the weights of a supernet folder of the same kind, or a mos-* supernet from a "
                          "prefix one (fresh optimizer; use --resume to continue a run)")
    sup.add_argument("--weight-sharing", default="prefix", metavar="KIND",
                     help="prefix (slices of one weight set, HAT) | mos-layer | mos-neuron (Mixture-of-Supernets: "
                          "weight sets mixed per matrix or per output neuron by an architecture router; docs/mos.md)")
    sup.add_argument("--mos-sets", type=int, default=None, help="MoS: weight sets E per matrix (default 2)")
    sup.add_argument("--mos-hidden", type=int, default=None, help="MoS: hidden units H of the architecture router "
                                                                  "(default 128)")
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
