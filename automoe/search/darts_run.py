"""Running a DARTS search (`darts.DartsSearch`) on a dataset folder: batches, logs, checkpoints, resume.

A real search runs for many hours, longer than a process may live here, so it is resumable:
`checkpoint.safetensors` in the search folder holds the relaxed network's weights, the
architecture weights, both Adam states, the torch RNG state (the dropout seeds are drawn from it)
and, in its JSON metadata, the step, the position in the train and dev batch streams, the wall
and CPU seconds spent so far and the settings. It is written atomically (a temporary file and a
rename) every `save_every_minutes` and at the end. Batch order depends only on the seed and the
epoch (`data.make_batches`), so a resumed search continues bit-identically to an uninterrupted one
(same thread count; tests/test_darts.py compares alphas, logs and best.json). Steps run after the
last checkpoint of a killed search are lost, logged again after the resume (their earlier records
are dropped from darts.jsonl) and not counted in the cost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from .. import data as data_lib
from ..artifacts import atomic_write_text, file_hashes, git_commit, sha256_file, truncate_jsonl
from ..checkpoint import load_optimizer_tensors, load_state_dict, optimizer_tensors
from ..config import ArchConfig, ConfigError, SearchSpace
from .darts import DartsConfig, DartsSearch
from .latency import LatencyPredictor

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
LOG = "darts.jsonl"
# DartsConfig fields a resumed search may change: they end, pace or log the run; the steps stay the same.
RESUMABLE = ("steps", "minutes", "save_every_minutes", "log_every")


class BatchStream:
    """Endless token-budget batches of `pairs`, reshuffled every epoch; its position (`epoch`,
    `index`: batches of the epoch already taken) is all a checkpoint needs to continue it."""

    def __init__(self, pairs: list, max_tokens: int, seed: int, pad_id: int, bos_id: int, *,
                 epoch: int = 0, index: int = 0):
        self.pairs, self.max_tokens, self.seed, self.pad_id, self.bos_id = pairs, max_tokens, seed, pad_id, bos_id
        self.lengths = [len(s) for s, _ in pairs], [len(t) for _, t in pairs]
        self.epoch, self.index = epoch, index
        self.batches = self._epoch_batches()

    def _epoch_batches(self) -> list[list[int]]:
        return data_lib.make_batches(*self.lengths, self.max_tokens, seed=self.seed, epoch=self.epoch)

    def __next__(self) -> dict:
        if self.index >= len(self.batches):
            self.epoch, self.index = self.epoch + 1, 0
            self.batches = self._epoch_batches()
        idx = self.batches[self.index]
        self.index += 1
        return data_lib.collate([self.pairs[i] for i in idx], self.pad_id, self.bos_id)

    def position(self) -> dict:
        """{"epoch", "index"}: where the next batch comes from."""
        return {"epoch": self.epoch, "index": self.index}


# ------------------------------------------------------------------------------ checkpoints

def save_checkpoint(path: Path, search: DartsSearch, meta: dict) -> None:
    """Write the search's tensors and the torch RNG state, `meta` as JSON metadata, atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in search.model.state_dict().items()}
    tensors |= {f"alphas.{k}": v for k, v in search.alphas.state_dict().items()}
    weight_opt, weight_groups = optimizer_tensors(search.weight_opt, "weight_opt")
    arch_opt, arch_groups = optimizer_tensors(search.arch_opt, "arch_opt")
    tensors |= weight_opt | arch_opt
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {**meta, "param_groups": {"weight_opt": weight_groups, "arch_opt": arch_groups}}
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={"automoe_darts_checkpoint": json.dumps(meta)})
    tmp.replace(path)


def read_checkpoint_meta(path: Path) -> dict:
    """The JSON metadata of a DARTS checkpoint; a `ConfigError` naming the file if it is not one."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ConfigError(f"{path} is not a readable safetensors file ({e}); it may be truncated") from e
    if "automoe_darts_checkpoint" not in metadata:
        raise ConfigError(f"{path} is not a DARTS search checkpoint (no automoe_darts_checkpoint metadata)")
    return json.loads(metadata["automoe_darts_checkpoint"])


def load_checkpoint(path: Path, search: DartsSearch) -> dict:
    """Restore weights, alphas, both optimizers, the step and the torch RNG state; returns the metadata."""
    meta = read_checkpoint_meta(path)
    tensors = load_state_dict(path)
    pick = lambda prefix: {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}  # noqa: E731
    search.model.load_state_dict(pick("model."), strict=True)
    search.alphas.load_state_dict(pick("alphas."), strict=True)
    load_optimizer_tensors(search.weight_opt, tensors, "weight_opt", meta["param_groups"]["weight_opt"])
    load_optimizer_tensors(search.arch_opt, tensors, "arch_opt", meta["param_groups"]["arch_opt"])
    search.steps_done = meta["step"]
    torch.set_rng_state(tensors["rng.torch"])
    return meta


def _flat(settings: dict, prefix: str = "") -> dict:
    """{"config.lr": ..., "space.heads": ...}: nested settings as dotted names, for error messages."""
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict) and key in ("config", "space", "data_sha256"):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[prefix + key] = value
    return out


def settings_differences(recorded: dict, current: dict) -> list[str]:
    """"name: checkpoint A, now B" for every setting that differs (JSON-normalised: tuples are lists)."""
    recorded, current = _flat(recorded), _flat(json.loads(json.dumps(current)))
    return [f"{name}: checkpoint {recorded.get(name)!r}, now {current.get(name)!r}"
            for name in sorted(set(recorded) | set(current)) if recorded.get(name) != current.get(name)]


# ----------------------------------------------------------------------------------- the run

def run_darts(space: SearchSpace, data_dir: str | Path, out_dir: str | Path, config: DartsConfig = DartsConfig(), *,
              latency_ms: float | None = None, predictor: str | Path | None = None, dense_only: bool = False,
              resume: bool = False, progress: bool = True) -> ArchConfig:
    """DARTS search of `space` on a dataset folder (train split for the weights, dev split for alpha).

    Writes `out_dir/darts.jsonl` (a record every `log_every` steps), `alphas.json` (the latest
    probabilities and argmax architecture, rewritten atomically), `checkpoint.safetensors` (every
    `save_every_minutes` and at the end) and at the end `best.json` (the discretised `ArchConfig`,
    what `automoe extract` and `automoe train model --arch` take) and `best_info.json` (settings,
    cost, predicted latency, wall and CPU seconds of all segments, "finished": whether all `steps`
    ran). `config.minutes` ends this segment early (best.json is still written).

    A started search folder is refused unless `resume`; `resume` continues from its checkpoint
    with the same settings, except `RESUMABLE` ones (more `steps` extend a search).
    """
    from tqdm.auto import tqdm

    from .flops import cost

    out = Path(out_dir)
    ckpt = out / CHECKPOINT
    started = [name for name in (LOG, "best.json", CHECKPOINT) if (out / name).exists()]
    if started and not resume:
        raise FileExistsError(f"{out} already holds a search ({', '.join(started)}): pass --resume (resume=True) "
                              "to continue it, or choose another folder")
    if resume and not ckpt.exists():
        why = (f"the search there stopped before its first checkpoint (save_every_minutes); delete {out} and "
               "start again" if started else "start the search without --resume")
        raise FileNotFoundError(f"--resume: {out} holds no DARTS checkpoint ({CHECKPOINT}); {why}")
    folder = Path(data_dir)
    sp = data_lib.load_tokenizer(folder)
    space = dataclasses.replace(space, vocab_size=sp.vocab_size(), **({"max_experts": 1} if dense_only else {}))
    settings = {"config": {k: v for k, v in dataclasses.asdict(config).items() if k not in RESUMABLE},
                "space": space.to_dict(), "latency_ms": latency_ms, "dense_only": dense_only,
                "predictor_sha256": sha256_file(predictor) if predictor else None,
                "data_sha256": file_hashes(folder, [n for n in ("manifest.json", "spm.model") if (folder / n).exists()])}
    meta = {"step": 0, "train": {}, "dev": {}, "wall_seconds": 0.0, "cpu_seconds": 0.0, "segments": []}
    if resume:
        meta = read_checkpoint_meta(ckpt)
        differences = settings_differences(meta["settings"], settings)
        if differences:
            raise ConfigError(f"--resume: the settings differ from those of {ckpt} (only {', '.join(RESUMABLE)} may "
                              "change; pass the flags the search started with): " + "; ".join(differences))
        if config.steps < meta["step"]:
            raise ConfigError(f"--resume: --steps {config.steps} is below the {meta['step']} steps {ckpt} has done")
    lat = LatencyPredictor.load(predictor) if predictor else None
    search = DartsSearch(space, config, pad_id=sp.pad_id(), predictor=lat, latency_ms=latency_ms)

    def read(split: str) -> list:
        sides = (data_lib.encode_file(sp, folder / f"{split}.{side}", space.max_positions) for side in ("src", "tgt"))
        return list(zip(*sides))

    if resume:
        load_checkpoint(ckpt, search)
        truncate_jsonl(out / LOG, "step", search.steps_done)
        logger.info("resumed %s at step %d (%.0f wall seconds so far)", out, search.steps_done, meta["wall_seconds"])
    train = BatchStream(read("train"), config.max_tokens, config.seed, sp.pad_id(), sp.bos_id(), **meta["train"])
    dev = BatchStream(read("dev"), config.max_tokens, config.seed + 1, sp.pad_id(), sp.bos_id(), **meta["dev"])
    out.mkdir(parents=True, exist_ok=True)
    segments = meta["segments"] + [{"from_step": search.steps_done, "threads": torch.get_num_threads(),
                                     "git_commit": git_commit()}]
    start_wall = last_save = time.monotonic()
    start_cpu = time.process_time()
    seconds = lambda: {"wall_seconds": round(meta["wall_seconds"] + time.monotonic() - start_wall, 1),  # noqa: E731
                       "cpu_seconds": round(meta["cpu_seconds"] + time.process_time() - start_cpu, 1)}

    def write_alphas(arch: ArchConfig) -> None:
        atomic_write_text(out / "alphas.json", json.dumps({"step": search.steps_done, "probabilities":
                                                           search.probabilities(), "arch": arch.to_dict()}, indent=2) + "\n")

    def checkpoint() -> None:
        save_checkpoint(ckpt, search, {"step": search.steps_done, "train": train.position(), "dev": dev.position(),
                                       **seconds(), "segments": segments, "settings": settings,
                                       "config": dataclasses.asdict(config), "data": str(data_dir),
                                       "predictor": str(predictor) if predictor else None})

    log = open(out / LOG, "a", encoding="utf-8")
    bar = tqdm(total=config.steps, initial=search.steps_done, disable=not progress, unit="step", dynamic_ncols=True)
    try:
        for step in range(search.steps_done + 1, config.steps + 1):
            record = search.step(next(train), next(dev) if step > config.arch_start else None)
            bar.update(1)
            bar.set_postfix(loss=round(record["train_loss"], 3), dev=round(record.get("dev_loss", float("nan")), 3))
            over = config.minutes is not None and time.monotonic() - start_wall >= config.minutes * 60
            if step % config.log_every == 0 or step == config.steps or over:
                arch = search.architecture()
                record = {"step": step, **{k: round(v, 5) if isinstance(v, float) else v for k, v in record.items()},
                          "wall_seconds": seconds()["wall_seconds"],
                          "encoder_experts": list(arch.encoder_experts), "decoder_experts": list(arch.decoder_experts),
                          "decoder_layers": arch.decoder_layers}
                log.write(json.dumps(record) + "\n")
                log.flush()
                write_alphas(arch)
            if time.monotonic() - last_save >= config.save_every_minutes * 60 and step < config.steps and not over:
                checkpoint()
                last_save = time.monotonic()
            if over:
                logger.info("stopping after %d steps: the %s-minute limit is reached (resume with --resume)",
                            step, config.minutes)
                break
        checkpoint()
    finally:
        bar.close()
        log.close()
    arch = search.architecture()
    write_alphas(arch)
    arch.save(out / "best.json")
    atomic_write_text(out / "best_info.json", json.dumps({
        "method": "darts", "order": "first", "reversible": config.reversible, "splits": config.splits,
        "steps": search.steps_done, "finished": search.steps_done >= config.steps, **seconds(),
        "segments": segments, "threads": torch.get_num_threads(), "budget_latency_ms": latency_ms,
        "dense_only": dense_only, "predicted_latency_ms": lat.predict([arch])[0] if lat else None,
        "predictor_measured_on": lat.measured_on if lat else None, "config": dataclasses.asdict(config),
        "space": space.to_dict(), "probabilities": search.probabilities(), **cost(arch).to_dict()}, indent=2) + "\n")
    return arch

