"""Latency timing against a reference, reference-scaled tables and the predictor ensemble (no engine)."""

import json
import random

import pytest

from automoe.config import SearchSpace
from automoe.search import latency
from automoe.search.latency import LatencyPredictor, feature_names, features, time_runner
from automoe.search.run import fit_predictor, holdout_split, read_table, table_latencies


class FakeClock:
    """A perf_counter that only moves when a fake runner 'decodes'."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now

    def runner(self, ms_per_token: float, bursts: set | None = None):
        calls = []

        def run(ids):
            calls.append(len(ids))
            slow = 5.0 if bursts and len(calls) in bursts else 1.0  # contention hits this one call
            self.now += ms_per_token * len(ids) * slow / 1000

        run.calls = calls
        return run


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(latency.time, "perf_counter", c.perf_counter)
    return c


def test_time_runner_keeps_fastest_repeat_and_ratio(clock):
    sentences = [[1] * n for n in (3, 5, 7, 9, 11)]
    cand = clock.runner(2.0, bursts={4, 7})  # calls 4 and 7 (after 3 warm-ups) are 5x slow
    ref = clock.runner(0.5)
    out = time_runner(cand, sentences, warmup=3, repeats=2, reference=ref)
    assert len(cand.calls) == len(ref.calls) == 3 + 2 * len(sentences)
    assert out["median_ms"] == pytest.approx(2.0 * 7)  # bursts dropped by the fastest of 2
    assert out["ratio"] == pytest.approx(4.0)
    assert out["reference_ms"] == pytest.approx(0.5 * 7)
    assert out["p90_ms"] == pytest.approx(2.0 * 9)

    alone = time_runner(cand, sentences, warmup=0, repeats=1)
    assert "ratio" not in alone and alone["sentences"] == 5
    with pytest.raises(ValueError, match="repeats=0"):
        time_runner(cand, sentences, repeats=0)


def test_time_runner_alternates_who_goes_first(clock):
    order = []

    def named(name):
        def run(ids):
            order.append(name)
            clock.now += 0.001
        return run

    cand, ref = named("c"), named("r")
    time_runner(cand, [[1], [2]], warmup=0, repeats=2, reference=ref)
    assert "".join(order) == "crrc" + "rccr"


def _rows(space, n, *, reference=True, seed=0):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        arch = space.sample(rng)
        # roughly a product of per-part costs, as measured latencies are
        mean_widths = sum(sum(w) / len(w) for w in arch.decoder_ffn)
        true = 3.0 * 1.25 ** arch.decoder_layers * 1.05 ** sum(len(w) > 1 for w in arch.decoder_ffn) * (
            1 + mean_widths / 20000)
        row = {"index": i, "arch": arch.to_dict(), "median_ms": true * (1 + 0.5 * (i % 3)), "engine": "onnxruntime",
               "threads": 1, "quantization": "int8", "beam": 4, "out_len": 30}
        if reference:
            row.update(ratio=true / 10, reference_ms=10.0 + i % 3, reference=space.smallest().to_dict())
        rows.append(row)
    return rows


def test_reference_table_scales_ratios_by_one_median(tmp_path):
    space = SearchSpace.preset("tiny")
    rows = _rows(space, 9)
    ms, scale = table_latencies(rows)
    assert scale == 11.0
    assert ms == pytest.approx([r["ratio"] * 11.0 for r in rows])
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_table(table)[1] == pytest.approx(ms)
    plain = _rows(space, 4, reference=False)
    assert table_latencies(plain) == ([r["median_ms"] for r in plain], None)
    with pytest.raises(ValueError, match="different references"):
        table_latencies(rows + plain)


def test_holdout_split_is_seeded_and_disjoint():
    test, train = holdout_split(50, 0.2, seed=3)
    assert len(test) == 10 and sorted(test + train) == list(range(50))
    assert holdout_split(50, 0.2, seed=3) == (test, train) and holdout_split(50, 0.2, seed=4) != (test, train)


def test_predictor_fits_saves_and_loads_both_models(tmp_path):
    space = SearchSpace.preset("small")
    rows = _rows(space, 80)
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = fit_predictor(space, table, tmp_path / "p.safetensors", epochs=300, members=3)
    assert set(report) >= {"automoe", "automoe_mlp", "hat", "hat_linear"} and report["model"] == "linear"
    # the fake latency is a function of the decoder's FFN widths and depth: the sums capture it
    assert report["automoe"]["mape"] < 10 and report["automoe"]["kendall_tau"] > 0.8
    assert report["measured_on"]["reference_scale_ms"] == 11.0
    loaded = LatencyPredictor.load(tmp_path / "p.safetensors")
    assert loaded.model == "linear" and loaded.measured_on == report["measured_on"]
    archs, ms = read_table(table)
    fitted = LatencyPredictor(space).fit(archs, ms)
    assert loaded.predict(archs[:5]) == pytest.approx(fitted.predict(archs[:5]), rel=1e-9)

    fit_predictor(space, table, tmp_path / "mlp.safetensors", epochs=300, members=3, model="mlp")
    mlp = LatencyPredictor.load(tmp_path / "mlp.safetensors")
    assert mlp.model == "mlp" and len(mlp.nets) == 3
    fitted = LatencyPredictor(space, members=3, model="mlp").fit(archs, ms, epochs=300)
    assert mlp.predict(archs[:5]) == pytest.approx(fitted.predict(archs[:5]), rel=1e-5)
    members = [LatencyPredictor(space, members=1, model="mlp") for _ in range(3)]
    for m, net in zip(members, mlp.nets):
        m.nets[0].load_state_dict(net.state_dict())
        m.mean, m.std, m.y_scale = mlp.mean, mlp.std, mlp.y_scale
    mean_of_members = [sum(v) / 3 for v in zip(*(m.predict(archs[:4]) for m in members))]
    assert mlp.predict(archs[:4]) == pytest.approx(mean_of_members, rel=1e-5)


def test_linear_predictor_recovers_a_product_of_costs():
    space = SearchSpace.preset("small")
    archs = [space.sample(random.Random(i)) for i in range(60)]
    from automoe.search.latency import summary_features

    truth = [2.0 * 1.3 ** summary_features(a)[8] * 1.1 ** summary_features(a)[3] for a in archs]
    p = LatencyPredictor(space, ridge=1e-6).fit(archs, truth)
    assert p.predict(archs) == pytest.approx(truth, rel=1e-6)


def test_predictor_refuses_other_features(tmp_path, monkeypatch):
    space = SearchSpace.preset("tiny")
    p = LatencyPredictor(space, members=2, model="mlp")
    p.save(tmp_path / "p.safetensors")
    monkeypatch.setattr(latency, "feature_names", lambda s: feature_names(s) + ["new"])
    with pytest.raises(ValueError, match="other features"):
        LatencyPredictor.load(tmp_path / "p.safetensors")
    with pytest.raises(ValueError, match="members=0"):
        LatencyPredictor(space, members=0)
    with pytest.raises(ValueError, match="model='gbt'"):
        LatencyPredictor(space, model="gbt")


def test_features_match_names_and_sum_layers():
    space = SearchSpace.preset("small")
    arch = space.sample(random.Random(5))
    f = dict(zip(feature_names(space), features(space, arch)))
    assert len(f) == len(features(space, arch))
    assert f["dec_moe_layers"] == sum(len(w) > 1 for w in arch.decoder_ffn)
    assert f["dec_ffn_weights_all"] == pytest.approx(
        sum(2 * arch.decoder_embed_dim * sum(w) for w in arch.decoder_ffn) / 1e6)
