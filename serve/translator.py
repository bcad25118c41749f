"""One `Translator` API over the inference engines: torch, onnxruntime and ctranslate2.

It tokenizes with the model's SentencePiece model, batches by length, decodes with the chosen
engine and detokenizes, and always returns one output per input line in input order.

`Translator.from_pretrained` decides once what a path is (`inspect_path`: a model folder, an
export folder, a supernet folder, which is refused with the way out, or a Hub repo id), verifies
the sha256 its folder records, and hands the parsed config to the engine. A model folder run on
onnxruntime or ctranslate2 is exported once into a cache keyed on everything the export depends
on (`export_cache_key`), so a changed weight, config or tokenizer file is never served stale.
"""

from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from automoe.artifacts import CONFIG_NAME, EXPORT_INFO_NAME, WEIGHTS_NAME, ArtifactError, sha256_file
from automoe.checkpoint import (Source, load_model_tokenizer, read_export_folder, read_folder, resolve_model_dir,
                                verify_source)
from automoe.config import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["ENGINES", "MAX_BEAM", "RoutedTranslation", "Source", "Translator", "export_cache_dir",
           "export_cache_key", "inspect_path", "load_engine", "load_model_tokenizer", "visible"]

ENGINES = ("torch", "onnxruntime", "ctranslate2")
# ONNX Runtime's BeamSearch operator refuses more than 128 beams; every engine keeps the same
# limit so that a request valid on one engine is valid on all.
MAX_BEAM = 128
# Characters that show nothing: controls (NUL, ESC, ...), format characters (zero-width space and
# joiners, byte-order mark, direction marks) and separators. A sentence made only of them is empty.
INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp"}


@dataclass
class RoutedTranslation:
    """A translation with the expert every token was routed to (for the routing view)."""

    text: str
    source_pieces: list[str]
    target_pieces: list[str]
    encoder_routing: list[list[int]]  # [source piece][encoder layer] expert id
    decoder_routing: list[list[int]]  # [decoder input position][decoder layer] expert id


def visible(text: str) -> bool:
    """Whether `text` shows anything: a character that is not whitespace, a control, a format
    character (zero-width, direction marks) or a separator."""
    return any(unicodedata.category(ch) not in INVISIBLE_CATEGORIES for ch in text)


def inspect_path(path_or_repo: str | Path, revision: str | None = None) -> Source:
    """Decide once what `path_or_repo` is (a local model or export folder, or a Hub repo id,
    downloaded) and read its config (`automoe.checkpoint.read_folder`); a supernet folder or any
    other folder is a `CheckpointError` that says what to pass instead."""
    return read_folder(resolve_model_dir(path_or_repo, revision=revision))


def export_cache_dir() -> Path:
    """Where model folders are exported on the fly (AUTOMOE_CACHE or ~/.cache/automoe/exports)."""
    root = os.environ.get("AUTOMOE_CACHE") or Path.home() / ".cache" / "automoe"
    return Path(root) / "exports"


def _exporter_digest() -> str:
    """sha256 of the exporters' source (Python and C++): exports made by other code are not reused
    even while the package version stays the same (a development checkout)."""
    import automoe.export as export_package

    root = Path(export_package.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".cc", ".h") and p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def export_cache_key(source: Source, engine: str, quantize: str | None, hashes: dict[str, str] | None = None) -> str:
    """A key over everything an export of a model folder depends on: the weights, config.json and
    tokenizer files, the target and quantization, and the automoe, torch and runtime versions and
    exporter source. `hashes` reuses digests computed by verification."""
    import automoe
    from automoe.artifacts import tool_versions
    from automoe.shortlist import SHORTLIST_FILE

    hashes = hashes or {}
    folder = source.folder
    tok = source.meta["tokenizer"].get("file")
    parts = {"weights": hashes.get(WEIGHTS_NAME) or sha256_file(folder / WEIGHTS_NAME),
             "config": sha256_file(folder / CONFIG_NAME),
             "tokenizer": (hashes.get(tok) or sha256_file(folder / tok)) if tok else None,
             "engine": engine, "quantize": quantize, "automoe": automoe.__version__,
             "versions": tool_versions("torch", engine), "exporter": _exporter_digest(),
             # exports carry the model folder's lexical shortlist (automoe.shortlist)
             "shortlist": sha256_file(folder / SHORTLIST_FILE) if (folder / SHORTLIST_FILE).is_file() else None}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _read_cached(folder: Path, source: Source, engine: str, quantize: str | None) -> tuple[Source | None, str]:
    """(the cached export folder, "") when it can be served, else (None, why not)."""
    if not (folder / EXPORT_INFO_NAME).is_file():
        return None, "missing"
    try:
        cached = read_export_folder(folder)
        if not cached.info.get("sha256"):
            return None, "it records no checksums"
        verify_source(cached)
    except (ArtifactError, ConfigError) as e:
        return None, str(e)
    if engine == "onnxruntime":
        from automoe.export.onnx import is_current
    else:
        from automoe.export.ctranslate2 import is_current
    if not is_current(folder, quantize):
        return None, "it is not what the exporter now writes (an older layout or MoE form)"
    return cached, ""


def cached_export(source: Source, engine: str, quantize: str | None, hashes: dict[str, str] | None = None) -> Source:
    """The export of a model folder for `engine` in `export_cache_dir()`, made once per
    `export_cache_key`; a cached folder that fails its own checksums or is out of date is made again.
    An exporter failure on weights that carry no checksums is an `ArtifactError` saying so."""
    key = export_cache_key(source, engine, quantize, hashes)
    folder = export_cache_dir() / f"{key[:20]}-{engine}-{quantize or 'fp32'}"
    cached, reason = _read_cached(folder, source, engine, quantize)
    if cached is not None:
        return cached
    if reason != "missing":
        logger.warning("cached export %s is not used (%s): exporting again", folder, reason)
    logger.info("exporting %s for %s (%s) into %s", source.folder, engine, quantize or "fp32", folder)
    try:
        if engine == "onnxruntime":
            from automoe.export.onnx import to_onnx

            return read_export_folder(to_onnx(source.folder, folder, quantize=quantize, force=True, verify=False))
        from automoe.export.ctranslate2 import to_ctranslate2

        return read_export_folder(to_ctranslate2(source.folder, folder, quantize=quantize, force=True, verify=False))
    except (ArtifactError, ConfigError, ImportError):
        raise
    except Exception as e:  # the exporters' and runtimes' own errors (e.g. the quantizer's AssertionError)
        unchecked = "" if source.meta.get("sha256") else (
            f"; {source.folder} records no checksums, so its weights may be corrupt: save or download it again")
        raise ArtifactError(f"exporting {source.folder} for {engine} ({quantize or 'fp32'}) failed: "
                            f"{type(e).__name__}: {e}{unchecked}") from e


def load_engine(source: Source, engine: str | None, quantize: str | None, threads: int | None, *,
                hashes: dict[str, str] | None = None):
    """An engine for a model or export folder whose files the caller has verified (`hashes`: the
    digests it computed, reused for the export cache key), exporting a model folder on the fly
    for onnxruntime / ctranslate2."""
    from .engines import OnnxEngine, TorchEngine

    if source.kind == "export":
        target, quantized = source.info["target"], source.info.get("quantization")
        if engine not in (None, target):
            hint = " (engine='torch' needs a model folder)" if engine == "torch" else ""
            raise ValueError(f"{source.folder} is a {target} export; it cannot run with engine={engine!r}{hint}")
        if quantize not in (None, quantized):
            raise ValueError(f"{source.folder} is an {quantized or 'fp32'} export; it cannot run with "
                             f"quantize={quantize!r} (export the model folder again with that quantization)")
        engine = target
    engine = engine or "torch"
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not available; choose one of {list(ENGINES)}")
    if engine == "torch" and quantize is not None:
        raise ValueError(f"quantize={quantize!r} needs engine='onnxruntime' or 'ctranslate2' (the model folder is "
                         f"exported with it on the fly); engine='torch' runs the saved weights")
    if engine == "torch":
        from automoe.modeling import MoETransformer

        model = MoETransformer.from_model_folder(source.folder, source.arch, source.meta, verify=False)
        return TorchEngine(model, threads)
    if source.kind == "model":
        source = cached_export(source, engine, quantize, hashes)
    if engine == "onnxruntime":
        return OnnxEngine(source.folder, threads, config=source.arch, info=source.info)
    from .ct2 import CTranslate2Engine

    return CTranslate2Engine(source.folder, threads, config=source.arch, info=source.info)


class Translator:
    """Translate sentences with a trained automoe model on any engine.

    >>> Translator.from_pretrained("models/dense-bible-en-de", engine="onnxruntime").translate(["Jesus wept."])
    """

    def __init__(self, model_or_engine, tokenizer, *, engine: str = "torch", threads: int | None = None,
                 max_batch_tokens: int = 4000, shortlist=None):
        from .engines import TorchEngine

        if hasattr(model_or_engine, "translate_ids"):
            self.backend = model_or_engine
        elif engine == "torch":
            self.backend = TorchEngine(model_or_engine, threads)
        else:
            raise ValueError("pass an engine object, or a MoETransformer with engine='torch'")
        self.engine = self.backend.name
        self.config = self.backend.config
        self.model = getattr(self.backend, "model", None)  # the torch model (torch engine only)
        if not isinstance(max_batch_tokens, int) or max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens={max_batch_tokens!r} must be a positive number of tokens")
        self.tokenizer = tokenizer
        self.threads = threads
        self.max_batch_tokens = max_batch_tokens
        self.max_source_tokens = self.config.max_positions
        self.shortlist = shortlist  # an automoe.shortlist.Shortlist: decode over per-sentence vocabularies

    @classmethod
    def from_pretrained(cls, path_or_repo: str | Path, *, engine: str | None = None, quantize: str | None = None,
                        revision: str | None = None, threads: int | None = None, verify: bool = True,
                        shortlist: bool = False,
                        **kwargs) -> "Translator":
        """Load a model folder, an export folder or a Hub repo id, with its SentencePiece model.

        `engine` defaults to torch for a model folder and to the export's runtime for an export
        folder; a model folder with engine onnxruntime/ctranslate2 is exported once (with
        `quantize`, e.g. "int8") into `export_cache_dir()`. The weight and tokenizer files must
        match the sha256 their folder recorded when it was written (`IntegrityError` naming the
        file); `verify=False` skips that for files edited on purpose. A supernet folder is refused
        with the command that extracts a model from it.
        `shortlist=True` decodes each sentence over its lexical shortlist (the folder's
        shortlist.safetensors, see `automoe.shortlist`).
        """
        if engine is not None and engine not in ENGINES:
            raise ValueError(f"engine={engine!r} is not available; choose one of {list(ENGINES)}")
        source = inspect_path(path_or_repo, revision=revision)
        hashes = verify_source(source) if verify else {}
        # the tokenizer first: a wrong one is refused before any export (exports copy the same file)
        tokenizer = load_model_tokenizer(source.folder, source.meta, vocab_size=source.arch.vocab_size)
        backend = load_engine(source, engine, quantize, threads, hashes=hashes)
        if shortlist:
            from automoe.shortlist import load_for_model

            kwargs["shortlist"] = load_for_model(getattr(backend, "folder", source.folder))
        return cls(backend, tokenizer, threads=threads, **kwargs)

    @staticmethod
    def _sentences(sentences) -> list[str]:
        """`sentences` as a list of str, or a TypeError that names what was passed instead."""
        if isinstance(sentences, str):
            raise TypeError("translate() takes a list of sentences; wrap a single sentence in a list")
        try:
            sentences = list(sentences)
        except TypeError:
            raise TypeError(f"translate() takes a list of sentences (str), got {type(sentences).__name__}") from None
        for i, line in enumerate(sentences):
            if not isinstance(line, str):
                raise TypeError(f"sentence {i} is a {type(line).__name__}, not a str")
        return sentences

    def _check_args(self, beam, max_length) -> None:
        """The same limits on every engine, checked before any decoding."""
        for name, value in (("beam", beam), ("max_length", max_length)):
            if value is None and name == "max_length":
                continue
            if not isinstance(value, numbers.Integral) or isinstance(value, bool):  # numpy ints are fine
                raise TypeError(f"{name} must be an int, got {value!r}")
        if not 1 <= beam <= MAX_BEAM:
            raise ValueError(f"beam={beam} is outside 1..{MAX_BEAM}, the beam sizes every engine decodes "
                             "(ONNX Runtime's BeamSearch operator allows at most 128)")
        if max_length is not None and not 1 <= max_length <= self.config.max_positions:
            raise ValueError(f"max_length={max_length} must be in 1..max_positions={self.config.max_positions}")

    def _encode(self, sentences: list[str]) -> list[list[int] | None]:
        cfg = self.config
        out = []
        for i, line in enumerate(sentences):
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as e:
                raise ValueError(f"sentence {i} is not valid Unicode text: character {e.start} is a lone surrogate "
                                 f"(U+{ord(line[e.start]):04X}); fix the input's encoding") from None
            if not visible(line):  # empty, whitespace, NUL or zero-width only: nothing to translate
                out.append(None)
                continue
            ids = self.tokenizer.encode(line.strip(), out_type=int)
            if len(ids) + 1 > self.max_source_tokens:
                logger.warning("sentence %d has %d tokens: truncated to the model's %d source tokens",
                               i, len(ids) + 1, self.max_source_tokens)
                ids = ids[: self.max_source_tokens - 1]
            out.append(ids + [cfg.eos_id])
        return out

    def _batches(self, encoded: list[list[int] | None]) -> list[list[int]]:
        order = sorted((i for i, ids in enumerate(encoded) if ids is not None), key=lambda i: len(encoded[i]))
        batches, batch, longest = [], [], 0
        for i in order:
            longest_new = max(longest, len(encoded[i]))
            if batch and longest_new * (len(batch) + 1) > self.max_batch_tokens:
                batches.append(batch)
                batch, longest_new = [], len(encoded[i])
            batch.append(i)
            longest = longest_new
        if batch:
            batches.append(batch)
        return batches

    def _run(self, sentences: list[str], beam: int, max_length: int | None, routing: bool):
        from automoe.generate import default_max_length

        encoded = self._encode(sentences)
        results: list = [None] * len(sentences)
        for batch in self._batches(encoded):
            ids = [encoded[i] for i in batch]
            limit = default_max_length(self, max(len(x) for x in ids)) if max_length is None else max_length
            extra = {} if self.shortlist is None else {"shortlist": self.shortlist}
            gen = self.backend.translate_ids(ids, beam=beam, max_length=limit, routing=routing, **extra)
            for row, i in enumerate(batch):
                results[i] = (gen, row)
        return encoded, results

    def translate(self, sentences: list[str], *, beam: int = 4, max_length: int | None = None) -> list[str]:
        """Translate each sentence; a sentence with nothing visible (empty, whitespace, control or
        zero-width characters only) gives "", and output order equals input order. A non-str
        sentence is a TypeError, a lone surrogate or a beam outside 1..MAX_BEAM a ValueError,
        each naming the sentence or value, raised before any decoding."""
        sentences = self._sentences(sentences)
        self._check_args(beam, max_length)
        _, results = self._run(sentences, beam, max_length, routing=False)
        return ["" if r is None else self.tokenizer.decode(r[0].tokens[r[1]]) for r in results]

    def translate_with_routing(self, sentences: list[str], *, beam: int = 4,
                               max_length: int | None = None) -> list[RoutedTranslation | None]:
        """Like `translate`, plus the top-1 expert of every source and target token in every layer."""
        sentences = self._sentences(sentences)
        self._check_args(beam, max_length)
        encoded, results = self._run(sentences, beam, max_length, routing=True)
        out = []
        for ids, r in zip(encoded, results):
            if r is None:
                out.append(None)
                continue
            gen, row = r
            tokens = gen.tokens[row]
            out.append(RoutedTranslation(
                text=self.tokenizer.decode(tokens),
                source_pieces=[self.tokenizer.id_to_piece(t) for t in ids],
                target_pieces=(["<s>"] + [self.tokenizer.id_to_piece(t) for t in tokens])[: len(gen.decoder_routing[row])],
                encoder_routing=gen.encoder_routing[row],
                decoder_routing=gen.decoder_routing[row],
            ))
        return out

