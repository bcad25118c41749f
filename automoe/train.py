"""Training loops for the supernet and for single models (dense, Switch, searched subnets).

One loop serves both: a `Task` says which architecture(s) each update trains. The supernet
samples one subnet per update, seeded by the update number (HAT), plus the largest and smallest
with `sandwich` (MoS); a model task always trains its one architecture.

- Token-budget batches (`data.make_batches`), label-smoothed cross-entropy, Adam, warmup +
  inverse-sqrt or cosine schedule, gradient accumulation (`update_freq`), gradient clipping.
- Resumable: `checkpoint.safetensors` (weights, Adam moments, torch RNG) with the loop position in
  its JSON metadata is written atomically every `save_every_minutes` and at the end; resuming
  continues bit-identically (data order and subnet choice depend only on seed, epoch and update).
- Data parallel through torchrun: each process takes every world_size-th batch of an update;
  gradients and token counts are summed across processes (gloo on CPU, nccl on GPU) before the
  step, so N processes compute what one process computes with N times `update_freq`.
  (A hand all-reduce instead of DistributedDataParallel because subnets leave most supernet
  weights unused in a step and the set of used experts can differ between processes.)
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from . import data as data_lib
from .artifacts import git_commit, sha256_file, truncate_jsonl
from .checkpoint import load_optimizer_tensors, load_state_dict, optimizer_tensors
from .config import ArchConfig, SearchSpace, TrainConfig
from .modeling import MoETransformer, label_smoothed_nll
from .supernet import WeightSharing, build_supernet
from .supernet_folder import SHARING_FILE, load_supernet, read_sharing, save_supernet

logger = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.safetensors"


def lr_at(update: int, cfg: TrainConfig) -> float:
    """Learning rate for 1-based `update`: linear warmup, then inverse-sqrt decay or cosine to 0."""
    warm = max(cfg.warmup_updates, 1)
    if update <= cfg.warmup_updates:
        return cfg.lr * update / warm
    if cfg.schedule == "inverse_sqrt":
        return cfg.lr * math.sqrt(warm / update)
    progress = (update - cfg.warmup_updates) / max(cfg.max_updates - cfg.warmup_updates, 1)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


# ------------------------------------------------------------------------------------- tasks

class Task:
    """What a training run optimises: `module` holds the weights, `archs(update)` the
    architecture(s) one update trains, `forward(batch, arch)` the teacher-forced output."""

    module: torch.nn.Module

    def archs(self, update: int) -> list:
        raise NotImplementedError

    def forward(self, src, tgt_in, arch):
        raise NotImplementedError

    def valid_archs(self) -> dict[str, object]:
        raise NotImplementedError


class SupernetTask(Task):
    """Weight-sharing supernet training: one random subnet per update (+ sandwich); `sharing`
    picks the supernet (prefix slicing or Mixture-of-Supernets)."""

    def __init__(self, space: SearchSpace, cfg: TrainConfig, sharing: WeightSharing = WeightSharing()):
        self.space, self.cfg = space, cfg
        self.module = build_supernet(space, sharing)

    def _arch(self, arch: ArchConfig) -> ArchConfig:
        return arch.replace(dropout=self.cfg.dropout)

    def archs(self, update: int) -> list[ArchConfig]:
        sampled = self.space.sample(random.Random(self.cfg.seed * 1_000_003 + update))
        extra = [self.space.largest(), self.space.smallest()] if self.cfg.sandwich else []
        return [self._arch(a) for a in [sampled, *extra]]

    def forward(self, src, tgt_in, arch):
        return self.module(src, tgt_in, arch)

    def valid_archs(self) -> dict[str, ArchConfig]:
        return {"largest": self._arch(self.space.largest()), "smallest": self._arch(self.space.smallest())}


class ModelTask(Task):
    """Training of one standalone architecture."""

    def __init__(self, arch: ArchConfig, cfg: TrainConfig, init: MoETransformer | None = None):
        self.arch = arch.replace(dropout=cfg.dropout)
        self.module = MoETransformer(self.arch)
        if init is not None:
            self.module.load_state_dict(init.state_dict(), strict=True)

    def archs(self, update: int) -> list[None]:
        return [None]

    def forward(self, src, tgt_in, arch):
        return self.module(src, tgt_in)

    def valid_archs(self) -> dict[str, None]:
        return {"model": None}


# ---------------------------------------------------------------------------------- the loop

@dataclass
class LoopState:
    """Position of a run; saved as JSON in the checkpoint so `resume` continues exactly."""

    update: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    tokens_seen: int = 0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)  # recent validation results
    git_commit: str | None = None  # the code that ran (read when this run or resumed segment started)


@dataclass
class Dataset:
    """Encoded training and validation pairs plus the tokenizer ids."""

    train: list[tuple[list[int], list[int]]]
    valid: list[tuple[list[int], list[int]]]
    pad_id: int
    bos_id: int
    spm_path: Path
    manifest_sha256: str


def load_dataset(cfg: TrainConfig) -> Dataset:
    """Encode `cfg.data`'s train and dev splits with its SentencePiece model."""
    folder = Path(cfg.data)
    sp = data_lib.load_tokenizer(folder)
    read = lambda split, side: data_lib.encode_file(sp, folder / f"{split}.{side}", cfg.max_len)  # noqa: E731
    train = list(zip(read("train", "src"), read("train", "tgt")))
    valid = list(zip(read("dev", "src"), read("dev", "tgt")))[: cfg.valid_sentences]
    manifest = folder / "manifest.json"
    digest = sha256_file(manifest) if manifest.exists() else ""
    return Dataset(train, valid, sp.pad_id(), sp.bos_id(), folder / "spm.model", digest)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the torchrun process group if launched by torchrun; returns (rank, world size)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return _world()


def _sync_gradients(params: list[torch.nn.Parameter], tokens: int) -> int:
    """Sum gradients and token counts over processes, then divide gradients by the token count.

    A parameter keeps `grad=None` (so Adam skips it) only when no process used it.
    """
    rank, world = _world()
    total = torch.tensor([float(tokens)])
    if world > 1:
        used = torch.tensor([float(p.grad is not None) for p in params])
        dist.all_reduce(used)
        dist.all_reduce(total)
        for p, u in zip(params, used.tolist()):
            if u and p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()
    n = int(total.item())
    for p in params:
        if p.grad is not None:
            p.grad.div_(max(n, 1))
    return n


@torch.no_grad()
def validate(task: Task, data: Dataset, cfg: TrainConfig) -> dict[str, dict]:
    """Mean per-token NLL and perplexity on the validation pairs for each validation arch."""
    was_training = task.module.training
    task.module.eval()
    lengths = [len(s) for s, _ in data.valid], [len(t) for _, t in data.valid]
    batches = data_lib.make_batches(*lengths, cfg.max_tokens, seed=0, epoch=0, shuffle=False)
    results = {}
    for name, arch in task.valid_archs().items():
        nll_sum, count = 0.0, 0
        for idx in batches:
            b = data_lib.collate([data.valid[i] for i in idx], data.pad_id, data.bos_id)
            out = task.forward(b["src"], b["tgt_in"], arch)
            _, nll, n = label_smoothed_nll(out.logits, b["tgt_out"], 0.0, data.pad_id)
            nll_sum, count = nll_sum + nll.item(), count + n
        nll = nll_sum / max(count, 1)
        results[name] = {"nll": round(nll, 4), "ppl": round(math.exp(min(nll, 50)), 2)}
    task.module.train(was_training)
    return results


def _save_checkpoint(path: Path, task: Task, optimizer, state: LoopState, cfg: TrainConfig, extra: dict) -> None:
    tensors = {f"model.{k}": v for k, v in task.module.state_dict().items()}
    optim, param_groups = optimizer_tensors(optimizer, "optim")
    tensors |= optim
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"loop": state.__dict__, "train_config": cfg.to_dict(), "param_groups": param_groups, **extra}
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp),
              metadata={"automoe_checkpoint": json.dumps(meta)})
    os.replace(tmp, path)


def _load_checkpoint(path: Path, task: Task, optimizer) -> tuple[LoopState, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["automoe_checkpoint"])
    tensors = load_state_dict(path)
    task.module.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, strict=True)
    load_optimizer_tensors(optimizer, tensors, "optim", meta["param_groups"])
    torch.set_rng_state(tensors["rng.torch"])
    return LoopState(**meta["loop"]), meta


def run_training(task: Task, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                 on_save=None, progress: bool = True) -> LoopState:
    """Train `task` under `cfg`, writing `run_dir/{checkpoint.safetensors, train.jsonl}`.

    `on_save(task, state)` is called on the main process after each checkpoint (e.g. to write the
    model folder). With `resume`, continues from `run_dir`'s checkpoint (an error if there is none);
    without it, an existing checkpoint is an error so that no run is overwritten by accident.
    """
    from tqdm.auto import tqdm

    rank, world = _world()
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / CHECKPOINT
    torch.manual_seed(cfg.seed)
    data = load_dataset(cfg)
    params = list(task.module.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps,
                                 weight_decay=cfg.weight_decay)
    state = LoopState()
    if resume:
        if not ckpt.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {ckpt}")
        state, meta = _load_checkpoint(ckpt, task, optimizer)
        if meta["train_config"]["data"] != cfg.data:
            raise ValueError(f"--resume: checkpoint trained on {meta['train_config']['data']}, not {cfg.data}")
        logger.info("resumed from %s at update %d (%d target tokens seen)", ckpt, state.update, state.tokens_seen)
    elif ckpt.exists():
        raise FileExistsError(f"{ckpt} exists: pass --resume to continue that run or choose another run folder")
    if world > 1:  # identical start on every process
        for p in params:
            dist.broadcast(p.data, 0)
    state.git_commit = git_commit()
    main = rank == 0
    if main:
        truncate_jsonl(run_dir / "train.jsonl", "update", state.update)
    log = open(run_dir / "train.jsonl", "a", encoding="utf-8") if main else None
    write = lambda rec: (log.write(json.dumps(rec) + "\n"), log.flush()) if main else None  # noqa: E731

    src_lens, tgt_lens = [len(s) for s, _ in data.train], [len(t) for _, t in data.train]
    batches = data_lib.make_batches(src_lens, tgt_lens, cfg.max_tokens, seed=cfg.seed, epoch=state.epoch)
    per_update = cfg.update_freq * world
    start = last_save = time.monotonic()
    seconds_before = state.train_seconds
    bar = tqdm(total=cfg.max_updates, initial=state.update, disable=not (main and progress), unit="upd",
               dynamic_ncols=True)
    task.module.train()

    def done() -> bool:
        return ((cfg.max_updates is not None and state.update >= cfg.max_updates)
                or (cfg.max_tokens_seen is not None and state.tokens_seen >= cfg.max_tokens_seen)
                or (cfg.minutes is not None and time.monotonic() - start >= cfg.minutes * 60))

    def checkpoint() -> None:
        state.train_seconds = seconds_before + time.monotonic() - start
        if main:
            _save_checkpoint(ckpt, task, optimizer, state, cfg, {"world_size": world})
            if on_save is not None:
                on_save(task, state, data)

    while not done():
        # The batches of this update: the next `per_update` of the epoch (a new epoch reshuffles).
        group = []
        while len(group) < per_update:
            if state.batch_in_epoch >= len(batches):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                batches = data_lib.make_batches(src_lens, tgt_lens, cfg.max_tokens, seed=cfg.seed, epoch=state.epoch)
            group.append(batches[state.batch_in_epoch])
            state.batch_in_epoch += 1
        update = state.update + 1
        lr = lr_at(update, cfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss_sum = nll_sum = aux_sum = 0.0
        tokens = 0
        t0 = time.monotonic()
        for idx in group[rank::world]:
            b = data_lib.collate([data.train[i] for i in idx], data.pad_id, data.bos_id)
            for arch in task.archs(update):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
                    out = task.forward(b["src"], b["tgt_in"], arch)
                loss, nll, n = label_smoothed_nll(out.logits, b["tgt_out"], cfg.label_smoothing, data.pad_id)
                (loss + cfg.balance_coef * out.aux_loss * n).backward()
                loss_sum, nll_sum, aux_sum = loss_sum + loss.item(), nll_sum + nll.item(), aux_sum + out.aux_loss.item()
                tokens += n
        n_all = _sync_gradients(params, tokens)
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg.clip_norm)
        optimizer.step()
        state.update = update
        state.tokens_seen += n_all
        elapsed = time.monotonic() - t0
        if main:
            rec = {"type": "train", "update": update, "loss": round(loss_sum / max(tokens, 1), 4),
                   "nll": round(nll_sum / max(tokens, 1), 4), "aux": round(aux_sum / max(len(group), 1), 4),
                   "lr": lr, "grad_norm": round(float(grad_norm), 4), "tokens_seen": state.tokens_seen,
                   "tok_per_s": round(n_all / max(elapsed, 1e-9), 1),
                   "wall": round(seconds_before + time.monotonic() - start, 1)}
            write(rec)
            bar.update(1)
            bar.set_postfix(loss=rec["loss"], tok_s=rec["tok_per_s"], tokens=state.tokens_seen)
        if update % cfg.valid_every == 0:
            result = validate(task, data, cfg)
            state.history = (state.history + [{"update": update, **result}])[-20:]
            write({"type": "valid", "update": update, "tokens_seen": state.tokens_seen, **result})
        if time.monotonic() - last_save >= cfg.save_every_minutes * 60:
            checkpoint()
            last_save = time.monotonic()
    if not state.history or state.history[-1]["update"] != state.update:
        result = validate(task, data, cfg)
        write({"type": "valid", "update": state.update, "tokens_seen": state.tokens_seen, **result})
        state.history = (state.history + [{"update": state.update, **result}])[-20:]
    checkpoint()
    bar.close()
    if log:
        log.close()
    return state


def provenance(cfg: TrainConfig, state: LoopState, data: Dataset, **extra) -> dict:
    """Training provenance recorded in a model folder's config.json."""
    return {"data": cfg.data, "data_manifest_sha256": data.manifest_sha256, "updates": state.update,
            "tokens_seen": state.tokens_seen, "epochs": state.epoch, "wall_seconds": round(state.train_seconds, 1),
            "seed": cfg.seed, "git_commit": state.git_commit, "world_size": _world()[1],
            "train_config": cfg.to_dict(), "valid": state.history[-1] if state.history else None, **extra}


def train_supernet(space: SearchSpace, cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                   init_from: str | Path | None = None, sharing: WeightSharing = WeightSharing(),
                   progress: bool = True) -> LoopState:
    """Train the weight-sharing supernet of `space` (`sharing`: prefix slicing or a
    Mixture-of-Supernets kind); writes the supernet folder files (`save_supernet`) into `run_dir`
    at every checkpoint. `init_from` starts (not resumes: fresh optimizer and schedule) from the
    weights of a supernet folder of the same kind, e.g. a shipped one whose run state is gone, or
    a Mixture-of-Supernets from a prefix supernet (`MixtureOfSupernets.load_prefix_supernet`)."""
    run_dir = Path(run_dir)
    recorded = read_sharing(run_dir) if (run_dir / SHARING_FILE).is_file() else sharing
    if resume and recorded != sharing:
        raise ValueError(f"--resume: {run_dir / SHARING_FILE} records weight sharing {recorded.to_dict()}, not "
                         f"{sharing.to_dict()}; resume with the same --weight-sharing/--mos-sets/--mos-hidden")
    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    task = SupernetTask(space, cfg, sharing)
    extra = {"weight_sharing": sharing.to_dict()}
    if init_from is not None:
        # the earlier training travels on, so a card can state the whole budget
        extra |= {"init_from": str(init_from), "previous": _previous_training(Path(init_from) / "supernet_info.json")}
    if init_from is not None and not resume:
        start = load_supernet(init_from)
        if start.space != space:
            raise ValueError(f"{init_from} is a supernet of another space ({start.space.name}); use --space "
                             f"{Path(init_from) / 'space.json'}")
        if start.sharing == sharing:
            task.module.load_state_dict(start.state_dict(), strict=True)
        elif start.sharing.kind == "prefix" and sharing.kind != "prefix":
            task.module.load_prefix_supernet(start)  # each subnet starts as in the prefix supernet
        else:
            raise ValueError(f"{init_from} is a supernet with weight sharing {start.sharing.to_dict()}, not "
                             f"{sharing.to_dict()}: pass the same --weight-sharing/--mos-sets/--mos-hidden "
                             "(a Mixture-of-Supernets may also start from a prefix supernet)")

    def on_save(task, state, data):
        save_supernet(task.module, run_dir)
        shutil.copyfile(data.spm_path, run_dir / "spm.model")  # the tokenizer travels with the supernet
        info = provenance(cfg, state, data, **extra)
        (run_dir / "supernet_info.json").write_text(json.dumps(info, indent=2) + "\n")

    return run_training(task, cfg, run_dir, resume=resume, on_save=on_save, progress=progress)


def _previous_training(info_file: Path) -> dict | None:
    """The provenance summary of the run a training starts from (None if it recorded none)."""
    if not info_file.exists():
        return None
    info = json.loads(info_file.read_text())
    keys = ("data", "data_manifest_sha256", "updates", "tokens_seen", "wall_seconds", "git_commit", "previous")
    return {k: info.get(k) for k in keys}


def training_recipe(data_dir: str | Path, init_from: str | Path | None) -> str:
    """How a model's training started, as cards and results name it: "inherit" (fine-tuned from a
    supernet's weights), "distill" (trained on a teacher's translations, `automoe data distill`),
    "inherit+distill" (both) or "scratch"."""
    distilled = (Path(data_dir) / "manifest.json").exists() and "distillation" in data_lib.load_manifest(data_dir)
    parts = (["inherit"] if init_from is not None else []) + (["distill"] if distilled else [])
    return "+".join(parts) or "scratch"


def train_model(arch: ArchConfig, cfg: TrainConfig, out_dir: str | Path, run_dir: str | Path, *,
                init_from: str | Path | None = None, resume: bool = False, name: str = "",
                progress: bool = True) -> LoopState:
    """Train one architecture (from scratch, or from a supernet's inherited weights) and write the
    model folder `out_dir` (config with provenance, safetensors, tokenizer) at every checkpoint."""
    from .extract import extract_subnet

    torch.manual_seed(cfg.seed)  # the initial weights depend on the seed only
    init = None
    if init_from is not None and not resume:
        init = extract_subnet(load_supernet(init_from), arch)
    task = ModelTask(arch, cfg, init)
    recipe = training_recipe(cfg.data, init_from)

    def on_save(task, state, data):
        model = task.module
        model.save_pretrained(out_dir, tokenizer_file=data.spm_path,
                              training=provenance(cfg, state, data, name=name, recipe=recipe,
                                                  init_from=str(init_from) if init_from else None))

    return run_training(task, cfg, run_dir, resume=resume, on_save=on_save, progress=progress)
