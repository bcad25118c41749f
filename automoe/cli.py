"""The `automoe` command: thin verbs over the library's typed functions."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from . import __version__
from .cli_bench import add_bench_verb
from .cli_data import add_data_verbs
from .cli_models import add_model_verbs
from .cli_search import _arch_from_arg, add_search_verbs
from .cli_shortlist import add_shortlist_verbs
from .cli_train import add_train_verbs
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

    add_data_verbs(verbs)
    add_train_verbs(verbs)
    add_model_verbs(verbs)
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
    except BrokenPipeError:  # the reader went away (`automoe translate ... | head -1`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"automoe {args.verb}: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, ValueError, OSError, ImportError) as e:  # bad input, files or setup: what to do, no traceback
        print(f"automoe {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if not type(e).__module__.startswith("automoe"):  # a bug or a runtime's own failure: keep the traceback
            raise
        print(f"automoe {args.verb}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
