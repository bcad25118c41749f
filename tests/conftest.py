"""Shared fixtures: tiny odd-sized models, fixed seeds, offline environment."""

import os
import random

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from automoe.config import SearchSpace  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def tiny_space() -> SearchSpace:
    """d_model {24, 16}, vocab 97, up to 3 experts of widths {40, 24, 8}."""
    return SearchSpace.preset("tiny")


@pytest.fixture
def rng() -> random.Random:
    return random.Random(1234)


@pytest.fixture
def batch():
    """Source [3, 7] and target [3, 9] ids with right padding in some rows."""
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, 97, (3, 7), generator=g)
    src[0, 5:] = 0
    src[2, 3:] = 0
    tgt = torch.randint(4, 97, (3, 9), generator=g)
    tgt[:, 0] = 2
    tgt[1, 6:] = 0
    return src, tgt
