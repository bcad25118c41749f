"""`automoe bench`: translation quality, CPU latency and cost of several models, measured together.

The protocol of DESIGN.md section 6, as one library function that the CLI verb and the benchmark
scripts share:

- Every model runs on every requested engine and thread count (CTranslate2 only for dense
  models: a model an engine cannot run gets a record with the reason in `skipped`).
- Latency: batch 1, beam 4, the benchmark sentences in file order after `warmup` untimed ones,
  all (model, engine) pairs of one thread count interleaved round-robin sentence by sentence with
  a rotating start, so that the machine's drift hits every model alike. Median and p90 ms.
- BLEU/chrF: sacrebleu on the translations the latency loop produced (one sentence at a time,
  so a sentence's translation never depends on its batch-mates).
- Throughput: sentences/s and target tokens/s at `throughput_batch`, again round-robin;
  `throughput` measures it alone at several batch sizes and thread counts, dense and MoE models.
- Speedup: the baseline's median latency / the model's, from the same run, engine and threads.
  The baseline is the dense model with the most parameters unless named.
- Shortlists (`shortlist=True`): every model with a `shortlist.safetensors` also runs decoding over
  its lexical shortlist as one more translator of the same round-robin; its record has
  `shortlist: true`, the BLEU it costs and the speedup it gives against the same model without it.
  Speedups always divide the baseline's median *without* a shortlist.
- Cost: analytic GFLOPs and active/total parameters (`automoe.search.flops`).

Results are data: one JSONL record per model x engine x threads (with the CPU name and git
commit); `automoe.bench_results` appends them to a results file and makes the Markdown table and
PNG plots (BLEU vs latency with the Pareto front, BLEU vs GFLOPs).
"""

from __future__ import annotations

import datetime
import logging
import platform
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .config import ArchConfig, ConfigError

logger = logging.getLogger(__name__)

ENGINES = ("torch", "onnxruntime", "onnxruntime-int8", "onnxruntime-int8-row", "ctranslate2", "ctranslate2-int8")
QUICK_SENTENCES = 300  # DESIGN.md section 6: the first 300 test sentences
FAMILIES = ("dense", "switch", "hat", "automoe")


@dataclass
class BenchModel:
    """One model of a benchmark run: its folder, architecture and family."""

    name: str
    folder: Path
    arch: ArchConfig
    family: str = "automoe"


def parse_engine(name: str) -> tuple[str, str | None]:
    """'onnxruntime-int8' -> ('onnxruntime', 'int8'); a clear error for an unknown name."""
    if name not in ENGINES:
        raise ConfigError(f"unknown engine {name!r}: choose from {', '.join(ENGINES)}")
    engine, _, quant = name.partition("-")
    return engine, quant or None


def default_engine() -> str:
    """The headline engine: ONNX Runtime with automoe's int8-row operator where a C++ compiler builds
    it here, else ONNX Runtime's own int8."""
    from .export import kernel

    return "onnxruntime-int8-row" if kernel.available() else "onnxruntime-int8"


def model_family(arch: ArchConfig) -> str:
    """'dense' when every layer has one FFN, 'switch' when every layer has the same number (> 1)
    of experts of one width, 'automoe' otherwise (heterogeneous experts or mixed layers).

    `load_models` renames the dense models other than the baseline to 'hat' (searched dense).
    """
    layers = list(arch.encoder_ffn) + list(arch.decoder_ffn)
    if all(len(widths) == 1 for widths in layers):
        return "dense"
    if len({tuple(widths) for widths in layers}) == 1 and len(set(layers[0])) == 1:
        return "switch"
    return "automoe"


def reference_dense(archs: dict[str, ArchConfig]) -> str | None:
    """The name of the dense architecture with the most parameters among {name: arch}: the
    reference a comparison is timed against (the other dense ones are searched, HAT-style
    subnets). None when none is dense."""
    from .search.flops import cost

    dense = [name for name, arch in archs.items() if model_family(arch) == "dense"]
    return max(dense, key=lambda name: cost(archs[name]).total_params) if dense else None


def load_models(paths: list[str | Path], baseline: str | None = None) -> tuple[list[BenchModel], BenchModel]:
    """Read the model folders (a folder that is not a model folder, e.g. a supernet, is skipped
    with a warning) and choose the baseline: the model named `baseline` (its folder name or path),
    else the dense model with the most parameters. Returns (models, baseline)."""
    from .checkpoint import CheckpointError, read_model_config, resolve_model_dir

    models, seen = [], set()
    for path in paths:
        folder = resolve_model_dir(path)
        try:
            arch, _ = read_model_config(folder)
        except CheckpointError as e:
            logger.warning("skipping %s: %s", path, e)
            continue
        name = Path(str(path).rstrip("/")).name
        if name in seen:
            raise ConfigError(f"two models are named {name!r}: give folders with distinct names")
        seen.add(name)
        models.append(BenchModel(name, folder, arch, model_family(arch)))
    if not models:
        raise ConfigError(f"none of {[str(p) for p in paths]} is a model folder (config.json + model.safetensors)")
    if baseline is not None:
        wanted = Path(str(baseline).rstrip("/")).name
        chosen = next((m for m in models if m.name == wanted), None)
        if chosen is None:
            raise ConfigError(f"baseline {baseline!r} is not among the models {[m.name for m in models]}")
    else:
        reference = reference_dense({m.name: m.arch for m in models})
        if reference is None:
            raise ConfigError("no dense model among the models: pass --baseline NAME to choose the reference")
        chosen = next(m for m in models if m.name == reference)
    for m in models:
        if m.family == "dense" and m is not chosen:
            m.family = "hat"  # a dense model that is not the reference: a searched dense subnet
    return models, chosen


def cpu_name() -> str:
    """The CPU model name of this machine."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_environment() -> dict:
    """Where and when a result was measured: CPU name, git commit, Python version, UTC date."""
    from .artifacts import git_commit

    return {"cpu": cpu_name(), "git_commit": git_commit(), "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _translator(model: BenchModel, engine_name: str, threads: int, shortlist: bool = False):
    """A Translator for one model on one engine (decoding over the model's lexical shortlist with
    `shortlist`), or the reason it cannot run."""
    from automoe.serve import Translator
    from automoe.shortlist import SHORTLIST_FILE, translator_kwargs

    engine, quantize = parse_engine(engine_name)
    kwargs = {}
    if shortlist:
        available, kwargs = translator_kwargs(model.folder)
        if not available:
            return None, (f"no {SHORTLIST_FILE} in {model.folder}: automoe shortlist build --data DATA "
                          f"--model {model.folder}")
    if engine == "ctranslate2":
        from automoe.export.checks import ctranslate2_violations

        reasons = ctranslate2_violations(model.arch)
        if reasons:
            return None, "; ".join(reasons)
    try:
        return Translator.from_pretrained(model.folder, engine=engine, quantize=quantize, threads=threads,
                                          **kwargs), None
    except ImportError as e:  # the engine's package is not installed
        return None, str(e)


def round_robin(translators: dict, batches: list[list[str]], beam: int, progress=None) -> tuple[dict, dict]:
    """Seconds per batch and the translations of every translator, interleaved per batch with a
    rotating start, so that the machine's drifts in speed fall on every translator alike.
    `progress`: a tqdm bar advanced by each batch's sentences."""
    keys = list(translators)
    seconds = {k: [] for k in keys}
    outputs = {k: [] for k in keys}
    for i, batch in enumerate(batches):
        for k in keys[i % len(keys):] + keys[: i % len(keys)]:
            start = time.perf_counter()
            out = translators[k].translate(batch, beam=beam)
            seconds[k].append(time.perf_counter() - start)
            outputs[k].extend(out)
            if progress is not None:
                progress.update(len(batch))
    return seconds, outputs


def bench(models: list[str | Path], data: str | Path, *, engines: tuple[str, ...] = ("onnxruntime-int8",),
          threads: tuple[int, ...] = (1,), sentences: int | None = None, warmup: int = 20, beam: int = 4,
          throughput_batch: int = 32, baseline: str | None = None, shortlist: bool = False,
          progress: bool = True) -> list[dict]:
    """Benchmark `models` on the test split of `data`; returns one record per model x engine x threads
    (x with and without the shortlist, with `shortlist`).

    `sentences`: the first N test sentences (None: the whole split). Translators are built (and
    model folders exported into the export cache) before any timing starts.
    """
    from tqdm.auto import tqdm

    from .evaluate import corpus_scores, read_split
    from .search.flops import cost

    for name in engines:
        parse_engine(name)
    if not threads or any(not isinstance(t, int) or t < 1 for t in threads):
        raise ConfigError(f"threads={threads!r}: give one or more thread counts >= 1")
    if beam < 1 or throughput_batch < 1 or warmup < 0:
        raise ConfigError("beam and throughput_batch must be >= 1 and warmup >= 0")
    bench_models, base = load_models(models, baseline)
    sources, references = read_split(data, "test", sentences)
    if not sources:
        raise ConfigError(f"{data}: the test split is empty")
    env = {**run_environment(), "run_id": uuid.uuid4().hex[:12]}
    records = []
    variants = (False, True) if shortlist else (False,)
    for n_threads in threads:
        translators, skipped = {}, {}
        for m in bench_models:
            for engine_name in engines:
                for listed in variants:
                    key = (m.name, engine_name, listed)
                    tr, reason = (None, skipped[key[:2] + (False,)]) if key[:2] + (False,) in skipped else \
                        _translator(m, engine_name, n_threads, listed)
                    if tr is None:
                        logger.warning("%s on %s%s: skipped (%s)", m.name, engine_name,
                                       " with its shortlist" if listed else "", reason)
                        skipped[key] = reason
                    else:
                        translators[key] = tr
        work = len(translators) * (min(warmup, len(sources)) + 2 * len(sources))
        with tqdm(total=work, desc=f"bench {n_threads} thread(s)", unit="sent", disable=not progress) as bar:
            for tr in translators.values():  # warm-up: not timed
                for s in sources[:warmup]:
                    tr.translate([s], beam=beam)
                    bar.update(1)
            latency, hyps = round_robin(translators, [[s] for s in sources], beam, bar)
            groups = [sources[i: i + throughput_batch] for i in range(0, len(sources), throughput_batch)]
            throughput, batched = round_robin(translators, groups, beam, bar)
        medians = {k: statistics.median(v) * 1000 for k, v in latency.items()}
        scores = {k: corpus_scores(h, references) for k, h in hyps.items()}
        for m in bench_models:
            c = cost(m.arch)
            for engine_name, listed in ((e, v) for e in engines for v in variants):
                key = (m.name, engine_name, listed)
                record = {
                    "benchmark": "bench", "model": m.name, "folder": str(m.folder), "family": m.family,
                    "baseline": base.name, "engine": engine_name, "threads": n_threads, "beam": beam, "batch": 1,
                    "shortlist": listed,
                    "sentences": len(sources), "warmup": warmup, "data": str(data), "split": "test",
                    "gflops": round(c.gflops, 4), "active_params": c.active_params, "total_params": c.total_params,
                }
                if key in skipped:
                    records.append({**record, "skipped": skipped[key], "arch": m.arch.to_dict(), **env})
                    continue
                ms = [s * 1000 for s in latency[key]]
                base_ms = medians.get((base.name, engine_name, False))
                out_tokens = sum(len(translators[key].tokenizer.encode(h)) for h in batched[key])
                record.update({
                    "median_ms": round(medians[key], 3), "p90_ms": round(percentile(ms, 90), 3),
                    "mean_ms": round(statistics.fmean(ms), 3),
                    "speedup": round(base_ms / medians[key], 3) if base_ms else None,
                    "throughput_batch": throughput_batch,
                    "throughput_sps": round(len(sources) / sum(throughput[key]), 2),
                    "throughput_tps": round(out_tokens / sum(throughput[key]), 1),
                    **scores[key],
                    "arch": m.arch.to_dict(), **env,
                })
                full = key[:2] + (False,)
                if listed and full in translators:
                    record["shortlist_speedup"] = round(medians[full] / medians[key], 3)
                    record["shortlist_bleu_cost"] = round(scores[full]["bleu"] - record["bleu"], 2)
                    record["shortlist_size"] = round(statistics.fmean(
                        len(translators[key].shortlist.ids(translators[key].tokenizer.encode(s)))
                        for s in sources), 1)
                records.append(record)
    return records


THROUGHPUT_BATCHES = (1, 8, 32)


def throughput(models: list[str | Path], data: str | Path, *, engines: tuple[str, ...] = ENGINES,
               threads: tuple[int, ...] = (1, 2), batches: tuple[int, ...] = THROUGHPUT_BATCHES,
               sentences: int = 96, warmup: int = 4, beam: int = 4, progress: bool = True) -> list[dict]:
    """Throughput of `models` (dense and MoE alike; no baseline needed) on every engine: the first
    `sentences` test sentences translated in lists of each batch size, every (model, engine) pair
    of one thread count interleaved round-robin list by list. One record per model x engine x
    threads x batch ("benchmark": "throughput") with sentences/s, target tokens/s, and the share of
    sentences translated exactly as at batch 1 (`same_as_batch_1`, when batch 1 is measured)."""
    from tqdm.auto import tqdm

    from .evaluate import read_split

    for name in engines:
        parse_engine(name)
    if not threads or any(not isinstance(t, int) or t < 1 for t in threads):
        raise ConfigError(f"threads={threads!r}: give one or more thread counts >= 1")
    if not batches or any(not isinstance(b, int) or b < 1 for b in batches) or beam < 1 or warmup < 0:
        raise ConfigError(f"batches={batches!r} and beam must be >= 1, warmup >= 0")
    bench_models, _ = load_models(models, baseline=Path(str(models[0]).rstrip("/")).name)
    for m in bench_models:  # no speedup reference here: every model keeps its own family
        m.family = model_family(m.arch)
    sources, _ = read_split(data, "test", sentences)
    if not sources:
        raise ConfigError(f"{data}: the test split is empty")
    env = {**run_environment(), "run_id": uuid.uuid4().hex[:12]}
    records = []
    for n_threads in threads:
        translators, skipped = {}, {}
        for m in bench_models:
            for engine_name in engines:
                tr, reason = _translator(m, engine_name, n_threads)
                if tr is None:
                    skipped[(m.name, engine_name)] = reason
                else:
                    translators[(m.name, engine_name)] = tr
        with tqdm(total=len(translators) * len(sources) * len(batches), desc=f"throughput {n_threads} thread(s)",
                  unit="sent", disable=not progress) as bar:
            for tr in translators.values():  # warm-up, not timed: one list and one sentence
                tr.translate(sources[:warmup], beam=beam)
                tr.translate(sources[:1], beam=beam)
            measured = {}
            for batch in batches:
                groups = [sources[i: i + batch] for i in range(0, len(sources), batch)]
                measured[batch] = round_robin(translators, groups, beam, bar)
        for m in bench_models:
            for engine_name in engines:
                key = (m.name, engine_name)
                for batch in batches:
                    record = {"benchmark": "throughput", "model": m.name, "folder": str(m.folder),
                              "family": m.family, "engine": engine_name, "threads": n_threads, "batch": batch,
                              "beam": beam, "sentences": len(sources), "data": str(data), "split": "test"}
                    if key in skipped:
                        records.append({**record, "skipped": skipped[key], **env})
                        continue
                    seconds, outputs = (part[key] for part in measured[batch])
                    tokens = sum(len(translators[key].tokenizer.encode(h)) for h in outputs)
                    same = None
                    if 1 in measured:
                        alone = measured[1][1][key]
                        same = round(sum(a == b for a, b in zip(alone, outputs)) / len(sources), 4)
                    records.append({**record, "seconds": round(sum(seconds), 4),
                                    "sentences_per_s": round(len(sources) / sum(seconds), 2),
                                    "tokens_per_s": round(tokens / sum(seconds), 1), "same_as_batch_1": same,
                                    **env})
    return records
