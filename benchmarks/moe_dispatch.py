"""What sparse MoE dispatch costs at decode time, and which ONNX form each graph should use.

One study per run (docs/moe_dispatch.md shows the tables and says why each study is built as it is):
  overhead  decoder.onnx steps of real sentences, recorded once and replayed through a dense model,
            a model with `--experts` top-1 experts per layer and the same with every token on
            expert 0 (the fixed cost of dispatch), paired turn by turn (moe_harness.replay)
  beam      the same models inside the exported beam graph (ONNX Runtime's BeamSearch op, what
            `Translator` runs at batch 1): every sentence decoded to two fixed lengths, one step =
            the difference over the extra steps
  parts     where the fixed cost goes: parts of the compact dispatch cut out of the optimized
            all-tokens-to-expert-0 decoder graph (exact while every token takes expert 0), each timed
  forms     the compact and kernel forms of one MoE model, graph by graph (encoder, decoder.onnx at
            each batch size), paired turn by turn
  bleu      BLEU of a trained MoE model's int8 forms, one sentence at a time (the beam graph)
Models come from a trained supernet (`--supernet`: trained routers, real routing) or, for
overhead / beam / parts, a random-weight supernet of a preset space (`--space`: how it scales).
Each run appends one record to benchmarks/results/moe_<study>.jsonl (moe_overhead_beam.jsonl,
moe_dispatch_parts.jsonl for beam and parts); benchmarks/report.py renders them.

    python benchmarks/moe_dispatch.py --study overhead --supernet models/supernet-small-bible-v3 --data data/bible-en-de
    python benchmarks/moe_dispatch.py --study beam --supernet models/supernet-small-bible-v3 --data data/bible-en-de --width 384
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import moe_harness as h

OUTPUTS = {"overhead": "moe_overhead", "beam": "moe_overhead_beam", "parts": "moe_dispatch_parts",
           "forms": "moe_forms", "bleu": "moe_bleu"}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}%"


# --- overhead: replayed decoder.onnx steps ------------------------------------------------------

def overhead_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the overhead study (decoder.onnx, the compact form in every export)."""
    h.add_replay_arguments(p, turn=6, warmup=2, moe_dispatch=False)
    p.add_argument("--quantize", default="int8", choices=["int8", "none"])


def overhead(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The overhead study's record."""
    h.check_replay_arguments(p, args)
    from automoe.serve import Translator

    models, weights, width, sources = h.study_models(args)
    moe, one = list(models)[1:]
    quantize = None if args.quantize == "none" else args.quantize
    loaders, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            exported = h.export_model(model, Path(tmp) / name, Path(args.data) / "spm.model", quantize)
            sizes[name] = round(sum(p.stat().st_size for p in exported.glob("decoder.onnx*")) / 2**20, 1)
            loaders[name] = lambda folder=exported: Translator.from_pretrained(folder, threads=args.threads).backend.decoder
            if name == moe:
                sentences = h.record_steps(Translator.from_pretrained(exported, threads=args.threads), sources,
                                           args.beam, args.max_length)
        loaders[h.CONTROL] = loaders["dense"]  # the A/A control: the same graph in other sessions
        decoders = h.open_interleaved(loaders, args.instances)
    seconds = h.replay(decoders, sentences, args.rounds, args.turn, args.warmup)
    stats = h.pooled_ms(seconds)
    vs = {"overhead": h.ratio_stats(seconds, moe, "dense"), "dispatch_overhead": h.ratio_stats(seconds, one, "dense"),
          "expert_overhead": h.ratio_stats(seconds, moe, one), "control_overhead": h.ratio_stats(seconds, h.CONTROL, "dense")}
    record = {"benchmark": "moe_overhead", **weights, "experts": args.experts, "width": width, "quantization": quantize,
              "moe_dispatch": "compact", "threads": args.threads, "beam": args.beam, "rows_per_step": args.beam,
              "sentences": len(sources), "max_length": args.max_length, "method": "replayed steps", "rounds": args.rounds,
              "turn": args.turn, "warmup": args.warmup, "instances": args.instances, "opening": "interleaved",
              "timed_steps": stats["dense"]["n"] // args.rounds, "dense_step": stats["dense"], "moe_step": stats[moe],
              "moe_one_expert_step": stats[one], **h.overhead_fields(vs),
              "decoder_mib": {"dense": sizes["dense"], "moe": sizes[moe]}, "l3_cache": h.l3_cache()}
    print(f"width {width}, decoder step against dense (median of {record['paired_turns']} paired turns; per-step "
          f"minima): {moe} {_pct(record['overhead'])} ({_pct(record['overhead_min'])}), all tokens to one expert "
          f"{_pct(record['dispatch_overhead'])}, other experts {_pct(record['expert_overhead'])}, dense against itself "
          f"{_pct(record['control_overhead'])}")
    return record


# --- beam: inside the exported beam graph ------------------------------------------------------

def fixed_length_feeds(ids: list[int], length: int, beam: int) -> dict:
    """Inputs of an exported beam graph that decode source `ids` (EOS-terminated) to exactly `length`
    tokens: the op counts the start token in its lengths, and min_length = max_length keeps the end
    token out until the last step. Refuses `length` < 2: ORT's BeamSearch op fails on a one-token
    decode (Translator does not use the beam graph for one either)."""
    import numpy as np

    if length < 2:
        raise ValueError(f"a fixed-length beam decode needs length >= 2, got {length}")
    src = np.array([ids], np.int32)
    steps = np.array([length + 1], np.int32)
    return {"input_ids": src, "attention_mask": np.ones_like(src), "max_length": steps, "min_length": steps,
            "num_beams": np.array([beam], np.int32), "num_return_sequences": np.array([1], np.int32),
            "length_penalty": np.array([1.0], np.float32), "repetition_penalty": np.array([1.0], np.float32)}


def step_costs(seconds: list[float], short: int, long: int) -> list[float]:
    """A turn's seconds as `replay` returns them ([t_short, t_long] of each sentence, in order) -> each
    sentence's seconds per decoder step, (t_long - t_short) / (long - short)."""
    return [(b - a) / (long - short) for a, b in zip(seconds[0::2], seconds[1::2])]


def beam_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the beam study."""
    h.add_replay_arguments(p, turn=20, warmup=4, max_length=False)  # the decodes have fixed --lengths
    p.add_argument("--lengths", type=int, nargs=2, default=[8, 40], metavar=("SHORT", "LONG"),
                   help="the two fixed output lengths every sentence is decoded to")
    p.add_argument("--quantize", default="int8", choices=["int8", "none"])
    p.add_argument("--against-form", default=None, choices=["compact", "kernel"],
                   help="also time the MoE model exported in this other form, paired turn by turn with the "
                        "--moe-dispatch one (record field form_ratio: the first over the second, minus 1)")


def beam(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The beam study's record."""
    h.check_replay_arguments(p, args)
    short, long = args.lengths
    if not 2 <= short < long:
        p.error(f"--lengths needs 2 <= SHORT < LONG (the beam graph fails on one-token decodes), got {short} {long}")
    from automoe.export.onnx import default_moe_dispatch, to_onnx
    from automoe.serve import Translator

    models, weights, width, sources = h.study_models(args)
    moe, one = list(models)[1:]
    if long + 1 > models[moe].config.max_positions:
        p.error(f"--lengths LONG {long} is past the model's {models[moe].config.max_positions - 1} target positions")
    quantize = None if args.quantize == "none" else args.quantize
    form = args.moe_dispatch or default_moe_dispatch(quantize)
    if args.against_form == form:
        p.error(f"--against-form {form} is the form timed already; choose the other one")
    loaders = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            exported = h.export_model(model, Path(tmp) / name, Path(args.data) / "spm.model", quantize, form)
            loaders[name] = lambda folder=exported: Translator.from_pretrained(folder, threads=args.threads)
        if args.against_form:  # the MoE model's saved folder, exported in the other form
            against = f"{moe}-{args.against_form}"
            exported = to_onnx(Path(tmp) / moe, Path(tmp) / f"{against}-onnx", quantize=quantize,
                               moe_dispatch=args.against_form)
            loaders[against] = lambda folder=exported: Translator.from_pretrained(folder, threads=args.threads)
        loaders[h.CONTROL] = loaders["dense"]  # the A/A control: the same graph in other sessions
        translators = h.open_interleaved(loaders, args.instances)
    # EOS-terminated ids, truncated as translate() does (None for an empty line)
    encoded = [ids for ids in translators["dense"][0]._encode(sources) if ids]
    sentences = [[fixed_length_feeds(ids, n, args.beam) for n in (short, long)] for ids in encoded]
    raw = h.replay({name: [t.backend.beam for t in ts] for name, ts in translators.items()}, sentences,
                   args.rounds, args.turn, args.warmup)
    seconds = {name: [[step_costs(turn, short, long) for turn in rounds] for rounds in runs] for name, runs in raw.items()}
    stats = h.pooled_ms(seconds)
    vs = {"overhead": h.ratio_stats(seconds, moe, "dense"), "dispatch_overhead": h.ratio_stats(seconds, one, "dense"),
          "expert_overhead": h.ratio_stats(seconds, moe, one), "control_overhead": h.ratio_stats(seconds, h.CONTROL, "dense")}
    if args.against_form:
        vs["form_ratio"] = h.ratio_stats(seconds, moe, against)
    record = {"benchmark": "moe_overhead_beam", **weights, "experts": args.experts, "width": width,
              "quantization": quantize, "moe_dispatch": form, "threads": args.threads, "beam": args.beam,
              "sentences": len(sentences), "lengths": [short, long], "method": "BeamSearch op, two fixed lengths",
              "rounds": args.rounds, "turn": args.turn, "warmup": args.warmup, "instances": args.instances,
              "opening": "interleaved", "dense_step": stats["dense"], "moe_step": stats[moe],
              "moe_one_expert_step": stats[one],
              **({"against_form": args.against_form, "moe_against_step": stats[against]} if args.against_form else {}),
              **h.overhead_fields(vs), "l3_cache": h.l3_cache()}
    print(f"width {width}, decoder step inside the BeamSearch op against dense (median of {record['paired_turns']} "
          f"paired turns; per-sentence minima): {moe} {_pct(record['overhead'])} ({_pct(record['overhead_min'])}), all "
          f"tokens to one expert {_pct(record['dispatch_overhead'])}, dense against itself {_pct(record['control_overhead'])}"
          + (f"; {form} over {args.against_form} {_pct(record['form_ratio'])}" if args.against_form else ""))
    return record


# --- parts: the fixed cost of the compact dispatch, cut by cut ------------------------------------

VARIANTS = ("no-empty", "no-split", "router-only")


def _expert_chain(consumers: dict, block: str) -> tuple[list, object]:
    """The nodes of one expert, from its Split output to (not including) the Concat it feeds."""
    chain, tensor = [], block
    while True:
        (node,) = consumers[tensor]
        if node.op_type == "Concat":
            return chain, node
        chain.append(node)
        tensor = node.output[0]


def _rename_input(node, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new


def cut_dispatch(graph, variant: str) -> tuple[int, collections.Counter]:
    """Cut `variant` out of every compact MoE layer of an optimized decoder graph (onnx GraphProto,
    edited in place) whose tokens all take expert 0; returns the number of MoE layers and the op
    types removed. no-empty: the experts no token reaches; no-split: also Split and Concat (expert 0
    reads the sorted rows); router-only: also the sort (Shape, TopK, GatherND, OneHot, ReduceSum,
    ScatterND), leaving the router and the gate Mul."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r} must be one of {list(VARIANTS)}")
    consumers, producer = collections.defaultdict(list), {}
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
        for name in node.output:
            producer[name] = node
    drop = []
    splits = [n for n in graph.node if n.op_type == "Split" and producer.get(n.input[0], n).op_type == "GatherND"]
    if not splits:
        raise ValueError("no compact MoE layer (GatherND -> Split) in this graph")
    for split in splits:
        chains = [_expert_chain(consumers, block) for block in split.output]
        concat = chains[0][1]
        for e, (chain, _) in enumerate(chains[1:], 1):  # the experts no token reaches
            drop += chain
            concat.input[e] = split.output[e]
        if variant == "no-empty":
            continue
        y0 = chains[0][0][-1].output[0]
        (scatter,) = consumers[concat.output[0]]
        grouped = split.input[0]
        for node in consumers[split.output[0]]:
            _rename_input(node, split.output[0], grouped)
        _rename_input(scatter, concat.output[0], y0)
        drop += [split, concat]
        if variant == "no-split":
            continue
        gather = producer[grouped]
        for node in consumers[split.output[0]]:  # expert 0, which read `grouped` since the cut above
            _rename_input(node, grouped, gather.input[0])
        for node in consumers[scatter.output[0]]:
            _rename_input(node, scatter.output[0], y0)
        topk = producer[gather.input[1]]
        counts = producer[split.input[1]]
        drop += [gather, scatter, topk, producer[topk.input[1]], counts, producer[counts.input[0]]]
    removed = collections.Counter(n.op_type for n in drop)
    dropped = {id(n) for n in drop}
    kept = [n for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    return len(splits), removed


def optimized_graph(path: Path, out: Path, threads: int):
    """ONNX Runtime's optimized form of the graph at `path` (on this machine), as an onnx ModelProto
    with its weights inside (`out` is written beside `path`, whose external weights it refers to)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3
    options.optimized_model_filepath = str(path.with_name(out.name))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return onnx.load(options.optimized_model_filepath)


def plain_session(path: Path, threads: int):
    """An onnxruntime session that runs the (already optimized) graph at `path` as it is."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = threads, 1, 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_equal(sessions: dict, reference: str, steps: list[dict]) -> None:
    """Refuse to time a variant whose outputs differ from the reference graph's on these steps."""
    import numpy as np

    for feed in steps:
        expected = sessions[reference].run(None, feed)
        for name, session in sessions.items():
            for a, b in zip(session.run(None, feed), expected):
                if not np.array_equal(a, b):
                    raise RuntimeError(f"{name} computes something else than {reference}: the cut is not exact "
                                       "(does every token take expert 0?)")


def parts_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the parts study (it cuts the compact form apart)."""
    h.add_replay_arguments(p, turn=20, warmup=4, moe_dispatch=False)


def parts(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The parts study's record."""
    h.check_replay_arguments(p, args)
    import onnx

    from automoe.serve import Translator

    models, weights, width, sources = h.study_models(args)
    moe, one = list(models)[1:]
    removed, graphs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, model in models.items():
            exported = h.export_model(model, tmp / name, Path(args.data) / "spm.model", "int8")
            if name == moe:  # real routing, so the recorded steps are those of real decoding
                sentences = h.record_steps(Translator.from_pretrained(exported, threads=args.threads), sources,
                                           args.beam, args.max_length)
                continue
            optimized = optimized_graph(exported / "decoder.onnx", tmp / f"{name}.onnx", args.threads)
            onnx.save(optimized, str(tmp / f"{name}.onnx"))
            graphs[name] = tmp / f"{name}.onnx"
            if name == one:
                for variant in VARIANTS:
                    cut = onnx.ModelProto()
                    cut.CopyFrom(optimized)
                    layers, removed[variant] = cut_dispatch(cut.graph, variant)
                    onnx.save(cut, str(tmp / f"{variant}.onnx"))
                    graphs[variant] = tmp / f"{variant}.onnx"
        graphs[h.CONTROL] = graphs["dense"]  # the A/A control: the same graph in other sessions
        sessions = h.open_interleaved({name: lambda path=path: plain_session(path, args.threads)
                                       for name, path in graphs.items()}, args.instances)
    check_equal({k: sessions[k][0] for k in [one, *VARIANTS]}, one, [s for steps in sentences[:5] for s in steps])
    seconds = h.replay(sessions, sentences, args.rounds, args.turn, args.warmup)
    stats = h.pooled_ms(seconds)
    cuts = {name: {**h.ratio_stats(seconds, name, "dense"), "step": stats[name]} for name in [one, *VARIANTS, h.CONTROL]}
    record = {"benchmark": "moe_dispatch_parts", **weights, "experts": args.experts, "width": width,
              "quantization": "int8", "threads": args.threads, "beam": args.beam, "sentences": len(sources),
              "max_length": args.max_length, "method": "replayed steps", "rounds": args.rounds, "turn": args.turn,
              "warmup": args.warmup, "instances": args.instances, "opening": "interleaved", "moe_layers": layers,
              "dense_step": stats["dense"], "parts": {("moe-one" if k == one else k): v for k, v in cuts.items()},
              "removed_ops": {k: dict(v) for k, v in removed.items()}, "l3_cache": h.l3_cache()}
    print(f"width {width}, decoder step against dense (median of paired turns; per-step minima): "
          + ", ".join(f"{name} {_pct(v['overhead'])} ({_pct(v['overhead_min'])})" for name, v in record["parts"].items()))
    return record


# --- forms: compact against kernel, graph by graph -----------------------------------------------

def encoder_feeds(ids: list[int], bos_id: int) -> dict:
    """The inputs of encoder.onnx for one EOS-terminated source."""
    import numpy as np

    src = np.array([ids], np.int32)
    return {"encoder_input_ids": src, "encoder_attention_mask": np.ones_like(src),
            "decoder_input_ids": np.array([[bos_id]], np.int32)}


def forms_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the forms study."""
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


def forms(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The forms study's record: every graph of one int8 MoE export in the compact and the kernel
    form (each graph as `Translator` uses it), the steps recorded once from the compact export."""
    if min(args.experts, args.sentences, args.beam, args.threads, *args.batches) < 1 or args.rounds < 2:
        p.error("--experts, --sentences, --beam, --threads and --batches must be >= 1, --rounds >= 2")
    if not 0 <= args.warmup < args.turn:
        p.error("--warmup must be at least 0 and below --turn")
    import onnxruntime as ort

    from automoe.evaluate import read_split
    from automoe.export import kernel
    from automoe.export.onnx import export_graphs, fix_custom_op_shapes, quantize_int8, to_onnx
    from automoe.serve import Translator
    from automoe.supernet_folder import load_supernet

    supernet = load_supernet(args.supernet)
    width = args.width or max(supernet.space.ffn_dims)
    model = h.build_models(supernet, width, args.experts)[f"moe-{args.experts}"]
    sources, _ = read_split(args.data, "test", limit=args.sentences)
    library = kernel.build_library()  # KernelUnavailable: this study compares the two forms
    options = {}
    for form in ("compact", "kernel"):
        options[form] = ort.SessionOptions()
        options[form].intra_op_num_threads, options[form].inter_op_num_threads = args.threads, 1
    options["kernel"].register_custom_ops_library(str(library))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model.save_pretrained(root / "model", tokenizer_file=Path(args.data) / "spm.model")
        folders = {"compact": to_onnx(root / "model", root / "compact", quantize="int8", moe_dispatch="compact"),
                   "kernel": root / "kernel"}
        folders["kernel"].mkdir()
        graphs = export_graphs(model, folders["kernel"], forms=dict.fromkeys(("encoder", "decoder", "beam_search"), "kernel"))
        for path in (graphs["encoder"], graphs["decoder"]):
            quantize_int8(path)
            fix_custom_op_shapes(path)
        translator = Translator.from_pretrained(folders["compact"], threads=args.threads)
        items = {"encoder": [[encoder_feeds(ids, model.config.bos_id)] for ids in translator._encode(sources) if ids]}
        for batch in args.batches:
            items[f"decoder@{batch}"] = h.record_steps(translator, sources, args.beam, batch=batch)
        sessions = {graph: {form: ort.InferenceSession(str(folders[form] / f"{graph.split('@')[0]}.onnx"), options[form],
                                                       providers=["CPUExecutionProvider"]) for form in folders}
                    for graph in items}
        results = {}
        for graph, feeds in items.items():
            turn = min(args.turn, max(2, len(feeds) // 4))  # a few big batches: shorter turns, more pairs
            seconds = h.replay(sessions[graph], feeds, args.rounds, turn, min(args.warmup, turn - 1))
            stats, v = h.pooled_ms(seconds), h.ratio_stats(seconds, "kernel", "compact")
            results[graph] = {"rows_per_call": None if graph == "encoder" else feeds[0][0]["input_ids"].shape[0],
                              "items": len(feeds), "turn": turn, "compact_call": stats["compact"],
                              "kernel_call": stats["kernel"], "paired_turns": v["turns"],
                              "ratios": {"kernel": {"ratio": v["overhead"], "min": v["overhead_min"],
                                                    "quartiles": v["quartiles"]}}}
    for graph, g in results.items():
        print(f"width {width}, {graph}: compact {g['compact_call']['median_ms']:.3f} ms, kernel "
              f"{g['kernel_call']['median_ms']:.3f} ms per call; kernel over compact {_pct(g['ratios']['kernel']['ratio'])}")
    return {"benchmark": "moe_forms", "supernet": str(args.supernet), "experts": args.experts, "width": width,
            "quantization": "int8", "threads": args.threads, "beam": args.beam, "sentences": len(sources),
            "rounds": args.rounds, "turn": args.turn, "warmup": args.warmup, "graphs": results, "l3_cache": h.l3_cache()}


# --- bleu: what the int8 forms cost in quality ---------------------------------------------------

def bleu_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the bleu study."""
    p.add_argument("--supernet", required=True, help="trained supernet folder (supernet.safetensors + space.json)")
    p.add_argument("--data", required=True, help="dataset folder (test split, spm.model)")
    p.add_argument("--width", type=int, default=None, help="expert width (default: the widest of the space)")
    p.add_argument("--experts", type=int, default=4)
    p.add_argument("--sentences", type=int, default=None, help="the first N test sentences (default: all)")
    p.add_argument("--beam", type=int, default=4)


def bleu(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    """The bleu study's record: PyTorch fp32 (batched) and an int8 export in each form, each
    sentence translated alone (the beam graph, where the forms differ)."""
    from tqdm import tqdm

    from automoe.evaluate import corpus_scores, read_split
    from automoe.export.onnx import MOE_DISPATCHES, to_onnx
    from automoe.serve import Translator
    from automoe.supernet_folder import load_supernet

    supernet = load_supernet(args.supernet)
    width = args.width or max(supernet.space.ffn_dims)
    model = h.build_models(supernet, width, args.experts)[f"moe-{args.experts}"]
    sources, references = read_split(args.data, "test", limit=args.sentences)
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "moe"
        model.save_pretrained(folder, tokenizer_file=Path(args.data) / "spm.model")
        # batched: PyTorch's beam search gives the same tokens alone or in a batch
        scores["torch-fp32"] = corpus_scores(Translator.from_pretrained(folder, threads=1).translate(sources, beam=args.beam),
                                             references)
        for form in MOE_DISPATCHES:
            tr = Translator.from_pretrained(to_onnx(folder, Path(tmp) / form, quantize="int8", moe_dispatch=form), threads=1)
            hyps = [tr.translate([s], beam=args.beam)[0] for s in tqdm(sources, desc=form, leave=False)]
            scores[f"onnxruntime-int8-{form}"] = corpus_scores(hyps, references)
    base = scores["torch-fp32"]
    record = {"benchmark": "moe_bleu", "supernet": args.supernet, "experts": args.experts, "width": width,
              "beam": args.beam, "batch": 1, "sentences": len(sources),
              "scores": {name: {"bleu": s["bleu"], "chrf": s["chrf"], "bleu_change": round(s["bleu"] - base["bleu"], 2)}
                         for name, s in scores.items()},
              "bleu_signature": base.get("bleu_signature")}
    for name, s in record["scores"].items():
        print(f"{name:28s} BLEU {s['bleu']:6.2f} ({s['bleu_change']:+.2f})  chrF {s['chrf']:6.2f}")
    return record


STUDIES = {"overhead": (overhead_arguments, overhead), "beam": (beam_arguments, beam), "parts": (parts_arguments, parts),
           "forms": (forms_arguments, forms), "bleu": (bleu_arguments, bleu)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, choices=list(STUDIES))
    p.add_argument("--out", default=None, help="results file (default: benchmarks/results/<the study's>.jsonl)")
    study = p.parse_known_args(argv)[0].study
    add_arguments, run = STUDIES[study]
    add_arguments(p)
    args = p.parse_args(argv)
    env = h.environment()  # the commit and time the run started with

    import torch

    torch.set_num_threads(getattr(args, "threads", 1))
    record = run(p, args)
    h.append_jsonl(Path(args.out or h.RESULTS / f"{OUTPUTS[study]}.jsonl"), [{**record, **env}])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
