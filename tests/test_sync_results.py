"""Sync results in a database: `sync()` and `bento-dlt sync` write what each run did into queryable tables.

Every test sends real rows to the emulator and then queries the results database the run wrote, comparing
it with the emulator's request log: a run row per table with the run's counts, one row record per sent or
rejected row (none for unchanged rows), nothing with results off, and a sync that still succeeds (and a
later run that catches up) when the results database cannot be written.
"""

from __future__ import annotations

import csv
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest

from bento_api.emulator import BentoEmulator, Fault
from bento_destination import BentoRunCancelled, RunCancel
from bento_destination.changes import LEDGER_FILENAME
from bento_destination.report import BentoRejectsExceeded, LoadReport
from bento_destination.results import RESULTS_FILENAME, ROWS_TABLE, RUNS_TABLE, _connect_waiting
from bento_destination.sent_rows import (
    LEGACY_SENT_SUFFIX,
    SENT_SUFFIX,
    SentWriter,
    spool_paths,
    spool_sql,
    spool_tables,
)
from bento_destination.settings import REJECTS_DIRNAME
from bento_destination.sync import sync

from .destination_support import FAST
from .test_cli import as_json, base_env

pytestmark = pytest.mark.usefixtures("destination_env")

GOOD = [{"email": f"person{i}@example.com", "first_name": f"P{i}"} for i in range(6)]
BAD = [{"email": "not-an-email", "first_name": "X"}, {"first_name": "no email"}]
REPO = Path(__file__).resolve().parents[1]


def run_sync(emu: BentoEmulator, pipes: Path, rows: list[dict[str, Any]], table: str = "subscribers",
             name: str = "people", **kw: Any) -> tuple[list[LoadReport], list[str]]:
    """One sync(); rejects past the threshold are fine here. Returns the reports and what the run printed."""
    printed: list[str] = []
    try:
        reports = sync(rows, pipeline_name=name, pipelines_dir=pipes, table_name=table, out=printed.append,
                       **emu.credentials, requests_per_minute=FAST, **kw)
    except BentoRejectsExceeded as error:
        reports = error.reports
    return reports, printed


def query(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def runs(path: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(path), read_only=True) as con:
        cursor = con.execute(f"SELECT * FROM {RUNS_TABLE} ORDER BY finished_at, run_id")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def spools(pipes: Path, name: str) -> list[Path]:
    return list((pipes / name / REJECTS_DIRNAME).glob(f"*{SENT_SUFFIX}"))


def test_a_sync_writes_a_run_row_and_one_record_per_sent_or_rejected_row(emu: BentoEmulator, tmp_path: Path) -> None:
    run_sync(emu, tmp_path, GOOD + BAD, reject_threshold=0.5)
    results = tmp_path / "people" / RESULTS_FILENAME
    (run,) = runs(results)
    posts = emu.requests("/batch/subscribers", "POST")
    assert (run["table_name"], run["operation"], run["outcome"]) == ("subscribers", "subscribers", "done")
    assert (run["received"], run["sent"], run["rejected"], run["unchanged"]) == (8, 6, 2, 0)
    assert run["requests"] == len(posts) and run["sent"] == sum(p.rows for p in posts)
    assert run["started_at"] <= run["finished_at"]
    assert sorted(query(results, f"SELECT email, key FROM {ROWS_TABLE} WHERE status = 'sent'")) == sorted(
        (row["email"], row["email"]) for row in GOOD
    )
    assert sorted(p for post in posts for p in post.emails) == sorted(row["email"] for row in GOOD)
    rejected = query(results, f"SELECT email, reason, detail, row_json FROM {ROWS_TABLE} WHERE status = 'rejected' "
                              "ORDER BY reason")
    assert [(email, reason) for email, reason, _, _ in rejected] == [
        ("not-an-email", "invalid_email"), (None, "missing_email")]
    assert all(detail and '"first_name"' in row for _, _, detail, row in rejected)
    assert query(results, f"SELECT count(DISTINCT run_id) FROM {ROWS_TABLE} WHERE run_id = ?", run["run_id"]) == [(1,)]
    assert not spools(tmp_path, "people")  # moved into the results, not kept twice
    assert list((tmp_path / "people" / REJECTS_DIRNAME).glob("*.rejects.jsonl"))  # the JSONL rejects stay


def test_a_spool_read_in_many_chunks_records_every_sent_row_once(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bento_destination import results

    monkeypatch.setattr(results, "SPOOL_CHUNK_BYTES", 150)  # a few spool lines a chunk, cut mid-line
    people = [{"email": f"chunk{i}@example.com"} for i in range(2500)]
    run_sync(emu, tmp_path / "file", people)
    by_dlt = tmp_path / "warehouse.duckdb"
    run_sync(emu, tmp_path / "dlt", people, full_resync=True, results=dlt.destinations.duckdb(str(by_dlt)),
             results_dataset="bento_out")
    for target, table in ((tmp_path / "file" / "people" / RESULTS_FILENAME, ROWS_TABLE),
                          (by_dlt, f"bento_out.{ROWS_TABLE}")):
        sent = query(target, f"SELECT email FROM {table} WHERE status = 'sent'")
        assert sorted(e for (e,) in sent) == sorted(p["email"] for p in people), target
    assert not spools(tmp_path / "file", "people") and not spools(tmp_path / "dlt", "people")


def test_a_table_rejected_past_the_threshold_has_that_outcome(emu: BentoEmulator, tmp_path: Path) -> None:
    with pytest.raises(BentoRejectsExceeded):  # 2 of 8 rows past the default 10%: the sync raises after the load
        sync(GOOD + BAD, pipeline_name="people", pipelines_dir=tmp_path, table_name="subscribers", out=lambda _: None,
             **emu.credentials, requests_per_minute=FAST)
    (run,) = runs(tmp_path / "people" / RESULTS_FILENAME)
    assert (run["outcome"], run["sent"], run["rejected"], run["error"]) == ("rejected", 6, 2, None)
    assert run["rejected_by_reason"] == '{"invalid_email": 1, "missing_email": 1}'


def test_an_unchanged_resync_adds_a_run_row_with_counts_and_no_row_records(emu: BentoEmulator, tmp_path: Path) -> None:
    run_sync(emu, tmp_path, GOOD)
    emu.reset_log()
    run_sync(emu, tmp_path, GOOD)
    assert not emu.requests("/batch/subscribers", "POST")
    results = tmp_path / "people" / RESULTS_FILENAME
    first, second = runs(results)
    assert first["run_id"] != second["run_id"] and first["load_id"] != second["load_id"]
    assert (second["received"], second["sent"], second["unchanged"], second["requests"]) == (6, 0, 6, 0)
    assert query(results, f"SELECT run_id, count(*) FROM {ROWS_TABLE} GROUP BY run_id") == [(first["run_id"], 6)]


def test_event_keys_join_the_sync_ledger(emu: BentoEmulator, tmp_path: Path) -> None:
    events = [{"email": f"person{i % 3}@example.com", "type": "$purchase", "details": {"n": i}} for i in range(5)]
    events.append({"email": "person0@example.com", "type": "$purchase", "details": {"n": 0}})  # identical: #2
    run_sync(emu, tmp_path, events, table="events", name="events")
    results = tmp_path / "events" / RESULTS_FILENAME
    keys = [key for (key,) in query(results, f"SELECT key FROM {ROWS_TABLE} WHERE status = 'sent'")]
    assert len(keys) == len(set(keys)) == 6 == sum(p.rows for p in emu.requests("/batch/events", "POST"))
    with duckdb.connect(str(results), read_only=True) as con:
        con.execute(f"ATTACH '{tmp_path / 'events' / LEDGER_FILENAME}' AS ledger (READ_ONLY)")
        joined = con.execute(f"SELECT count(*) FROM {ROWS_TABLE} r JOIN ledger.ledger_entries l "
                             "ON l.ns = r.operation AND l.key = r.key").fetchone()
    assert joined == (6,)


def test_each_sent_email_is_recorded_with_its_email_key(emu: BentoEmulator, tmp_path: Path) -> None:
    emails = [{"to": f"r{i}@example.com", "from": "author@example.com", "subject": "Receipt",
               "html_body": f"<p>{i}</p>"} for i in range(3)]
    run_sync(emu, tmp_path, emails, table="emails", name="mail", allow_email_sends=True, emails_per_minute=FAST)
    results = tmp_path / "mail" / RESULTS_FILENAME
    assert sorted(email for (email,) in query(results, f"SELECT email FROM {ROWS_TABLE} WHERE status = 'sent'")) == [
        e.to for e in sorted(emu.store.emails_sent, key=lambda e: e.to)]
    with duckdb.connect(str(results), read_only=True) as con:
        con.execute(f"ATTACH '{tmp_path / 'mail' / LEDGER_FILENAME}' AS ledger (READ_ONLY)")
        joined = con.execute(f"SELECT count(DISTINCT r.key) FROM {ROWS_TABLE} r JOIN ledger.ledger_entries l "
                             "ON l.ns = '_emails' AND l.key = r.key").fetchone()
    assert joined == (3,)


def test_a_stopped_run_records_its_part_and_the_resuming_run_the_rest(emu: BentoEmulator, tmp_path: Path) -> None:
    events = [{"email": f"p{i % 40}@example.com", "type": "$visit", "unique_key": f"k{i}"} for i in range(3000)]
    emu.add_fault(Fault("latency", seconds=0.5, path_prefix="/batch"))
    cancel = RunCancel()

    def cancel_after_first_batch() -> None:
        while not any(r.path == "/batch/events" for r in emu.request_log):
            threading.Event().wait(0.01)
        cancel.cancel()

    threading.Thread(target=cancel_after_first_batch, daemon=True).start()
    with pytest.raises(BentoRunCancelled):
        sync(events, pipeline_name="events", pipelines_dir=tmp_path, table_name="events", file_max_items=500,
             out=lambda _: None, requests_per_minute=120.0, cancel=cancel, **emu.credentials)
    results = tmp_path / "events" / RESULTS_FILENAME
    (stopped,) = runs(results)
    sent_first = sum(r.rows for r in emu.request_log if r.path == "/batch/events" and r.status == 200)
    assert stopped["outcome"] == "stopped" and stopped["sent"] == sent_first and 0 < sent_first < len(events)
    assert "stopped by a cancel" in stopped["error"]
    assert query(results, f"SELECT count(*) FROM {ROWS_TABLE}") == [(sent_first,)]
    emu.clear_faults()
    run_sync(emu, tmp_path, events, table="events", name="events")
    resumed = [run for run in runs(results) if run["run_id"] != stopped["run_id"]]
    pending = [run for run in resumed if run["load_id"] == stopped["load_id"]]
    assert [(run["outcome"], run["sent"]) for run in pending] == [("done", len(events) - sent_first)]
    assert sum(run["sent"] for run in resumed) == len(events) - sent_first  # the new load: all unchanged
    assert sum(run["unchanged"] for run in resumed) == len(events)
    assert query(results, f"SELECT count(*), count(DISTINCT key) FROM {ROWS_TABLE} WHERE status = 'sent'") == [
        (len(events), len(events))]


def test_results_off_writes_nothing_and_sends_the_same(emu: BentoEmulator, tmp_path: Path) -> None:
    reports, _ = run_sync(emu, tmp_path, GOOD + BAD, results=False, reject_threshold=0.5)
    assert reports[0].tables["subscribers"].sent == 6
    assert not (tmp_path / "people" / RESULTS_FILENAME).exists()
    assert not spools(tmp_path, "people")


def test_a_results_write_failure_warns_and_the_next_run_catches_up(emu: BentoEmulator, tmp_path: Path) -> None:
    blocked = tmp_path / "not_a_database"
    blocked.mkdir()  # a directory: DuckDB cannot open it as a file
    reports, printed = run_sync(emu, tmp_path, GOOD + BAD, results=blocked, reject_threshold=0.5)
    assert reports[0].tables["subscribers"].sent == 6  # the sync itself succeeded
    (warning,) = [line for line in printed if line.startswith("warning:")]
    assert "sync results not written" in warning and str(tmp_path / "people" / REJECTS_DIRNAME) in warning
    assert spools(tmp_path, "people")  # kept for the next run
    run_sync(emu, tmp_path, [*GOOD[:2], {"email": "new@example.com"}], reject_threshold=0.5)
    results = tmp_path / "people" / RESULTS_FILENAME
    by_load = {run["load_id"]: run for run in runs(results)}
    assert sorted((r["sent"], r["rejected"], r["unchanged"]) for r in by_load.values()) == [(1, 0, 2), (6, 2, 0)]
    assert query(results, f"SELECT status, count(*) FROM {ROWS_TABLE} GROUP BY status ORDER BY status") == [
        ("rejected", 2), ("sent", 7)]
    assert not spools(tmp_path, "people")


ODD_IDENTITIES = [("a@example.com", 'key "quoted", with comma'), ("b@example.com", "key with\nline break"),
                  ("c@example.com", None), (None, ""), ("d@example.com", "plain")]


def test_odd_identities_read_back_exactly_from_the_spool_by_duckdb_and_by_arrow(tmp_path: Path) -> None:
    writer = SentWriter(tmp_path, "load1")
    writer.write("events", "events", ODD_IDENTITIES[:3])
    writer.write("events", None, ODD_IDENTITIES[3:])
    want = [("events", "events", *ODD_IDENTITIES[0]), ("events", "events", *ODD_IDENTITIES[1]),
            ("events", "events", *ODD_IDENTITIES[2]), ("events", None, *ODD_IDENTITIES[3]),
            ("events", None, *ODD_IDENTITIES[4])]
    (spool,) = spool_paths(tmp_path, "load1")
    reader, _ = spool_sql(spool)
    with duckdb.connect() as con:
        by_duckdb = con.execute(f"SELECT * FROM {reader}", {"spool": str(spool)}).fetchall()
    assert by_duckdb == want  # NULL stays NULL, "" stays "", quotes, commas and line breaks survive
    by_arrow = [tuple(row.values()) for part in spool_tables(spool, 40) for row in part.to_pylist()]
    assert by_arrow == want


def test_a_json_lines_spool_an_earlier_release_left_is_still_recorded(emu: BentoEmulator, tmp_path: Path) -> None:
    blocked = tmp_path / "not_a_database"
    blocked.mkdir()
    run_sync(emu, tmp_path, GOOD, results=blocked)  # the results write fails: the spool stays
    (spool,) = spools(tmp_path, "people")
    legacy = spool.with_name(spool.name.replace(SENT_SUFFIX, LEGACY_SENT_SUFFIX))
    rows = [row for part in spool_tables(spool, 1 << 20) for row in part.to_pylist()]
    assert sorted(row["email"] for row in rows) == sorted(row["email"] for row in GOOD)
    legacy.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")  # as that release wrote it
    spool.unlink()
    run_sync(emu, tmp_path, [{"email": "new@example.com"}])
    results = tmp_path / "people" / RESULTS_FILENAME
    assert sorted(e for (e,) in query(results, f"SELECT email FROM {ROWS_TABLE} WHERE status = 'sent'")) == sorted(
        [row["email"] for row in GOOD] + ["new@example.com"])
    assert not legacy.exists() and not spools(tmp_path, "people")


HOLDER = """
import duckdb, sys, time
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
print("released", flush=True)
"""


def test_a_results_file_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "shared.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        with pytest.raises(duckdb.IOException):
            _connect_waiting(path, wait=0)  # held: without waiting, DuckDB refuses the second writer
        with _connect_waiting(path) as con:  # waits for the holder's 3 s, well inside LOCK_WAIT_SECONDS
            assert con.execute("SELECT 1").fetchone() == (1,)
        assert holder.stdout.readline().strip() == "released"
    finally:
        holder.kill()
        holder.wait()


def test_an_unreachable_database_warns_without_its_password(emu: BentoEmulator, tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a loopback port nobody listens on
    port = closed.getsockname()[1]
    closed.close()
    url = f"postgresql://bento:pw-not-shown@127.0.0.1:{port}/warehouse"
    reports, printed = run_sync(emu, tmp_path, GOOD, results=url, results_dataset="bento_results")
    assert reports[0].tables["subscribers"].sent == len(GOOD)
    (warning,) = [line for line in printed if line.startswith("warning:")]
    assert "sync results not written to postgres (dataset bento_results)" in warning
    assert "pw-not-shown" not in warning
    assert spools(tmp_path, "people")


def test_any_dlt_destination_is_written_by_a_results_pipeline(emu: BentoEmulator, tmp_path: Path) -> None:
    target = tmp_path / "warehouse.duckdb"
    run_sync(emu, tmp_path, GOOD + BAD, results=dlt.destinations.duckdb(str(target)), results_dataset="bento_out",
             reject_threshold=0.5)
    assert not (tmp_path / "people" / RESULTS_FILENAME).exists()
    assert query(target, f"SELECT received, sent, rejected, outcome FROM bento_out.{RUNS_TABLE}") == [
        (8, 6, 2, "done")]
    assert query(target, f"SELECT status, count(*) FROM bento_out.{ROWS_TABLE} GROUP BY status ORDER BY status") == [
        ("rejected", 2), ("sent", 6)]
    assert (tmp_path / "people_results").is_dir()  # its own pipeline, beside the sync's


@pytest.mark.postgres
def test_a_postgres_schema_as_the_results_target(emu: BentoEmulator, tmp_path: Path, postgres_url: str) -> None:
    import sqlalchemy as sa

    run_sync(emu, tmp_path, GOOD + BAD, results=postgres_url, results_dataset="bento_results", reject_threshold=0.5)
    with sa.create_engine(postgres_url).connect() as con:
        assert con.execute(sa.text(f"SELECT sent, rejected FROM bento_results.{RUNS_TABLE}")).all() == [(6, 2)]
        assert con.execute(sa.text(f"SELECT status, count(*) FROM bento_results.{ROWS_TABLE} GROUP BY status "
                                   "ORDER BY status")).all() == [("rejected", 2), ("sent", 6)]


# --------------------------------------------------------------------------- the command line


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["email", "first_name"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def bento_dlt(*args: str, emu: BentoEmulator, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = base_env(**emu.env(), BENTO_REQUESTS_PER_MINUTE="60000")
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=cwd, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120)


def test_cli_sync_writes_results_beside_the_pipeline(emu: BentoEmulator, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "people.csv", GOOD + BAD)
    result = bento_dlt("sync", "--from", str(source), "--as", "subscribers", "--pipelines-dir", "p",
                       "--reject-threshold", "0.5", "--json", emu=emu, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    results = tmp_path / "p" / "bento_sync_subscribers" / RESULTS_FILENAME
    assert as_json(result)["results"] == str(results)
    (run,) = runs(results)
    assert (run["received"], run["sent"], run["rejected"]) == (8, 6, 2)
    assert run["requests"] == len(emu.requests("/batch/subscribers", "POST"))
    assert query(results, f"SELECT status, reason, count(*) FROM {ROWS_TABLE} GROUP BY ALL ORDER BY ALL") == [
        ("rejected", "invalid_email", 1), ("rejected", "missing_email", 1), ("sent", None, 6)]

    other = tmp_path / "elsewhere.duckdb"
    again = bento_dlt("sync", "--from", str(source), "--as", "subscribers", "--pipelines-dir", "p",
                      "--reject-threshold", "0.5", "--results-url", f"duckdb:///{other}", emu=emu, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert query(other, f"SELECT unchanged, sent FROM {RUNS_TABLE}") == [(6, 0)]
    assert len(runs(results)) == 1


def test_cli_refuses_a_results_url_no_destination_reads_before_sending(emu: BentoEmulator, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "people.csv", GOOD)
    result = bento_dlt("sync", "--from", str(source), "--as", "subscribers", "--pipelines-dir", "p",
                       "--results-url", "nosuch://user:hidden@host/db", emu=emu, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no dlt destination for URLs starting nosuch://" in result.stderr and "hidden" not in result.stderr
    assert not emu.requests("/batch/subscribers", "POST")


def test_cli_no_results_writes_nothing(emu: BentoEmulator, tmp_path: Path) -> None:
    source = write_csv(tmp_path / "people.csv", GOOD)
    result = bento_dlt("sync", "--from", str(source), "--as", "subscribers", "--pipelines-dir", "p",
                       "--no-results", "--json", emu=emu, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert as_json(result)["results"] is None
    assert sum(p.rows for p in emu.requests("/batch/subscribers", "POST")) == len(GOOD)
    pipeline = tmp_path / "p" / "bento_sync_subscribers"
    assert not (pipeline / RESULTS_FILENAME).exists()
    assert not list(pipeline.rglob(f"*{SENT_SUFFIX}")) and not list(pipeline.rglob("*.results.json"))
