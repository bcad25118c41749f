"""One `Translator` API over the inference engines (torch now; onnxruntime and ctranslate2 with
the export stage). It tokenizes with the model's SentencePiece model, batches by length, decodes
and detokenizes, and always returns one output per input line in input order."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

ENGINES = ("torch",)


@dataclass
class RoutedTranslation:
    """A translation with the expert every token was routed to (for the routing view)."""

    text: str
    source_pieces: list[str]
    target_pieces: list[str]
    encoder_routing: list[list[int]]  # [source piece][encoder layer] expert id
    decoder_routing: list[list[int]]  # [decoder input position][decoder layer] expert id


class Translator:
    """Translate sentences with a trained automoe model.

    >>> Translator.from_pretrained("models/dense-bible-en-de").translate(["In the beginning was the Word."])
    """

    def __init__(self, model, tokenizer, *, engine: str = "torch", threads: int | None = None,
                 max_batch_tokens: int = 4000):
        if engine not in ENGINES:
            raise ValueError(f"engine={engine!r} is not available; choose one of {list(ENGINES)}")
        self.model = model
        self.tokenizer = tokenizer
        self.engine = engine
        self.threads = threads
        self.max_batch_tokens = max_batch_tokens
        self.max_source_tokens = model.config.max_positions

    @classmethod
    def from_pretrained(cls, path_or_repo: str | Path, *, engine: str = "torch", revision: str | None = None,
                        threads: int | None = None, **kwargs) -> "Translator":
        """Load a model folder (or Hub repo id) and its SentencePiece model."""
        if engine not in ENGINES:
            raise ValueError(f"engine={engine!r} is not available; choose one of {list(ENGINES)}")
        from automoe.modeling import MoETransformer

        model = MoETransformer.from_pretrained(path_or_repo, revision=revision)
        return cls(model, load_model_tokenizer(model.source_dir, model.meta), engine=engine, threads=threads,
                   **kwargs)

    def _encode(self, sentences: list[str]) -> list[list[int] | None]:
        cfg = self.model.config
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
        import torch

        from automoe.generate import generate

        if self.threads:
            torch.set_num_threads(self.threads)
        encoded = self._encode(sentences)
        results: list = [None] * len(sentences)
        pad = self.model.config.pad_id
        for batch in self._batches(encoded):
            width = max(len(encoded[i]) for i in batch)
            src = torch.full((len(batch), width), pad, dtype=torch.long)
            for row, i in enumerate(batch):
                src[row, : len(encoded[i])] = torch.tensor(encoded[i])
            gen = generate(self.model, src, beam=beam, max_length=max_length, return_routing=routing)
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
