"""Model folders on disk and on the Hugging Face Hub: `config.json` + `model.safetensors`.

A model folder (Hugging Face Hub repo layout) holds:
  config.json        {"format": "automoe", "format_version": 1, "arch": ArchConfig,
                      "tokenizer": {...}, "training": {...}}
  model.safetensors  the weights, nothing else (no pickle is ever read)
  spm.model          the SentencePiece model named in config["tokenizer"]["file"], if any
  README.md          the model card

Loading is strict: an unknown config key, a missing, unexpected or mis-shaped tensor, or a
truncated file is an error that names the problem. We do not use huggingface_hub's
`PyTorchModelHubMixin` because it silently drops unknown config keys, loads non-strictly and
falls back to pickled `*.bin` weights.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from .config import ArchConfig, ConfigError

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "automoe"
FORMAT_VERSION = 1
CONFIG_KEYS = {"format", "format_version", "arch", "tokenizer", "training"}
# What `from_pretrained` downloads from a Hub repo: configs, weights, tokenizer, card, exports.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.vocab", "*.md", "*.onnx", "*.onnx.data",
                      "*.bin.ct2", "model.bin", "shared_vocabulary.*", "*.txt"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class CheckpointError(ValueError):
    """A model folder or checkpoint cannot be loaded; the message names the file and the problem."""


def read_model_config(model_dir: str | Path) -> tuple[ArchConfig, dict[str, Any]]:
    """Read and strictly check `config.json` of a model folder.

    Returns (arch, meta) where meta holds the "tokenizer" and "training" objects.
    """
    path = Path(model_dir) / CONFIG_NAME
    if not path.is_file() and (Path(model_dir) / "supernet.safetensors").is_file():
        raise CheckpointError(f"{model_dir} is a supernet folder, not a model folder: extract a subnet first, "
                              f"e.g. `automoe extract {model_dir} --arch largest --out DIR` (or a search's best.json)")
    if not path.is_file():
        raise CheckpointError(f"{path} not found: is {model_dir} a model folder written by save_pretrained?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an automoe model config (expected \"format\": \"{FORMAT}\")")
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        raise CheckpointError(f"{path}: unknown key(s) {unknown}; allowed keys are {sorted(CONFIG_KEYS)}")
    if data.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {data.get('format_version')!r} is not supported "
            f"(this automoe reads version {FORMAT_VERSION}); upgrade automoe"
        )
    try:
        arch = ArchConfig.from_dict(data.get("arch"))
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: {e}") from e
    return arch, {"tokenizer": data.get("tokenizer") or {}, "training": data.get("training") or {}}


def write_model_config(model_dir: str | Path, arch: ArchConfig, tokenizer: dict | None = None,
                       training: dict | None = None) -> None:
    """Write `config.json` for `arch` plus tokenizer info and training provenance."""
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch.to_dict(),
            "tokenizer": tokenizer or {}, "training": training or {}}
    _atomic_write_text(Path(model_dir) / CONFIG_NAME, json.dumps(data, indent=2) + "\n")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_state_dict(path: str | Path) -> dict:
    """Read a safetensors file into a dict of CPU tensors; a truncated or corrupt file is a
    `CheckpointError` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path}: pickled checkpoints are never loaded (unsafe); convert it to safetensors")
    if not path.is_file():
        raise CheckpointError(f"{path} not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({e}); it may be truncated: download or save it again"
        ) from e


def save_state_dict(state: dict, path: str | Path, dtype=None) -> None:
    """Write tensors to a safetensors file atomically, optionally cast to `dtype` (e.g. fp16)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in state.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def check_state_dict(expected: dict, found: dict, source: str) -> None:
    """Raise `CheckpointError` listing every missing, unexpected and mis-shaped tensor."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k}: expected {tuple(expected[k].shape)}, found {tuple(found[k].shape)}"
              for k in sorted(set(expected) & set(found)) if expected[k].shape != found[k].shape]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected}")
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes))
    if problems:
        raise CheckpointError(f"{source} does not match its config: " + "; ".join(problems))


def resolve_model_dir(path_or_repo: str | Path, revision: str | None = None,
                      cache_dir: str | Path | None = None, token: str | None = None,
                      local_dir: str | Path | None = None) -> Path:
    """A local model folder as is, or a Hub repo id downloaded (configs, safetensors, tokenizer,
    card and export files only: `HUB_ALLOW_PATTERNS`) through huggingface_hub into its cache (or
    `local_dir`). `HF_ENDPOINT` and `HF_TOKEN` are read at call time; with `HF_HUB_OFFLINE=1` a
    cached copy is used. A repo whose weights are only pickles is refused with a `CheckpointError`."""
    local = Path(path_or_repo)
    if local.is_dir():
        if revision is not None:
            logger.warning("%s is a local folder: revision=%r is ignored", local, revision)
        return local
    text = str(path_or_repo)
    if local.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1 or not all(text.split("/")):
        raise CheckpointError(f"{text}: no such model folder (and not a Hub repo id of the form 'org/name')")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    offline = _env_true("HF_HUB_OFFLINE")
    where = f"{text!r} (revision {revision or 'main'!r})"
    try:
        folder = Path(snapshot_download(text, revision=revision, cache_dir=cache_dir, token=token,
                                        local_dir=local_dir, endpoint=endpoint, local_files_only=offline,
                                        allow_patterns=HUB_ALLOW_PATTERNS))
    except LocalEntryNotFoundError as e:
        raise CheckpointError(f"{where} is not in the local Hub cache and the Hub cannot be reached"
                              f"{' (HF_HUB_OFFLINE is set)' if offline else ''}: {e}") from e
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        raise CheckpointError(f"{where} not found on the Hub at {endpoint or 'the default endpoint'} "
                              f"(private repos need HF_TOKEN): {e}") from e
    except Exception as e:  # huggingface_hub raises many types; the message says which
        raise CheckpointError(f"could not download {where} from the Hub: {e}") from e
    weights = [WEIGHTS_NAME, "model.bin"]  # safetensors, or a CTranslate2 export folder
    if not any((folder / name).is_file() for name in weights) and not any(folder.glob("*.onnx")):
        try:
            files = HfApi(endpoint=endpoint, token=token).list_repo_files(text, revision=revision)
        except Exception:  # offline: report what we have
            files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
        pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
        if pickles:
            raise CheckpointError(
                f"Hub repo {where} has only pickled weights {pickles}; automoe loads safetensors only "
                "(pickles can run arbitrary code when loaded): convert them to model.safetensors"
            )
        raise CheckpointError(f"Hub repo {where} has no {WEIGHTS_NAME} (files: {sorted(files)})")
    return folder


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


class HubMixin:
    """`save_pretrained` / `from_pretrained` for `MoETransformer`, strict and pickle-free."""

    def save_pretrained(self, save_directory: str | Path, *, tokenizer_file: str | Path | None = None,
                        training: dict | None = None, card: str | None = None, dtype=None) -> Path:
        """Write config.json, model.safetensors (cast to `dtype` if given, e.g. torch.float16), the
        tokenizer file (copied in) and a README.md card into `save_directory`."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer = {}
        if tokenizer_file is not None:
            src = Path(tokenizer_file)
            if src.resolve() != (out / src.name).resolve():
                shutil.copyfile(src, out / src.name)
            tokenizer = {"type": "sentencepiece", "file": src.name}
        save_state_dict(self.state_dict(), out / WEIGHTS_NAME, dtype=dtype)
        write_model_config(out, self.config, tokenizer, training)
        if card is not None:
            _atomic_write_text(out / "README.md", card)
        return out

    @classmethod
    def from_pretrained(cls, path_or_repo: str | Path, *, revision: str | None = None,
                        cache_dir: str | Path | None = None, token: str | None = None, device: str = "cpu",
                        dtype=None):
        """Load a model folder or Hub repo strictly; weights are cast to `dtype` (default fp32).

        The folder's tokenizer/training metadata is kept in `model.meta` and its path in `model.source_dir`.
        """
        import torch

        folder = resolve_model_dir(path_or_repo, revision=revision, cache_dir=cache_dir, token=token)
        arch, meta = read_model_config(folder)
        model = cls(arch)
        state = load_state_dict(folder / WEIGHTS_NAME)
        check_state_dict(model.state_dict(), state, str(folder / WEIGHTS_NAME))
        dtype = dtype or torch.float32
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
        model.meta = meta
        model.source_dir = folder
        return model.to(device).eval()
