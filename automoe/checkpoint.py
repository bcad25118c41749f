"""Model folders on disk and on the Hugging Face Hub: `config.json` + `model.safetensors`.

A model folder (Hugging Face Hub repo layout) holds:
  config.json        {"format": "automoe", "format_version": 1, "arch": ArchConfig,
                      "tokenizer": {...}, "training": {...}, "sha256": {file: hex}}
  model.safetensors  the weights, nothing else (no pickle is ever read)
  spm.model          the SentencePiece model named in config["tokenizer"]["file"], if any
  README.md          the model card

Loading is strict: an unknown config key, a missing, unexpected or mis-shaped tensor, or a
truncated file is an error that names the problem. "sha256" records the digests of the weights
and the tokenizer when the folder is written; loading verifies them (`verify_model_folder`, about
20 ms for 35 MB) unless `verify=False`. Folders written before it existed have no "sha256" and
load unchecked. We do not use huggingface_hub's `PyTorchModelHubMixin` because it silently drops
unknown config keys, loads non-strictly and falls back to pickled `*.bin` weights.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import (CONFIG_NAME, EXPORT_INFO_NAME, SUPERNET_WEIGHTS_NAME, TOKENIZER_NAME, WEIGHTS_NAME,
                        ArtifactError, atomic_write_text, check_file_name, check_hashes, file_hashes,
                        verify_files)
from .config import ArchConfig, ConfigError

logger = logging.getLogger(__name__)

FORMAT = "automoe"
FORMAT_VERSION = 1
CONFIG_KEYS = {"format", "format_version", "arch", "tokenizer", "training", "sha256"}
EXPORT_TARGETS = ("onnxruntime", "ctranslate2")
# What `from_pretrained` downloads from a Hub repo: configs, weights, tokenizer, card, exports.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.vocab", "*.md", "*.onnx", "*.onnx.data",
                      "*.bin.ct2", "model.bin", "shared_vocabulary.*", "*.txt"]
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class CheckpointError(ArtifactError):
    """A model folder or checkpoint cannot be loaded; the message names the file and the problem."""


def supernet_folder_error(folder: str | Path) -> CheckpointError:
    """The error for a supernet folder given where a model folder is expected, with the way out."""
    return CheckpointError(f"{folder} is a supernet folder, not a model folder: extract a subnet first, "
                           f"e.g. `automoe extract {folder} --arch largest --out DIR` (or a search's best.json)")


def folder_kind(folder: str | Path) -> str | None:
    """What a local folder holds, by its files: "export" (export_info.json), "model" (config.json),
    "supernet" (supernet.safetensors), or None (none of these)."""
    folder = Path(folder)
    for kind, name in (("export", EXPORT_INFO_NAME), ("model", CONFIG_NAME), ("supernet", SUPERNET_WEIGHTS_NAME)):
        if (folder / name).is_file():
            return kind
    return None


def read_json_file(path: str | Path, what: str) -> dict:
    """A JSON object from `path`; binary garbage, invalid JSON or a non-object is a `CheckpointError`
    naming the file (`what` says which kind of file it should be)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not a text file (byte 0x{e.object[e.start]:02x} at offset {e.start} is not "
                              f"UTF-8); it should be {what}: download or save the folder again") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e}); it should be {what}: "
                              "download or save the folder again") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(data).__name__}, not the object {what} is")
    return data


def read_model_config(model_dir: str | Path) -> tuple[ArchConfig, dict[str, Any]]:
    """Read and strictly check `config.json` of a model folder.

    Returns (arch, meta) where meta holds the "tokenizer", "training" and "sha256" objects.
    """
    path = Path(model_dir) / CONFIG_NAME
    if not path.is_file() and (Path(model_dir) / SUPERNET_WEIGHTS_NAME).is_file():
        raise supernet_folder_error(model_dir)
    if not path.is_file():
        raise CheckpointError(f"{path} not found: is {model_dir} a model folder written by save_pretrained?")
    data = read_json_file(path, "an automoe model config")
    if data.get("format") != FORMAT:
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
    except (ConfigError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: \"arch\" is not a valid architecture ({e})") from None
    meta = {key: data.get(key) or {} for key in ("tokenizer", "training")}
    for key, value in meta.items():
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: \"{key}\" must be a JSON object, not {type(value).__name__}")
    if meta["tokenizer"].get("file") is not None:
        check_file_name(meta["tokenizer"]["file"], path)
    try:
        meta["sha256"] = check_hashes(data.get("sha256"), path)
    except ArtifactError as e:
        raise CheckpointError(str(e)) from None
    return arch, meta


@dataclass
class Source:
    """What a path given to `from_pretrained` is, read once: a "model" folder (config.json +
    model.safetensors) or an "export" folder (export_info.json), with its parsed config."""

    kind: str
    folder: Path
    arch: ArchConfig
    meta: dict  # tokenizer, training and sha256 of a model folder's config.json (an export's: from its config)
    info: dict = field(default_factory=dict)  # export_info.json of an export folder


def read_export_folder(folder: Path) -> Source:
    """The `Source` of an export folder: export_info.json (its target runtime, quantization and
    file checksums) and the architecture and tokenizer of the model it was exported from."""
    info_path = folder / EXPORT_INFO_NAME
    info = read_json_file(info_path, "an automoe export description")
    if info.get("target") not in EXPORT_TARGETS:
        raise CheckpointError(f"{info_path}: target {info.get('target')!r} is not one of {list(EXPORT_TARGETS)}; "
                              "export the model folder again")
    try:
        check_hashes(info.get("sha256"), info_path)
    except ArtifactError as e:
        raise CheckpointError(str(e)) from None
    if info["target"] == "onnxruntime":  # ONNX exports carry the model's own config.json
        arch, meta = read_model_config(folder)
        return Source("export", folder, arch, meta, info)
    # CTranslate2 owns config.json in its folders: the model's config joins its settings there (an
    # older automoe kept the architecture in export_info.json instead)
    config_path = folder / CONFIG_NAME
    config = read_json_file(config_path, "CTranslate2's settings and the model's config")
    holder, path = (config, config_path) if "arch" in config else (info, info_path)
    try:
        arch = ArchConfig.from_dict(holder.get("arch"))
    except (ConfigError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: \"arch\" is not a valid architecture ({e})") from None
    meta = {"tokenizer": holder.get("tokenizer") or info.get("tokenizer") or {},
            "training": holder.get("training") or {}}
    if not isinstance(meta["tokenizer"], dict):
        raise CheckpointError(f"{path}: \"tokenizer\" must be a JSON object")
    return Source("export", folder, arch, meta, info)


def read_folder(folder: str | Path) -> Source:
    """Decide once what a local folder is and read its config: a model folder or an export folder
    (`Source`); a supernet folder or any other folder is a `CheckpointError` saying what to pass."""
    folder = Path(folder)
    kind = folder_kind(folder)
    if kind == "supernet":
        raise supernet_folder_error(folder)
    if kind is None:
        raise CheckpointError(f"{folder} is not a model folder ({CONFIG_NAME} + {WEIGHTS_NAME}, written by "
                              f"save_pretrained or `automoe train model`) nor an export folder ({EXPORT_INFO_NAME}, "
                              "written by `automoe export`)")
    if kind == "export":
        return read_export_folder(folder)
    arch, meta = read_model_config(folder)
    return Source("model", folder, arch, meta)


def verify_source(source: Source) -> dict[str, str]:
    """Check the files of a model or export folder against the sha256 it records (`IntegrityError`
    naming the first that differs); returns the computed digests ({} when none are recorded)."""
    if source.kind == "export":
        return verify_files(source.folder, source.info.get("sha256"), source=str(source.folder / EXPORT_INFO_NAME))
    return verify_model_folder(source.folder, source.meta)


def write_model_config(model_dir: str | Path, arch: ArchConfig, tokenizer: dict | None = None,
                       training: dict | None = None, sha256: dict[str, str] | None = None) -> None:
    """Write `config.json` for `arch` plus tokenizer info, training provenance and the sha256 of
    the folder's weight and tokenizer files (`sha256`, checked when the folder is loaded)."""
    data = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch.to_dict(),
            "tokenizer": tokenizer or {}, "training": training or {}}
    if sha256:
        data["sha256"] = sha256
    atomic_write_text(Path(model_dir) / CONFIG_NAME, json.dumps(data, indent=2) + "\n")


def model_files(meta: dict) -> list[str]:
    """The files of a model folder whose checksums its config records: weights, then tokenizer."""
    tok = (meta.get("tokenizer") or {}).get("file")
    return [WEIGHTS_NAME] + ([tok] if tok else [])


def verify_model_folder(folder: str | Path, meta: dict) -> dict[str, str]:
    """Check the weight and tokenizer files of a model folder against the sha256 its config.json
    records (`IntegrityError` naming the file); returns the computed hashes ({} for a folder
    written before checksums were recorded: nothing is checked)."""
    return verify_files(folder, meta.get("sha256"), source=str(Path(folder) / CONFIG_NAME))


def load_tokenizer(path: str | os.PathLike):
    """Load a SentencePiece model from a ``.model`` file or a folder holding ``spm.model``; a
    missing or unreadable file is a `CheckpointError` naming it."""
    import sentencepiece as spm

    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} not found; give a SentencePiece .model file or a folder holding "
                              f"{TOKENIZER_NAME} (a model folder needs the tokenizer named in its config.json)")
    try:
        return spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError, ValueError) as e:  # sentencepiece raises RuntimeError/OSError for a bad file
        raise CheckpointError(f"{path} is not a readable SentencePiece model ({str(e).strip()[:200]}); "
                              "download or save the folder again") from None


def load_model_tokenizer(folder: str | Path, meta: dict, vocab_size: int | None = None):
    """The SentencePiece model named in a model or export folder's config (`tokenizer.file`);
    with `vocab_size`, one whose piece count differs is a `CheckpointError` naming both files."""
    name = (meta.get("tokenizer") or {}).get("file")
    if not name:
        raise CheckpointError(f"{folder} has no tokenizer in its {CONFIG_NAME}; "
                              "save the model with tokenizer_file=...")
    path = Path(folder) / check_file_name(name, Path(folder) / CONFIG_NAME)
    sp = load_tokenizer(path)
    if vocab_size is not None and sp.get_piece_size() != vocab_size:
        raise CheckpointError(f"{path} has {sp.get_piece_size()} pieces but the model's vocab_size is {vocab_size} "
                              f"({Path(folder) / CONFIG_NAME}): the tokenizer and the model do not belong together")
    return sp


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


def optimizer_tensors(optimizer, prefix: str) -> tuple[dict, list]:
    """An optimizer's state as flat tensors {f"{prefix}.{param index}.{name}": tensor} and its
    JSON-ready param_groups (safetensors holds tensors only; the groups go into its metadata)."""
    import torch

    state = optimizer.state_dict()
    tensors = {f"{prefix}.{idx}.{name}": value if torch.is_tensor(value) else torch.tensor(value)
               for idx, s in state["state"].items() for name, value in s.items()}
    return tensors, state["param_groups"]


def load_optimizer_tensors(optimizer, tensors: dict, prefix: str, param_groups: list) -> None:
    """Restore an optimizer from `optimizer_tensors`' tensors (other keys of `tensors` are ignored)."""
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def check_state_dict(expected: dict, found: dict, source: str, config_path: str | Path | None = None) -> None:
    """Raise `CheckpointError` listing every missing, unexpected and mis-shaped tensor, and every
    tensor holding NaN or infinite values (never saved by training: a corrupt file)."""
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
        raise CheckpointError(f"{source} does not match its config{f' ({config_path})' if config_path else ''}: "
                              + "; ".join(problems))
    bad = [k for k, v in found.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(f"{source} is corrupt: tensors {bad[:5]}{' ...' if len(bad) > 5 else ''} hold NaN or "
                              "infinite values; download or save it again")


def resolve_model_dir(path_or_repo: str | Path, revision: str | None = None,
                      cache_dir: str | Path | None = None, token: str | None = None,
                      local_dir: str | Path | None = None, *, hub: bool = False) -> Path:
    """A local folder as is, or a Hub repo id downloaded (configs, safetensors, tokenizer,
    card and export files only: `HUB_ALLOW_PATTERNS`) through huggingface_hub into its cache (or
    `local_dir`). `HF_ENDPOINT` and `HF_TOKEN` are read at call time; with `HF_HUB_OFFLINE=1` a
    cached copy is used. A repo whose weights are only pickles is refused with a `CheckpointError`.

    Where "org/name" is not on the Hub either and `org` is a local folder, the error says first
    that the local folder "org/name" (e.g. "models/NAME") does not exist. `hub=True` (`automoe pull`)
    downloads even where a local folder of that name exists."""
    local = Path(path_or_repo)
    if local.is_dir() and not hub:
        if revision is not None:
            logger.warning("%s is a local folder: revision=%r is ignored", local, revision)
        return local
    text = str(path_or_repo)
    if local.exists() and not hub:
        raise CheckpointError(f"{text} is a file, not a model folder (a folder holding {CONFIG_NAME} and "
                              f"{WEIGHTS_NAME}) or an export folder")
    if text.startswith((".", "/", "~")) or text.count("/") != 1 or not all(text.split("/")):
        raise CheckpointError(f"{text}: no such model folder (and not a Hub repo id of the form 'org/name')")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or None
    offline = _env_true("HF_HUB_OFFLINE")
    where = f"{text!r} (revision {revision or 'main'!r})"
    if local.parent.is_dir() and not hub:  # e.g. models/NAME: most likely a mistyped local folder
        present = sorted(p.name for p in local.parent.iterdir() if folder_kind(p))
        where = (f"{text}: no such local folder ({local.parent}/ holds {present or 'no model folders'}); "
                 f"and Hub repo {where}")
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
        tokenizer file (copied in) and a README.md card into `save_directory`; config.json records
        the sha256 of the weights and the tokenizer, which loading verifies."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        tokenizer = {}
        if tokenizer_file is not None:
            src = Path(tokenizer_file)
            if src.resolve() != (out / src.name).resolve():
                tmp = out / (src.name + ".tmp")
                shutil.copyfile(src, tmp)
                os.replace(tmp, out / src.name)
            tokenizer = {"type": "sentencepiece", "file": src.name}
        save_state_dict(self.state_dict(), out / WEIGHTS_NAME, dtype=dtype)
        files = file_hashes(out, model_files({"tokenizer": tokenizer}))
        write_model_config(out, self.config, tokenizer, training, files)
        if card is not None:
            atomic_write_text(out / "README.md", card)
        return out

    @classmethod
    def from_pretrained(cls, path_or_repo: str | Path, *, revision: str | None = None,
                        cache_dir: str | Path | None = None, token: str | None = None, device: str = "cpu",
                        dtype=None, verify: bool = True):
        """Load a model folder or Hub repo strictly; weights are cast to `dtype` (default fp32).

        With `verify` (the default) the weight and tokenizer files must match the sha256 recorded
        in config.json (`IntegrityError` naming the file otherwise). The folder's tokenizer/training
        metadata is kept in `model.meta` and its path in `model.source_dir`.
        """
        folder = resolve_model_dir(path_or_repo, revision=revision, cache_dir=cache_dir, token=token)
        arch, meta = read_model_config(folder)
        return cls.from_model_folder(folder, arch, meta, device=device, dtype=dtype, verify=verify)

    @classmethod
    def from_model_folder(cls, folder: str | Path, arch: ArchConfig, meta: dict, *, device: str = "cpu",
                          dtype=None, verify: bool = True):
        """Load the weights of a local model folder whose config (`arch`, `meta`) was already read
        by `read_model_config`, verifying its checksums unless `verify=False` (done already)."""
        import torch

        folder = Path(folder)
        if verify:
            verify_model_folder(folder, meta)
        model = cls(arch)
        state = load_state_dict(folder / WEIGHTS_NAME)
        check_state_dict(model.state_dict(), state, str(folder / WEIGHTS_NAME), folder / CONFIG_NAME)
        dtype = dtype or torch.float32
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True)
        model.meta = meta
        model.source_dir = folder
        return model.to(device).eval()
