"""Lexical vocabulary shortlists: decode each sentence over the target pieces its source makes likely.

At batch 1 with beam 4 every decoder step multiplies each beam's state by the whole
d_model x vocabulary output matrix; at a 32k vocabulary that term bounds the speedup any
architecture search can give (DESIGN.md section 4). Fast CPU translation systems (Marian's
`lex.s2t` shortlists, CTranslate2's vocabulary map) restrict the output layer per sentence to
the target pieces that co-occur with its source pieces, plus the most frequent target pieces.

A shortlist is built once from a dataset's training pairs, in the model's own SentencePiece
vocabulary: for every source piece s, the `top_k` target pieces t with the highest Dice
coefficient 2 c(s,t) / (c(s) + c(t)) over sentence co-occurrence counts (c(s,t) = training
pairs whose source holds s and whose target holds t), leaving out the always-included ones;
plus the `frequent` most frequent target pieces and the special ids (pad, unk, BOS, EOS),
always. A sentence's shortlist is the always-set joined with the lists of its source pieces.

File (`shortlist.safetensors` in the model folder; safetensors, never pickle):
  tensor "table"   int32 [vocab_size, top_k]: row s = the target ids of source id s, best
                   first, -1 where it has fewer (special ids' rows are empty)
  tensor "always"  int32 [n]: the ids included in every shortlist, ascending
  metadata "automoe_shortlist": a JSON header {"format", "format_version", "vocab_size",
                   "tokenizer_sha256", "special_ids", "top_k", "frequent", "score", "data",
                   "train_pairs", "stats": {"split", "sentences", "avg_size", "max_size",
                   "coverage"}}
  `stats` measures the shortlists of a held-out split: average / largest size per sentence
  and coverage (the fraction of reference target pieces inside their sentence's shortlist).
A file whose vocabulary size or tokenizer checksum is not the model's is refused, as is a
corrupt one, with an error naming the file.

Decoding over a shortlist renormalises the softmax over the shortlisted pieces (as CTranslate2's
vocabulary map does), so a translation equals the full-vocabulary one when the excluded pieces
hold negligible probability; it is off unless asked for (`Translator.from_pretrained(...,
shortlist=True)`).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SHORTLIST_FILE = "shortlist.safetensors"
VMAP_FILE = "vmap.txt"  # CTranslate2's vocabulary map, written into CT2 export folders
FORMAT = "automoe-shortlist"
FORMAT_VERSION = 1
HEADER_KEY = "automoe_shortlist"
SCORES = ("dice", "p_t_given_s")


class ShortlistError(ValueError):
    """A shortlist file cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class Shortlist:
    """A per-source-piece table of likely target pieces plus the pieces always included."""

    table: np.ndarray  # int32 [vocab_size, top_k], -1 padded
    always: np.ndarray  # int32 [n] ascending, special ids included
    header: dict

    @property
    def vocab_size(self) -> int:
        """Size of the vocabulary the ids belong to."""
        return int(self.header["vocab_size"])

    @property
    def special_ids(self) -> list[int]:
        """pad / unk / BOS / EOS ids, ascending: the first entries of every `ids` result."""
        return sorted(int(i) for i in self.header["special_ids"])

    def ids(self, source_ids: Sequence[int]) -> np.ndarray:
        """The shortlist of one source sentence (ids, EOS and padding allowed): the special ids
        first (ascending, so they sit at the same positions in every sentence's list), then the
        other ids ascending. int64 [K]."""
        src = np.asarray(source_ids, dtype=np.int64)
        src = src[(src >= 0) & (src < self.vocab_size)]
        rows = self.table[src].reshape(-1)
        chosen = np.union1d(self.always, rows[rows >= 0])
        special = np.asarray(self.special_ids, dtype=np.int64)
        return np.concatenate([special, np.setdiff1d(chosen, special)]).astype(np.int64)

    def batch_ids(self, batch: Sequence[Sequence[int]]) -> np.ndarray:
        """Shortlists of several sentences as one int64 [B, K_max] array, -1 padded on the right."""
        lists = [self.ids(src) for src in batch]
        out = np.full((len(lists), max(len(x) for x in lists)), -1, dtype=np.int64)
        for row, ids in enumerate(lists):
            out[row, : len(ids)] = ids
        return out

    def save(self, path: str | Path) -> Path:
        """Write the shortlist (see the module docstring) atomically; returns the path."""
        from safetensors.numpy import save_file

        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"table": np.ascontiguousarray(self.table, dtype=np.int32),
                   "always": np.ascontiguousarray(self.always, dtype=np.int32)},
                  str(tmp), metadata={HEADER_KEY: json.dumps(self.header, sort_keys=True)})
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, *, vocab_size: int | None = None,
             tokenizer_sha256: str | None = None) -> "Shortlist":
        """Read and check a shortlist file; with `vocab_size` / `tokenizer_sha256`, refuse one
        built for another vocabulary. Every problem is a `ShortlistError` naming the file."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise ShortlistError(f"{path} not found: build one with `automoe shortlist build --data DATA --model MODEL` "
                                 "(or size it on dev: `automoe shortlist tune`)")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise ShortlistError(f"{path} is not a readable safetensors file ({e}): build the shortlist again") from e
        try:
            header = json.loads(meta[HEADER_KEY])
        except (KeyError, json.JSONDecodeError) as e:
            raise ShortlistError(f"{path} has no valid {HEADER_KEY!r} JSON header: not an automoe shortlist") from e
        if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
            raise ShortlistError(f"{path}: format {header.get('format')!r} version {header.get('format_version')!r} "
                                 f"is not {FORMAT!r} version {FORMAT_VERSION}")
        if set(tensors) != {"table", "always"}:
            raise ShortlistError(f"{path}: expected tensors ['always', 'table'], found {sorted(tensors)}")
        table, always = tensors["table"], tensors["always"]
        V = header.get("vocab_size")
        if not isinstance(V, int) or table.ndim != 2 or table.shape[0] != V or table.dtype != np.int32 \
                or always.ndim != 1 or always.dtype != np.int32:
            raise ShortlistError(f"{path}: table {table.dtype}{list(table.shape)} / always {always.dtype}"
                                 f"{list(always.shape)} do not match the header's vocab_size {V!r}")
        if (table.size and (table.min() < -1 or table.max() >= V)) or (always.size and (always.min() < 0
                                                                                       or always.max() >= V)):
            raise ShortlistError(f"{path}: ids outside the vocabulary 0..{V - 1}; the file is corrupt")
        specials = header.get("special_ids") or []
        if not set(specials) <= set(always.tolist()):
            raise ShortlistError(f"{path}: the special ids {specials} are not all in the always-included set")
        if vocab_size is not None and V != vocab_size:
            raise ShortlistError(f"{path} was built for a vocabulary of {V} pieces, the model has {vocab_size}: "
                                 "build the shortlist again for this model")
        if tokenizer_sha256 is not None and header.get("tokenizer_sha256") != tokenizer_sha256:
            raise ShortlistError(f"{path} was built with another tokenizer (sha256 {header.get('tokenizer_sha256')}, "
                                 f"the model's is {tokenizer_sha256}): build the shortlist again for this model")
        return cls(table, always, header)


def _arch_and_tokenizer(folder: Path):
    """(ArchConfig, SentencePiece file) of a model or export folder, its config read once."""
    from .checkpoint import read_folder

    source = read_folder(folder)
    tok = (source.meta.get("tokenizer") or {}).get("file")
    if not tok:
        raise ShortlistError(f"{folder} names no tokenizer file in its config: a shortlist needs the model's "
                             "SentencePiece model")
    return source.arch, folder / tok


def load_for_model(folder: str | Path) -> Shortlist:
    """The shortlist of a model or export folder, checked against its vocabulary size and
    tokenizer checksum (`ShortlistError` naming the file otherwise)."""
    from .artifacts import sha256_file

    folder = Path(folder)
    arch, tok_file = _arch_and_tokenizer(folder)
    return Shortlist.load(folder / SHORTLIST_FILE, vocab_size=arch.vocab_size, tokenizer_sha256=sha256_file(tok_file))


def translator_kwargs(folder: str | Path) -> tuple[bool, dict]:
    """Whether a model folder has a shortlist, and the `Translator.from_pretrained` keyword
    arguments that decode over it: (True, {"shortlist": True}) or (False, {})."""
    available = (Path(folder) / SHORTLIST_FILE).is_file()
    return available, ({"shortlist": True} if available else {})


def _incidence(sentences: list[list[int]], vocab_size: int):
    """Sparse [N, V] 0/1 matrix: which ids each sentence holds (torch COO, coalesced)."""
    import torch

    rows, cols = [], []
    for i, ids in enumerate(sentences):
        unique = np.unique(np.asarray(ids, dtype=np.int64))
        rows.append(np.full(len(unique), i, dtype=np.int64))
        cols.append(unique)
    index = torch.from_numpy(np.stack([np.concatenate(rows), np.concatenate(cols)]))
    return torch.sparse_coo_tensor(index, torch.ones(index.shape[1]), (len(sentences), vocab_size),
                                   check_invariants=False).coalesce()


def cooccurrence_table(sources: list[list[int]], targets: list[list[int]], vocab_size: int, *, top_k: int,
                       exclude: Sequence[int], score: str = "dice") -> np.ndarray:
    """For every source id, the `top_k` target ids of highest `score` ("dice" = 2 c(s,t) / (c(s) + c(t)),
    or "p_t_given_s" = c(s,t) / c(s)) over sentence co-occurrence counts, best first, leaving out
    `exclude` (ids in every shortlist anyway). int32 [vocab_size, top_k], -1 padded."""
    import torch

    if score not in SCORES:
        raise ValueError(f"score={score!r} must be one of {list(SCORES)}")
    S, T = _incidence(sources, vocab_size), _incidence(targets, vocab_size)
    c_s = torch.sparse.sum(S, 0).to_dense().numpy()  # [V] sentences holding each source id
    c_t = torch.sparse.sum(T, 0).to_dense().numpy()
    with warnings.catch_warnings():  # torch calls its sparse matrix product "beta"; it is exact
        warnings.simplefilter("ignore", UserWarning)
        joint = torch.sparse.mm(S.t().coalesce(), T).coalesce()  # [V, V] c(s, t)
    (s_idx, t_idx), counts = joint.indices().numpy(), joint.values().numpy()
    if score == "dice":
        values = 2 * counts / (c_s[s_idx] + c_t[t_idx])
    else:
        values = counts / c_s[s_idx]
    keep = ~np.isin(t_idx, np.asarray(list(exclude), dtype=np.int64))
    s_idx, t_idx, values, counts = s_idx[keep], t_idx[keep], values[keep], counts[keep]
    # best first within each source row: sort by (source, -score, -count, target) at once
    order = np.lexsort((t_idx, -counts, -values, s_idx))
    s_idx, t_idx = s_idx[order], t_idx[order]
    starts = np.searchsorted(s_idx, np.arange(vocab_size + 1))
    table = np.full((vocab_size, top_k), -1, dtype=np.int32)
    for s in np.nonzero(np.diff(starts))[0]:
        chosen = t_idx[starts[s]: min(starts[s + 1], starts[s] + top_k)]
        table[s, : len(chosen)] = chosen
    return table


def shortlist_stats(shortlist: Shortlist, sources: list[list[int]], targets: list[list[int]] | None = None) -> dict:
    """Average / largest shortlist size over `sources` and, with reference `targets`, the coverage:
    the fraction of reference target pieces that their sentence's shortlist holds."""
    sizes, covered, total = [], 0, 0
    for i, src in enumerate(sources):
        ids = shortlist.ids(src)
        sizes.append(len(ids))
        if targets is not None:
            ref = np.asarray(targets[i], dtype=np.int64)
            covered += int(np.isin(ref, ids).sum())
            total += len(ref)
    stats = {"sentences": len(sources), "avg_size": round(float(np.mean(sizes)), 1) if sizes else 0.0,
             "max_size": int(max(sizes, default=0)), "vocab_size": shortlist.vocab_size}
    if targets is not None:
        stats["coverage"] = round(covered / max(total, 1), 5)
    return stats


def build_shortlist(data_dir: str | Path, model_dir: str | Path, *, top_k: int = 50, frequent: int = 100,
                    score: str = "dice", stats_split: str = "dev", max_pairs: int | None = None) -> Shortlist:
    """Build the shortlist of a model folder from a dataset folder's training pairs (see the module
    docstring), tokenized with the model's own SentencePiece model; `stats` are measured on
    `stats_split` (its shortlists' sizes and coverage of its references)."""
    return build_shortlists(data_dir, model_dir, [(top_k, frequent)], score=score, stats_split=stats_split,
                            max_pairs=max_pairs)[0]


def build_shortlists(data_dir: str | Path, model_dir: str | Path, sizes: Sequence[tuple[int, int]], *,
                     score: str = "dice", stats_split: str = "dev", max_pairs: int | None = None) -> list[Shortlist]:
    """`build_shortlist` for each (top_k, frequent) of `sizes`, tokenizing the data once."""
    from .artifacts import sha256_file
    from .data import encode_file, load_tokenizer

    data_dir, model_dir = Path(data_dir), Path(model_dir)
    for top_k, frequent in sizes:
        if not isinstance(top_k, int) or top_k < 1 or not isinstance(frequent, int) or frequent < 0:
            raise ValueError(f"top_k={top_k!r} must be >= 1 and frequent={frequent!r} >= 0")
    arch, tok_file = _arch_and_tokenizer(model_dir)
    sp = load_tokenizer(tok_file)
    if sp.get_piece_size() != arch.vocab_size:
        raise ShortlistError(f"{tok_file} has {sp.get_piece_size()} pieces but {model_dir}'s vocab_size is "
                             f"{arch.vocab_size}")
    for split in ("train", stats_split):
        for side in ("src", "tgt"):
            if not (data_dir / f"{split}.{side}").is_file():
                raise ShortlistError(f"{data_dir / f'{split}.{side}'} not found: give a dataset folder "
                                     "written by `automoe data build`")
    logger.info("encoding %s with %s", data_dir, tok_file)
    sources = encode_file(sp, data_dir / "train.src")[:max_pairs]
    targets = encode_file(sp, data_dir / "train.tgt")[:max_pairs]
    if len(sources) != len(targets):
        raise ShortlistError(f"{data_dir}: train.src has {len(sources)} lines but train.tgt {len(targets)}")
    held_out = encode_file(sp, data_dir / f"{stats_split}.src"), encode_file(sp, data_dir / f"{stats_split}.tgt")
    specials = sorted({arch.pad_id, arch.bos_id, arch.eos_id} | ({sp.unk_id()} if sp.unk_id() >= 0 else set()))
    counts = np.bincount(np.concatenate([np.asarray(t, dtype=np.int64) for t in targets]), minlength=arch.vocab_size)
    counts[specials] = -1
    by_count = np.argsort(-counts, kind="stable")
    tokenizer_sha256 = sha256_file(tok_file)
    shortlists = []
    for top_k, frequent in sizes:
        most_frequent = by_count[:frequent][counts[by_count[:frequent]] > 0]
        always = np.union1d(most_frequent, specials).astype(np.int32)
        table = cooccurrence_table(sources, targets, arch.vocab_size, top_k=top_k, exclude=always.tolist(),
                                   score=score)
        table[specials] = -1  # EOS / padding say nothing about the words of a translation
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "vocab_size": arch.vocab_size,
                  "tokenizer_sha256": tokenizer_sha256, "special_ids": specials, "top_k": top_k,
                  "frequent": frequent, "score": score, "data": str(data_dir), "train_pairs": len(sources)}
        shortlist = Shortlist(table, always, header)
        header["stats"] = {"split": stats_split, **shortlist_stats(shortlist, *held_out)}
        shortlists.append(shortlist)
    return shortlists


def vmap_lines(shortlist: Shortlist, pieces: Sequence[str]) -> list[str]:
    """CTranslate2's vocabulary map: "<source piece>\\t<target pieces>" per source piece with a
    list, and "\\t<pieces always included>" (CTranslate2 adds unk, BOS and EOS itself)."""
    lines = ["\t" + " ".join(pieces[i] for i in shortlist.always)]
    for s in range(shortlist.vocab_size):
        row = shortlist.table[s]
        row = row[row >= 0]
        if len(row):
            lines.append(pieces[s] + "\t" + " ".join(pieces[t] for t in row))
    return lines


def write_vmap(shortlist: Shortlist, pieces: Sequence[str], path: str | Path) -> Path:
    """Write `vmap_lines` to `path` (UTF-8, one rule per line) atomically."""
    path = Path(path)
    if len(pieces) != shortlist.vocab_size:
        raise ShortlistError(f"{len(pieces)} pieces given for a shortlist of vocabulary {shortlist.vocab_size}")
    bad = [p for p in pieces if any(c in p for c in " \t\n")]
    if bad:
        raise ShortlistError(f"pieces {bad[:5]} hold whitespace, which a CTranslate2 vocabulary map cannot express")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(vmap_lines(shortlist, pieces)) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def carry_into_export(model_dir: str | Path, out_dir: str | Path, pieces: Sequence[str] | None = None) -> dict | None:
    """Copy a model folder's shortlist (checked) into an export folder being written, plus
    CTranslate2's `vmap.txt` when the target's `pieces` are given; returns the export_info entry
    ({"file", "sha256", "vmap"}) or None when the model folder has no shortlist."""
    import shutil

    from .artifacts import sha256_file

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if not (model_dir / SHORTLIST_FILE).is_file():
        return None
    shortlist = load_for_model(model_dir)
    shutil.copyfile(model_dir / SHORTLIST_FILE, out_dir / SHORTLIST_FILE)
    entry = {"file": SHORTLIST_FILE, "sha256": sha256_file(out_dir / SHORTLIST_FILE), "vmap": None}
    if pieces is not None:
        write_vmap(shortlist, pieces, out_dir / VMAP_FILE)
        entry["vmap"] = VMAP_FILE
    return entry
