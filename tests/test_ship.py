"""The shipped model folders' cards are what tools/ship.py writes from the results files now."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted(p.parent for p in (ROOT / "models").glob("*/config.json"))


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_card_is_generated_from_results(folder, monkeypatch):
    """After a new eval or bench run, regenerate with `python tools/ship.py card models/NAME`."""
    sys.path.insert(0, str(ROOT / "tools"))
    from ship import family_card

    monkeypatch.chdir(ROOT)  # results records name the model by its path from the repository root
    relative = folder.relative_to(ROOT)
    assert (folder / "README.md").read_text(encoding="utf-8") == family_card(relative), \
        f"{relative}/README.md is out of date: regenerate it with `python tools/ship.py card {relative}`"
