"""A Bento emulator, a demo warehouse and the environment an orchestrator example reads, for each test."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig
from pipelines.warehouse_to_bento import write_demo_warehouse

#: rows of the demo warehouse's crm_contacts table, sent to Bento by the reverse-ETL step
CRM_CONTACTS = 30
#: what dlt's pipeline writes the source into, inside BENTO_DLT_DIR
BENTO_DUCKDB = "bento.duckdb"
DATASET = "bento_data"
#: where pytest_configure put the orchestrators' homes
HOME_KEY = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Each orchestrator's home in a temporary folder, its telemetry off; set before any of them is imported
    (the test modules import them when collected, and Prefect and Airflow read their settings then)."""
    home = Path(tempfile.mkdtemp(prefix="bento-orchestrators-"))
    config.stash[HOME_KEY] = home
    settings = {
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DAGSTER_HOME": str(home / "dagster"),
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_TO_API_ENABLED": "false",
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(__file__).resolve().parents[1]),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow' / 'airflow.db'}",
    }
    for key, value in settings.items():
        os.environ[key] = value
    for folder in ("dagster", "prefect", "airflow"):
        (home / folder).mkdir()


def pytest_unconfigure(config: pytest.Config) -> None:
    home = config.stash.get(HOME_KEY, None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


def row_count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f'SELECT count(*) FROM {DATASET}."{table}"').fetchone()
    assert row is not None
    return int(row[0])


@dataclass
class Setting:
    emulator: BentoEmulator
    data_dir: Path
    seeded: frozenset[str]  # the emulator's subscribers before the example ran
    seeded_tags: int
    seeded_fields: int

    def warehouse_counts(self) -> dict[str, int]:
        """Rows per table the source loaded (dlt's own tables left out)."""
        with duckdb.connect(str(self.data_dir / BENTO_DUCKDB), read_only=True) as con:
            tables = [row[0] for row in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? "
                "AND table_name NOT LIKE '\\_dlt%' ESCAPE '\\'", [DATASET]).fetchall()]
            return {t: row_count(con, t) for t in tables}

    def loaded_emails(self) -> set[str]:
        with duckdb.connect(str(self.data_dir / BENTO_DUCKDB), read_only=True) as con:
            return {row[0] for row in con.execute(f"SELECT email FROM {DATASET}.subscribers").fetchall()}

    def assert_source_loaded(self) -> None:
        """Every list resource landed with the emulator's row counts; every seeded subscriber was extracted.

        The reverse-ETL step may run before the extract (Dagster orders unrelated assets freely) and adds
        tags and fields, so those two counts lie between the seeded and the final ones.
        """
        counts = self.warehouse_counts()
        store = self.emulator.store
        assert self.seeded_tags <= counts["tags"] <= len(store.tags)
        assert self.seeded_fields <= counts["fields"] <= len(store.fields)
        assert counts["segments"] == len(store.segments)
        assert counts["broadcasts"] == len(store.broadcasts)
        assert counts["sequences"] == len(store.sequences)
        assert counts["workflows"] == len(store.workflows)
        assert counts["site_stats"] == 1
        assert counts["segment_stats"] == len(store.segments)
        assert self.seeded <= self.loaded_emails()

    def assert_contacts_synced(self) -> None:
        """The reverse-ETL step put every crm_contacts row into the emulator's store, fields and all."""
        store = self.emulator.store.subscribers
        expected = {f"person{i}@example.com" for i in range(CRM_CONTACTS)}
        assert expected <= set(store)
        assert len(store) == len(self.seeded) + CRM_CONTACTS
        assert store["person3@example.com"].fields.get("plan") == "pro"
        assert store["person1@example.com"].fields.get("plan") == "free"


@pytest.fixture
def setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setting]:
    """An emulator on 127.0.0.1 (small seed, budgets raised), BENTO_* pointing at it, dlt's telemetry off."""
    config = EmulatorConfig(requests_per_minute=1e6, stats_requests_per_hour=1e9, bucket_capacity=1e5,
                            subscribers=40, broadcasts=12)
    write_demo_warehouse(tmp_path / "warehouse.duckdb", subscribers=CRM_CONTACTS, events=0)
    with BentoEmulator(config) as emulator:
        for key, value in emulator.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("BENTO_REQUESTS_PER_MINUTE", "60000")
        monkeypatch.setenv("BENTO_STATS_REQUESTS_PER_HOUR", "1000000")
        monkeypatch.setenv("BENTO_DLT_DIR", str(tmp_path))
        monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
        monkeypatch.chdir(tmp_path)
        assert not set(emulator.store.subscribers) & {f"person{i}@example.com" for i in range(CRM_CONTACTS)}
        store = emulator.store
        yield Setting(emulator, tmp_path, frozenset(store.subscribers), len(store.tags), len(store.fields))
