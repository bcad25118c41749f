"""Push model folders to, and pull them from, the Hugging Face Hub (or any Hub-compatible server).

A thin layer over `huggingface_hub` that keeps automoe's rules: only complete model folders are
pushed (config.json + model.safetensors, never a pickle, their files matching the sha256 that
config.json records), only configs, safetensors, tokenizer, card and export files are pulled
(`checkpoint.HUB_ALLOW_PATTERNS`; never native code), a pulled folder is checked against the
sha256 it records, and a repo whose weights are only pickles is refused. `HF_ENDPOINT` and `HF_TOKEN` are read at call time (so setting them after
import works too); `HF_HUB_OFFLINE=1` loads a cached copy without touching the network.

    >>> from automoe.hub import push, pull
    >>> commit = push("models/automoe-bible", "me/automoe-bible")
    >>> folder = pull("me/automoe-bible", revision=commit)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .artifacts import CONFIG_NAME, WEIGHTS_NAME
from .checkpoint import (HUB_ALLOW_PATTERNS, PICKLE_SUFFIXES, CheckpointError, read_folder, read_model_config,
                         resolve_model_dir, verify_model_folder, verify_source)

logger = logging.getLogger(__name__)

__all__ = ["push", "pull", "verify_folder", "hub_endpoint", "HubError", "HUB_ALLOW_PATTERNS"]


class HubError(ValueError):
    """A Hub request failed (unreachable endpoint, no permission, ...); the message names repo and reason."""


def hub_endpoint() -> str | None:
    """The Hub URL from `HF_ENDPOINT` as it is now (None: huggingface_hub's default)."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return value.rstrip("/") or None


def _check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo id {repo_id!r} must have the form 'org/name'")


def _check_model_folder(folder: Path) -> list[Path]:
    """Every file to upload; raises `CheckpointError` for a folder that is not a clean model folder."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder")
    missing = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(f"{folder} is not a model folder: {' and '.join(missing)} missing "
                              "(write one with save_pretrained or `automoe train model`)")
    _, meta = read_model_config(folder)  # a config this automoe cannot read is not pushed either
    verify_model_folder(folder, meta)  # nor a corrupt weight or tokenizer file
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not {".git", ".cache"} & set(p.relative_to(folder).parts))
    pickles = [str(p.relative_to(folder)) for p in files if p.suffix in PICKLE_SUFFIXES
               and not _is_ct2_weights(p)]
    if pickles:
        raise CheckpointError(f"{folder} holds pickled files {pickles}: automoe never publishes pickles "
                              "(they can run arbitrary code when loaded); delete them or convert them to safetensors")
    return files


def _is_ct2_weights(path: Path) -> bool:
    """CTranslate2's `model.bin` is its own flat format, not a pickle; it sits beside its config.json."""
    return path.name == "model.bin" and (path.parent / "config.json").is_file()


def push(model_dir: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
         revision: str | None = None, commit_message: str = "Upload automoe model") -> str:
    """Upload a model folder (config.json, model.safetensors, tokenizer, README.md card, exports) to
    Hub repo `repo_id`, creating the repo if needed; returns the new commit id.

    `revision` is the branch to commit to (default main). Refuses a folder without config.json /
    model.safetensors or with pickled files in it.
    """
    from huggingface_hub import HfApi

    _check_repo_id(repo_id)
    folder = Path(model_dir)
    files = _check_model_folder(folder)
    endpoint = hub_endpoint()
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, revision=revision,
                                 commit_message=commit_message, ignore_patterns=["*.tmp"])
    except Exception as e:  # HTTP, connection and offline-mode errors of huggingface_hub
        if isinstance(e, (CheckpointError, TypeError)):
            raise
        raise HubError(f"could not push {folder} to {repo_id!r} at {endpoint or 'the default Hub endpoint'} "
                       f"(is HF_TOKEN set and allowed to write there?): {type(e).__name__}: {e}") from e
    logger.info("pushed %d files of %s to %s at commit %s", len(files), folder, repo_id, info.oid)
    return info.oid


def pull(repo_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None,
         token: str | None = None, local_dir: str | Path | None = None, verify: bool = True) -> Path:
    """Download a model repo (configs, safetensors, tokenizer, card and export files only) into the
    Hugging Face cache (or `local_dir`) and return the folder. A repo with only pickled weights is
    refused with a `CheckpointError`; with `HF_HUB_OFFLINE=1` a cached copy is returned. The files
    must match the sha256 the folder records (`IntegrityError` naming the file) unless `verify=False`."""
    _check_repo_id(repo_id)
    folder = resolve_model_dir(repo_id, revision=revision, cache_dir=cache_dir, token=token, local_dir=local_dir,
                               hub=True)
    if verify:
        verify_folder(folder)
    return folder


def verify_folder(folder: str | Path) -> dict[str, str]:
    """Check a model or export folder against the sha256 it records (`IntegrityError` naming the
    first file that differs); returns the computed digests ({} for a folder that records none)."""
    return verify_source(read_folder(folder))
