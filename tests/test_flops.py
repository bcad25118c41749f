import random

from automoe.config import SearchSpace
from automoe.modeling import MoETransformer
from automoe.search.flops import cost


def test_wmt14_largest_matches_a_standard_transformer():
    """6+6 layers, d 640, FFN 3072, qkv 512, 32k tied vocabulary, counted independently."""
    d, f, qkv, V = 640, 3072, 512, 32000
    attn = 4 * d * qkv + 3 * qkv + d  # q, k, v: d->qkv with bias; out: qkv->d with bias
    ffn = 2 * d * f + f + d
    encoder = 6 * (attn + ffn + 4 * d)
    decoder = 6 * (2 * attn + ffn + 6 * d)
    expected = V * d + encoder + decoder
    assert cost(SearchSpace.preset("wmt14").largest()).total_params == expected == 91_380_992


def test_param_count_equals_model_and_active_params(tiny_space):
    rng = random.Random(5)
    for _ in range(10):
        arch = tiny_space.sample(rng)
        c = cost(arch)
        assert c.total_params == sum(p.numel() for p in MoETransformer(arch).parameters())
        assert c.active_params <= c.total_params - c.embedding_params
    dense = tiny_space.largest()
    assert cost(dense).active_params == cost(dense).total_params - cost(dense).embedding_params


def test_switch_has_dense_flops_but_more_params():
    space = SearchSpace.preset("small")
    dense, switch = cost(space.dense_baseline()), cost(space.switch_baseline(4))
    assert switch.total_params > 2.5 * dense.total_params
    # only the router is added per token
    assert 0 < switch.flops - dense.flops < 0.01 * dense.flops
    smallest = cost(space.smallest())
    assert smallest.flops < dense.flops / 4 and smallest.output_projection_flops == 2 * 30 * 256 * 8000
