import json
import random

import pytest

from automoe.config import ArchConfig, ConfigError, SearchSpace


@pytest.mark.parametrize("preset", ["small", "wmt14"])
def test_json_round_trip_200_random_archs(preset, tmp_path):
    space = SearchSpace.preset(preset)
    rng = random.Random(0)
    for i in range(200):
        arch = space.sample(rng)
        assert space.contains(arch)
        assert ArchConfig.from_dict(json.loads(arch.to_json())) == arch
        if i % 50 == 0:
            arch.save(tmp_path / "a.json")
            assert ArchConfig.load(tmp_path / "a.json") == arch
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_unknown_key_is_named(tiny_space):
    data = tiny_space.largest().to_dict()
    data["num_experts_typo"] = 3
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['num_experts_typo'\]"):
        ArchConfig.from_dict(data)


def test_wrong_list_length_is_named(tiny_space):
    data = tiny_space.largest().to_dict()
    data["decoder_heads"] = data["decoder_heads"][:-1]
    with pytest.raises(ConfigError, match=r"decoder_heads must have one entry per layer \(decoder_layers=3\), got 2"):
        ArchConfig.from_dict(data)


def test_value_outside_space_is_named(tiny_space):
    arch = tiny_space.largest().replace(encoder_embed_dim=20, decoder_ffn=((40,), (40, 41), (40,)))
    with pytest.raises(ConfigError) as e:
        tiny_space.validate(arch)
    msg = str(e.value)
    assert "encoder_embed_dim=20 not in [24, 16]" in msg
    assert "decoder_ffn[1][1]=41 not in [40, 24, 8]" in msg
    too_many = tiny_space.largest().replace(encoder_ffn=((40, 40, 40, 40),) * 3)
    assert "has 4 experts, more than max_experts=3" in "; ".join(tiny_space.violations(too_many))


def test_invalid_values_rejected():
    space = SearchSpace.preset("tiny")
    with pytest.raises(ConfigError, match=r"encoder_heads\[0\]=5 must be a positive divisor of qkv_dim=24"):
        space.largest().replace(encoder_heads=(5, 4, 4))
    with pytest.raises(ConfigError, match=r"decoder_cross_last_k\[0\]=4 must be in 1..encoder_layers=3"):
        space.largest().replace(decoder_cross_last_k=(4, 1, 1))
    with pytest.raises(ConfigError, match="dropout must be in"):
        space.largest().replace(dropout=1.5)
    with pytest.raises(ConfigError, match="unknown search space 'nope'"):
        SearchSpace.preset("nope")


def test_presets_match_design():
    small = SearchSpace.preset("small")
    assert small.d_model == (384, 256) and small.qkv_dim == 256 and small.encoder_layers == (4,)
    assert small.decoder_layers == (1, 2, 3, 4) and small.ffn_dims == (1536, 768, 384)
    assert small.heads == (4, 2) and small.cross_last_k == (1, 2, 3)
    assert small.max_experts == 4 and small.vocab_size == 8000
    wmt = SearchSpace.preset("wmt14")
    assert wmt.d_model == (640, 512) and wmt.qkv_dim == 512 and wmt.max_experts == 6 and wmt.vocab_size == 32000


def test_bounds_and_baselines(tiny_space):
    largest, smallest = tiny_space.largest(), tiny_space.smallest()
    assert largest.is_dense and smallest.is_dense
    assert largest.encoder_layers == 3 and largest.decoder_layers == 3 and largest.encoder_embed_dim == 24
    assert smallest.decoder_layers == 1 and smallest.encoder_ffn == ((8,), (8,))
    assert tiny_space.dense_baseline() == largest
    switch = tiny_space.switch_baseline(3)
    assert switch.encoder_experts == (3, 3, 3) and switch.decoder_ffn[0] == (40, 40, 40)
    with pytest.raises(ConfigError, match="num_experts=4 must be in 1..max_experts=3"):
        tiny_space.switch_baseline(4)
    for arch in (largest, smallest, switch, tiny_space.supernet_arch()):
        assert tiny_space.contains(arch)


def test_arch_is_hashable_and_immutable(tiny_space):
    arch = tiny_space.largest()
    assert {arch: 1}[ArchConfig.from_dict(arch.to_dict())] == 1
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.encoder_layers = 2


def test_config_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, automoe.config, automoe.search.flops; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
