"""The search workflows behind `automoe search ...`: latency tables, predictor fitting and the
evolutionary search on a trained supernet (fitness = validation loss with inherited weights)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from ..config import ArchConfig, SearchSpace
from . import space as genes
from .evolution import EvolutionConfig, SearchState, evolve, gene_key
from .flops import cost
from .latency import LatencyPredictor, LatencyRunner, kendall_tau, mape, measure_latency

logger = logging.getLogger(__name__)


def latency_table(space: SearchSpace, out: str | Path, *, samples: int, sentences: list[list[int]],
                  engine: str = "onnxruntime", threads: int = 1, quantize: str | None = "int8", out_len: int = 30,
                  tokenizer_file: str | Path | None = None, seed: int = 0, repeats: int = 2,
                  reference: ArchConfig | str | None = "smallest", supernet_dir: str | Path | None = None,
                  progress: bool = True) -> Path:
    """Measure `samples` random architectures of `space` into a JSONL table; resumes an existing
    table (the i-th architecture depends only on the seed and i). The largest and smallest
    architectures come first so the table always spans the space.

    `reference` ("smallest", "largest", an ArchConfig, or None) is a fixed model timed beside
    every candidate (see `time_runner`): each row then holds the ratio to it, which repeats far
    better on a noisy machine than the raw time. `supernet_dir` measures the supernet's inherited
    weights (routing as trained) instead of random weights.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    existing = out.read_text(encoding="utf-8").splitlines() if out.exists() else []
    done = len(existing)
    rng = random.Random(seed)
    archs = [space.largest(), space.smallest()] + [space.sample(rng) for _ in range(max(samples - 2, 0))]
    if done >= samples:
        return out
    supernet = None
    if supernet_dir is not None:
        from ..supernet_folder import load_supernet

        supernet = load_supernet(supernet_dir)
    if isinstance(reference, str):
        named = {"smallest": space.smallest, "largest": space.largest}
        if reference not in named:
            raise ValueError(f"reference={reference!r} must be one of {sorted(named)}, an ArchConfig or None")
        reference = named[reference]()
    setting = dict(engine=engine, threads=threads, quantize=quantize, out_len=out_len)
    weights_kind = "inherited" if supernet is not None else "random"
    if done:  # a resumed table must go on measuring the way it started
        first = json.loads(existing[0])
        now = {"engine": engine, "threads": threads, "quantization": quantize, "out_len": out_len,
               "repeats": repeats, "sentences": len(sentences), "reference": reference.to_dict() if reference else None,
               "weights": weights_kind}
        older = {"reference": None, "repeats": 1, "weights": "random"}  # rows written before these fields
        changed = sorted(k for k, v in now.items() if first.get(k, older.get(k)) != v)
        if changed:
            raise ValueError(f"{out} was measured with other settings ({', '.join(changed)}): resume it with "
                             "the same flags or write a new table")

    def weights(arch: ArchConfig, folder: Path) -> Path | None:
        if supernet is None:
            return None
        from ..extract import extract_subnet

        return extract_subnet(supernet, arch).save_pretrained(folder, tokenizer_file=tokenizer_file)

    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        ref_runner = None
        if reference is not None:
            ref_runner = stack.enter_context(LatencyRunner(
                reference, model_dir=weights(reference, Path(tmp) / "reference"), tokenizer_file=tokenizer_file,
                seed=seed, **setting))
        with open(out, "a", encoding="utf-8") as f:
            for i in tqdm(range(done, samples), initial=done, total=samples, disable=not progress, unit="arch"):
                arch = archs[i]
                model_dir = weights(arch, Path(tmp) / f"arch-{i}")
                result = measure_latency(arch, sentences, repeats=repeats, reference=ref_runner,
                                         model_dir=model_dir, tokenizer_file=tokenizer_file, seed=seed + i, **setting)
                if model_dir is not None:
                    shutil.rmtree(model_dir)
                row = {"index": i, "arch": arch.to_dict(), **result, **cost(arch).to_dict(),
                       "weights": weights_kind, "supernet": str(supernet_dir) if supernet is not None else None}
                if reference is not None:
                    row["reference"] = reference.to_dict()
                f.write(json.dumps(row) + "\n")
                f.flush()
    return out


MEASUREMENT_KEYS = ("engine", "threads", "quantization", "beam", "out_len")


def table_rows(path: str | Path) -> list[dict]:
    """The rows of a JSONL latency table (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def table_latencies(rows: list[dict]) -> tuple[list[float], float | None]:
    """The latency of every row in ms, and the scale (ms) of a reference-timed table.

    Rows timed against a reference hold a ratio; it becomes ms through one scale for the whole
    table: the median of the reference's own times over all rows. Rows without a reference give
    their median ms and scale None. A table that mixes the two, or two references, is refused.
    """
    refs = {json.dumps(r.get("reference"), sort_keys=True) for r in rows}
    if len(refs) != 1:
        raise ValueError("the table mixes rows timed against different references (or none): "
                         "fit one predictor per table")
    if rows[0].get("reference") is None:
        return [r["median_ms"] for r in rows], None
    scale = statistics.median(r["reference_ms"] for r in rows)
    return [r["ratio"] * scale for r in rows], scale


def read_table(path: str | Path) -> tuple[list[ArchConfig], list[float]]:
    """Architectures and latencies (ms; reference-scaled where timed against one) of a latency table."""
    rows = table_rows(path)
    return [ArchConfig.from_dict(r["arch"]) for r in rows], table_latencies(rows)[0]


def table_setting(rows: list[dict], path: str | Path) -> dict:
    """The one measurement setting (engine, threads, quantization, beam, output length) of the
    rows of table `path`; a table that mixes settings cannot train one predictor."""
    settings = {tuple(r.get(k) for k in MEASUREMENT_KEYS) for r in rows}
    if len(settings) != 1:
        raise ValueError(f"{path} mixes measurement settings {sorted(settings, key=str)} of {MEASUREMENT_KEYS}; "
                         "fit one predictor per setting (one table each)")
    return dict(zip(MEASUREMENT_KEYS, settings.pop()))


def holdout_split(n: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """(test, train) row indices: a seeded shuffle, `holdout` of the rows (at least 2) held out."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_test = max(int(holdout * n), 2)
    return order[:n_test], order[n_test:]


def fit_predictor(space: SearchSpace, table: str | Path, out: str | Path, *, holdout: float = 0.2,
                  seed: int = 0, epochs: int = 2000, members: int = 5, model: str = "linear") -> dict:
    """Fit the latency predictor (`model` "linear" or "mlp" on automoe's features) and, on the
    same split, the other model and HAT's 10-feature predictor (an MLP as in HAT, and linear);
    save the chosen one refitted on all rows and return held-out MAPE / Kendall tau of each
    (keys "automoe", "automoe_<other model>", "hat", "hat_linear")."""
    from .latency import MODELS

    if model not in MODELS:
        raise ValueError(f"model={model!r} must be one of {list(MODELS)}")
    rows = table_rows(table)
    setting = table_setting(rows, table)  # before any fitting: a mixed table fails fast
    ms, scale = table_latencies(rows)
    archs = [ArchConfig.from_dict(r["arch"]) for r in rows]
    test, train = holdout_split(len(archs), holdout, seed)
    report = {"rows": len(archs), "train": len(train), "test": len(test), "model": model, "members": members}
    other = next(m for m in MODELS if m != model)
    variants = {"automoe": ("automoe", model), f"automoe_{other}": ("automoe", other), "hat": ("hat", "mlp"),
                "hat_linear": ("hat", "linear")}
    for name, (kind, regressor) in variants.items():
        p = LatencyPredictor(space, kind, members=members, model=regressor).fit(
            [archs[i] for i in train], [ms[i] for i in train], epochs=epochs, seed=seed)
        pred, true = p.predict([archs[i] for i in test]), [ms[i] for i in test]
        report[name] = {"mape": round(mape(pred, true), 2), "kendall_tau": round(kendall_tau(pred, true), 4)}
    final = LatencyPredictor(space, "automoe", members=members, model=model).fit(archs, ms, epochs=epochs, seed=seed)
    final.measured_on = report["measured_on"] = {**setting, "reference_scale_ms": scale,
                                                 "reference": rows[0].get("reference")}
    final.save(out)
    return report


def supernet_fitness(supernet, data_dir: str | Path, *, sentences: int = 200, max_tokens: int = 3000,
                     bf16: bool = True) -> Callable[[ArchConfig], float]:
    """Validation NLL per token of a subnet with inherited weights on the first `sentences` dev pairs.

    `bf16` runs the forward pass under bfloat16 autocast, as the supernet was trained: 2.3x faster
    on CPU here, with NLLs within 1e-4 of fp32 (measured on three subnets of `small`).
    """
    from .. import data as data_lib
    from ..modeling import label_smoothed_nll

    folder = Path(data_dir)
    sp = data_lib.load_tokenizer(folder)
    pairs = list(zip(data_lib.encode_file(sp, folder / "dev.src", 200),
                     data_lib.encode_file(sp, folder / "dev.tgt", 200)))[:sentences]
    lengths = [len(s) for s, _ in pairs], [len(t) for _, t in pairs]
    batches = [data_lib.collate([pairs[i] for i in idx], sp.pad_id(), sp.bos_id())
               for idx in data_lib.make_batches(*lengths, max_tokens, seed=0, epoch=0, shuffle=False)]
    supernet.eval()

    @torch.no_grad()
    def fitness(arch: ArchConfig) -> float:
        total, count = 0.0, 0
        for b in batches:
            with torch.autocast(b["src"].device.type, dtype=torch.bfloat16, enabled=bf16):
                out = supernet(b["src"], b["tgt_in"], arch)
            _, nll, n = label_smoothed_nll(out.logits, b["tgt_out"], 0.0, sp.pad_id())
            total, count = total + nll.item(), count + n
        return total / count
    return fitness


_WORKER_FITNESS: Callable[[ArchConfig], float] | None = None


def _init_worker(supernet_dir: str, data_dir: str, sentences: int, threads: int) -> None:
    """Process-pool initializer: each worker loads the supernet and its dev batches once."""
    global _WORKER_FITNESS
    from ..supernet_folder import load_supernet

    torch.set_num_threads(threads)
    _WORKER_FITNESS = supernet_fitness(load_supernet(supernet_dir), data_dir, sentences=sentences)


def _worker_fitness(arch: ArchConfig) -> float:
    return _WORKER_FITNESS(arch)


class FitnessPool:
    """Supernet fitness evaluated by `workers` processes (torch threads split between them).

    `map(archs)` returns the values in `archs` order, equal to the single-process fitness, so it
    can serve as `evolve(..., evaluate_many=pool.map)`. Use as a context manager.
    """

    def __init__(self, supernet_dir: str | Path, data_dir: str | Path, *, workers: int, sentences: int = 200,
                 threads: int | None = None):
        import multiprocessing

        if workers < 2:
            raise ValueError(f"a FitnessPool needs workers >= 2 (got {workers}); evaluate in-process instead")
        per_worker = max(1, (threads or torch.get_num_threads()) // workers)
        # spawn: a forked torch process can deadlock in its thread pools
        self.pool = multiprocessing.get_context("spawn").Pool(
            workers, initializer=_init_worker, initargs=(str(supernet_dir), str(data_dir), sentences, per_worker))

    def map(self, archs: list[ArchConfig]) -> list[float]:
        """Fitness of every architecture, in order."""
        return self.pool.map(_worker_fitness, archs, chunksize=1)

    def close(self) -> None:
        """Stop the worker processes."""
        self.pool.terminate()
        self.pool.join()

    def __enter__(self) -> "FitnessPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_search(supernet_dir: str | Path, data_dir: str | Path, out_dir: str | Path, *,
               latency_ms: float | None = None, predictor: str | Path | None = None, gflops: float | None = None,
               dense_only: bool = False, config: EvolutionConfig = EvolutionConfig(), resume: bool = False,
               fitness_sentences: int = 200, workers: int = 1) -> ArchConfig:
    """Evolutionary search on a trained supernet (prefix or Mixture-of-Supernets: the fitness is
    the validation loss of the weights it makes for each architecture) under a latency (predicted)
    and/or GFLOPs budget.

    `workers` > 1 evaluates each generation's new architectures in that many processes (same
    result as one process: fitness is deterministic).

    Writes `out_dir/search.jsonl` (every evaluated architecture), `search_state.json` (after
    every iteration; `resume` continues from it), `best.json` (the best ArchConfig) and
    `best_info.json` (its fitness, cost and the search's own cost: wall and CPU seconds summed over
    resumed segments, CPU of this process only, so fitness workers are not counted).
    """
    from ..supernet_folder import load_supernet

    if latency_ms is None and gflops is None:
        raise ValueError("give a budget: latency_ms (with a predictor) and/or gflops")
    if latency_ms is not None and predictor is None:
        raise ValueError("a latency budget needs a fitted predictor (automoe search fit-predictor)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / "search_state.json"
    if state_path.exists() and not resume:
        raise FileExistsError(f"{state_path} exists: pass --resume to continue that search or use another folder")
    # A resumed search must be the same search: another budget or population would mix two
    # searches in one state and one search.jsonl.
    settings = {"latency_ms": latency_ms, "gflops": gflops, "dense_only": dense_only,
                "predictor": str(predictor) if predictor else None, "fitness_sentences": fitness_sentences,
                "config": dataclasses.asdict(config)}
    settings_path = out / "search_settings.json"
    if settings_path.exists():
        before = json.loads(settings_path.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings if before.get(k) != settings[k])
        if changed:
            raise ValueError(f"{out} holds a search with other settings ({', '.join(changed)}: "
                             f"{ {k: before.get(k) for k in changed} }); resume it with those or use another folder")
    else:
        settings_path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    supernet = load_supernet(supernet_dir)
    # HAT-style baseline: the same search over the space restricted to one expert per layer
    space = dataclasses.replace(supernet.space, max_experts=1) if dense_only else supernet.space
    lat = LatencyPredictor.load(predictor) if predictor else None
    fitness = supernet_fitness(supernet, data_dir, sentences=fitness_sentences)

    def constraint(arch: ArchConfig) -> bool:
        if gflops is not None and cost(arch).gflops > gflops:
            return False
        return lat is None or lat.predict([arch])[0] <= latency_ms

    log = open(out / "search.jsonl", "a", encoding="utf-8")

    def on_evaluate(gene, arch, fit):
        c = cost(arch)
        log.write(json.dumps({"gene": list(gene), "fitness": fit,
                              "predicted_latency_ms": lat.predict([arch])[0] if lat else None,
                              "gflops": c.gflops, "active_params": c.active_params, "total_params": c.total_params,
                              "arch": arch.to_dict()}) + "\n")
        log.flush()

    def on_iteration(state: SearchState):
        state.seconds = seconds()
        tmp = state_path.with_name(state_path.name + ".tmp")
        tmp.write_text(json.dumps(state.to_dict()), encoding="utf-8")
        os.replace(tmp, state_path)
        logger.info("iteration %d: best fitness %.4f", state.iteration, state.history[-1]["best_fitness"])

    state = SearchState.from_dict(json.loads(state_path.read_text())) if resume and state_path.exists() else None
    if state is None:
        state = SearchState()
    spent = state.seconds or {"wall_seconds": 0.0, "cpu_seconds": 0.0}  # of the segments before a resume
    start_wall, start_cpu = time.monotonic(), time.process_time()
    state.seconds = spent

    def seconds() -> dict:
        return {"wall_seconds": round(spent["wall_seconds"] + time.monotonic() - start_wall, 1),
                "cpu_seconds": round(spent["cpu_seconds"] + time.process_time() - start_cpu, 1)}
    pool = FitnessPool(supernet_dir, data_dir, workers=workers, sentences=fitness_sentences) if workers > 1 else None
    try:
        best, best_fit, state = evolve(space, fitness, constraint, config, state=state, on_iteration=on_iteration,
                                       on_evaluate=on_evaluate, evaluate_many=pool.map if pool else None)
    finally:
        log.close()
        if pool is not None:
            pool.close()
    best.save(out / "best.json")
    (out / "best_info.json").write_text(json.dumps({
        "fitness": best_fit, "gene_key": gene_key(genes.encode(space, best)), "budget_latency_ms": latency_ms,
        "budget_gflops": gflops, "dense_only": dense_only, "predicted_latency_ms": lat.predict([best])[0] if lat else None,
        "weight_sharing": supernet.sharing.to_dict(),
        "predictor_measured_on": lat.measured_on if lat else None, "workers": workers, **seconds(),
        **cost(best).to_dict()}, indent=2) + "\n")
    return best
