"""Supernet folders: `supernet.safetensors` (the weights), `space.json` (the search space) and
`weight_sharing.json` (prefix or Mixture-of-Supernets, with E and H), written and read strictly.
The trainer, the search and the CLI all read supernets through here."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import CheckpointError, load_state_dict, save_state_dict
from .config import ConfigError, SearchSpace
from .supernet import SuperTransformer, WeightSharing, build_supernet


SHARING_FILE = "weight_sharing.json"


def save_supernet(supernet: SuperTransformer, run_dir: str | Path) -> None:
    """Write a supernet folder's weights and description: `supernet.safetensors`, `space.json`
    and `weight_sharing.json` (its kind, and E and H for a Mixture-of-Supernets)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_state_dict(supernet.weights(), run_dir / "supernet.safetensors")
    supernet.space.save(run_dir / "space.json")
    supernet.sharing.save(run_dir / SHARING_FILE)


def read_sharing(run_dir: str | Path) -> WeightSharing:
    """The weight sharing recorded in a supernet folder; prefix for folders written before it was."""
    path = Path(run_dir) / SHARING_FILE
    if not path.is_file():
        return WeightSharing()
    try:
        return WeightSharing.load(path)
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: {e}") from e


def load_supernet(run_dir: str | Path) -> SuperTransformer:
    """Load a supernet folder written by `save_supernet` (strict): the class and its size come
    from `weight_sharing.json`, the space from `space.json`."""
    run_dir = Path(run_dir)
    space = SearchSpace.load(run_dir / "space.json")
    sharing = read_sharing(run_dir)
    supernet = build_supernet(space, sharing)
    weights = run_dir / "supernet.safetensors"
    state = load_state_dict(weights)
    if sharing.kind == "prefix" and any(k.startswith("arch_router.") for k in state):
        raise CheckpointError(f"{weights} holds a Mixture-of-Supernets (arch_router tensors) but "
                              f"{run_dir / SHARING_FILE} is missing: copy it from the training run folder")
    supernet.load_weights(state, str(weights))
    return supernet.eval()
