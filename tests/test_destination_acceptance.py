"""Issue 5 acceptance, over real HTTP against the emulator on 127.0.0.1.

Budgets are raised for the emulator (client 60000/min, emulator far higher) so these run in seconds;
the defaults stay Bento's safe 60/min.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pandas as pd
import pytest

from bento_api.emulator import BentoEmulator
from bento_destination import bento, last_report, list_rejects
from pipelines import warehouse_to_bento

from .destination_support import FAST

pytestmark = pytest.mark.usefixtures("destination_env")


def completed_files(info: Any, table: str) -> int:
    return sum(
        1 for package in info.load_packages for job in package.jobs["completed_jobs"]
        if job.job_file_info.table_name == table
    )


def subscribers_frame(n: int = 20_000) -> tuple[pd.DataFrame, dict[int, str]]:
    """n rows, every 200th invalid (100 in all) in one of four ways; returns the frame and the invalid kinds."""
    emails: list[str | None] = []
    scores: list[float | None] = []
    invalid: dict[int, str] = {}
    kinds = ["invalid_email", "missing_email", "non_finite_number", "too_long"]
    for i in range(n):
        email: str | None = f"user{i}@example.com"
        score: float | None = float(i) if i % 5 else None
        if i % 200 == 7:
            kind = kinds[(i // 200) % 4]
            invalid[i] = kind
            if kind == "invalid_email":
                email = f"user{i}-at-example.com"
            elif kind == "missing_email":
                email = None
            elif kind == "non_finite_number":
                score = math.inf
            else:
                email = "x" * 250 + f"{i}@example.com"
        emails.append(email)
        scores.append(score)
    frame = pd.DataFrame(
        {
            "email": emails,
            "First Name": [f"User {i}" if i % 7 else None for i in range(n)],
            "plan": [["free", "pro", "team"][i % 3] if i % 11 else None for i in range(n)],
            "score": scores,
            "tags": [["customer", f"cohort-{i % 4}"] if i % 2 else None for i in range(n)],
        }
    )
    return frame, invalid


def test_20000_subscribers_from_a_dataframe(emu: BentoEmulator, tmp_path: Path) -> None:
    frame, invalid = subscribers_frame()
    assert len(invalid) == 100
    pipeline = dlt.pipeline(
        f"acc_subs_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path),
        destination=bento(**emu.credentials, requests_per_minute=FAST),
    )
    info = pipeline.run(frame, table_name="subscribers")

    valid = {i for i in range(len(frame)) if i not in invalid}
    assert len(emu.store.subscribers) == 19_900
    for i in valid:
        sub = emu.store.subscribers[f"user{i}@example.com"]
        expected: dict[str, Any] = {}
        if i % 7:
            expected["first_name"] = f"User {i}"
        if i % 11:
            expected["plan"] = ["free", "pro", "team"][i % 3]
        if i % 5:
            expected["score"] = float(i)
        assert {k: v for k, v in sub.fields.items() if k in ("first_name", "plan", "score")} == expected, i
        assert sorted(emu.store.tag_names(sub)) == (sorted(["customer", f"cohort-{i % 4}"]) if i % 2 else []), i

    batches = emu.requests(path="/batch/subscribers")
    sent_emails = [e for r in batches for e in r.emails]
    assert len(sent_emails) == 19_900 and set(sent_emails) == {f"user{i}@example.com" for i in valid}
    assert all(r.status == 200 and 1 <= r.rows <= 1000 for r in batches)
    files = completed_files(info, "subscribers")
    assert len(batches) <= math.ceil(19_900 / 1000) + files

    rejects = list_rejects(pipeline)
    assert len(rejects) == 100
    reasons = Counter(r["reason"] for r in rejects)
    assert reasons == {"invalid_email": 50, "missing_email": 25, "non_finite_number": 25}
    assert all(r["detail"] and r["table"] == "subscribers" for r in rejects)
    # the same listing by pipeline name and pipelines_dir (how the CLI reads it)
    assert len(list_rejects(pipeline.pipeline_name, pipelines_dir=tmp_path)) == 100

    report = last_report(pipeline)
    assert report is not None
    table = report.tables["subscribers"]
    assert (table.received, table.sent, table.rejected) == (20_000, 19_900, 100)
    assert table.requests == len(batches) and table.rate_limited == 0
    assert report.problems() == []  # 0.5% is under the 10% threshold


def write_events_warehouse(path: Path, n: int = 20_000) -> None:
    """Three DuckDB tables holding `details` as a STRUCT (dicts), as JSON text, and as flattened columns."""
    third = n // 3
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE events_dicts AS SELECT 'p' || (i % 5000) || '@example.com' AS email, '$purchase' AS type, "
            "'order-' || i AS unique_key, {'value': {'currency': 'USD', 'amount': i}, 'source': 'dicts'} AS details, "
            "TIMESTAMPTZ '2024-01-01 00:00:00+00' + INTERVAL (i) SECOND AS date FROM range(0, ?) t(i)",
            [third],
        )
        con.execute(
            "CREATE TABLE events_json AS SELECT 'p' || (i % 5000) || '@example.com' AS email, '$purchase' AS type, "
            "'order-' || i AS unique_key, "
            "json_object('value', json_object('currency', 'USD', 'amount', i), 'source', 'json')::VARCHAR AS details "
            "FROM range(?, ?) t(i)",
            [third, 2 * third],
        )
        con.execute(
            "CREATE TABLE events_flat AS SELECT 'p' || (i % 5000) || '@example.com' AS email, '$purchase' AS type, "
            "'order-' || i AS unique_key, 'USD' AS details__value__currency, i AS details__value__amount, "
            "'flat' AS details__source, 'Pro' AS fields__plan FROM range(?, ?) t(i)",
            [2 * third, n],
        )


def test_20000_events_from_duckdb_arrive_exactly_once(emu: BentoEmulator, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    write_events_warehouse(warehouse)
    tables = ("events_dicts", "events_json", "events_flat")
    reports = warehouse_to_bento.run(
        str(warehouse), tables, pipeline_name=f"acc_events_{uuid.uuid4().hex[:8]}", pipelines_dir=tmp_path,
        file_max_items=5000, table_operations=dict.fromkeys(tables, "events"),
        requests_per_minute=FAST, out=lambda _: None, **emu.credentials,
    )
    events = emu.store.events
    assert len(events) == 20_000
    keys = Counter(e.details["unique"]["key"] for e in events if e.details)
    assert len(keys) == 20_000 and set(keys.values()) == {1}
    sent = [row for r in emu.requests(path="/batch/events") for row in r.body["events"]]
    assert len(sent) == 20_000  # no event was sent twice
    assert all(r.rows <= 1000 for r in emu.requests(path="/batch/events"))
    by_key = {e.details["unique"]["key"]: e for e in events if e.details}
    for i, source in ((5, "dicts"), (7000, "json"), (19_999, "flat")):
        event = by_key[f"order-{i}"]
        assert event.type == "$purchase" and event.email == f"p{i % 5000}@example.com"
        assert event.details == {"value": {"currency": "USD", "amount": i}, "source": source,
                                 "unique": {"key": f"order-{i}"}}
    assert by_key["order-5"].date == "2024-01-01T00:00:05+00:00"
    assert by_key["order-19999"].fields == {"plan": "Pro"}
    assert [r.tables[t].sent for r in reports for t in tables if t in r.tables] == [6666, 6666, 6668]
    # the sink reads each file in windows of input rows: files of 5,000 and 1,666 rows, windows of 2,000 and 3,000
    assert [r.tables[t].batches for r in reports for t in tables if t in r.tables] == [3, 3, 3]
