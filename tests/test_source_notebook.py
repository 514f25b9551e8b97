"""The notebook example runs top to bottom, cell by cell (`# %%`), against its own emulator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "pipelines" / "notebook_tags_subscribers.py"


def test_notebook_runs_top_to_bottom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENTO_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.delenv("BENTO_SECRET_KEY", raising=False)  # so the notebook starts its emulator
    cells = re.split(r"^# %%.*$", NOTEBOOK.read_text(), flags=re.MULTILINE)
    assert len(cells) >= 5
    namespace: dict[str, Any] = {"__name__": "__notebook__"}
    for number, cell in enumerate(cells):
        exec(compile(cell, f"{NOTEBOOK.name}[cell {number}]", "exec"), namespace)
    tags, subscribers, people = namespace["tags"], namespace["subscribers"], namespace["people"]
    emulator = namespace["emulator"]
    assert not emulator.running  # the last cell stops it
    assert sorted(tags["id"]) == sorted(str(t) for t in emulator.store.tags)
    assert len(subscribers) == len(emulator.store.subscribers)
    # each person's tag names, straight from their row, as Python lists
    want = {sub.email: emulator.store.tag_names(sub) for sub in emulator.store.subscribers.values()}
    assert dict(zip(people["email"], people["tag_names"], strict=True)) == want
    customers = namespace["customers"]
    assert len(customers) == sum("customer" in names for names in want.values()) > 0
