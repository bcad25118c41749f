"""Size a lexical shortlist on held-out data: the smallest one whose BLEU cost stays under a bound.

What a shortlist costs depends on the model: decoding over it renormalises the softmax, so the
cost grows with the probability mass the model puts outside it (docs/shortlist.md, Exactness).
One size for every model is therefore either too slow for some or too lossy for others.
`tune_shortlist` builds a shortlist of each candidate size, decodes a held-out split (dev by
default, never the test split the benchmark reports) with and without each, one sentence at a
time as `automoe bench` does, and keeps the one with the fewest pieces per sentence whose BLEU
cost is at most `max_cost`. The table of every candidate travels in the chosen file's header
under "tuning", so the choice can be checked later.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .shortlist import SHORTLIST_FILE, Shortlist, build_shortlists

DEFAULT_SIZES = ((25, 50), (50, 100), (75, 150), (100, 200), (150, 300))
TUNE_ENGINES = ("torch", "onnxruntime", "onnxruntime-int8")  # CTranslate2 reads its vmap from a file per export


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """'50:100,75:150' -> [(50, 100), (75, 150)] (top-k per source piece : frequent pieces)."""
    sizes = []
    for part in text.split(","):
        top_k, sep, frequent = part.strip().partition(":")
        try:
            sizes.append((int(top_k), int(frequent)))
            if not sep:
                raise ValueError
        except ValueError:
            raise ValueError(f"shortlist size {part.strip()!r} is not TOP_K:FREQUENT (two integers, e.g. 50:100)") \
                from None
    return sizes


def choose(rows: Sequence[dict], max_cost: float) -> int | None:
    """Index of the row with the smallest "avg_size" whose "cost" is at most `max_cost` (the first
    such on a tie), or None. A larger list can cost more than a smaller one on a small split
    (BLEU is noisy); the rule still takes the smallest that passes."""
    passing = [i for i, row in enumerate(rows) if row["cost"] <= max_cost]
    return min(passing, key=lambda i: rows[i]["avg_size"], default=None)


def _translator(model_dir: Path, first: Shortlist, engine_name: str, threads: int, workdir: Path):
    """A Translator of the model on `engine_name` that can decode over any shortlist: ONNX Runtime
    needs the shortlist beam graphs, written by exporting a linked copy of the folder that holds `first`."""
    from .bench import parse_engine
    from .serve import Translator

    engine, quantize = parse_engine(engine_name)
    if engine == "torch":
        return Translator.from_pretrained(model_dir, engine="torch", threads=threads)
    from .export.onnx import to_onnx

    copy = workdir / "model"  # the model's files linked, not copied (a Switch model holds 90 MB)
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns(SHORTLIST_FILE),
                    copy_function=lambda src, dst: os.symlink(os.path.abspath(src), dst))
    first.save(copy / SHORTLIST_FILE)
    return Translator.from_pretrained(to_onnx(copy, workdir / "onnx", quantize=quantize), threads=threads)


def _bleu(translator, shortlist: Shortlist | None, sources: list[str], references: list[str], beam: int,
          bar) -> float:
    """Corpus BLEU of one sentence at a time (batch 1, as `automoe bench` decodes) over `shortlist`."""
    from .evaluate import corpus_scores

    translator.shortlist = shortlist
    hypotheses = []
    for line in sources:
        hypotheses.extend(translator.translate([line], beam=beam))
        bar.update(1)
    return corpus_scores(hypotheses, references)["bleu"]


def tune_shortlist(data_dir: str | Path, model_dir: str | Path, *, sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES,
                   max_cost: float = 0.2, engine: str = "onnxruntime-int8", split: str = "dev", beam: int = 4,
                   threads: int = 1, limit: int | None = None, score: str = "dice",
                   progress: bool = True) -> tuple[Shortlist | None, dict]:
    """The shortlist of `sizes` with the fewest pieces per `split` sentence whose BLEU cost there
    (full-vocabulary BLEU minus shortlist BLEU, `engine`, batch 1, `beam`) is at most `max_cost`,
    and the tuning record (also in its header under "tuning"); (None, record) when no candidate
    keeps the cost under the bound (record["chosen"] is then None)."""
    from tqdm.auto import tqdm

    from .checkpoint import read_folder
    from .evaluate import read_split

    if engine not in TUNE_ENGINES:
        raise ValueError(f"engine={engine!r} cannot tune a shortlist: choose one of {list(TUNE_ENGINES)} "
                         "(the chosen file then serves CTranslate2 too)")
    if not sizes:
        raise ValueError("give at least one shortlist size to try")
    if not max_cost >= 0:
        raise ValueError(f"max_cost={max_cost!r} must be a BLEU difference >= 0")
    model_dir = Path(model_dir)
    if read_folder(model_dir).kind != "model":  # a supernet folder is refused by read_folder itself
        raise ValueError(f"{model_dir} is an export folder: tune the model folder it was exported from (the "
                         "shortlist travels into exports made after it)")
    candidates = build_shortlists(data_dir, model_dir, list(sizes), score=score, stats_split=split)
    candidates.sort(key=lambda s: s.header["stats"]["avg_size"])
    sources, references = read_split(data_dir, split, limit)
    with tempfile.TemporaryDirectory(prefix="automoe-tune-") as tmp:
        translator = _translator(model_dir, candidates[0], engine, threads, Path(tmp))
        with tqdm(total=len(sources) * (len(candidates) + 1), desc="shortlist tune", unit="sent",
                  disable=not progress) as bar:
            full = _bleu(translator, None, sources, references, beam, bar)
            rows = []
            for shortlist in candidates:
                bleu = _bleu(translator, shortlist, sources, references, beam, bar)
                h = shortlist.header
                rows.append({"top_k": h["top_k"], "frequent": h["frequent"], "avg_size": h["stats"]["avg_size"],
                             "coverage": h["stats"].get("coverage"), "bleu": bleu,
                             "cost": round(full - bleu, 2)})
    record = {"split": split, "sentences": len(sources), "engine": engine, "beam": beam, "max_cost": max_cost,
              "full_bleu": full, "candidates": rows}
    index = choose(rows, max_cost)
    if index is None:
        record["chosen"] = None
        return None, record
    chosen = candidates[index]
    record["chosen"] = {"top_k": chosen.header["top_k"], "frequent": chosen.header["frequent"]}
    chosen.header["tuning"] = record
    return chosen, record


def latest_per_model(records: list[dict]) -> list[dict]:
    """The newest tuning record of each model among `records` (shortlist_tune.jsonl, oldest first)."""
    return list({r["model"]: r for r in records}.values())


def tune_table(latest: list[dict], root: Path) -> str:
    """Markdown of tuning records, one per model (`latest_per_model`): the dev BLEU cost (and
    average size) of each candidate size, the size chosen, and the size of the model folder's
    shortlist now (folders relative to `root`). The caption ends with the CPUs the records were
    measured on; the caller adds the commits."""
    if not latest:
        return "_No tuning run yet (`automoe shortlist tune --results benchmarks/results/shortlist_tune.jsonl`)._"
    sizes = sorted({(c["top_k"], c["frequent"]) for r in latest for c in r["candidates"]})
    lines = ["| model | dev BLEU, full vocabulary | " + " | ".join(f"{k}:{f}" for k, f in sizes)
             + " | chosen | shipped |", "|---|---:|" + "---:|" * len(sizes) + "---|---|"]
    for r in latest:
        name = r["model"]
        by_size = {(c["top_k"], c["frequent"]): c for c in r["candidates"]}
        cells = [f"{by_size[s]['cost']:+.2f} ({by_size[s]['avg_size']:.0f})" if s in by_size else "" for s in sizes]
        chosen = f"{r['chosen']['top_k']}:{r['chosen']['frequent']}" if r["chosen"] else f"none <= {r['max_cost']}"
        folder = Path(name) if Path(name).is_absolute() else root / name
        lines.append(f"| `{Path(name).name}` | {r['full_bleu']:.2f} | " + " | ".join(cells)
                     + f" | {chosen} | {_shipped_size(folder)} |")
    r0 = latest[0]
    return "\n".join(lines) + (
        f"\n\nBLEU cost on the {r0['sentences']} {r0['split']} sentences (full-vocabulary BLEU minus BLEU over the "
        f"shortlist; in brackets the average shortlist size, pieces), {r0['engine']}, beam {r0['beam']}, batch 1; "
        f"chosen: the smallest size within {r0['max_cost']} BLEU; shipped: the size of the model folder's "
        f"{SHORTLIST_FILE} now. {', '.join(dict.fromkeys(r['cpu'] for r in latest))}")


def _shipped_size(folder: Path) -> str:
    """'top_k:frequent' of a model folder's shortlist file (its header), or 'none'."""
    if not (folder / SHORTLIST_FILE).is_file():
        return "none"
    h = Shortlist.load(folder / SHORTLIST_FILE).header
    return f"{h['top_k']}:{h['frequent']}"
