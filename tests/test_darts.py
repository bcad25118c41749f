"""DARTS: the relaxation equals the discrete layers at one-hot weights, reversible gradients equal
stored ones, the discretised architecture is in the space and extracts, the latency term, and a
tiny search end to end through the CLI."""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from automoe.checkpoint import save_state_dict
from automoe.config import ConfigError, SearchSpace
from automoe.modeling import Attention, MoETransformer
from automoe.moe import MoEFeedForward
from automoe.search.darts import (ArchParameters, DartsConfig, DartsSearch, discretise, expected_summary_features,
                                  predicted_latency_ms)
from automoe.search.darts_run import CHECKPOINT, run_darts
from automoe.search.darts_supernet import DartsSupernet, MixedAttention, MixedFeedForward
from automoe.search.latency import LatencyPredictor, summary_features
from automoe.supernet import SuperTransformer

DATA = Path(__file__).parent / "data" / "bible-en-de"


def _one_hot(index: int, n: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(index), n).float()


@pytest.mark.parametrize("widths", [(24,), (8, 40), (40, 24, 8)])
def test_one_hot_mixed_ffn_is_the_moe_layer_of_those_experts(widths):
    torch.manual_seed(0)
    dims = (40, 24, 8)
    ffn = MixedFeedForward(24, dims, 3, dropout=0.0).eval()
    count = _one_hot(len(widths) - 1, 3)
    width_probs = torch.stack([_one_hot(dims.index(widths[j]) if j < len(widths) else 0, 3) for j in range(3)])
    u = torch.randn(3, 7, 24)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[2, 3:] = False
    out, aux = ffn(u, count, width_probs, torch.tensor(1.0), mask)
    ref = MoEFeedForward(24, widths).eval()  # the supernet's slicing: expert prefixes, router rows R[:n]
    state = {}
    for j, w in enumerate(widths):
        e = ffn.experts[j]
        state |= {f"experts.{j}.fc1.weight": e.fc1.weight[:w], f"experts.{j}.fc1.bias": e.fc1.bias[:w],
                  f"experts.{j}.fc2.weight": e.fc2.weight[:, :w], f"experts.{j}.fc2.bias": e.fc2.bias}
    if len(widths) > 1:
        state["router.weight"] = ffn.router.weight[:len(widths)]
    ref.load_state_dict(state, strict=True)
    h, ref_aux, _ = ref(ffn.norm(u), mask)
    assert torch.allclose(out, h, atol=1e-5)
    assert torch.allclose(aux, ref_aux, atol=1e-6)


def test_width_mixture_equals_the_weighted_sum_of_prefix_ffns():
    torch.manual_seed(0)
    dims = (40, 8, 24)  # unsorted on purpose
    ffn = MixedFeedForward(24, dims, 2, dropout=0.0).eval()
    p = torch.softmax(torch.randn(2, 3), -1)
    x = torch.randn(2, 5, 24)
    out, _ = ffn(x, _one_hot(0, 2), p, torch.tensor(1.0), None)
    e, h = ffn.experts[0], ffn.norm(x)
    ref = sum(p[0, c] * F.linear(F.relu(F.linear(h, e.fc1.weight[:w], e.fc1.bias[:w])), e.fc2.weight[:, :w], e.fc2.bias)
              for c, w in enumerate(dims))
    assert torch.allclose(out, ref, atol=1e-5)


@pytest.mark.parametrize("cross", [False, True])
def test_one_hot_mixed_attention_is_attention_with_that_head_count(cross):
    torch.manual_seed(0)
    mixed = MixedAttention(24, 24, (4, 2, 3), dropout=0.0).eval()
    u, memory = torch.randn(3, 6, 24), torch.randn(3, 5, 24)
    mask = torch.ones(3, 1, 1, 5 if cross else 6, dtype=torch.bool)
    mask[0, ..., 3:] = False
    for k, heads in enumerate((4, 2, 3)):
        out = mixed(u, _one_hot(k, 3), torch.tensor(1.0), mask, memory if cross else None)
        ref = Attention(24, 24, 24, heads, 0.0).eval()
        ref.load_state_dict(mixed.attn.state_dict())
        x = mixed.norm(u)
        assert torch.allclose(out, ref(x, ref.project_kv(memory if cross else x), mask), atol=1e-5)


def _random_alphas(space: SearchSpace, seed: int = 0) -> ArchParameters:
    alphas = ArchParameters(space)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in alphas.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return alphas


def _loss_and_grads(model, alphas, src, tgt, reversible):
    model.set_reversible(reversible)
    params = list(model.parameters()) + list(alphas.parameters())
    for p in params:
        p.grad = None
    torch.manual_seed(3)  # same dropout seeds
    logits, aux = model(src, tgt, alphas.probabilities())
    loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten(), ignore_index=0) + 0.5 * aux
    loss.backward()
    return loss.detach(), [p.grad for p in params]


@pytest.mark.parametrize("splits", [2, 3])
def test_reversible_supernet_gradients_equal_stored_ones(tiny_space, batch, splits):
    torch.manual_seed(0)
    model = DartsSupernet(tiny_space, splits=splits, dropout=0.2).train()
    alphas = _random_alphas(tiny_space)
    src, tgt = batch
    loss_rev, rev = _loss_and_grads(model, alphas, src, tgt, True)
    loss_ref, ref = _loss_and_grads(model, alphas, src, tgt, False)
    assert torch.allclose(loss_rev, loss_ref, atol=1e-6)
    assert all(g is not None for g in ref[-len(list(alphas.parameters())):])  # every choice gets a gradient
    for a, b in zip(rev, ref):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("dense_only", [False, True])
def test_discretised_architecture_is_in_the_space_and_extracts(tiny_space, batch, dense_only):
    space = dataclasses.replace(tiny_space, max_experts=1) if dense_only else tiny_space
    for seed in range(4):
        alphas = _random_alphas(space, seed)
        arch = discretise(space, alphas, 16)
        space.validate(arch)
        assert arch.decoder_layers == space.decoder_layers[int(alphas.decoder_depth.argmax())]
        assert arch.encoder_experts[0] == int(alphas.encoder_experts[0].argmax()) + 1
        assert arch.decoder_heads[-1] == space.heads[int(alphas.decoder_heads[arch.decoder_layers - 1].argmax())]
    torch.manual_seed(0)
    supernet = SuperTransformer(space).eval()
    from automoe.extract import extract_subnet

    model = extract_subnet(supernet, arch)
    src, tgt = batch
    with torch.no_grad():
        assert torch.allclose(model(src, tgt).logits, supernet(src, tgt, arch).logits, atol=1e-5)
    with pytest.raises(ConfigError, match="d_model=20"):
        DartsSupernet(space, 20)


def _fitted_predictor(space: SearchSpace) -> LatencyPredictor:
    import random

    from automoe.search.flops import cost

    rng = random.Random(0)
    archs = [space.sample(rng) for _ in range(40)]
    return LatencyPredictor(space).fit(archs, [1 + 1e3 * cost(a).gflops + len(a.decoder_ffn) for a in archs])


def test_expected_latency_features_are_exact_for_one_hot_weights(tiny_space):
    predictor = _fitted_predictor(tiny_space)
    for seed in range(3):
        alphas = _random_alphas(tiny_space, seed)
        with torch.no_grad():
            for p in alphas.parameters():  # one-hot at the argmax: softmax(50 * one_hot) is one-hot in fp32
                p.copy_(50 * F.one_hot(p.argmax(-1), p.shape[-1]))
        arch = discretise(tiny_space, alphas, 24)
        features = expected_summary_features(tiny_space, alphas.probabilities(), 24)
        assert torch.allclose(features, torch.tensor(summary_features(arch)), rtol=1e-5, atol=1e-6)
        assert predicted_latency_ms(predictor, features).item() == pytest.approx(predictor.predict([arch])[0], rel=1e-5)
    uniform = ArchParameters(tiny_space).probabilities()
    features = expected_summary_features(tiny_space, uniform, 24)
    assert features[8].item() == pytest.approx(2.0)  # dec_layers: the mean of the choices 1, 2, 3
    ms = predicted_latency_ms(predictor, features)
    ms.backward()
    alphas = ArchParameters(tiny_space)
    probs = alphas.probabilities()
    predicted_latency_ms(predictor, expected_summary_features(tiny_space, probs, 24)).backward()
    assert alphas.decoder_depth.grad.abs().sum() > 0 and alphas.encoder_width.grad.abs().sum() > 0


def test_latency_term_moves_the_architecture_towards_faster_ones(tiny_space, batch):
    predictor = _fitted_predictor(tiny_space)
    search = DartsSearch(tiny_space, DartsConfig(arch_lr=0.2, latency_weight=100.0, dropout=0.0),
                         predictor=predictor, latency_ms=1e-3)
    src, tgt = batch
    b = {"src": src, "tgt_in": tgt, "tgt_out": tgt}
    before = search.arch_step(b)["expected_ms"]
    after = [search.arch_step(b)["expected_ms"] for _ in range(4)]
    assert after == sorted(after, reverse=True) and after[-1] < 0.9 * before
    with pytest.raises(ConfigError, match="needs a fitted predictor"):
        DartsSearch(tiny_space, latency_ms=5.0)
    with pytest.raises(ConfigError, match="log-linear"):
        DartsSearch(tiny_space, predictor=LatencyPredictor(tiny_space, model="mlp", members=1))


@pytest.mark.timeout(300)
def test_tiny_search_end_to_end_through_the_cli(tmp_path, capsys):
    from automoe.cli import main
    from automoe.data import load_tokenizer

    space = dataclasses.replace(SearchSpace.preset("tiny"), vocab_size=load_tokenizer(DATA).vocab_size())
    supernet_dir = tmp_path / "supernet"  # random weights: extraction only needs the layout
    supernet_dir.mkdir()
    torch.manual_seed(0)
    save_state_dict(SuperTransformer(space).model.state_dict(), supernet_dir / "supernet.safetensors")
    space.save(supernet_dir / "space.json")
    shutil.copyfile(DATA / "spm.model", supernet_dir / "spm.model")
    flags = ["--data", str(DATA), "--steps", "6", "--arch-start", "2", "--warmup", "2", "--max-tokens", "300",
             "--seed", "1"]
    assert main(["search", "run", "--method", "darts", "--supernet", str(supernet_dir), "--out",
                 str(tmp_path / "darts"), *flags]) == 0
    best = json.loads(capsys.readouterr().out)
    from automoe.config import ArchConfig

    arch = ArchConfig.load(tmp_path / "darts" / "best.json")
    assert arch.to_dict() == best and space.contains(arch)
    info = json.loads((tmp_path / "darts" / "best_info.json").read_text())
    assert info["method"] == "darts" and info["order"] == "first" and info["reversible"] and info["steps"] == 6
    log = [json.loads(line) for line in (tmp_path / "darts" / "darts.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 6 and "dev_loss" in log[-1]
    assert main(["extract", str(supernet_dir), "--arch", str(tmp_path / "darts" / "best.json"), "--out",
                 str(tmp_path / "model")]) == 0
    assert MoETransformer.from_pretrained(tmp_path / "model").config == arch
    # --no-reversible: the same search with stored activations (same losses up to rounding)
    cfg = DartsConfig(steps=6, arch_start=2, warmup=2, max_tokens=300, seed=1, reversible=False)
    run_darts(space, DATA, tmp_path / "stored", cfg, progress=False)
    stored = [json.loads(line) for line in (tmp_path / "stored" / "darts.jsonl").read_text().splitlines()]
    assert stored[-1]["dev_loss"] == pytest.approx(log[-1]["dev_loss"], abs=1e-3)
    with pytest.raises(FileExistsError, match="already holds a search .*pass --resume"):
        run_darts(space, DATA, tmp_path / "stored", cfg, progress=False)
    assert main(["search", "run", "--data", str(DATA), "--out", str(tmp_path / "evo"), "--gflops", "1"]) == 2
    assert "--supernet is required" in capsys.readouterr().err


def _tiny_data_space() -> SearchSpace:
    from automoe.data import load_tokenizer

    return dataclasses.replace(SearchSpace.preset("tiny"), vocab_size=load_tokenizer(DATA).vocab_size())


@pytest.mark.timeout(1200)  # well under a minute on an idle core; the limit allows for a busy machine
def test_resumed_search_is_bit_identical_to_an_uninterrupted_one(tmp_path, capsys):
    """6 steps in one go against 3 steps, 2 more whose checkpoint is lost (a kill after logging
    them), then a resume from step 3 to 6: same weights, alphas, log records and best.json."""
    from automoe.checkpoint import load_state_dict
    from automoe.cli import main

    space = _tiny_data_space()
    base = dict(arch_start=2, warmup=2, max_tokens=300, seed=1)
    run_darts(space, DATA, tmp_path / "full", DartsConfig(steps=6, log_every=1, **base), progress=False)
    cut = tmp_path / "cut"
    run_darts(space, DATA, cut, DartsConfig(steps=3, log_every=1, **base), progress=False)
    at_step_3 = (cut / CHECKPOINT).read_bytes()
    space.save(tmp_path / "space.json")
    flags = ["--space", str(tmp_path / "space.json"), "--data", str(DATA), "--out", str(cut), "--arch-start", "2",
             "--warmup", "2", "--max-tokens", "300", "--seed", "1"]
    assert main(["search", "run", "--method", "darts", *flags, "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert f"{cut} already holds a search" in err and "pass --resume" in err
    assert main(["search", "run", "--method", "darts", *flags, "--steps", "5", "--resume"]) == 0
    assert json.loads((cut / "best_info.json").read_text())["steps"] == 5
    (cut / CHECKPOINT).write_bytes(at_step_3)  # killed after step 5 was logged, before its checkpoint
    run_darts(space, DATA, cut, DartsConfig(steps=6, log_every=1, **base), resume=True, progress=False)

    full_state, cut_state = load_state_dict(tmp_path / "full" / CHECKPOINT), load_state_dict(cut / CHECKPOINT)
    assert full_state.keys() == cut_state.keys() and any(k.startswith("alphas.") for k in full_state)
    for key in full_state:  # weights, alphas, both Adam states, RNG: exactly equal
        assert torch.equal(full_state[key], cut_state[key]), key
    assert (cut / "best.json").read_text() == (tmp_path / "full" / "best.json").read_text()
    read = lambda folder: [{k: v for k, v in json.loads(line).items() if k != "wall_seconds"}  # noqa: E731
                           for line in (folder / "darts.jsonl").read_text().splitlines()]
    assert [r["step"] for r in read(cut)] == list(range(1, 7))  # steps 4 and 5 once each after the resume
    assert read(cut) == read(tmp_path / "full")
    info, full_info = (json.loads((f / "best_info.json").read_text()) for f in (cut, tmp_path / "full"))
    assert info["probabilities"] == full_info["probabilities"] and info["steps"] == 6 and info["finished"]
    assert [s["from_step"] for s in info["segments"]] == [0, 3]  # the lost segment left no trace
    assert info["cpu_seconds"] > 0 and info["wall_seconds"] > 0


@pytest.mark.timeout(600)
def test_resume_refuses_other_settings_and_a_folder_without_checkpoint(tmp_path):
    space = _tiny_data_space()
    cfg = DartsConfig(steps=2, arch_start=1, warmup=1, max_tokens=300, seed=1)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'none'} holds no DARTS checkpoint"):
        run_darts(space, DATA, tmp_path / "none", cfg, resume=True, progress=False)
    run_darts(space, DATA, tmp_path / "run", cfg, progress=False)
    with pytest.raises(FileExistsError, match="pass --resume"):
        run_darts(space, DATA, tmp_path / "run", cfg, progress=False)
    other = dataclasses.replace(cfg, lr=1e-3, splits=3)
    with pytest.raises(ConfigError, match=r"config\.lr: checkpoint 0\.0007, now 0\.001; config\.splits: checkpoint 2"):
        run_darts(space, DATA, tmp_path / "run", other, resume=True, progress=False)
    with pytest.raises(ConfigError, match="dense_only: checkpoint False, now True"):
        run_darts(space, DATA, tmp_path / "run", cfg, dense_only=True, resume=True, progress=False)
    with pytest.raises(ConfigError, match="--steps 1 is below the 2 steps"):
        run_darts(space, DATA, tmp_path / "run", dataclasses.replace(cfg, steps=1), resume=True, progress=False)
    (tmp_path / "run" / CHECKPOINT).unlink()  # e.g. killed before the first checkpoint
    with pytest.raises(FileNotFoundError, match="stopped before its first checkpoint"):
        run_darts(space, DATA, tmp_path / "run", cfg, resume=True, progress=False)
