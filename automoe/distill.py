"""Sequence-level knowledge distillation data (Kim & Rush 2016, arXiv 1606.07947).

A student trained on a teacher's beam-search translations of the training sources learns an
easier, more deterministic target distribution than the human references; the fast CPU students
of Marian/Bergamot are made this way. `distill_dataset` translates `train.src` of a dataset folder
with a teacher model on the fastest engine it can use (CTranslate2 int8 for a dense teacher,
ONNX Runtime int8 otherwise) and writes a new dataset folder whose `train.tgt` holds the
teacher's output; dev and test keep their human references, so BLEU stays comparable.

The work is written in chunks to `train.tgt.partial` with its settings in `distill_state.json`,
so an interrupted run continues where it stopped (same teacher and settings, or an error).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

from .artifacts import atomic_write_text, sha256_file
from .config import ConfigError

logger = logging.getLogger(__name__)

STATE = "distill_state.json"
PARTIAL = "train.tgt.partial"
COPIED = ("train.src", "train.domain", "dev.src", "dev.tgt", "dev.domain", "test.src", "test.tgt", "test.domain",
          "spm.model", "spm.vocab")


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def default_teacher_engine(teacher: str | Path) -> str:
    """CTranslate2 for a dense teacher (fastest batched int8 decoding), ONNX Runtime otherwise."""
    from .checkpoint import read_model_config
    from .export.checks import ctranslate2_violations

    arch, _ = read_model_config(teacher)
    return "onnxruntime" if ctranslate2_violations(arch) else "ctranslate2"


def distill_dataset(data_dir: str | Path, teacher: str | Path, out_dir: str | Path, *, engine: str | None = None,
                    quantize: str | None = "int8", beam: int = 4, threads: int | None = None, chunk: int = 256,
                    force: bool = False, progress: bool = True, translator=None) -> Path:
    """Write `out_dir`: `data_dir` with `train.tgt` replaced by the teacher's translations of
    `train.src` (beam `beam`); a source the teacher translates to "" keeps its reference.

    Resumes an interrupted run of the same settings; `force` starts over. `translator` (a
    Translator) replaces loading `teacher` on `engine` (tests). Returns `out_dir`.
    """
    from tqdm.auto import tqdm

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    for name in ("train.src", "train.tgt", "manifest.json", "spm.model"):
        if not (data_dir / name).is_file():
            raise ConfigError(f"{data_dir / name} not found: is {data_dir} a dataset folder from `automoe data build`?")
    if chunk < 1 or beam < 1:
        raise ConfigError(f"chunk={chunk} and beam={beam} must be >= 1")
    teacher_weights = Path(teacher) / "model.safetensors"
    engine = engine or (translator.engine if translator is not None else default_teacher_engine(teacher))
    quantize = None if engine == "torch" else quantize  # torch runs the saved weights
    settings = {"data": str(data_dir), "data_manifest_sha256": sha256_file(data_dir / "manifest.json"),
                "teacher": str(teacher),
                "teacher_sha256": sha256_file(teacher_weights) if teacher_weights.is_file() else None,
                "engine": engine, "quantize": quantize, "beam": beam}
    state_path, partial = out_dir / STATE, out_dir / PARTIAL
    if (out_dir / "manifest.json").exists() and not force:
        raise FileExistsError(f"{out_dir} already holds a finished dataset; pass force=True (--force) to redo it")
    if out_dir.exists() and force:
        shutil.rmtree(out_dir)
    if state_path.exists():
        saved = json.loads(state_path.read_text(encoding="utf-8"))
        if saved != settings:
            diff = {k: (saved.get(k), v) for k, v in settings.items() if saved.get(k) != v}
            raise ConfigError(f"{out_dir} holds an interrupted distillation with other settings {diff}; "
                              "pass --force to start over or use another output folder")
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another folder or pass --force")
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    sources, references = _lines(data_dir / "train.src"), _lines(data_dir / "train.tgt")
    done = _lines(partial) if partial.exists() else []
    if len(done) > len(sources):
        raise ConfigError(f"{partial} has more lines ({len(done)}) than {data_dir / 'train.src'}; pass --force")
    if done:
        logger.info("resuming: %d of %d training sources already translated", len(done), len(sources))
    if translator is None:
        from automoe.serve import Translator

        translator = Translator.from_pretrained(teacher, engine=engine, quantize=quantize, threads=threads)
    with open(partial, "a", encoding="utf-8") as f, tqdm(total=len(sources), initial=len(done), unit="sent",
                                                          desc="distilling", disable=not progress) as bar:
        for start in range(len(done), len(sources), chunk):
            outputs = translator.translate(sources[start: start + chunk], beam=beam)
            f.write("".join(line.replace("\n", " ") + "\n" for line in outputs))
            f.flush()
            os.fsync(f.fileno())
            bar.update(len(outputs))
    hypotheses = _lines(partial)
    targets = [hyp if hyp.strip() else ref for hyp, ref in zip(hypotheses, references)]
    kept = sum(1 for hyp in hypotheses if not hyp.strip())
    _finish(data_dir, out_dir, targets, {**settings, "kept_reference": kept, "sentences": len(targets)})
    logger.info("wrote %s: %d teacher translations (%d empty ones kept their reference)", out_dir, len(targets), kept)
    return out_dir


def _finish(data_dir: Path, out_dir: Path, targets: list[str], provenance: dict) -> None:
    """Copy the unchanged files, write train.tgt and the manifest (written last: it marks the
    folder finished), and drop the resume state."""
    manifest = json.loads((data_dir / "manifest.json").read_text(encoding="utf-8"))
    files = dict(manifest.get("files", {}))
    for name in COPIED:
        if (data_dir / name).is_file():
            shutil.copyfile(data_dir / name, out_dir / name)
    text = "".join(f"{t}\n" for t in targets)
    atomic_write_text(out_dir / "train.tgt", text)
    data = text.encode("utf-8")
    files["train.tgt"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "lines": len(targets)}
    manifest.update(files=files, distillation=provenance)
    atomic_write_text(out_dir / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (out_dir / STATE).unlink()
    (out_dir / PARTIAL).unlink()
