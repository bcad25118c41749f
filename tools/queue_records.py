"""The results records the proof queue (tools/proof_queue.py) writes: a trained model's dev and test
scores with its training budget, and a supernet's training record. Folders and data are arguments;
the queue names them."""

from __future__ import annotations

import datetime
import json
from pathlib import Path


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def evaluate(model: Path, data: str, split: str) -> dict:
    """BLEU/chrF of a model folder on a split of `data` (torch, beam 4, every sentence)."""
    from automoe.evaluate import evaluate as evaluate_split
    from automoe.serve import Translator

    return evaluate_split(Translator.from_pretrained(model, threads=2), data, split=split, beam=4)


def model_record(model: Path, benchmark: str, data: str, **fields) -> dict:
    """A results record of a trained model folder: its training budget and time, dev and test
    BLEU/chrF on `data` (torch, beam 4, all sentences of each split), the machine and commit."""
    from automoe.artifacts import git_commit
    from automoe.bench import cpu_name
    from automoe.checkpoint import read_model_config

    training = read_model_config(model)[1]["training"]
    dev, test = evaluate(model, data, "dev"), evaluate(model, data, "test")
    return {"benchmark": benchmark, **fields, "model": str(model), "data": training["data"],
            "init_from": training.get("init_from"), "tokens_seen": training["tokens_seen"],
            "updates": training["updates"], "wall_seconds": training["wall_seconds"],
            "dev_bleu": dev["bleu"], "dev_chrf": dev["chrf"], "test_bleu": test["bleu"], "test_chrf": test["chrf"],
            "sentences": {"dev": dev["sentences"], "test": test["sentences"]}, "beam": 4,
            "bleu_signature": test["bleu_signature"], "chrf_signature": test["chrf_signature"],
            "cpu": cpu_name(), "git_commit": git_commit(), "date": _now()}


def supernet_record(folder: str, note: str, arch_files: tuple[str, ...]) -> dict | None:
    """The training record of a supernet folder (None while it has no supernet_info.json): its last
    validation perplexities and, for a MoS supernet, how far its router tells the largest, the
    smallest and the `arch_files` subnets apart (`automoe.mos.mixing_spread`)."""
    from automoe.artifacts import git_commit
    from automoe.config import ArchConfig
    from automoe.mos import MixtureOfSupernets, mixing_spread
    from automoe.supernet_folder import load_supernet

    if not Path(folder, "supernet_info.json").is_file():
        return None
    info = json.loads(Path(folder, "supernet_info.json").read_text())
    supernet = load_supernet(folder)
    archs = [supernet.space.largest(), supernet.space.smallest()] + [ArchConfig.load(a) for a in arch_files]
    spread = mixing_spread(supernet, archs) if isinstance(supernet, MixtureOfSupernets) else None
    return {"benchmark": "supernet_training", "model": folder, "note": note,
            "weight_sharing": supernet.sharing.to_dict(), "tokens_seen": info["tokens_seen"],
            "updates": info["updates"], "valid": info["valid"], "init_from": info.get("init_from"),
            "mixing_spread": spread, "git_commit": git_commit(), "date": _now()}
