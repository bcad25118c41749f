"""The ``libreoffice-help`` corpus recipe: Debian's LibreOffice help pages, paired on (file, element id).

Debian ``libreoffice-help-en-us`` + ``libreoffice-help-de``/``-fr`` (MPL-2.0), fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x`` (or a pure-Python ``ar``/tar reader where
dpkg is missing); dev/test = about 2% of the help files each, chosen by a salted hash of the path.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

from .artifacts import sha256_file
from .corpora import (
    SPLITS,
    Corpus,
    DataError,
    Pair,
    _cache,
    _parse_pair,
    _run,
    clean_text,
    log,
)

LO_LANG_PACKAGES = {"en": ("libreoffice-help-en-us", "en-US"), "de": ("libreoffice-help-de", "de"),
                    "fr": ("libreoffice-help-fr", "fr")}
LO_HELP_ROOT = Path("usr/share/libreoffice/help")
LO_ELEMENTS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "td"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}


class _HelpParser(HTMLParser):
    """Collect {id: text} of p/h1-h6/li/td elements that carry an id; keep only the default
    alternative inside ``class="switchinline"`` spans (drop MAC/WRITER/CALC/... variants)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.texts: dict[str, str] = {}
        self._stack: list[tuple[str, str | None, bool]] = []  # (tag, capture id, skip content)
        self._parts: dict[str, list[str]] = {}

    def _skipping(self) -> bool:
        return any(skip for _, _, skip in self._stack)

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            if tag == "br":
                self.handle_data(" ")
            return
        attr = dict(attrs)
        skip = tag in ("script", "style")
        parent_switch = bool(self._stack) and self._stack[-1][0] == "span:switchinline"
        if parent_switch and not (attr.get("id") or "").startswith("default"):
            skip = True  # an alternative for another OS/application
        cap = None
        if tag in LO_ELEMENTS and attr.get("id") and not self._skipping() and attr["id"] not in self._parts:
            cap = attr["id"]
            self._parts[cap] = []
        name = "span:switchinline" if tag == "span" and attr.get("class") == "switchinline" else tag
        self._stack.append((name, cap, skip))

    def handle_endtag(self, tag):
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0].split(":")[0] == tag:
                self._finish(i)
                return

    def _finish(self, depth: int) -> None:
        """Close every element from stack position ``depth`` up (unclosed children included)."""
        for _, cap, _ in self._stack[depth:]:
            if cap is not None:
                self.texts[cap] = clean_text("".join(self._parts[cap]))
        del self._stack[depth:]

    def handle_data(self, data):
        if self._skipping():
            return
        for _, cap, _ in reversed(self._stack):
            if cap is not None:
                self._parts[cap].append(data)
                return


def parse_help_html(path: str | os.PathLike) -> dict[str, str]:
    """Return {element id: text} for one LibreOffice help page (see :class:`_HelpParser`)."""
    parser = _HelpParser()
    parser.feed(Path(path).read_text(encoding="utf-8", errors="replace"))
    parser.close()
    parser._finish(0)  # elements left open at the end of the page
    return parser.texts


def _extract_deb(deb: Path, dest: Path) -> None:
    """Unpack a .deb's files into ``dest`` (``dpkg-deb -x``, or a pure-Python ar+tar fallback)."""
    if shutil.which("dpkg-deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True, capture_output=True, timeout=600)
        return
    with open(deb, "rb") as f:  # ar archive: 8-byte magic, then 60-byte headers
        if f.read(8) != b"!<arch>\n":
            raise DataError(f"{deb} is not a Debian package (no ar header); download it again")
        while header := f.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            data = f.read(size + size % 2)[:size]
            if name.startswith("data.tar"):
                with tempfile.TemporaryFile() as tmp:
                    tmp.write(data)
                    tmp.seek(0)
                    with tarfile.open(fileobj=tmp) as tar:
                        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse unsafe members
                            tar.extractall(dest, filter="data")
                        else:
                            tar.extractall(dest)
                return
    raise DataError(f"{deb} has no data.tar member; download it again")


def _find_deb(folder: Path, package: str) -> Path | None:
    debs = sorted(glob.glob(glob.escape(str(folder)) + f"/{package}_*.deb"))
    return Path(debs[-1]) if debs else None


def fetch_libreoffice_help(langs: tuple[str, str], cache_dir=None, from_dir=None) -> tuple[dict[str, Path], list[dict]]:
    """Return ``{lang: help folder}`` (``.../usr/share/libreoffice/help/<lang>``) and provenance.

    The .deb files come from ``from_dir`` (or an already unpacked tree there), else
    ``apt-get download`` into the cache; each is unpacked once into the cache (one folder per
    package file, so versions never mix).
    """
    cache = _cache(cache_dir, "libreoffice-help")
    packages = [LO_LANG_PACKAGES[lang][0] for lang in langs]
    manual = (
        f"Fetch them by hand with `apt-get update && apt-get download {' '.join(packages)}` in a folder DIR "
        "(or download the .deb files from https://packages.debian.org/bookworm/all/PACKAGE/download) "
        "and pass --from DIR (from_dir=DIR)."
    )
    if from_dir is not None:
        from_dir = Path(from_dir).expanduser()
        dirs = {lang: from_dir / LO_HELP_ROOT / LO_LANG_PACKAGES[lang][1] for lang in langs}
        if all((d / "text").is_dir() for d in dirs.values()):
            return dirs, [{"package": p, "version": "unpacked tree", "registry": "Debian"} for p in packages]
    dirs, sources = {}, []
    for lang, package in zip(langs, packages):
        deb = _find_deb(from_dir if from_dir is not None else cache, package)
        if deb is None and from_dir is not None:
            raise DataError(f"{from_dir} holds no {package}_*.deb. {manual}")
        if deb is None:
            _run(["apt-get", "download", package], cache, f"Debian package {package}", manual)
            deb = _find_deb(cache, package)
            if deb is None:
                raise DataError(f"apt-get left no {package}_*.deb in {cache}. {manual}")
        version = urllib.parse.unquote(deb.name[len(package) + 1:].rsplit("_", 1)[0])
        digest = sha256_file(deb)
        root = cache / "unpacked" / f"{package}-{digest[:16]}"
        if not root.is_dir():
            log.info("unpacking %s", deb.name)
            tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".unpack-"))
            try:
                _extract_deb(deb, tmp)
            except (subprocess.CalledProcessError, tarfile.TarError, OSError, ValueError) as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise DataError(f"could not unpack {deb} ({exc}); delete it and fetch again. {manual}") from exc
            root.parent.mkdir(exist_ok=True)
            os.replace(tmp, root)
        dirs[lang] = root / LO_HELP_ROOT / LO_LANG_PACKAGES[lang][1]
        sources.append({"package": package, "version": version, "registry": "Debian", "file": deb.name,
                        "sha256": digest})
    return dirs, sources


def _held_out(relpath: str, salt: str) -> int:
    """Deterministic bucket 0..999 of a help file (by sha256 of its relative path)."""
    return int.from_bytes(hashlib.sha256(f"{salt}:{relpath}".encode()).digest()[:4], "big") % 1000


def _dedupe(splits: dict[str, list[Pair]]) -> dict[str, list[Pair]]:
    """Drop untranslated pairs (source == target) and repeats: each source sentence is kept in
    test, else dev, else train; within a split each exact pair is kept once (first occurrence)."""
    held: set[str] = set()
    out: dict[str, list[Pair]] = {}
    for split in ("test", "dev", "train"):
        seen: set[Pair] = set()
        out[split] = []
        for s, t in splits[split]:
            if s != t and s not in held and (s, t) not in seen:
                seen.add((s, t))
                out[split].append((s, t))
        held |= {s for s, _ in out[split]}
    return {split: out[split] for split in SPLITS}


def load_libreoffice_help(pair: str = "en-de", *, cache_dir=None, from_dir=None,
                          dev_permille: int = 20, test_permille: int = 20) -> Corpus:
    """LibreOffice help paragraphs paired on (file, element id), English <-> German/French.

    Files are split deterministically by a hash of their relative path: about ``test_permille``/1000
    of the files go to test, ``dev_permille``/1000 to dev. Pairs with an empty side, untranslated
    pairs (source == target) and repeats are dropped; a source sentence of test is never in dev or
    train, one of dev never in train (see :func:`_dedupe`).
    """
    a, b, flipped = _parse_pair(pair, ("en-de", "en-fr"))
    en, other = (b, a) if flipped else (a, b)
    dirs, sources = fetch_libreoffice_help((en, other), cache_dir, from_dir)
    en_dir, xx_dir = dirs[en], dirs[other]
    pages = sorted(p.relative_to(en_dir).as_posix() for p in (en_dir / "text").rglob("*.html"))
    if not pages:
        raise DataError(f"no help pages under {en_dir / 'text'}; the package files look incomplete, fetch them again")
    log.info("pairing %d LibreOffice help pages (%s)", len(pages), pair)
    splits: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for rel in pages:
        if not (xx_dir / rel).is_file():
            continue
        en_text, xx_text = parse_help_html(en_dir / rel), parse_help_html(xx_dir / rel)
        bucket = _held_out(rel, "libreoffice-help")
        split = "test" if bucket < test_permille else "dev" if bucket < test_permille + dev_permille else "train"
        for key, s in en_text.items():
            t = xx_text.get(key, "")
            if s and t:
                splits[split].append((s, t))
    splits = _dedupe(splits)  # always on the English side, so en-de and de-en hold the same pairs
    if flipped:
        splits = {split: [(t, s) for s, t in pairs] for split, pairs in splits.items()}
    log.info("libreoffice-help %s: %d train, %d dev, %d test pairs", pair,
             len(splits["train"]), len(splits["dev"]), len(splits["test"]))
    for source in sources:
        source.update(corpus="libreoffice-help", licence="MPL-2.0")
    sources[0]["split"] = (f"by page, sha256 of the relative path: {test_permille / 10:g}% of pages test, "
                           f"{dev_permille / 10:g}% dev")
    return Corpus("libreoffice-help", splits["train"], splits["dev"], splits["test"], sources)
