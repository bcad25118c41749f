"""Mixture-of-Supernets contracts: supernet == extracted model, the architecture encoding,
gradients, strict save/load, the train-supernet CLI and search on a MoS supernet."""

import dataclasses
import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from automoe.checkpoint import CheckpointError
from automoe.cli import main
from automoe.config import ConfigError, SearchSpace
from automoe.mos import MixtureOfSupernets, arch_encoding, encoding_names, mixing_spread
from automoe.supernet import SuperTransformer, WeightSharing, build_supernet
from automoe.supernet_folder import load_supernet, save_supernet
from contracts import assert_extraction_exact

DATA = Path(__file__).parent / "data" / "bible-en-de"
MOS_KINDS = ("mos-layer", "mos-neuron")


def _mos(space, kind, sets=3, hidden=16, seed=0):
    torch.manual_seed(seed)
    return build_supernet(space, WeightSharing(kind, sets, hidden))


@pytest.mark.parametrize("kind", MOS_KINDS)
def test_supernet_equals_extracted_for_random_archs(tiny_space, rng, batch, kind):
    supernet = _mos(tiny_space, kind).eval()
    archs = [tiny_space.sample(rng) for _ in range(25)] + [
        tiny_space.largest(), tiny_space.smallest(), tiny_space.supernet_arch()]
    assert len(set(archs)) > 20
    assert_extraction_exact(supernet, archs, batch)


@pytest.mark.parametrize("kind", MOS_KINDS)
def test_mixing_depends_on_the_architecture(tiny_space, kind):
    supernet = _mos(tiny_space, kind)
    small, large = supernet.mixing(tiny_space.smallest()), supernet.mixing(tiny_space.largest())
    name = "encoder_layers.0.ffn.experts.0.fc1.weight"
    rows = 40 if kind == "mos-neuron" else 1  # fc1 of the widest expert has 40 output neurons
    assert small[name].shape == (rows, 3)
    torch.testing.assert_close(small[name].sum(-1), torch.ones(rows))
    assert not torch.allclose(small[name], large[name])
    # every linear weight is generated; LayerNorms, biases and the embedding are prefix-shared
    linear = {n for n, p in supernet.model.named_parameters() if p.dim() == 3}
    assert set(small) == linear and "embed_tokens.weight" not in linear
    assert all(supernet.model.get_parameter(n).shape[0] == 3 for n in linear)
    # the same arch with another dropout is the same architecture: same weights
    arch = tiny_space.smallest()
    a, b = supernet.subnet_weights(arch), supernet.subnet_weights(arch.replace(dropout=0.3))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("kind", MOS_KINDS)
def test_start_from_prefix_supernet_runs_every_subnet_as_the_prefix_one(tiny_space, rng, batch, kind):
    torch.manual_seed(1)
    prefix = build_supernet(tiny_space).eval()
    mos = _mos(tiny_space, kind, seed=2).eval()
    mos.load_prefix_supernet(prefix)
    src, tgt = batch
    for arch in [tiny_space.sample(rng) for _ in range(10)] + [tiny_space.largest(), tiny_space.smallest()]:
        with torch.no_grad():
            expected, got = prefix(src, tgt, arch), mos(src, tgt, arch)
        torch.testing.assert_close(got.logits, expected.logits)
    # the sets differ, so one training step moves the router (identical sets would give it no gradient)
    name = "decoder_layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(mos.model.get_parameter(name)[0], mos.model.get_parameter(name)[1])
    out = mos.train()(src, tgt, tiny_space.largest())
    out.logits.logsumexp(-1).mean().backward()
    assert mos.arch_router.fc2.weight.grad.abs().sum() > 0
    # the router starts from uniform mixtures: it tells no architecture apart yet
    archs = [tiny_space.largest(), tiny_space.smallest()]
    assert mixing_spread(mos, archs) < 1e-6 < mixing_spread(_mos(tiny_space, kind), archs) <= 1
    with pytest.raises(ValueError, match="at least two"):
        mixing_spread(mos, archs[:1])
    # a MoS supernet is no starting point for another
    with pytest.raises(ValueError, match="starts only from a prefix supernet"):
        mos.load_prefix_supernet(_mos(tiny_space, kind))


@pytest.mark.parametrize("preset", ["small", "tiny"])
def test_encoding_is_deterministic_normalised_and_distinguishes_archs(preset):
    space = SearchSpace.preset(preset)
    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(500)]
    encodings = [tuple(arch_encoding(space, a)) for a in archs]
    assert {len(e) for e in encodings} == {len(encoding_names(space))}
    assert all(0.0 <= v <= 1.0 for e in encodings for v in e)
    assert encodings == [tuple(arch_encoding(space, a)) for a in archs]  # deterministic
    # every pair of distinct architectures has distinct encodings
    distinct = len(set(archs))
    assert distinct > 450 and len(set(encodings)) == distinct
    for arch, enc in zip(archs, encodings):
        assert enc[encoding_names(space).index("decoder_layers")] == arch.decoder_layers / max(space.decoder_layers)
    names = encoding_names(space)
    small = dict(zip(names, arch_encoding(space, space.smallest())))
    assert small["encoder_ffn.0.0"] == min(space.ffn_dims) / max(space.ffn_dims)
    assert small["encoder_ffn.0.1"] == 0.0 and small[f"decoder_heads.{max(space.decoder_layers) - 1}"] == 0.0


def test_encoding_rejects_arch_outside_space(tiny_space):
    arch = tiny_space.largest().replace(encoder_ffn=((41,),) * 3)
    with pytest.raises(ConfigError, match="outside search space 'tiny'"):
        arch_encoding(tiny_space, arch)


@pytest.mark.parametrize("kind", MOS_KINDS)
def test_gradients_reach_every_weight_set_and_the_router(tiny_space, kind):
    supernet = _mos(tiny_space, kind).train()
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(4, 97, (6, 11), generator=g), torch.randint(4, 97, (6, 13), generator=g)
    arch = tiny_space.supernet_arch().replace(dropout=0.0)  # every layer, every expert at full width
    out = supernet(src, tgt, arch)
    (out.logits.float().pow(2).mean() + out.aux_loss).backward()
    assert all(r.unique().numel() == 3 for r in (*out.encoder_routing.unbind(-1), *out.decoder_routing.unbind(-1)))
    for name, p in supernet.model.named_parameters():
        if p.dim() == 3:  # E weight sets
            assert p.grad is not None, name
            assert all(p.grad[e].abs().sum() > 0 for e in range(p.shape[0])), name
    router = supernet.arch_router
    assert router.fc1.weight.grad.abs().sum() > 0 and router.fc1.bias.grad.abs().sum() > 0
    for name, (start, n) in supernet.heads.items():  # every matrix's head of the router learns
        assert router.fc2.weight.grad[start: start + n].abs().sum() > 0, name


@pytest.mark.parametrize("kind", MOS_KINDS)
def test_mos_supernet_saves_and_loads_strictly(tiny_space, batch, tmp_path, kind):
    supernet = _mos(tiny_space, kind).eval()
    save_supernet(supernet, tmp_path)
    assert json.loads((tmp_path / "weight_sharing.json").read_text()) == {"kind": kind, "sets": 3, "hidden": 16}
    loaded = load_supernet(tmp_path)
    assert isinstance(loaded, MixtureOfSupernets) and loaded.sharing == supernet.sharing
    assert loaded.space == tiny_space
    state, again = supernet.state_dict(), loaded.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)
    arch = tiny_space.sample(random.Random(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(*batch, arch).logits, supernet(*batch, arch).logits)

    weights = load_file(str(tmp_path / "supernet.safetensors"))
    del weights["arch_router.fc2.bias"]
    save_file(weights, str(tmp_path / "supernet.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing tensors \['arch_router.fc2.bias'\]"):
        load_supernet(tmp_path)
    save_supernet(supernet, tmp_path)
    (tmp_path / "weight_sharing.json").write_text(json.dumps({"kind": kind, "sets": 2, "hidden": 16}))
    with pytest.raises(CheckpointError, match=r"shape mismatch .*expected \(2, 40, 24\), found \(3, 40, 24\)"):
        load_supernet(tmp_path)
    (tmp_path / "weight_sharing.json").unlink()
    with pytest.raises(CheckpointError, match="Mixture-of-Supernets .*weight_sharing.json is missing"):
        load_supernet(tmp_path)
    (tmp_path / "weight_sharing.json").write_text(json.dumps({"kind": kind, "sets": 3, "router": 16}))
    with pytest.raises(ConfigError, match=r"weight_sharing.json.*unknown key\(s\) \['router'\]"):
        load_supernet(tmp_path)


def test_prefix_supernet_file_is_unchanged(tiny_space, tmp_path):
    """A prefix supernet's file holds the supernet architecture's model weights, as before MoS
    (so shipped folders without weight_sharing.json load as prefix)."""
    supernet = SuperTransformer(tiny_space)
    save_supernet(supernet, tmp_path)
    assert load_file(str(tmp_path / "supernet.safetensors")).keys() == supernet.model.state_dict().keys()
    (tmp_path / "weight_sharing.json").unlink()
    loaded = load_supernet(tmp_path)
    assert type(loaded) is SuperTransformer and loaded.sharing == WeightSharing("prefix")


def test_weight_sharing_config():
    assert WeightSharing("mos-neuron") == WeightSharing("mos-neuron", 2, 128)
    assert WeightSharing().to_dict() == {"kind": "prefix", "sets": None, "hidden": None}
    with pytest.raises(ConfigError, match="apply to mos-layer and mos-neuron only"):
        WeightSharing("prefix", sets=2)
    with pytest.raises(ConfigError, match=r"must be one of \['prefix', 'mos-layer', 'mos-neuron'\]"):
        WeightSharing("mos")
    with pytest.raises(ConfigError, match="sets must be a positive int"):
        WeightSharing("mos-layer", sets=0)


def test_parameter_cost_of_weight_sets(tiny_space):
    prefix = sum(p.numel() for p in SuperTransformer(tiny_space).parameters())
    linear = sum(m.weight.numel() for m in SuperTransformer(tiny_space).model.modules()
                 if isinstance(m, torch.nn.Linear))
    for kind in MOS_KINDS:
        mos = _mos(tiny_space, kind, sets=3, hidden=16)
        router = sum(p.numel() for p in mos.arch_router.parameters())
        assert sum(p.numel() for p in mos.parameters()) == prefix + 2 * linear + router
        logits = sum(n for _, n in mos.heads.values())
        assert router == len(encoding_names(tiny_space)) * 16 + 16 + 16 * logits + logits


def _train_cli(tmp_path, run, *extra):
    space = dataclasses.replace(SearchSpace.preset("tiny"), vocab_size=1000)
    space.save(tmp_path / "space.json")
    return main(["train", "supernet", "--data", str(DATA), "--space", str(tmp_path / "space.json"),
                 "--run-dir", str(tmp_path / run), "--sandwich", "--max-updates", "3", "--max-tokens", "300",
                 "--warmup-updates", "2", "--lr", "3e-3", "--threads", "1", "--valid-every", "1000",
                 "--valid-sentences", "10", "--seed", "5", *extra])


@pytest.mark.parametrize("kind", ["prefix", *MOS_KINDS])
def test_train_supernet_cli_each_kind(tmp_path, capsys, kind):
    extra = [] if kind == "prefix" else ["--mos-sets", "2", "--mos-hidden", "8"]
    assert _train_cli(tmp_path, "run", "--weight-sharing", kind, *extra) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["updates"] == 3 and math.isfinite(result["valid"]["largest"]["nll"])
    supernet = load_supernet(tmp_path / "run")
    assert supernet.sharing.kind == kind and (kind == "prefix") == (type(supernet) is SuperTransformer)
    info = json.loads((tmp_path / "run" / "supernet_info.json").read_text())
    assert info["weight_sharing"] == supernet.sharing.to_dict()
    if kind != "prefix":
        assert supernet.sharing == WeightSharing(kind, 2, 8)
        # resuming, or starting from it, with another kind is refused before any training
        other = "mos-neuron" if kind == "mos-layer" else "mos-layer"
        assert _train_cli(tmp_path, "run", "--weight-sharing", other, "--resume") == 2
        assert "records weight sharing" in capsys.readouterr().err
        assert _train_cli(tmp_path, "run2", "--init-from", str(tmp_path / "run")) == 2
        assert "pass the same --weight-sharing" in capsys.readouterr().err
    else:
        # a Mixture-of-Supernets may start from a trained prefix supernet
        assert _train_cli(tmp_path, "mos", "--init-from", str(tmp_path / "run"), "--weight-sharing", "mos-layer") == 0
        assert json.loads((tmp_path / "mos" / "supernet_info.json").read_text())["init_from"] == str(tmp_path / "run")


def test_train_supernet_cli_rejects_bad_flags(tmp_path, capsys):
    assert _train_cli(tmp_path, "run", "--mos-sets", "3") == 2
    assert "apply to mos-layer and mos-neuron only" in capsys.readouterr().err
    assert _train_cli(tmp_path, "run", "--weight-sharing", "mos") == 2
    assert "must be one of" in capsys.readouterr().err


def test_search_runs_on_a_mos_supernet(tmp_path):
    """The evolutionary search takes a MoS supernet folder as its fitness source."""
    from automoe.search.evolution import EvolutionConfig
    from automoe.search.run import run_search, supernet_fitness

    space = dataclasses.replace(SearchSpace.preset("tiny"), vocab_size=1000)
    torch.manual_seed(0)
    save_supernet(build_supernet(space, WeightSharing("mos-neuron", 2, 8)), tmp_path / "mos")
    supernet = load_supernet(tmp_path / "mos")
    fitness = supernet_fitness(supernet, DATA, sentences=10)
    assert math.isfinite(fitness(space.smallest())) and fitness(space.smallest()) != fitness(space.largest())
    cfg = EvolutionConfig(population=4, parents=2, mutations=1, crossovers=1, iterations=1, seed=0)
    best = run_search(tmp_path / "mos", DATA, tmp_path / "search", gflops=100.0, config=cfg, fitness_sentences=10)
    assert space.contains(best)
    info = json.loads((tmp_path / "search" / "best_info.json").read_text())
    assert info["weight_sharing"] == {"kind": "mos-neuron", "sets": 2, "hidden": 8}
    assert info["fitness"] == pytest.approx(fitness(best), rel=1e-3)
