"""The README's source snippets run as written, against the emulator, each in a folder of its own.

The Python blocks of the README's "Bento → warehouse: the source" section are read from the README itself
(so an edit there is what gets tested) and run with BENTO_* pointing at a seeded emulator, budgets raised
the way the README's emulator instructions raise them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bento_api.emulator import BentoEmulator
from bento_source import ALL_RESOURCES, LIST_RESOURCES, STATS_RESOURCES

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Bento → warehouse: the source"
#: the environment the README's emulator instructions export (the budgets raised for a local run)
RAISED_BUDGETS = {"BENTO_REQUESTS_PER_MINUTE": "6000", "BENTO_STATS_REQUESTS_PER_HOUR": "360000"}


def source_blocks() -> list[str]:
    """The ```python blocks of the README's source section, in order."""
    text = README.read_text()
    assert SECTION in text, f"README has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL)


@pytest.fixture
def readme_env(emulator: BentoEmulator, monkeypatch: pytest.MonkeyPatch) -> BentoEmulator:
    """Only the BENTO_* variables a reader of the README would export, pointing at the emulator."""
    for key in list(os.environ):
        if key.startswith(("BENTO_", "SOURCES__", "DESTINATION__")):
            monkeypatch.delenv(key)
    for key, value in emulator.credentials.items():
        monkeypatch.setenv(f"BENTO_{key.upper()}", value)
    for key, value in RAISED_BUDGETS.items():
        monkeypatch.setenv(key, value)
    return emulator


def run_block(number: int, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run one README block in `folder` as the working directory; returns its namespace."""
    folder.mkdir(parents=True, exist_ok=True)
    block = source_blocks()[number]
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    with monkeypatch.context() as patch:
        patch.chdir(folder)
        exec(compile(block, f"README.md[source block {number}]", "exec"), namespace)
    return namespace


def tables(path: Path, dataset: str = "bento") -> dict[str, int]:
    """Row counts of the dataset's tables (dlt's own `_dlt_*` tables left out)."""
    with duckdb.connect(str(path), read_only=True) as db:
        names = [row[0] for row in db.execute(
            "select table_name from information_schema.tables where table_schema = ?", [dataset]).fetchall()]
        return {name: db.execute(f'select count(*) from "{dataset}"."{name}"').fetchone()[0]  # type: ignore[index]
                for name in names if not name.startswith("_dlt")}


def test_each_snippet_names_its_own_pipeline_and_folder() -> None:
    blocks = source_blocks()
    assert len(blocks) == 2
    names = [re.search(r'dlt\.pipeline\(\s*"(\w+)"', block) for block in blocks]
    assert all(names) and len({m.group(1) for m in names if m}) == 2
    assert all('pipelines_dir="' in block for block in blocks)


def test_first_snippet_loads_lists_and_subscribers_with_tag_names(
    readme_env: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = readme_env.store
    namespace = run_block(0, tmp_path / "first", monkeypatch)
    database = tmp_path / "first" / "bento_first_try.duckdb"
    counts = tables(database)
    assert set(LIST_RESOURCES) | {"subscribers"} <= set(counts)
    assert not set(STATS_RESOURCES) & set(counts)  # no stats: the first try never waits on their budget
    assert counts["subscribers"] == len(store.subscribers) and counts["tags"] == len(store.tags)
    assert (tmp_path / "first" / "bento_pipelines" / "bento_first_try").is_dir()
    assert not readme_env.requests("/stats/site") and not readme_env.requests("/stats/segment")
    # the notebook lines of the snippet: each person's tag names, from their own row, as lists
    people = namespace["people"]
    want = {sub.email: store.tag_names(sub) for sub in store.subscribers.values()}
    assert dict(zip(people["email"], people["tag_names"], strict=True)) == want and any(want.values())

    # the README's DuckDB query on tag names, as printed
    sql = re.search(r"`(select email from bento\.subscribers where [^`]+)`", README.read_text())
    assert sql is not None
    tag = re.search(r"'(\w+)'\)$", sql.group(1))
    assert tag is not None
    with duckdb.connect(str(database), read_only=True) as db:
        found = sorted(row[0] for row in db.execute(sql.group(1)).fetchall())
    assert found == sorted(email for email, names in want.items() if tag.group(1) in names) != []

    # the same snippet from another folder (another checkout) writes there, and leaves the first run alone
    before = database.stat().st_mtime_ns
    run_block(0, tmp_path / "second", monkeypatch)
    assert tables(tmp_path / "second" / "bento_first_try.duckdb")["subscribers"] == len(store.subscribers)
    assert (tmp_path / "second" / "bento_pipelines" / "bento_first_try").is_dir()
    assert database.stat().st_mtime_ns == before


def test_every_resource_snippet_includes_the_stats(
    readme_env: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_block(1, tmp_path, monkeypatch)
    counts = tables(tmp_path / "bento_everything.duckdb")
    assert set(ALL_RESOURCES) <= set(counts)
    assert counts["site_stats"] == 1 and counts["segment_stats"] == len(readme_env.store.segments)
    assert not (tmp_path / "bento_first_try.duckdb").exists()
