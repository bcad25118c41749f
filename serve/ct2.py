"""CTranslate2 engine for `Translator` (dense exports written by `automoe.export.ctranslate2`)."""

from __future__ import annotations

import json
from pathlib import Path

from automoe.artifacts import EXPORT_INFO_NAME
from automoe.config import ArchConfig
from automoe.generate import check_generation_args

from .engines import check_threads


class CTranslate2Engine:
    """CTranslate2 inference; routing traces are not available (dense models have none)."""

    name = "ctranslate2"

    def __init__(self, folder: str | Path, threads: int | None = None, *, config: ArchConfig | None = None,
                 info: dict | None = None):
        """`config` and `info` (export_info.json), when the caller has read them already, are not read again."""
        try:
            import ctranslate2
        except ImportError as e:
            raise ImportError("engine='ctranslate2' needs ctranslate2: pip install 'automoe[ct2]'") from e
        from automoe.export.ctranslate2 import read_config
        self.folder = Path(folder)
        self.info = info if info is not None else json.loads((self.folder / EXPORT_INFO_NAME).read_text(
            encoding="utf-8"))
        self.config = config if config is not None else read_config(self.folder)
        self.translator = ctranslate2.Translator(str(self.folder), device="cpu",
                                                 intra_threads=check_threads(threads) or 0, inter_threads=1)
        vocab = json.loads((self.folder / "shared_vocabulary.json").read_text(encoding="utf-8"))
        self.pieces = vocab
        self.ids = {p: i for i, p in enumerate(vocab)}

    def translate_ids(self, batch: list[list[int]], *, beam: int, max_length: int, routing: bool = False,
                      shortlist=None):
        """Source id lists (EOS-terminated) -> `automoe.generate.Generation`; with a shortlist,
        CTranslate2's vocabulary map (vmap.txt) restricts each sentence's output layer (sentences
        run one at a time: CTranslate2 joins the lists of a whole batch)."""
        from automoe.generate import Generation

        if routing:
            raise ValueError("routing traces are available with engine='torch' only")
        check_generation_args(self.config, beam, max_length)
        eos = self.config.eos_id
        source = [[self.pieces[t] for t in ids if t != eos] for ids in batch]  # CT2 appends </s> itself
        restrict = {}
        if shortlist is not None:
            if not (self.folder / "vmap.txt").is_file():
                raise ValueError(f"{self.folder} has no vmap.txt: export the model folder again after "
                                 "`automoe shortlist build`")
            restrict = {"use_vmap": True, "max_batch_size": 1}
        results = self.translator.translate_batch(
            source, beam_size=beam, max_decoding_length=max_length, length_penalty=1.0, return_scores=True,
            **restrict,
        )
        tokens = [[self.ids[p] for p in r.hypotheses[0]] for r in results]
        return Generation(tokens, [r.scores[0] for r in results])
