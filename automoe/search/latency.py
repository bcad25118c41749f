"""Latency on the deployment engine, and a predictor fitted to those measurements.

`measure_latency` builds an architecture (random weights unless a trained model is given),
exports it to the engine, and times batch-1 beam-4 decoding of *real* sentences with a fixed
output length (EOS suppressed), after warm-up: real sentences make MoE routing vary the way it
does in deployment, unlike a dummy input of one repeated token. On a shared machine each
sentence is also decoded by a fixed reference model, back to back (`time_runner`), and the
ratio is what repeats.

`LatencyPredictor` maps an architecture to milliseconds from features computed from its
per-layer values (expert counts and widths included). Its default regressor is ridge
regression of log-latency on whole-model sums (weights read per decoder step, MoE layers and
experts, ...); an MLP ensemble (HAT's choice) is the alternative. The measured reason for the
default is in the class docstring and benchmarks/results/predictor.jsonl. It saves to one
safetensors file with its feature spec and normalisers in the metadata (no pickle).
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..config import ArchConfig, SearchSpace

ENGINES = ("onnxruntime", "ctranslate2", "torch")


# ----------------------------------------------------------------------------- measurement

def _fixed_length_runner(folder: Path, engine: str, threads: int, beam: int, out_len: int):
    """A function ids -> None that decodes exactly `out_len` tokens with the engine."""
    import numpy as np

    if engine == "onnxruntime":
        from automoe.serve.engines import OnnxEngine

        eng = OnnxEngine(folder, threads)
        fixed = {"max_length": np.array([out_len + 1], np.int32), "min_length": np.array([out_len + 1], np.int32),
                 "num_beams": np.array([beam], np.int32), "num_return_sequences": np.array([1], np.int32),
                 "length_penalty": np.array([1.0], np.float32), "repetition_penalty": np.array([1.0], np.float32)}

        def run(ids: list[int]) -> None:
            src = np.array([ids], dtype=np.int32)
            eng.beam.run(None, {"input_ids": src, "attention_mask": np.ones_like(src), **fixed})
        return run
    if engine == "ctranslate2":
        from automoe.serve.ct2 import CTranslate2Engine

        eng = CTranslate2Engine(folder, threads)

        def run(ids: list[int]) -> None:
            eng.translator.translate_batch([[eng.pieces[t] for t in ids[:-1]]], beam_size=beam,
                                           min_decoding_length=out_len, max_decoding_length=out_len)
        return run
    from automoe.generate import TorchStepper, beam_search
    from automoe.modeling import MoETransformer

    model = MoETransformer.from_pretrained(folder)
    torch.set_num_threads(threads)
    cfg = model.config

    @torch.no_grad()
    def run(ids: list[int]) -> None:
        src = torch.tensor([ids])
        beam_search(TorchStepper(model, src, beam), 1, beam=beam, max_length=out_len, bos_id=cfg.bos_id,
                    eos_id=cfg.eos_id, pad_id=cfg.pad_id, min_length=out_len)
    return run


class LatencyRunner:
    """One architecture exported to an engine, ready to decode: `runner(ids)` decodes one source
    (ids with EOS) at batch 1 to exactly `out_len` tokens. Random weights unless `model_dir` holds
    a trained model of the architecture. Use as a context manager (the export lives in a
    temporary folder until `close`)."""

    def __init__(self, arch: ArchConfig, *, engine: str = "onnxruntime", threads: int = 1, beam: int = 4,
                 out_len: int = 30, quantize: str | None = "int8", model_dir: str | Path | None = None,
                 tokenizer_file: str | Path | None = None, seed: int = 0):
        if engine not in ENGINES:
            raise ValueError(f"engine={engine!r} must be one of {list(ENGINES)}")
        if engine == "ctranslate2" and not (model_dir or tokenizer_file):
            raise ValueError("CTranslate2 latency needs the vocabulary: pass tokenizer_file=... or model_dir=...")
        from automoe.random_model import save_random_model

        self.arch = arch
        self.setting = {"engine": engine, "threads": threads, "beam": beam, "out_len": out_len,
                        "quantization": None if engine == "torch" else quantize}
        self._tmp = tempfile.TemporaryDirectory()
        tmp = Path(self._tmp.name)
        folder = Path(model_dir) if model_dir else tmp / "model"
        if not model_dir:
            save_random_model(arch, folder, seed=seed, tokenizer_file=tokenizer_file)
        if engine == "onnxruntime":
            from automoe.export.onnx import to_onnx

            folder = to_onnx(folder, tmp / "onnx", quantize=quantize)
        elif engine == "ctranslate2":
            from automoe.export.ctranslate2 import to_ctranslate2

            folder = to_ctranslate2(folder, tmp / "ct2", quantize=quantize)
        self._run = _fixed_length_runner(folder, engine, threads, beam, out_len)

    def __call__(self, ids: list[int]) -> None:
        self._run(ids)

    def close(self) -> None:
        """Drop the engine session and delete the temporary export."""
        self._run = None
        self._tmp.cleanup()

    def __enter__(self) -> "LatencyRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _elapsed_ms(run: Callable[[list[int]], None], ids: list[int]) -> float:
    start = time.perf_counter()
    run(ids)
    return (time.perf_counter() - start) * 1000


def time_runner(run: Callable[[list[int]], None], sentences: list[list[int]], *, warmup: int = 3, repeats: int = 1,
                reference: Callable[[list[int]], None] | None = None) -> dict:
    """Time `run` on every sentence: the fastest of `repeats` decodes per sentence, then the
    median and p90 over sentences (ms).

    With a `reference` runner every sentence is also decoded by the reference, back to back with
    the candidate and alternating which goes first, and `ratio` is the median per-sentence ratio
    candidate / reference. On a shared machine whose speed drifts by 2x within a minute, the ratio
    repeats far better than the raw time: both decodes see the same machine state. The fastest of
    `repeats` drops the bursts of contention that hit one decode (noise on a time is one-sided).
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    for ids in sentences[:warmup]:
        run(ids)
        if reference is not None:
            reference(ids)
    times, ref_times = [], []
    for i, ids in enumerate(sentences):
        mine, ref = [], []
        for k in range(repeats):
            if reference is None:
                mine.append(_elapsed_ms(run, ids))
            elif (i + k) % 2 == 0:
                mine.append(_elapsed_ms(run, ids))
                ref.append(_elapsed_ms(reference, ids))
            else:
                ref.append(_elapsed_ms(reference, ids))
                mine.append(_elapsed_ms(run, ids))
        times.append(min(mine))
        if ref:
            ref_times.append(min(ref))
    out = {"median_ms": round(statistics.median(times), 3),
           "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))], 3), "sentences": len(sentences),
           "repeats": repeats}
    if reference is not None:
        out["ratio"] = round(statistics.median(t / r for t, r in zip(times, ref_times)), 5)
        out["reference_ms"] = round(statistics.median(ref_times), 3)
    return out


def measure_latency(arch: ArchConfig, sentences: list[list[int]], *, engine: str = "onnxruntime", threads: int = 1,
                    beam: int = 4, out_len: int = 30, quantize: str | None = "int8", warmup: int = 3,
                    repeats: int = 1, model_dir: str | Path | None = None,
                    tokenizer_file: str | Path | None = None, seed: int = 0,
                    reference: LatencyRunner | ArchConfig | None = None) -> dict:
    """Median and p90 ms per sentence for decoding `sentences` (source ids with EOS) to exactly
    `out_len` tokens at batch 1 (see `time_runner` for `repeats` and `reference`). Random weights
    unless `model_dir` holds a trained model of `arch`; CTranslate2 needs the vocabulary, so give
    `tokenizer_file` (or a `model_dir`) for it. A `reference` runner must be measured in the same
    setting; a reference ArchConfig is built here with random weights in that setting."""
    setting = dict(engine=engine, threads=threads, beam=beam, out_len=out_len, quantize=quantize)
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(LatencyRunner(arch, model_dir=model_dir, tokenizer_file=tokenizer_file,
                                                seed=seed, **setting))
        if isinstance(reference, ArchConfig):
            reference = stack.enter_context(LatencyRunner(reference, tokenizer_file=tokenizer_file, seed=seed,
                                                          **setting))
        if reference is not None and reference.setting != run.setting:
            raise ValueError(f"the reference runs in {reference.setting}, the candidate in {run.setting}: "
                             "a latency ratio needs the same engine, threads, beam, output length and quantization")
        result = time_runner(run, sentences, warmup=warmup, repeats=repeats, reference=reference)
        return {**result, **run.setting}


def measure_latency_isolated(arch: ArchConfig, sentences: list[list[int]], **kwargs) -> dict:
    """`measure_latency` in a fresh spawned process (a `reference` must then be an ArchConfig).

    A process that has just run a search (a supernet of 45M parameters, thousands of forward
    passes) decodes the same model measurably slower than a fresh one: its heap and caches are
    in another state. Timings meant to be compared with a latency table come from fresh processes.
    """
    import multiprocessing

    if isinstance(kwargs.get("reference"), LatencyRunner):
        raise ValueError("an isolated measurement builds its own reference: pass reference=<ArchConfig>")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure_latency, (arch, sentences), kwargs)


# ------------------------------------------------------------------------------- features

def feature_names(space: SearchSpace) -> list[str]:
    """Names of the predictor's input features for `space` (fixed length per space)."""
    names = ["encoder_embed_dim", "decoder_embed_dim", "encoder_layers", "decoder_layers"]
    for i in range(max(space.encoder_layers)):
        names += [f"enc{i}.{f}" for f in ("active", "heads", "experts", "mean_width", "max_width")]
    for i in range(max(space.decoder_layers)):
        names += [f"dec{i}.{f}" for f in ("active", "heads", "cross_heads", "last_k", "experts", "mean_width",
                                          "max_width")]
    return names + list(SUMMARY_NAMES)


# Whole-model sums that decode time is close to linear in: a batch-1 decoder step is memory-bound
# (every weight it touches is read once, so weights read per step count), every layer and every
# expert adds graph nodes with a fixed cost even when no token reaches the expert, and the output
# projection is d x vocabulary per step. All are computed from the per-layer values (widths,
# expert counts, heads, last-k) of the architecture.
SUMMARY_NAMES = ("dec_attn_weights", "dec_ffn_weights_mean", "dec_ffn_weights_all", "dec_moe_layers",
                 "enc_attn_weights", "enc_ffn_weights_mean", "enc_moe_layers", "dec_cross_reads",
                 "dec_layers", "dec_output_projection", "dec_moe_experts", "enc_moe_experts", "dec_heads")


def summary_features(arch: ArchConfig) -> list[float]:
    """The whole-model sums of `arch`, in `SUMMARY_NAMES` order."""
    qkv = arch.qkv_dim
    dec, enc = arch.decoder_embed_dim, arch.encoder_embed_dim
    dec_widths, enc_widths = arch.decoder_ffn, arch.encoder_ffn
    mean = lambda w: sum(w) / len(w)  # noqa: E731
    return [float(x) for x in (
        arch.decoder_layers * 6 * dec * qkv / 1e6,  # self q,k,v,o + cross q,o per step
        sum(2 * dec * mean(w) for w in dec_widths) / 1e6,
        sum(2 * dec * sum(w) for w in dec_widths) / 1e6,
        sum(len(w) > 1 for w in dec_widths),
        arch.encoder_layers * 4 * enc * qkv / 1e6,
        sum(2 * enc * mean(w) for w in enc_widths) / 1e6,
        sum(len(w) > 1 for w in enc_widths),
        sum(arch.decoder_cross_last_k),
        arch.decoder_layers,
        dec * arch.vocab_size / 1e6,
        sum(len(w) for w in dec_widths if len(w) > 1),
        sum(len(w) for w in enc_widths if len(w) > 1),
        sum(arch.decoder_heads) + sum(arch.decoder_cross_heads))]


def features(space: SearchSpace, arch: ArchConfig) -> list[float]:
    """Per-layer features of `arch` (zeros for layers it does not have), then whole-model sums,
    in `feature_names` order."""
    out = [arch.encoder_embed_dim, arch.decoder_embed_dim, arch.encoder_layers, arch.decoder_layers]
    for i in range(max(space.encoder_layers)):
        if i < arch.encoder_layers:
            w = arch.encoder_ffn[i]
            out += [1, arch.encoder_heads[i], len(w), sum(w) / len(w), max(w)]
        else:
            out += [0] * 5
    for i in range(max(space.decoder_layers)):
        if i < arch.decoder_layers:
            w = arch.decoder_ffn[i]
            out += [1, arch.decoder_heads[i], arch.decoder_cross_heads[i], arch.decoder_cross_last_k[i], len(w),
                    sum(w) / len(w), max(w)]
        else:
            out += [0] * 7
    return [float(x) for x in out] + summary_features(arch)


def hat_features(arch: ArchConfig) -> list[float]:
    """HAT's 10 averaged features (for comparison): widths, depths, mean FFN, mean heads, mean last-k."""
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    return [arch.encoder_embed_dim, arch.decoder_embed_dim, arch.encoder_layers, arch.decoder_layers,
            mean([mean(w) for w in arch.encoder_ffn]), mean([mean(w) for w in arch.decoder_ffn]),
            mean(arch.encoder_heads), mean(arch.decoder_heads), mean(arch.decoder_cross_heads),
            mean(arch.decoder_cross_last_k)]


# ------------------------------------------------------------------------------ predictor

def _mlp(n: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))


KINDS = ("automoe", "hat")
MODELS = ("linear", "mlp")


class LatencyPredictor:
    """Architecture -> predicted milliseconds on the engine a latency table was measured on.

    `kind` picks the features: "automoe" (per-layer values and whole-model sums) or "hat" (HAT's
    10 averages, for comparison). `model` picks the regressor:
    - "linear" (default): ridge regression of log-latency on the whole-model sums (`kind`
      "automoe") or the 10 HAT features. Measured on a 330-row ORT int8 table of this machine
      (benchmarks/results/predictor.jsonl, 5 seeded 80/20 splits): 6.9% held-out MAPE / Kendall
      tau 0.875, against 9.6% / 0.823 for an ensemble of 5 MLPs on all per-layer features.
      Latency is close to a product of per-part costs, and a few hundred noisy rows pin down 14
      coefficients far better than thousands of MLP weights.
    - "mlp": an ensemble of `members` MLPs (mean prediction, members differ only in their
      initialisation seed) trained on mean squared relative error, as HAT did.
    """

    def __init__(self, space: SearchSpace, kind: str = "automoe", hidden: int = 64, members: int = 5,
                 model: str = "linear", ridge: float = 1.0):
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} must be one of {list(KINDS)}")
        if model not in MODELS:
            raise ValueError(f"model={model!r} must be one of {list(MODELS)}")
        if members < 1:
            raise ValueError(f"members={members} must be >= 1")
        self.space, self.kind, self.model, self.hidden, self.ridge = space, kind, model, hidden, ridge
        n = len(self._features(space.largest()))
        self.nets = nn.ModuleList(_mlp(n, hidden) for _ in range(members if model == "mlp" else 0))
        self.weight = torch.zeros(n + 1, dtype=torch.float64)  # linear: intercept, then one per feature
        self.mean = torch.zeros(n)
        self.std = torch.ones(n)
        self.y_scale = 1.0
        self.measured_on: dict = {}  # engine, threads, quantization, beam, out_len (+ reference) of the table

    def _features(self, arch: ArchConfig) -> list[float]:
        if self.kind == "hat":
            return hat_features(arch)
        return summary_features(arch) if self.model == "linear" else features(self.space, arch)

    def feature_names(self) -> list[str] | str:
        """Names of this predictor's inputs (the HAT set is named "hat10")."""
        if self.kind == "hat":
            return "hat10"
        return list(SUMMARY_NAMES) if self.model == "linear" else feature_names(self.space)

    def _x(self, archs: list[ArchConfig]) -> torch.Tensor:
        x = torch.tensor([self._features(a) for a in archs])
        return (x - self.mean) / self.std

    def fit(self, archs: list[ArchConfig], latency_ms: list[float], *, epochs: int = 2000, lr: float = 3e-3,
            seed: int = 0) -> "LatencyPredictor":
        """Fit on measured latencies: closed-form ridge in log space (linear) or full-batch Adam
        on mean squared relative error (every MLP member)."""
        raw = torch.tensor([self._features(a) for a in archs])
        self.mean, self.std = raw.mean(0), raw.std(0).clamp(min=1e-6)
        y = torch.tensor(latency_ms, dtype=torch.float32)
        self.y_scale = float(y.mean())
        x = (raw - self.mean) / self.std
        if self.model == "linear":
            z = torch.cat([torch.ones(len(x), 1), x], 1).double()  # [N, 1 + n]
            penalty = self.ridge * torch.eye(z.shape[1], dtype=torch.float64)
            penalty[0, 0] = 0  # the intercept is not shrunk
            self.weight = torch.linalg.solve(z.T @ z + penalty, z.T @ y.double().log())
            return self
        for j, net in enumerate(self.nets):
            torch.manual_seed(seed + j)
            for m in net:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
            opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
            for _ in range(epochs):
                opt.zero_grad()
                pred = net(x).squeeze(-1) * self.y_scale
                loss = (((pred - y) / y) ** 2).mean()
                loss.backward()
                opt.step()
        return self

    @torch.no_grad()
    def predict(self, archs: list[ArchConfig]) -> list[float]:
        """Predicted milliseconds for each architecture."""
        x = self._x(archs)
        if self.model == "linear":
            return (torch.cat([torch.ones(len(x), 1), x], 1).double() @ self.weight).exp().tolist()
        return (torch.stack([net(x).squeeze(-1) for net in self.nets]).mean(0) * self.y_scale).tolist()

    def save(self, path: str | Path) -> None:
        """One safetensors file: weights + feature spec, normalisers and space in the metadata."""
        from safetensors.torch import save_file

        tensors = {f"nets.{k}": v.contiguous() for k, v in self.nets.state_dict().items()}
        tensors["mean"], tensors["std"], tensors["weight"] = (self.mean.contiguous(), self.std.contiguous(),
                                                              self.weight.contiguous())
        meta = {"kind": self.kind, "model": self.model, "hidden": self.hidden, "members": len(self.nets),
                "ridge": self.ridge, "y_scale": self.y_scale, "space": self.space.to_dict(),
                "features": self.feature_names(), "measured_on": self.measured_on}
        save_file(tensors, str(path), metadata={"automoe_latency_predictor": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | Path) -> "LatencyPredictor":
        """Inverse of `save`; a file whose feature list differs from this version's is refused."""
        from safetensors import safe_open

        from ..checkpoint import load_state_dict

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["automoe_latency_predictor"])
        model = meta.get("model", "mlp")
        predictor = cls(SearchSpace.from_dict(meta["space"]), meta["kind"], meta["hidden"],
                        max(meta.get("members", 1), 1), model=model, ridge=meta.get("ridge", 1.0))
        if meta["features"] != predictor.feature_names():
            raise ValueError(f"{path} was fitted on other features than this version of automoe computes; "
                             "refit it with `automoe search fit-predictor`")
        tensors = load_state_dict(path)
        predictor.nets.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("nets.")})
        predictor.mean, predictor.std, predictor.y_scale = tensors["mean"], tensors["std"], meta["y_scale"]
        if "weight" in tensors:
            predictor.weight = tensors["weight"]
        predictor.measured_on = meta.get("measured_on", {})
        return predictor


def mape(pred: list[float], true: list[float]) -> float:
    """Mean absolute percentage error, in percent."""
    return 100 * sum(abs(p - t) / t for p, t in zip(pred, true)) / len(true)


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall rank correlation (tau-a) of two equally long lists."""
    n, score = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            score += math.copysign(1, a[i] - a[j]) * math.copysign(1, b[i] - b[j]) if a[i] != a[j] and b[i] != b[j] else 0
    return score / (n * (n - 1) / 2)
