"""Paper-scale latency (random weights, LATENCY ONLY): the `wmt14` space's dense baseline (32k
vocabulary) against a paper-like AutoMoE subnet, int8, 1 thread, batch 1, beam 4, with and without
a vocabulary shortlist of realistic size, on ONNX Runtime and CTranslate2.

- dense:   `SearchSpace.preset("wmt14").dense_baseline()` (d 640, 6+6 layers, FFN 3072).
- automoe: `PAPER_AUTOMOE`, heterogeneous top-1 experts, ~43M active non-embedding parameters
  (`automoe.search.flops.cost`). CTranslate2 has no MoE layer, so on CTranslate2 it runs as its
  dense equivalent (`dense_equivalent`: each MoE layer one FFN of its experts' mean width, the
  width a balanced router gives per token): labelled "automoe-dense-equivalent".
- sentences: random source ids with the lengths of the first N Bible test sentences in the
  shipped 8k model's tokenizer; every decode produces exactly the reference's target length (EOS
  suppressed), so models and shortlists are compared on the same work.
- shortlist of realistic size: the real shortlist of the shipped 8k model (`build_shortlist`,
  top_k 50, frequent 100, Dice, on the Bible training pairs) is measured on the same sentences;
  a synthetic 32k shortlist (random targets per source id, 100 frequent + specials always) is
  given a per-source list length so its average per-sentence size matches the real one. Both
  engines decode over the same per-sentence sets (ONNX Runtime: the export's shortlist beam graphs,
  the narrowest fixed width that holds `Shortlist.ids`, as `Translator` picks it; CTranslate2: a
  vmap.txt of the same table, `use_vmap`).
- all variants of one engine are interleaved round-robin per sentence in one run; ratios are
  taken from that run (DESIGN.md section 6). Records go to results/paper_scale.jsonl.

    nice -n 19 python benchmarks/paper_scale.py --sentences 20
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_jsonl, commits, environment, last_run, summary_ms  # noqa: E402

from automoe.config import ArchConfig, SearchSpace  # noqa: E402
from automoe.search.flops import cost  # noqa: E402
from automoe.artifacts import sha256_file  # noqa: E402
from automoe.shortlist import SHORTLIST_FILE, Shortlist, build_shortlist, write_vmap  # noqa: E402

SPACE = SearchSpace.preset("wmt14")
# A paper-like AutoMoE subnet of the wmt14 space: 6 encoder layers, a shallow 3-layer decoder,
# 1-3 experts of different widths per layer (AutoMoE arXiv 2210.07535, Table 3 style).
PAPER_AUTOMOE = SPACE._arch(
    640, 640, 6, 3, (8,) * 6, (8, 4, 8), (8, 8, 4), (1, 1, 1),
    ((3072, 2048), (3072, 2048, 1024), (3072, 3072), (2048, 3072), (1024, 3072, 2048), (3072, 2048)),
    ((3072, 2048, 1024), (3072, 1024), (2048, 3072)),
)


def dense_equivalent(arch: ArchConfig) -> ArchConfig:
    """`arch` with every MoE layer replaced by one FFN of its experts' mean width (same FLOPs per
    token as a balanced top-1 router; what CTranslate2, which has no MoE layer, can run)."""
    mean = lambda widths: (int(round(statistics.fmean(widths))),)  # noqa: E731
    return dataclasses.replace(arch, encoder_ffn=tuple(mean(w) for w in arch.encoder_ffn),
                               decoder_ffn=tuple(mean(w) for w in arch.decoder_ffn))


def real_sentences(data: Path, model: Path, n: int, top_k: int, frequent: int):
    """Source / target lengths and real shortlist sizes of the first `n` test sentences."""
    from automoe.data import encode_file, load_tokenizer

    sp = load_tokenizer(model / "spm.model")
    src = encode_file(sp, data / "test.src")[:n]
    tgt = encode_file(sp, data / "test.tgt")[:n]
    real = build_shortlist(data, model, top_k=top_k, frequent=frequent)
    return [len(s) for s in src], [len(t) - 1 for t in tgt], [len(real.ids(s)) for s in src], real.header


def synthetic_shortlist(vocab: int, frequent: int, per_source: int, seed: int) -> Shortlist:
    """A shortlist over `vocab` ids: `per_source` random targets per source id, ids 4..frequent+3
    (the "most frequent") and the specials 0..3 always."""
    rng = np.random.default_rng(seed)
    table = rng.integers(4, vocab, size=(vocab, per_source), dtype=np.int32)
    table[:4] = -1
    always = np.arange(frequent + 4, dtype=np.int32)
    header = {"format": "automoe-shortlist", "format_version": 1, "vocab_size": vocab, "tokenizer_sha256": None,
              "special_ids": [0, 1, 2, 3], "top_k": per_source, "frequent": frequent, "score": "synthetic"}
    return Shortlist(table, always, header)


def onnx_runners(model_dir: Path, out: Path, threads: int, beam: int):
    """(full, shortlist) fixed-length decoders of an int8 ONNX Runtime export of `model_dir`, whose
    shortlist.safetensors the export turns into the shortlist beam graphs (the engine picks the
    narrowest fixed-width graph that holds a sentence's shortlist, as `Translator` does)."""
    from automoe.export.onnx import to_onnx
    from automoe.serve.engines import OnnxEngine

    eng = OnnxEngine(to_onnx(model_dir, out, quantize="int8"), threads)

    def run(ids: list[int], out_len: int, shortlist: np.ndarray | None) -> None:
        # min_length counts the start token: exactly out_len tokens come out
        eng.run_beam_graph(np.array([ids]), beam, out_len, min_length=out_len + 1, shortlist=shortlist)
    return (lambda ids, out_len, _shortlist: run(ids, out_len, None)), run


def ct2_runners(model_dir: Path, out: Path, shortlist: Shortlist, threads: int, beam: int):
    """(full, shortlist) fixed-length decoders of an int8 CTranslate2 conversion of `model_dir`
    with synthetic pieces (no 32k tokenizer exists here) and the shortlist's vmap.txt."""
    import ctranslate2

    from automoe.checkpoint import WEIGHTS_NAME, load_state_dict, read_model_config
    from automoe.export.ctranslate2 import convert

    arch, _ = read_model_config(model_dir)
    pieces = ["<pad>", "<unk>", "<s>", "</s>"] + [f"p{i}" for i in range(4, arch.vocab_size)]
    spec = convert(arch, load_state_dict(model_dir / WEIGHTS_NAME), pieces)
    spec.validate()
    spec.optimize(quantization="int8")
    out.mkdir(parents=True)
    spec.save(str(out))
    write_vmap(shortlist, pieces, out / "vmap.txt")
    translator = ctranslate2.Translator(str(out), device="cpu", intra_threads=threads, inter_threads=1)

    def make(use_vmap: bool):
        def run(ids: list[int], out_len: int, _shortlist) -> None:
            translator.translate_batch([[pieces[t] for t in ids[:-1]]], beam_size=beam, use_vmap=use_vmap,
                                       min_decoding_length=out_len, max_decoding_length=out_len)
        return run
    return make(False), make(True)


def table(records: list[dict]) -> str:
    """Markdown for report.py: the wmt14 dense baseline against the paper-like AutoMoE subnet, with
    and without a shortlist, the last run of each engine among `records` (paper_scale.jsonl)."""
    engines = list(dict.fromkeys(r["engine"] for r in records))
    runs = [last_run([r for r in records if r["engine"] == e], "engine") for e in engines]
    if not runs:
        return "_Not measured yet: `benchmarks/paper_scale.py`._"
    lines = ["| engine | model | active / total params | GFLOPs | median ms | with shortlist | shortlist's own "
             "speedup | speedup vs dense (both alike) | vs dense without a shortlist |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        by = {(r["model"], r["shortlist"]): r for r in run}
        for model in dict.fromkeys(r["model"] for r in run):
            full, short = by.get((model, False)), by.get((model, True))
            if not (full and short):
                continue
            form = short.get("shortlist_form") or ("scattered" if full["engine"] == "onnxruntime" else "vmap")
            form = f" ({form.split(' (')[0]})"
            lines.append(
                f"| {full['engine']}{form} | {model} | {full['active_params'] / 1e6:.1f}M / "
                f"{full['total_params'] / 1e6:.1f}M | {full['gflops']:.2f} | {full['median_ms']:.0f} | "
                f"{short['median_ms']:.0f} | {full['median_ms'] / short['median_ms']:.2f}x | "
                f"{full['speedup_vs_dense_same_shortlist']:.2f}x / {short['speedup_vs_dense_same_shortlist']:.2f}x | "
                f"{short['speedup_vs_dense_full']:.2f}x |")
    r0 = next(r for r in runs[-1] if r["shortlist"])
    sizes = "; ".join(f"{r['engine']}: {r['shortlist_avg_size']:.0f} against {r['real_shortlist_avg_size']:.0f}"
                      for r in (next(r for r in run if r["shortlist"]) for run in runs))
    return "\n".join(lines) + (
        f"\n\n**Latency only** (random weights): int8, {r0['threads']} thread, batch {r0['batch']}, beam {r0['beam']}, "
        f"{r0['sentences']} sentences of the Bible test split's lengths (mean {r0['src_len_mean']} source / "
        f"{r0['out_len_mean']} output tokens, every decode of the reference's length), the variants of one engine "
        f"interleaved per sentence, ratios within one engine's run; a synthetic 32k shortlist of the real one's mean "
        f"size (ids per sentence, {sizes}). \"both alike\": without / with a shortlist on "
        f"both models. On CTranslate2, which has no MoE layer, the subnet runs as its dense equivalent. "
        f"{r0['cpu']}, commit {commits([r for run in runs for r in run])}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/bible-en-de", help="dataset folder (test split, train pairs)")
    parser.add_argument("--model", default="models/dense-small-bible", help="shipped model sizing the shortlist")
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--frequent", type=int, default=100)
    parser.add_argument("--engines", default="onnxruntime,ctranslate2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(RESULTS / "paper_scale.jsonl"))
    args = parser.parse_args(argv)

    from automoe.random_model import save_random_model

    n = args.warmup + args.sentences
    src_lens, tgt_lens, real_sizes, real_header = real_sentences(Path(args.data), Path(args.model), n,
                                                                 args.top_k, args.frequent)
    rng = np.random.default_rng(args.seed)
    sentences = [rng.integers(4, SPACE.vocab_size, size=L - 1).tolist() + [3] for L in src_lens]
    unique = statistics.fmean(len(set(s[:-1])) for s in sentences)
    always = args.frequent + 4
    per_source = max(1, round((statistics.fmean(real_sizes) - always) / unique))
    shortlist = synthetic_shortlist(SPACE.vocab_size, args.frequent, per_source, args.seed)
    lists = [shortlist.ids(s) for s in sentences]
    sizes = [len(x) for x in lists]
    print(f"real shortlist (8k, top_k {args.top_k}, frequent {args.frequent}): mean {statistics.fmean(real_sizes):.0f} "
          f"ids/sentence; synthetic 32k: {per_source} targets per source id, mean {statistics.fmean(sizes):.0f}",
          flush=True)

    models = {"dense": SPACE.dense_baseline(), "automoe": PAPER_AUTOMOE}
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for engine in args.engines.split(","):
            runners, archs = {}, {}
            for name, arch in models.items():
                label = name
                if engine == "ctranslate2" and any(len(w) > 1 for w in arch.encoder_ffn + arch.decoder_ffn):
                    arch, label = dense_equivalent(arch), f"{name}-dense-equivalent"
                # the shipped model's tokenizer rides along only so that the shortlist file can name one
                folder = save_random_model(arch, tmp / f"{label}-{engine}", seed=args.seed,
                                           tokenizer_file=Path(args.model) / "spm.model")
                named = dict(shortlist.header, tokenizer_sha256=sha256_file(folder / "spm.model"))
                dataclasses.replace(shortlist, header=named).save(folder / SHORTLIST_FILE)
                t0 = time.perf_counter()
                if engine == "onnxruntime":
                    full, short = onnx_runners(folder, tmp / f"{label}-onnx", args.threads, args.beam)
                else:
                    full, short = ct2_runners(folder, tmp / f"{label}-ct2", shortlist, args.threads, args.beam)
                print(f"{engine} {label}: exported in {time.perf_counter() - t0:.0f} s", flush=True)
                runners[(label, False)], runners[(label, True)] = full, short
                archs[label] = arch
            times = {key: [] for key in runners}
            for i, ids in enumerate(sentences):
                order = list(runners) if i % 2 == 0 else list(runners)[::-1]
                for key in order:
                    start = time.perf_counter()
                    runners[key](ids, tgt_lens[i], lists[i])
                    if i >= args.warmup:
                        times[key].append(time.perf_counter() - start)
                print(f"{engine} sentence {i + 1}/{n}", flush=True)
            medians = {key: statistics.median(t) for key, t in times.items()}
            dense_label = "dense"
            moe_label = next(label for label, _ in runners if label.startswith("automoe"))
            for (label, with_sl), t in times.items():
                arch = archs[label]
                c = cost(arch)
                records.append({
                    "benchmark": "paper_scale", "metric": "latency only (random weights)", "engine": engine,
                    "quantization": "int8", "threads": args.threads, "batch": 1, "beam": args.beam,
                    "model": label, "shortlist": with_sl, "arch": arch.to_dict(),
                    "active_params": c.active_params, "total_params": c.total_params, "gflops": round(c.gflops, 3),
                    **summary_ms(t),
                    "speedup_vs_dense_full": round(medians[(dense_label, False)] / medians[(label, with_sl)], 3),
                    "speedup_vs_dense_same_shortlist": round(medians[(dense_label, with_sl)] / medians[(label, with_sl)], 3),
                    "shortlist_avg_size": round(statistics.fmean(sizes[args.warmup:]), 1) if with_sl else None,
                    "shortlist_form": (None if not with_sl else "vmap" if engine == "ctranslate2" else
                                       "fixed width (the narrowest holding the shortlist)"),
                    "real_shortlist_avg_size": round(statistics.fmean(real_sizes[args.warmup:]), 1),
                    "real_shortlist": {k: real_header[k] for k in ("top_k", "frequent", "score", "data", "stats")},
                    "synthetic_targets_per_source": per_source, "sentences": args.sentences, "warmup": args.warmup,
                    "src_len_mean": round(statistics.fmean(src_lens[args.warmup:]), 1),
                    "out_len_mean": round(statistics.fmean(tgt_lens[args.warmup:]), 1),
                    "protocol": "variants of one engine interleaved round-robin per sentence, fixed output length "
                                "(the reference's), medians over sentences",
                    **environment(),
                })
            append_jsonl(Path(args.out), records[-len(times):])
            for (label, with_sl), t in times.items():
                print(f"{engine} {label} shortlist={with_sl}: median {medians[(label, with_sl)] * 1000:.1f} ms")
            print(f"{engine}: dense/{moe_label} without shortlist "
                  f"{medians[(dense_label, False)] / medians[(moe_label, False)]:.2f}x, with shortlist "
                  f"{medians[(dense_label, True)] / medians[(moe_label, True)]:.2f}x; dense without / {moe_label} "
                  f"with {medians[(dense_label, False)] / medians[(moe_label, True)]:.2f}x", flush=True)
    print(f"appended {len(records)} records to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
