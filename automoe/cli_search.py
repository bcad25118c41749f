"""The `automoe search ...` and `automoe extract` verbs: latency tables, predictor, evolutionary
search and subnet extraction (registered on the main parser by `automoe.cli`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .config import ArchConfig, ConfigError, SearchSpace


def _arch_from_arg(space: SearchSpace, value: str) -> ArchConfig:
    """`dense`, `switch`, `smallest`, `largest` or a JSON file holding an ArchConfig."""
    named = {"dense": space.dense_baseline, "switch": space.switch_baseline,
             "smallest": space.smallest, "largest": space.largest}
    if value in named:
        return named[value]()
    path = Path(value)
    if not path.is_file():
        raise ConfigError(f"--arch {value!r}: not one of {sorted(named)} and no such JSON file")
    return ArchConfig.load(path)


def _space_arg(value: str) -> SearchSpace:
    return SearchSpace.load(value) if Path(value).is_file() else SearchSpace.preset(value)


def cmd_search_latency_table(args: argparse.Namespace) -> int:
    """Measure random architectures of a space on an engine into a JSONL latency table (resumable)."""
    import dataclasses

    from .checkpoint import load_tokenizer
    from .data import encode_file
    from .search.run import latency_table

    sp = load_tokenizer(args.data)
    space_arg = args.space or (str(Path(args.supernet) / "space.json") if args.supernet else "small")
    space = _space_arg(space_arg)
    space = dataclasses.replace(space, vocab_size=sp.vocab_size())
    sentences = encode_file(sp, Path(args.data) / "dev.src", space.max_positions)[: args.sentences]
    out = latency_table(space, args.out, samples=args.samples, sentences=sentences, engine=args.engine,
                        threads=args.threads, quantize=None if args.quantize == "none" else args.quantize,
                        out_len=args.out_len, tokenizer_file=Path(args.data) / "spm.model", seed=args.seed,
                        repeats=args.repeats, reference=None if args.reference == "none" else args.reference,
                        supernet_dir=args.supernet)
    print(out)
    return 0


def cmd_search_fit_predictor(args: argparse.Namespace) -> int:
    """Fit the latency predictor on a latency table; report held-out MAPE and Kendall tau (vs HAT's)."""
    import dataclasses

    from .search.run import fit_predictor, read_table

    archs, _ = read_table(args.table)
    space = dataclasses.replace(_space_arg(args.space), vocab_size=archs[0].vocab_size)
    report = fit_predictor(space, args.table, args.out, holdout=args.holdout, seed=args.seed, members=args.members,
                           model=args.model)
    print(json.dumps(report))
    return 0


# DartsConfig fields settable from `search run --method darts` (d_model: the supernet width)
DARTS_FLAGS = {"steps": int, "max_tokens": int, "warmup": int, "arch_start": int, "splits": int, "d_model": int,
               "lr": float, "arch_lr": float, "latency_weight": float, "minutes": float, "save_every_minutes": float}


def cmd_search_darts(args: argparse.Namespace) -> int:
    """Differentiable (DARTS) search on multi-split reversible layers; trains its own relaxed supernet."""
    from .search.darts import DartsConfig
    from .search.darts_run import run_darts

    if args.gflops is not None:
        raise ConfigError("--gflops: not available with --method darts")
    space_arg = args.space or (str(Path(args.supernet) / "space.json") if args.supernet else "small")
    given = {flag: getattr(args, flag) for flag in DARTS_FLAGS if getattr(args, flag) is not None}
    cfg = DartsConfig(**given, reversible=not args.no_reversible, seed=args.seed)
    best = run_darts(_space_arg(space_arg), args.data, args.out, cfg, latency_ms=args.latency_ms,
                     predictor=args.predictor, dense_only=args.dense_only, resume=args.resume)
    print(best.to_json())
    return 0


def cmd_search_run(args: argparse.Namespace) -> int:
    """Evolutionary search on a trained supernet under a latency and/or GFLOPs budget (or, with
    --method darts, a differentiable search that trains its own relaxed supernet)."""
    from .search.evolution import EvolutionConfig

    if args.method == "darts":
        return cmd_search_darts(args)
    if args.supernet is None:
        raise ConfigError("--supernet is required by the evolutionary search (--method evolution)")
    from .search.run import run_search

    cfg = EvolutionConfig(population=args.population, parents=args.parents, mutations=args.mutations,
                          mutation_prob=args.mutation_prob, crossovers=args.crossovers, iterations=args.iterations,
                          max_tries=args.max_tries, seed=args.seed)
    best = run_search(args.supernet, args.data, args.out, latency_ms=args.latency_ms, predictor=args.predictor,
                      gflops=args.gflops, dense_only=args.dense_only, config=cfg, resume=args.resume,
                      fitness_sentences=args.fitness_sentences, workers=args.workers)
    print(best.to_json())
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    """Extract a subnet of a trained supernet into a standalone model folder."""
    from .extract import extract_subnet
    from .supernet_folder import load_supernet

    supernet = load_supernet(args.supernet)
    arch = _arch_from_arg(supernet.space, args.arch)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise FileExistsError(f"{out} exists and is not empty; pass --force to replace it")
    info = {"extracted_from": str(args.supernet)}
    supernet_info = Path(args.supernet) / "supernet_info.json"
    if supernet_info.exists():
        info["supernet_training"] = json.loads(supernet_info.read_text(encoding="utf-8"))
    tok = Path(args.tokenizer) if args.tokenizer else Path(args.supernet) / "spm.model"
    extract_subnet(supernet, arch).save_pretrained(out, tokenizer_file=tok if tok.exists() else None, training=info)
    print(out)
    return 0


def add_search_verbs(verbs) -> None:
    """Add the `search` and `extract` verbs to the main parser's subparsers `verbs`."""
    se = verbs.add_parser("search", help="latency tables, predictor, evolutionary or differentiable (DARTS) search").add_subparsers(
        dest="search_verb", metavar="ACTION", required=True)
    lt = se.add_parser("latency-table", help="measure random architectures on an engine",
                       description=cmd_search_latency_table.__doc__)
    lt.add_argument("--space", default=None, help="preset or space.json (default: the supernet's space, else small)")
    lt.add_argument("--data", required=True, help="dataset folder: real dev sentences and the tokenizer")
    lt.add_argument("--engine", default="onnxruntime", choices=["onnxruntime", "ctranslate2", "torch"])
    lt.add_argument("--samples", type=int, required=True)
    lt.add_argument("--out", required=True, help="JSONL table (appended; resumes)")
    lt.add_argument("--threads", type=int, default=1)
    lt.add_argument("--quantize", default="int8", choices=["int8", "int8-row", "none"],
                    help="the export's int8 form (int8-row: onnxruntime only, automoe's per-row operator; default int8)")
    lt.add_argument("--sentences", type=int, default=20, help="dev sentences timed per architecture")
    lt.add_argument("--out-len", type=int, default=30, help="fixed output length")
    lt.add_argument("--seed", type=int, default=0)
    lt.add_argument("--repeats", type=int, default=2, help="decodes per sentence; the fastest counts")
    lt.add_argument("--reference", default="smallest", choices=["smallest", "largest", "none"],
                    help="architecture timed beside every candidate; rows hold the ratio to it (robust to "
                         "machine drift)")
    lt.add_argument("--supernet", default=None,
                    help="measure a trained supernet's inherited weights (routing as trained) instead of random ones")
    lt.set_defaults(func=cmd_search_latency_table)
    fp = se.add_parser("fit-predictor", help="fit the latency predictor on a table",
                       description=cmd_search_fit_predictor.__doc__)
    fp.add_argument("--table", required=True)
    fp.add_argument("--space", default="small")
    fp.add_argument("--out", required=True, help="predictor file (.safetensors)")
    fp.add_argument("--holdout", type=float, default=0.2)
    fp.add_argument("--seed", type=int, default=0)
    fp.add_argument("--model", default="linear", choices=["linear", "mlp"],
                    help="ridge regression of log-latency on whole-model sums (measured best here) or an MLP ensemble")
    fp.add_argument("--members", type=int, default=5, help="MLPs in an mlp ensemble")
    fp.set_defaults(func=cmd_search_fit_predictor)
    rn = se.add_parser("run", help="evolutionary (or DARTS) search", description=cmd_search_run.__doc__)
    rn.add_argument("--method", default="evolution", choices=["evolution", "darts"],
                    help="evolution on a trained supernet, or DARTS (docs/darts.md)")
    rn.add_argument("--supernet", default=None, help="supernet folder (supernet.safetensors + space.json); "
                    "required by evolution, gives DARTS its space")
    rn.add_argument("--data", required=True, help="dataset folder (dev split for the fitness)")
    rn.add_argument("--out", required=True, help="search folder (search.jsonl, best.json, state)")
    rn.add_argument("--latency-ms", type=float, default=None, help="predicted latency budget")
    rn.add_argument("--predictor", default=None, help="latency predictor file")
    rn.add_argument("--gflops", type=float, default=None, help="GFLOPs budget (30+30 tokens)")
    rn.add_argument("--dense-only", action="store_true", help="one expert per layer (the HAT baseline)")
    rn.add_argument("--resume", action="store_true",
                    help="continue the search in --out (evolution: its saved state; DARTS: its checkpoint, with the "
                         "same flags except --steps, --minutes and --save-every-minutes)")
    rn.add_argument("--fitness-sentences", type=int, default=200, help="dev pairs of the fitness (validation loss)")
    rn.add_argument("--workers", type=int, default=1,
                    help="processes evaluating the fitness in parallel (torch threads are split between them)")
    from .search.evolution import EvolutionConfig

    e = EvolutionConfig()
    for flag in ("population", "parents", "mutations", "crossovers", "iterations", "max_tries", "seed"):
        rn.add_argument(f"--{flag.replace('_', '-')}", type=int, default=getattr(e, flag))
    rn.add_argument("--mutation-prob", type=float, default=e.mutation_prob)
    # defaults stay in DartsConfig (flags left out keep them); importing it here would load torch on every command
    dg = rn.add_argument_group("DARTS (--method darts; unset flags keep the DartsConfig defaults, docs/darts.md)")
    dg.add_argument("--space", default=None, help="preset or space.json (default: the supernet's space, else small)")
    darts_help = {"steps": "weight steps in all (raise it with --resume to extend a search)",
                  "minutes": "end this run (or resumed segment) after this much wall time; best.json is still "
                             "written and --resume continues",
                  "save_every_minutes": "checkpoint interval (default 5); a killed search resumes from the last one",
                  "d_model": "width of the relaxed network (a choice of the space; default the widest)"}
    for flag, kind in DARTS_FLAGS.items():
        dg.add_argument(f"--{flag.replace('_', '-')}", type=kind, default=None, help=darts_help.get(flag))
    dg.add_argument("--no-reversible", action="store_true", help="store activations instead of reconstructing them")
    rn.set_defaults(func=cmd_search_run)

    xt = verbs.add_parser("extract", help="extract a supernet subnet into a model folder", description=cmd_extract.__doc__)
    xt.add_argument("supernet", help="supernet folder")
    xt.add_argument("--arch", required=True, help="best.json / ArchConfig JSON, or largest | smallest | dense | switch")
    xt.add_argument("--out", required=True, help="model folder to write")
    xt.add_argument("--tokenizer", default=None, help="SentencePiece model (default: the supernet folder's spm.model)")
    xt.add_argument("--force", action="store_true")
    xt.set_defaults(func=cmd_extract)
