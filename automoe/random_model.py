"""Model folders with random weights: tiny test models, latency measurements, load tests."""

from __future__ import annotations

from pathlib import Path

import torch

from .config import ArchConfig
from .modeling import MoETransformer


def save_random_model(arch: ArchConfig, folder: str | Path, *, seed: int = 0, sharpen: float = 1.0,
                      tokenizer_file: str | Path | None = None, **save_kwargs) -> Path:
    """Write a model folder of `arch` with weights drawn under `torch.manual_seed(seed)`.

    `sharpen` scales the (tied) embeddings: a sharper output distribution makes random-weight
    decoding less degenerate, so parity tests compare sentences that really differ.
    `save_kwargs` go to `save_pretrained` (card, training, dtype). Returns the folder.
    """
    torch.manual_seed(seed)
    model = MoETransformer(arch)
    if sharpen != 1.0:
        with torch.no_grad():
            model.embed_tokens.weight.mul_(sharpen)
    model.save_pretrained(folder, tokenizer_file=tokenizer_file, **save_kwargs)
    return Path(folder)
