"""Upgrades are free: a ledger written by the release before versioned fingerprints, re-synced by this one.

The fixture (tests/fixtures/ledger_v1, its README says how it was made) holds version 1 subscriber
fingerprints. Re-syncing its input unchanged must send nothing and leave version 2 entries; a changed row
is sent alone. Real HTTP against the emulator; the ledger is read back with DuckDB.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bento_api.emulator import BentoEmulator
from bento_destination.changes import close_ledgers
from bento_destination.dry_run import classify_rows
from bento_destination.ledger import (
    CHANGED,
    FORMAT_VERSION,
    NEW,
    SEGMENT_SCHEMA,
    STALE,
    UNCHANGED,
    LedgerError,
    SyncLedger,
    fingerprint_version,
)
from bento_destination.sink import bento
from bento_destination.subscriber_fingerprint import PREFIX
from bento_destination.sync import sync

from .destination_support import FAST

pytestmark = pytest.mark.usefixtures("destination_env")

FIXTURE = Path(__file__).parent / "fixtures" / "ledger_v1"
SITE = "emulator-site-0000-4000-8000-00000001"  # the emulator's default site, which wrote the fixture


@pytest.fixture
def v1_ledger(tmp_path: Path) -> Path:
    """A copy of the version 1 ledger file (the fixture itself is never written)."""
    path = tmp_path / "ledger" / "bento_ledger.duckdb"
    path.parent.mkdir()
    shutil.copy(FIXTURE / "bento_ledger.duckdb", path)
    return path


def frame() -> pd.DataFrame:
    return pd.read_parquet(FIXTURE / "subscribers.parquet")


def resync(emu: BentoEmulator, tmp: Path, ledger: Path, rows: Any, table: str = "subscribers") -> Any:
    reports = sync(
        rows, pipeline_name="upgraded", pipelines_dir=tmp / "pipelines", table_name=table, out=lambda _: None,
        ledger_url=str(ledger), **emu.credentials, requests_per_minute=FAST,
    )
    close_ledgers()
    return reports[-1].tables[table]


def batch_requests(emu: BentoEmulator, path: str = "/batch/subscribers") -> list[Any]:
    return emu.requests(path=path)


def stored(ledger: Path, ns: str = "subscribers") -> dict[str, str]:
    with duckdb.connect(str(ledger), read_only=True) as con:
        rows = con.execute("SELECT key, value FROM ledger_entries WHERE ns = ?", [ns]).fetchall()
    return {str(k): str(v) for k, v in rows}


def meta(ledger: Path) -> dict[str, str]:
    with duckdb.connect(str(ledger), read_only=True) as con:
        return {str(k): str(v) for k, v in con.execute("SELECT k, v FROM ledger_meta").fetchall()}


def test_the_fixture_is_a_version_1_ledger(v1_ledger: Path) -> None:
    entries = stored(v1_ledger)
    assert len(entries) == 200 and {fingerprint_version(v) for v in entries.values()} == {1}
    assert meta(v1_ledger) == {"format": "1"}


def test_an_unchanged_resync_after_the_upgrade_sends_nothing_and_leaves_version_2(
    emu: BentoEmulator, tmp_path: Path, v1_ledger: Path
) -> None:
    before = stored(v1_ledger)
    report = resync(emu, tmp_path, v1_ledger, frame())
    assert batch_requests(emu) == [] and emu.requests(path="/fetch/commands") == []
    assert (report.received, report.sent, report.unchanged, report.changed, report.new) == (200, 0, 200, 0, 0)
    after = stored(v1_ledger)
    assert after.keys() == before.keys()
    assert all(value.startswith(PREFIX) for value in after.values())  # every entry re-stamped with version 2
    assert meta(v1_ledger)["format"] == str(FORMAT_VERSION) and meta(v1_ledger)["upgraded_from_format"] == "1"
    assert meta(v1_ledger)["subscriber_fingerprints"] == "2" and meta(v1_ledger)["event_fingerprints"] == "1"
    # events keep version 1 keys and fingerprints: nothing is sent again either
    for name in ("events.json", "derived_events.json"):
        assert resync(emu, tmp_path, v1_ledger, json.loads((FIXTURE / name).read_text()), "events").sent == 0
    assert batch_requests(emu, "/batch/events") == []
    assert {fingerprint_version(v) for v in stored(v1_ledger, "events").values()} == {1}
    # and the next run compares version 2 with version 2
    again = resync(emu, tmp_path, v1_ledger, frame())
    assert batch_requests(emu) == [] and again.unchanged == 200 and stored(v1_ledger) == after


def test_one_changed_row_after_the_upgrade_sends_exactly_one_request(
    emu: BentoEmulator, tmp_path: Path, v1_ledger: Path
) -> None:
    rows = frame()
    rows.loc[7, "plan"] = "enterprise"
    report = resync(emu, tmp_path, v1_ledger, rows)
    [request] = batch_requests(emu)
    assert request.body is not None and [s["email"] for s in request.body["subscribers"]] == ["v100007@example.com"]
    assert (report.sent, report.changed, report.unchanged) == (1, 1, 199)
    assert emu.store.subscribers["v100007@example.com"].fields["plan"] == "enterprise"
    assert all(value.startswith(PREFIX) for value in stored(v1_ledger).values())


def test_a_plain_pipeline_run_migrates_per_sink_batch(emu: BentoEmulator, tmp_path: Path, v1_ledger: Path) -> None:
    """No pre-pass: the sink compares each batch, and its version 1 entries, itself."""
    pipeline = dlt.pipeline("plain_upgrade", pipelines_dir=str(tmp_path / "pipelines"), destination=bento(
        **emu.credentials, requests_per_minute=FAST, ledger_url=str(v1_ledger)))
    rows = frame()
    rows.loc[3, "score"] = 1000
    pipeline.run(rows, table_name="subscribers")
    close_ledgers()
    [request] = batch_requests(emu)
    assert request.body is not None and [s["email"] for s in request.body["subscribers"]] == ["v100003@example.com"]
    assert all(value.startswith(PREFIX) for value in stored(v1_ledger).values())


def test_a_dry_run_classifies_version_1_entries_without_writing(v1_ledger: Path) -> None:
    rows = frame()
    rows.loc[0, "plan"] = "enterprise"
    counts = classify_rows(rows.to_dict("records"), "subscribers", site_uuid=SITE, ledger_url=str(v1_ledger))
    assert (counts.new, counts.changed, counts.unchanged) == (0, 1, 199)
    assert {fingerprint_version(v) for v in stored(v1_ledger).values()} == {1}  # a dry run re-stamps nothing


def test_classify_tells_an_older_version_apart(tmp_path: Path) -> None:
    with SyncLedger.open(tmp_path / "l.duckdb", site=SITE) as ledger:
        ledger.acknowledge("subscribers", [("a@x.io", "0" * 32), ("b@x.io", "s2:" + "1" * 32)])
        pairs = [("a@x.io", "s2:" + "2" * 32), ("a@x.io", "0" * 32), ("b@x.io", "s2:" + "1" * 32),
                 ("b@x.io", "1" * 32), ("c@x.io", "s2:" + "3" * 32)]
        assert ledger.classify("subscribers", pairs).tolist() == [STALE, UNCHANGED, UNCHANGED, CHANGED, NEW]
        assert ledger.holds_older_fingerprints("subscribers", 2)
        assert not ledger.holds_older_fingerprints("subscribers", 1)
        # a re-stamp replaces only what is still stored
        assert ledger.restamp("subscribers", ["a@x.io", "b@x.io"], ["0" * 32, "0" * 32], ["s2:" + "2" * 32] * 2) == 1
        assert ledger.classify("subscribers", pairs[:1]).tolist() == [UNCHANGED]
        assert not ledger.holds_older_fingerprints("subscribers", 2)


def test_a_ledger_written_by_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    SyncLedger.open(path, site=SITE).close()
    with duckdb.connect(str(path)) as con:
        con.execute("UPDATE ledger_meta SET v = ? WHERE k = 'format'", [str(FORMAT_VERSION + 1)])
    with pytest.raises(LedgerError, match="newer release"):
        SyncLedger.open(path, site=SITE)
    folder = tmp_path / "segments"
    with SyncLedger.open(str(folder), site=SITE) as ledger:
        ledger.acknowledge("subscribers", [("a@x.io", "f")])
    [segment] = list((folder / SITE).glob("segment-*.parquet"))
    assert pq.read_schema(segment).metadata[b"bento_ledger"] == str(FORMAT_VERSION).encode()
    newer = SEGMENT_SCHEMA.with_metadata({"bento_ledger": str(FORMAT_VERSION + 1)})
    pq.write_table(pq.read_table(segment).cast(newer), segment)
    with pytest.raises(LedgerError, match="newer release"):
        SyncLedger.open(str(folder), site=SITE)


def test_a_folder_ledger_of_version_1_entries_migrates_too(emu: BentoEmulator, tmp_path: Path, v1_ledger: Path) -> None:
    """The fixture's entries copied into Parquet segments: the same upgrade, on the segment store."""
    folder = tmp_path / "folder-ledger"
    with duckdb.connect(str(v1_ledger), read_only=True) as con:
        entries = con.sql("SELECT key, value FROM ledger_entries WHERE ns = 'subscribers'").to_arrow_table()
    with SyncLedger.open(str(folder), site=SITE) as ledger:
        ledger.acknowledge("subscribers", pa.table({"key": entries.column(0), "value": entries.column(1)}))
    report = resync(emu, tmp_path, folder, frame())
    assert batch_requests(emu) == [] and report.unchanged == 200
    with SyncLedger.open(str(folder), site=SITE) as ledger:
        assert not ledger.holds_older_fingerprints("subscribers", 2) and ledger.known_audience() == 200
