"""Edges a scheduled sync meets, driven the way a user hits them: `bento-dlt sync` (and a script calling
`sync()`) in a subprocess against an emulator in this process.

- NaN and ±infinity are rejected `non_finite_number` on every input (dlt would drop them from dict rows,
  and the row would be sent without the field);
- a row over the row cap is rejected `row_too_large` before sending, wide rows are packed into requests by
  bytes, and a 413 is split down to the one row Bento refuses;
- a 3xx is not followed: one line naming the status, where it points and base_url, exit 1, no rejects.

Every test checks the emulator's store and request log, and compares the run report with the log.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig, Fault
from bento_api.emulator.records import RequestRecord
from bento_destination import list_rejects, list_reports
from bento_destination.settings import MAX_REQUEST_BYTES, MAX_ROW_BYTES

from .test_cli import as_json, base_env, cli

PIPELINE = "bento_sync_subscribers"
MOVED = "https://moved.example.com/api/v1/batch/subscribers?site_uuid=emulator-site"


def user_env(emulator: BentoEmulator) -> dict[str, str]:
    """What a user exports to reach the emulator (client budget raised, so nothing waits on pacing)."""
    return base_env(**emulator.env(), BENTO_REQUESTS_PER_MINUTE="60000")


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def sent_emails(records: list[RequestRecord]) -> list[str]:
    return [email for r in records if r.status == 200 for email in r.emails]


def assert_report_matches_log(table: dict[str, Any], records: list[RequestRecord]) -> None:
    """The report counts every request the emulator logged, and as sent exactly the rows it accepted."""
    assert table["requests"] == len(records)
    assert table["sent"] == sum(r.rows for r in records if r.status == 200)


def only_table(summary: dict[str, Any]) -> dict[str, Any]:
    (load,) = summary["loads"]
    (table,) = load["tables"].values()
    return dict(table)


# -- non-finite numbers ------------------------------------------------------------------------------


def test_csv_with_nan_and_infinity_rejects_those_rows(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = [{"email": f"p{i}@example.com", "score": f"{i}.5", "plan": "pro"} for i in range(20)]
    rows[3]["score"], rows[7]["score"], rows[11]["score"] = "NaN", "inf", "-Infinity"
    write_csv(tmp_path / "scores.csv", rows)

    result = cli("sync", "--from", "scores.csv", "--as", "subscribers", "--pipelines-dir", "p", "--json",
                 env=user_env(emu), cwd=tmp_path)

    assert result.returncode == 3, result.stderr  # 3 of 20 is past the default 10%; the load finished
    bad = {"p3@example.com", "p7@example.com", "p11@example.com"}
    records = emu.requests("/batch/subscribers")
    assert set(sent_emails(records)) == {row["email"] for row in rows} - bad
    assert set(emu.store.subscribers) == {row["email"] for row in rows} - bad
    assert emu.store.subscribers["p4@example.com"].fields["score"] == 4.5
    table = only_table(as_json(result))
    assert_report_matches_log(table, records)
    assert table["received"] == 20 and table["rejected_by_reason"] == {"non_finite_number": 3}
    rejects = list_rejects(PIPELINE, pipelines_dir=tmp_path / "p")
    assert {r["row"]["email"]: r["reason"] for r in rejects} == dict.fromkeys(bad, "non_finite_number")
    assert {r["detail"] for r in rejects} == {f"`score` is {v} (NaN or infinity cannot be sent)"
                                              for v in ("nan", "inf", "-inf")}


def test_database_rows_with_infinity_are_rejected_not_sent_without_the_field(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    # a SQLAlchemy URL is read as lists of dicts: dlt would drop the infinity and send the row without `score`
    import sqlite3

    with sqlite3.connect(tmp_path / "crm.sqlite") as con:
        con.execute("CREATE TABLE contacts (email TEXT, score REAL)")
        con.executemany("INSERT INTO contacts VALUES (?, ?)",
                        [(f"s{i}@example.com", float("inf") if i == 2 else i / 2) for i in range(12)])

    result = cli("sync", "--from", f"sqlite:///{tmp_path / 'crm.sqlite'}", "--table", "contacts",
                 "--as", "subscribers", "--reject-threshold", "0.5", "--pipelines-dir", "p", "--json",
                 env=user_env(emu), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    records = emu.requests("/batch/subscribers")
    assert "s2@example.com" not in sent_emails(records) and "s2@example.com" not in emu.store.subscribers
    assert len(emu.store.subscribers) == 11
    table = only_table(as_json(result))
    assert_report_matches_log(table, records)
    assert table["received"] == 12 and table["rejected_by_reason"] == {"non_finite_number": 1}
    assert table["batches"] == 1  # the rows rejected before extract are not a sink batch
    (reject,) = list_rejects(PIPELINE, pipelines_dir=tmp_path / "p")
    assert reject["row"] == {"email": "s2@example.com", "score": "inf"}


USER_SCRIPT = """
    import sys
    from decimal import Decimal

    import numpy as np

    from bento_destination import BentoRejectsExceeded
    from bento_destination.sync import sync

    subscribers = [
        {"email": "ok1@example.com", "score": 1.5},
        {"email": "nan@example.com", "score": float("nan")},
        {"email": "inf@example.com", "score": float("inf")},
        {"email": "ninf@example.com", "score": float("-inf")},
        {"email": "decimal@example.com", "balance": Decimal("NaN")},
        {"email": "numpy@example.com", "weight": np.float32("inf")},
        {"email": "ok2@example.com", "score": 2},
    ]
    events = [
        {"email": "e1@example.com", "type": "order", "details": {"cart": {"total": 9.5}}},
        {"email": "e2@example.com", "type": "order", "details": {"cart": {"total": float("nan")}}},
        {"email": "e3@example.com", "type": "order", "details": {"items": [1.0, float("inf")]}},
    ]
    code = 0
    for table, rows in (("subscribers", subscribers), ("events", events)):
        try:
            sync(rows, pipeline_name=f"user_{table}", pipelines_dir=sys.argv[1], table_name=table)
        except BentoRejectsExceeded:
            code = 3
    sys.exit(code)
"""


def test_sync_of_a_list_of_dicts_rejects_non_finite_numbers_even_nested(emu: BentoEmulator, tmp_path: Path) -> None:
    script = tmp_path / "user_sync.py"
    script.write_text(textwrap.dedent(USER_SCRIPT))
    result = subprocess.run([sys.executable, str(script), str(tmp_path / "p")], env=user_env(emu), cwd=tmp_path,
                            text=True, capture_output=True, timeout=120)

    assert result.returncode == 3, result.stderr
    assert set(emu.store.subscribers) == {"ok1@example.com", "ok2@example.com", "e1@example.com"}
    (event,) = emu.store.events
    assert event.email == "e1@example.com"
    assert event.details is not None and event.details.pop("unique")["key"]  # events are keyed by default
    assert event.details == {"cart": {"total": 9.5}}
    for table, bad in (
        ("subscribers", {"nan", "inf", "ninf", "decimal", "numpy"}),
        ("events", {"e2", "e3"}),
    ):
        records = emu.requests(f"/batch/{table}")
        (report,) = list_reports(f"user_{table}", pipelines_dir=tmp_path / "p")
        summary = report.tables[table]
        assert summary.requests == len(records) and summary.sent == sum(r.rows for r in records if r.status == 200)
        assert summary.rejected_by_reason == {"non_finite_number": len(bad)}
        rejects = list_rejects(f"user_{table}", pipelines_dir=tmp_path / "p")
        assert {r["row"]["email"].split("@")[0] for r in rejects} == bad
        assert not bad & {email.split("@")[0] for email in sent_emails(records)}
    details = {r["row"]["email"]: r["detail"] for r in list_rejects("user_events", pipelines_dir=tmp_path / "p")}
    assert details == {"e2@example.com": "`details.cart.total` is nan (NaN or infinity cannot be sent)",
                       "e3@example.com": "`details.items[]` is inf (NaN or infinity cannot be sent)"}


# -- oversized rows ------------------------------------------------------------------------------------


def test_a_row_over_the_cap_is_rejected_before_sending_and_wide_rows_are_packed_by_bytes(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    wide = 900 * 1024  # four fit in a request of MAX_REQUEST_BYTES, five do not
    rows = [{"email": f"small{i}@example.com", "notes": "hi"} for i in range(50)]
    rows += [{"email": f"wide{i}@example.com", "notes": "w" * wide} for i in range(10)]
    rows.append({"email": "huge@example.com", "notes": "h" * (MAX_ROW_BYTES + 1)})
    write_csv(tmp_path / "notes.csv", rows)

    result = cli("sync", "--from", "notes.csv", "--as", "subscribers", "--pipelines-dir", "p", "--json",
                 env=user_env(emu), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    records = emu.requests("/batch/subscribers")
    assert [r.status for r in records] == [200] * len(records)
    assert "huge@example.com" not in sent_emails(records)  # never sent: no request holds it
    assert len(emu.store.subscribers) == 60 and "huge@example.com" not in emu.store.subscribers
    sizes = [len(json.dumps(r.body, separators=(",", ":"), ensure_ascii=False).encode()) for r in records]
    assert max(sizes) <= MAX_REQUEST_BYTES
    # requests go side by side, so the log's order is the order of their answers
    assert sorted(sum(e.startswith("wide") for e in r.emails) for r in records) == [2, 4, 4]
    table = only_table(as_json(result))
    assert_report_matches_log(table, records)
    assert table["rejected_by_reason"] == {"row_too_large": 1}
    (reject,) = list_rejects(PIPELINE, pipelines_dir=tmp_path / "p")
    assert reject["row"]["email"] == "huge@example.com" and f"{MAX_ROW_BYTES:,}" in reject["detail"]


def test_a_413_on_one_large_row_rejects_that_row_only(tmp_path: Path) -> None:
    config = EmulatorConfig(requests_per_minute=1e7, bucket_capacity=1e6, subscribers=0, max_body_bytes=200_000)
    rows = [{"email": f"p{i}@example.com", "notes": "short"} for i in range(300)]
    rows[137]["notes"] = "x" * 250_000  # under our row cap, over this server's body limit
    write_csv(tmp_path / "people.csv", rows)
    with BentoEmulator(config) as emu:
        result = cli("sync", "--from", "people.csv", "--as", "subscribers", "--pipelines-dir", "p", "--json",
                     env=user_env(emu), cwd=tmp_path)

        assert result.returncode == 0, result.stderr
        records = emu.requests("/batch/subscribers")
        refused = [r for r in records if r.status == 413]
        # halves down to the single row: a 413 for each request holding it (300, 150, 75, 38, 19, 9, 5, 3 and
        # 1 rows), and the other half of each split accepted at once
        assert len(refused) == 9 and len(records) == 9 + 8 and {r.status for r in records} == {200, 413}
        assert sorted(sent_emails(records)) == sorted(r["email"] for r in rows if r["email"] != "p137@example.com")
        assert len(emu.store.subscribers) == 299 and "p137@example.com" not in emu.store.subscribers
        table = only_table(as_json(result))
        assert_report_matches_log(table, records)
        assert table["received"] == 300 and table["rejected_by_reason"] == {"row_too_large": 1}
    (reject,) = list_rejects(PIPELINE, pipelines_dir=tmp_path / "p")
    assert reject["row"]["email"] == "p137@example.com" and "(413)" in reject["detail"]


# -- redirects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["/batch", "/fetch/tags"])
def test_a_redirect_is_not_followed_and_fails_the_run_naming_base_url(
    emu: BentoEmulator, tmp_path: Path, where: str
) -> None:
    write_csv(tmp_path / "people.csv", [{"email": f"p{i}@example.com", "plan": "pro"} for i in range(5)])
    emu.add_fault(Fault("redirect", status=307, location=MOVED, path_prefix=where))
    env = user_env(emu)

    result = cli("sync", "--from", "people.csv", "--as", "subscribers", "--pipelines-dir", "p",
                 env=env, cwd=tmp_path)

    assert result.returncode == 1
    assert result.stdout == ""
    # one line, no traceback (besides the progress ticker's lines, which a slow machine may print first)
    lines = [text for text in result.stderr.splitlines() if not text.startswith("progress: ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    (line,) = lines
    assert "answered 307" in line and "redirecting to https://moved.example.com:" in line
    assert "check base_url" in line and "site_uuid" not in line and emu.secret_key not in line
    redirected = [r for r in emu.request_log if r.status == 307]
    assert len(redirected) == 1 and redirected[0].path.startswith(where)  # not retried, not followed
    posts = emu.requests("/batch/subscribers", "POST")
    assert posts == (redirected if where == "/batch" else [])
    assert emu.store.subscribers == {}
    assert list_rejects(PIPELINE, pipelines_dir=tmp_path / "p") == []  # a failed load, not rejected rows
    if where == "/batch":
        (report,) = list_reports(PIPELINE, pipelines_dir=tmp_path / "p")
        table = report.tables["people"]
        assert (table.sent, table.rejected, table.requests) == (0, 0, 1)
        assert any("307" in error for error in report.errors)

    # once the address is right, the same rows go (the failed load's package was kept, not rejected)
    emu.clear_faults()
    again = cli("sync", "--from", "people.csv", "--as", "subscribers", "--pipelines-dir", "p", "--json",
                env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert sorted(emu.store.subscribers) == sorted(f"p{i}@example.com" for i in range(5))
    assert list_rejects(PIPELINE, pipelines_dir=tmp_path / "p") == []


# -- the same rules in process: the wrapper for a plain pipeline.run, packing, emails, the client -----------


def test_reject_non_finite_wraps_data_for_a_plain_pipeline_run(
    emu: BentoEmulator, tmp_path: Path, destination_env: None
) -> None:
    import dlt
    import pandas as pd
    import pyarrow as pa

    from bento_destination import bento, check_run, reject_non_finite

    pipeline = dlt.pipeline("plain_run", pipelines_dir=str(tmp_path),
                            destination=bento(requests_per_minute=60_000, reject_threshold=0.9, **emu.credentials))
    rows = [{"email": "a@example.com", "score": 1.0}, {"email": "b@example.com", "score": float("nan")}]
    frame = pd.DataFrame({"email": ["c@example.com", "d@example.com", "e@example.com"],
                          "score": [float("nan"), float("inf"), 3.0]})  # NaN is pandas' missing value
    events = pa.table({"email": ["f@example.com", "g@example.com"], "type": ["weighed", "weighed"],
                       "details": [{"weight": 1.0}, {"weight": float("-inf")}]})  # nested: an Arrow struct
    for data, table in ((rows, "subscribers"), (frame, "subscribers"), (events, "events")):
        check_run(pipeline, pipeline.run(reject_non_finite(data, table)))

    stored = emu.store.subscribers
    assert sorted(stored) == ["a@example.com", "c@example.com", "e@example.com", "f@example.com"]
    assert "score" not in stored["c@example.com"].fields  # a null is never sent
    (event,) = emu.store.events
    assert event.email == "f@example.com"
    assert event.details is not None and event.details.pop("unique")["key"]  # events are keyed by default
    assert event.details == {"weight": 1.0}
    rejected = {r["row"]["email"]: r["reason"] for r in list_rejects(pipeline)}
    assert rejected == dict.fromkeys(["b@example.com", "d@example.com", "g@example.com"], "non_finite_number")
    reports = list_reports(pipeline)
    assert [(t.table, t.operation, t.received, t.rejected) for r in reports for t in r.tables.values()] == [
        ("subscribers", "subscribers", 2, 1), ("subscribers", "subscribers", 3, 1), ("events", "events", 2, 1)]
    assert {r.reject_threshold for r in reports} == {0.9}  # the destination's setting, not the wrapper's default


def test_requests_are_packed_by_count_and_by_bytes() -> None:
    from bento_destination.send import Item, pack
    from bento_destination.values import encode_payload

    items = [Item({"email": f"p{i}@example.com", "notes": "n" * size}, {}) for i, size in
             enumerate([10, 10, 10, 500, 10, 10, 2000, 10])]
    sizes = [len(encode_payload(i.payload)) + 1 for i in items]
    assert [len(chunk) for chunk, _ in pack("subscribers", items, maximum=3)] == [3, 3, 2]
    cap = len('{"subscribers":[]}') + 3 * sizes[0] + sizes[3]  # the first four fit exactly
    packed = list(pack("subscribers", items, maximum=1000, max_bytes=cap))
    assert [len(chunk) for chunk, _ in packed] == [4, 2, 1, 1]  # the 2000-byte row is over the cap: alone
    assert [i for chunk, _ in packed for i in chunk] == items  # in order, nothing lost
    for chunk, body in packed:
        assert json.loads(body.content) == {"subscribers": [i.payload for i in chunk]}
        assert len(body.content) <= cap or len(chunk) == 1


def test_a_413_on_emails_is_split_and_only_the_oversized_email_rejected(
    tmp_path: Path, destination_env: None
) -> None:
    import dlt

    from bento_destination import bento

    config = EmulatorConfig(requests_per_minute=1e7, bucket_capacity=1e6, subscribers=0, max_body_bytes=50_000)
    emails = [{"to": f"r{i}@example.com", "from": "author@example.com", "subject": "Hi",
               "html_body": "<p>" + ("x" * 60_000 if i == 5 else "hello") + "</p>"} for i in range(8)]
    with BentoEmulator(config) as emu:
        pipeline = dlt.pipeline("emails_413", pipelines_dir=str(tmp_path), destination=bento(
            requests_per_minute=60_000, emails_per_minute=60_000, allow_email_sends=True, reject_threshold=0.5,
            **emu.credentials))
        pipeline.run(emails, table_name="emails")

        assert sorted(e.to for e in emu.store.emails_sent) == sorted(f"r{i}@example.com" for i in range(8) if i != 5)
        statuses = [r.status for r in emu.requests("/batch/emails")]
        assert statuses.count(413) == 4  # 8, 4, 2 and 1 emails: each request holding the large one
    (reject,) = list_rejects(pipeline)
    assert reject["reason"] == "row_too_large" and reject["row"]["to"] == "r5@example.com"


def test_the_client_names_a_redirect_within_the_same_host_by_its_path(emu: BentoEmulator) -> None:
    from bento_api import BentoClient, BentoConfigError, BentoRedirectError, BentoSettings

    emu.add_fault(Fault("redirect", status=301, location="/api/v2/fetch/tags", path_prefix="/fetch/tags"))
    with BentoClient(BentoSettings(**emu.credentials)) as client, pytest.raises(BentoRedirectError) as caught:
        client.get("/fetch/tags")
    assert isinstance(caught.value, BentoConfigError) and caught.value.status == 301
    assert f"redirecting to {emu.base_url.rsplit('/api/', 1)[0]}/api/v2/fetch/tags: check base_url" in str(caught.value)
    assert len(emu.requests("/fetch/tags")) == 1
