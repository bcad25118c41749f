"""One `Translator` API over the inference engines: torch, onnxruntime and ctranslate2.

It tokenizes with the model's SentencePiece model, batches by length, decodes with the chosen
engine and detokenizes, and always returns one output per input line in input order.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime", "ctranslate2")
EXPORT_TARGETS = {"onnxruntime": "onnxruntime", "ctranslate2": "ctranslate2"}


@dataclass
class RoutedTranslation:
    """A translation with the expert every token was routed to (for the routing view)."""

    text: str
    source_pieces: list[str]
    target_pieces: list[str]
    encoder_routing: list[list[int]]  # [source piece][encoder layer] expert id
    decoder_routing: list[list[int]]  # [decoder input position][decoder layer] expert id


def export_cache_dir() -> Path:
    """Where model folders are exported on the fly (AUTOMOE_CACHE or ~/.cache/automoe/exports)."""
    root = os.environ.get("AUTOMOE_CACHE") or Path.home() / ".cache" / "automoe"
    return Path(root) / "exports"


def _cached_export(model_dir: Path, arch, engine: str, quantize: str | None) -> Path:
    """Export `model_dir` (whose ArchConfig is `arch`) for `engine` into the cache once (keyed by the
    weights' checksum). An ONNX export whose graphs' MoE forms are not what the exporter now writes
    by default (made by an older automoe) is redone."""
    from automoe.checkpoint import WEIGHTS_NAME
    from automoe.corpora import sha256_file
    from automoe.export.onnx import default_moe_dispatch, moe_graphs

    from automoe.shortlist import SHORTLIST_FILE

    digest = sha256_file(model_dir / WEIGHTS_NAME)[:16]  # read in blocks: the same key as before
    if (model_dir / SHORTLIST_FILE).is_file():  # exports carry the shortlist: it is part of the key
        digest += "-sl" + sha256_file(model_dir / SHORTLIST_FILE)[:8]
    folder = export_cache_dir() / f"{digest}-{engine}-{quantize or 'fp32'}"
    info_path = folder / "export_info.json"
    if info_path.exists() and (engine != "onnxruntime" or json.loads(info_path.read_text(encoding="utf-8")).get(
            "moe_graphs") == moe_graphs(arch, default_moe_dispatch(quantize))):
        return folder
    logger.info("exporting %s for %s (%s) into %s", model_dir, engine, quantize or "fp32", folder)
    if engine == "onnxruntime":
        from automoe.export.onnx import to_onnx

        return to_onnx(model_dir, folder, quantize=quantize, force=True)
    from automoe.export.ctranslate2 import to_ctranslate2

    return to_ctranslate2(model_dir, folder, quantize=quantize, force=True)


def load_engine(folder: Path, engine: str | None, quantize: str | None, threads: int | None):
    """An engine for a model folder or an export folder (exporting a model folder on the fly)."""
    info_path = folder / "export_info.json"
    if info_path.exists():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        target, quantized = info.get("target"), info.get("quantization")
        if engine not in (None, target):
            raise ValueError(f"{folder} is a {target} export; it cannot run with engine={engine!r}")
        if quantize not in (None, quantized):
            raise ValueError(f"{folder} is an {quantized or 'fp32'} export; it cannot run with quantize={quantize!r} "
                             f"(export the model folder again with that quantization)")
        engine = target
    engine = engine or "torch"
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not available; choose one of {list(ENGINES)}")
    if engine == "torch" and quantize is not None:
        raise ValueError(f"quantize={quantize!r} needs engine='onnxruntime' or 'ctranslate2' (the model folder is "
                         f"exported with it on the fly); engine='torch' runs the saved weights")
    from .engines import OnnxEngine, TorchEngine

    if engine == "torch":
        if info_path.exists():
            raise ValueError(f"{folder} is an export folder; engine='torch' needs a model folder")
        from automoe.modeling import MoETransformer

        return TorchEngine(MoETransformer.from_pretrained(folder), threads)
    if not info_path.exists():
        from automoe.checkpoint import read_model_config

        arch, _ = read_model_config(folder)  # a clear error for what is not a model folder, before exporting
        folder = _cached_export(folder, arch, engine, quantize)
    if engine == "onnxruntime":
        return OnnxEngine(folder, threads)
    from .ct2 import CTranslate2Engine

    return CTranslate2Engine(folder, threads)


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
                        revision: str | None = None, threads: int | None = None, shortlist: bool = False,
                        **kwargs) -> "Translator":
        """Load a model folder, an export folder or a Hub repo id, with its SentencePiece model.

        `engine` defaults to torch for a model folder and to the export's runtime for an export
        folder; a model folder with engine onnxruntime/ctranslate2 is exported once (with
        `quantize`, e.g. "int8") into `export_cache_dir()`. `shortlist=True` decodes each sentence
        over its lexical shortlist (the folder's shortlist.safetensors, see `automoe.shortlist`).
        """
        from automoe.checkpoint import read_model_config, resolve_model_dir

        if engine is not None and engine not in ENGINES:
            raise ValueError(f"engine={engine!r} is not available; choose one of {list(ENGINES)}")
        folder = resolve_model_dir(path_or_repo, revision=revision)
        backend = load_engine(folder, engine, quantize, threads)
        if shortlist:
            from automoe.shortlist import load_for_model

            kwargs["shortlist"] = load_for_model(getattr(backend, "folder", folder))
        info_path = Path(getattr(backend, "folder", folder)) / "export_info.json"
        if info_path.exists():  # an export folder (possibly made on the fly) describes itself
            meta = json.loads(info_path.read_text(encoding="utf-8"))
            tok_dir = info_path.parent
        else:
            _, meta = read_model_config(folder)
            tok_dir = folder
        return cls(backend, load_model_tokenizer(tok_dir, meta), threads=threads, **kwargs)

    def _encode(self, sentences: list[str]) -> list[list[int] | None]:
        cfg = self.config
        out = []
        for i, line in enumerate(sentences):
            if not isinstance(line, str):
                raise TypeError(f"sentence {i} is a {type(line).__name__}, not a str")
            if not line.strip():
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
        """Translate each sentence; empty or whitespace-only lines give "" and output order equals input order."""
        if isinstance(sentences, str):
            raise TypeError("translate() takes a list of sentences; wrap a single sentence in a list")
        _, results = self._run(list(sentences), beam, max_length, routing=False)
        return ["" if r is None else self.tokenizer.decode(r[0].tokens[r[1]]) for r in results]

    def translate_with_routing(self, sentences: list[str], *, beam: int = 4,
                               max_length: int | None = None) -> list[RoutedTranslation | None]:
        """Like `translate`, plus the top-1 expert of every source and target token in every layer."""
        encoded, results = self._run(list(sentences), beam, max_length, routing=True)
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


def load_model_tokenizer(model_dir: str | Path, meta: dict):
    """The SentencePiece model named in a model folder's config (`tokenizer.file`)."""
    from automoe.data import load_tokenizer

    name = (meta.get("tokenizer") or {}).get("file")
    if not name:
        raise ValueError(f"{model_dir} has no tokenizer in its config.json; save the model with tokenizer_file=...")
    return load_tokenizer(Path(model_dir) / name)
