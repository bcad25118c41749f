"""BLEU and chrF with sacrebleu on detokenized output (DESIGN.md §6), with signatures."""

from __future__ import annotations

import time
from pathlib import Path


def corpus_scores(hypotheses: list[str], references: list[str]) -> dict:
    """sacrebleu corpus BLEU (default 13a tokenizer) and chrF2, rounded, with their signatures."""
    from sacrebleu.metrics import BLEU, CHRF

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu, chrf = BLEU(), CHRF()
    b = bleu.corpus_score(hypotheses, [references])
    c = chrf.corpus_score(hypotheses, [references])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2),
            "bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature())}


def read_split(data_dir: str | Path, split: str, limit: int | None = None) -> tuple[list[str], list[str]]:
    """Source and reference lines of `data_dir/{split}.{src,tgt}` (the first `limit` pairs)."""
    from .corpora import read_parallel

    folder = Path(data_dir)
    pairs = read_parallel(folder / f"{split}.src", folder / f"{split}.tgt")
    pairs = pairs[:limit] if limit else pairs
    return [s for s, _ in pairs], [t for _, t in pairs]


def evaluate(translator, data_dir: str | Path, *, split: str = "test", beam: int = 4, limit: int | None = None,
             hypotheses_file: str | Path | None = None) -> dict:
    """Translate a split with `translator` and score it; returns one JSON-ready record."""
    sources, references = read_split(data_dir, split, limit)
    start = time.perf_counter()
    hypotheses = translator.translate(sources, beam=beam)
    seconds = time.perf_counter() - start
    if hypotheses_file:
        Path(hypotheses_file).write_text("\n".join(hypotheses) + "\n", encoding="utf-8")
    return {"data": str(data_dir), "split": split, "sentences": len(sources), "beam": beam,
            **corpus_scores(hypotheses, references), "seconds": round(seconds, 1),
            "engine": translator.engine}
