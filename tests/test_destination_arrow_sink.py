"""Subscriber windows read as Arrow are mapped as a whole and filtered by the ledger before payload dicts exist.

The per-row path (jsonl files: rows given as dicts) is the reference: the same rows given as an Arrow table
must reach Bento as the same payloads and commands, be refused with the same reasons and the same source
rows, and count the same in the run report. A row stands in as an empty dict until a reject needs it: a row
Bento refuses must still be recorded with its full source row.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pytest

from bento_api.emulator import BentoEmulator, Fault
from bento_destination import bento, last_report, list_rejects
from bento_destination.changes import close_ledgers
from bento_destination.runcontext import end_plain_runs
from tests.destination_support import FAST

pytestmark = pytest.mark.usefixtures("destination_env")


def mixed_rows() -> list[dict[str, Any]]:
    """Rows every mapping branch meets: invalid emails, unsubscribes alone or with fields, tags, secrets, nulls."""
    rows: list[dict[str, Any]] = []
    for i in range(2_500):
        email = f"Person{i}@Example.com" if i % 97 else f"not-an-email-{i}"
        rows.append({
            "email": email,
            "first_name": None if i % 5 == 0 else f"Name {i}",
            "tags": "vip, early" if i % 7 == 0 else None,
            "unsubscribed": (i % 11 == 0) if i % 3 else None,
            "password": f"secret-{i}" if i % 13 == 0 else None,
            "score": float(i) / 4 if i % 2 else None,
        })
    rows.append({"email": None, "first_name": "nobody", "tags": None, "unsubscribed": None, "password": None,
                 "score": None})
    return rows


def as_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("email", pa.string()), ("first_name", pa.string()), ("tags", pa.string()), ("unsubscribed", pa.bool_()),
        ("password", pa.string()), ("score", pa.float64()),
    ]))


def sent(emu: BentoEmulator) -> list[str]:
    """Every payload and command Bento received, as sorted JSON (requests go side by side, in any order)."""
    out: list[str] = []
    for record in emu.requests():
        if record.body is None or record.status != 200:
            continue
        for wrapper in ("subscribers", "command"):
            out.extend(json.dumps(item, sort_keys=True) for item in record.body.get(wrapper, []))
    return sorted(out)


def load(emu: BentoEmulator, tmp_path: Path, data: Any, name: str | None = None) -> dlt.Pipeline:
    pipeline = dlt.pipeline(name or f"arrow_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path),
                            destination=bento(**emu.credentials, requests_per_minute=FAST))
    try:
        pipeline.run(data, table_name="subscribers")
    finally:
        end_plain_runs()
        close_ledgers()
    return pipeline


def summary(pipeline: dlt.Pipeline) -> tuple[Any, ...]:
    report = last_report(pipeline)
    assert report is not None
    table = report.tables["subscribers"]
    rejects = sorted((r["reason"], json.dumps(r["row"], sort_keys=True)) for r in list_rejects(pipeline))
    return (table.received, table.sent, table.rejected, table.new, table.changed, table.unchanged,
            table.dropped_secret_columns, rejects)


def test_an_arrow_table_is_sent_and_refused_exactly_as_the_same_rows_given_as_dicts(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    rows = mixed_rows()
    per_row = load(emu, tmp_path / "dicts", rows)
    by_dicts = sent(emu)
    emu.reset_log()
    arrow = load(emu, tmp_path / "arrow", as_table(rows))
    by_arrow = sent(emu)
    assert by_arrow == by_dicts and len(by_dicts) > 2_000
    assert any('"command": "unsubscribe"' in item for item in by_arrow)
    expected = summary(per_row)
    assert summary(arrow) == expected
    received, _, rejected, *_, rejects = expected
    assert received == len(rows) and rejected == 27 == len(rejects)  # 26 invalid emails and the row without one
    assert all(row != "{}" for _, row in rejects)


def test_rows_bento_refuses_from_an_arrow_window_are_recorded_with_their_source_row(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    emu.add_fault(Fault(kind="refuse_rows", pattern=r"^refused", path_prefix="/batch/subscribers"))
    rows = [{"email": f"{'refused' if i in (3, 1_500) else 'ok'}{i}@example.com", "plan": f"p{i}"}
            for i in range(3_000)]
    pipeline = load(emu, tmp_path, pa.Table.from_pylist(rows))
    rejects = list_rejects(pipeline)
    assert sorted((r["reason"], r["row"]["email"], r["row"]["plan"]) for r in rejects) == [
        ("refused_by_bento", "refused1500@example.com", "p1500"), ("refused_by_bento", "refused3@example.com", "p3"),
    ]
    assert len(emu.store.subscribers) == 2_998


def test_the_ledger_filters_an_arrow_window_and_sends_only_new_and_changed_rows(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    rows = mixed_rows()
    load(emu, tmp_path, as_table(rows), name="again")
    emu.reset_log()
    changed = [dict(row) for row in rows]
    for i in range(1, 2_500, 250):
        changed[i]["first_name"] = "Changed"
    changed.append({"email": "newcomer@example.com", "first_name": "New", "tags": None, "unsubscribed": True,
                    "password": None, "score": None})
    pipeline = load(emu, tmp_path, as_table(changed), name="again")
    received, sent_rows, rejected, new, changes, unchanged, _, rejects = summary(pipeline)
    assert (received, new, changes, rejected) == (len(changed), 1, 10, 27)
    assert unchanged == len(changed) - 27 - 11 and sent_rows == 11
    upserts = [item for item in sent(emu) if '"command"' not in item]
    assert len(upserts) == 11 and sum('"Changed"' in item for item in upserts) == 10
    assert '{"command": "unsubscribe", "email": "newcomer@example.com"}' in sent(emu)
    assert all(row != "{}" for _, row in rejects)
