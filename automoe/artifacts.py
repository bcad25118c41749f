"""Files automoe writes and reads back: their names, checksums, output folders and provenance.

Model, export and serving code share these helpers; nothing here imports torch, the trainer or
the corpus builders, so any module may import it.

Integrity: every folder automoe writes records the sha256 of its weight and tokenizer files (a
model folder in `config.json` under "sha256", an export folder, all its files, in
`export_info.json` under "sha256"); `verify_files` checks them when the folder is read and names
the first file that does not match. Folders written before checksums were recorded have no
"sha256" and load unchecked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

# The files of a model folder (Hugging Face Hub repo layout) and of an export folder.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "spm.model"
CARD_NAME = "README.md"
EXPORT_INFO_NAME = "export_info.json"
SUPERNET_WEIGHTS_NAME = "supernet.safetensors"
SUPERNET_INFO_NAME = "supernet_info.json"
SPACE_NAME = "space.json"

# Files that benchmark runs rewrite: a chain of runs at one commit must not record the later runs as
# "-dirty" because an earlier one appended its results.
GENERATED_PATHS = ("benchmarks/results", "README.md")


class ArtifactError(ValueError):
    """A model, export or dataset file is missing, unreadable or inconsistent; the message names it."""


class IntegrityError(ArtifactError):
    """A file's sha256 differs from the one recorded when its folder was written (corrupt or edited)."""


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(folder: str | os.PathLike, names) -> dict[str, str]:
    """{name: sha256} of the named files of `folder` (in the given order)."""
    return {name: sha256_file(Path(folder) / name) for name in names}


def folder_hashes(folder: str | os.PathLike, exclude: tuple[str, ...] = (EXPORT_INFO_NAME,)) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` except `exclude` (export folders record this)."""
    folder = Path(folder)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return file_hashes(folder, [n for n in names if n not in exclude])


def check_file_name(name, source: str | os.PathLike) -> str:
    """`name` if it is a plain file name inside its folder (no folder part, no '..'); an
    `ArtifactError` naming `source` otherwise: a config must not point at files elsewhere."""
    if not isinstance(name, str) or not name or name in (".", "..") or Path(name).name != name or "\\" in name:
        raise ArtifactError(f"{source}: {name!r} is not a plain file name inside the folder")
    return name


def check_hashes(recorded, source: str | os.PathLike) -> dict[str, str] | None:
    """A recorded "sha256" map as {file name: hex digest}, or None when absent; an `ArtifactError`
    naming `source` when it is not one."""
    if recorded is None:
        return None
    if not isinstance(recorded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in recorded.items()):
        raise ArtifactError(f"{source}: \"sha256\" must map file names to sha256 hex digests")
    for name in recorded:
        for part in Path(name).parts:
            check_file_name(part, source)
    return recorded


def verify_files(folder: str | os.PathLike, recorded: dict[str, str] | None, *, source: str) -> dict[str, str]:
    """Check every file of `recorded` ({name: sha256}, from `source`) in `folder`; returns the
    computed hashes. A missing file or a mismatch is an `IntegrityError` naming the file; None
    (a folder written before checksums were recorded) checks nothing."""
    recorded = check_hashes(recorded, source)
    if not recorded:
        logger.debug("%s records no checksums: %s is not verified", source, folder)
        return {}
    folder = Path(folder)
    computed = {}
    for name, expected in recorded.items():
        path = folder / name
        if not path.is_file():
            raise IntegrityError(f"{path} is missing (it is listed in {source}): download or export the folder again")
        computed[name] = sha256_file(path)
        if computed[name] != expected:
            raise IntegrityError(
                f"{path} is corrupt or was changed: its sha256 differs from the one recorded in {source} when the "
                "folder was written; download or save it again (or load with verify=False if you edited it on purpose)")
    return computed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file through a temporary sibling and a rename, so readers never see half of it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def truncate_jsonl(path: str | os.PathLike, key: str, last: int) -> None:
    """Drop the records of a JSONL log whose `key` is past `last` (atomically): a run killed after
    its last checkpoint logged ahead of it, and the resumed run logs those steps again. Records
    without `key` are kept; a last line cut short by the kill is dropped."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    if lines and not lines[-1].rstrip().endswith("}"):
        logger.warning("%s: dropping its last line, cut short: %r", path, lines[-1][:80])
        lines = lines[:-1] + [""]  # the empty line makes the file count as changed
    kept = [line for line in lines if line.strip() and json.loads(line).get(key, 0) <= last]
    if len(kept) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def prepare_out_dir(out_dir: str | os.PathLike, force: bool, *, marker: str = EXPORT_INFO_NAME) -> Path:
    """Refuse an existing output folder unless `force`; return a temporary sibling to write into
    (move it into place with `finish_out_dir`). Even `force` replaces only a folder holding `marker`
    (an earlier export): a model or any other folder given as the output by mistake is never deleted."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} is a file, not a folder; choose an output folder")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not force:
            raise FileExistsError(f"{out_dir} exists and is not empty; pass force=True (--force) to replace it")
        if not (out_dir / marker).is_file():
            raise FileExistsError(f"{out_dir} is not an export folder (no {marker}), and force=True "
                                  "replaces only an earlier export; choose another output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))


def finish_out_dir(tmp: str | os.PathLike, out_dir: str | os.PathLike) -> None:
    """Move a completed temporary folder into place (replacing an old export)."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


@contextlib.contextmanager
def staged_out_dir(out_dir: str | os.PathLike, force: bool, *, marker: str = EXPORT_INFO_NAME):
    """`prepare_out_dir` and `finish_out_dir` around a block: the block writes into the yielded
    temporary folder, which replaces `out_dir` when the block ends and is deleted if it raises, so
    a failed or interrupted export never leaves a half-written folder behind."""
    tmp = prepare_out_dir(out_dir, force, marker=marker)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finish_out_dir(tmp, out_dir)


def write_export_info(folder: str | os.PathLike, model_dir: str | os.PathLike, info: dict, *,
                      tokenizer: dict | None, tools: tuple[str, ...]) -> dict:
    """Write `folder`/export_info.json: `info` plus the provenance every export records (the source
    model folder and the sha256 of its weights, its tokenizer entry, the versions of `tools`, and
    the sha256 of every file in `folder`, written last). Returns the whole record."""
    folder, model_dir = Path(folder), Path(model_dir)
    info = {**info, "source": str(model_dir), "source_sha256": sha256_file(model_dir / WEIGHTS_NAME),
            "tokenizer": tokenizer, "versions": tool_versions("automoe", *tools), "sha256": folder_hashes(folder)}
    (folder / EXPORT_INFO_NAME).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def tool_versions(*modules: str) -> dict:
    """Versions of the named Python packages (None where one is not installed)."""
    out = {}
    for name in modules:
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out


def git_commit(root: str | os.PathLike | None = None) -> str | None:
    """The git commit of the automoe source tree (of `root`, default this package's folder), if it
    is a checkout: "-dirty" when tracked files other than GENERATED_PATHS changed."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    paths = [":(top)"] + [f":(top,exclude){p}" for p in GENERATED_PATHS]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *paths], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return (commit + ("-dirty" if dirty.stdout.strip() else "")) if commit else None
