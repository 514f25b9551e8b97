"""The sync ledger kept in a Postgres schema (`--ledger-url postgresql://...?schema=...`), on a real server.

The ledger's segments are rows of two tables in the schema, its runs are locked by a session advisory lock,
and Bento is the emulator. Covered: what a commit stores and reads back (values with quotes, commas, line
breaks, NULL), compaction, a role without CREATE rights, a wrong password kept out of the message, the lock
(busy, freed by a killed holder, lost with its connection), and `bento-dlt sync` from a Postgres table: a
first sync, an unchanged re-sync, a second runner with its own folder, and a sync killed mid-load then
rerun. Run with `make test-postgres` (its own CI step).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from bento_api.emulator import BentoEmulator
from bento_destination import pglock
from bento_destination.ledger import CHANGED, NEW, UNCHANGED, LedgerError, SyncLedger
from bento_destination.ledger_lock import lock_for_ledger
from bento_destination.pglock import PostgresAdvisoryLock
from bento_destination.runlock import BentoBusyError
from bento_destination.sync import EXIT_OK

from .test_cli import as_json, base_env, cli, posts

pytestmark = pytest.mark.postgres

SITE = "site-pg"
ODD_VALUES = ['quote " and, comma', "line\nbreak", "", "plain"]


def ledger_url(url: str, schema: str = "bento_ledger") -> str:
    return f"{url}?schema={schema}"


def scalar(url: str, sql: str) -> Any:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            return con.exec_driver_sql(sql).scalar()
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as con:
            for statement in statements:
                con.exec_driver_sql(statement)
    finally:
        engine.dispose()


# -- the store --------------------------------------------------------------------------------------------


def test_commits_are_rows_in_the_schema_and_read_back_exactly(postgres_url: str) -> None:
    url = ledger_url(postgres_url)
    pairs = [(f"k{i}@example.com", value) for i, value in enumerate(ODD_VALUES)]
    with SyncLedger.open(url, site=SITE) as ledger:
        assert ledger.shared
        ledger.acknowledge("subscribers", pairs)
        ledger.mark_unsubscribed(["gone@example.com"])
        ledger.add_owned_tags([("k0@example.com", "crm")])
    assert scalar(postgres_url, "SELECT count(*) FROM bento_ledger.bento_ledger_segments") == 3
    assert scalar(postgres_url, "SELECT count(*) FROM bento_ledger.bento_ledger_ops WHERE ns = 'subscribers'") == 4
    with SyncLedger.open(url, site=SITE) as again:
        assert list(again.classify("subscribers", [*pairs, ("new@example.com", "x")])) == [UNCHANGED] * 4 + [NEW]
        assert list(again.classify("subscribers", [("k1@example.com", "line break")])) == [CHANGED]
        assert again.unsubscribed(["gone@example.com", "k0@example.com"]) == {"gone@example.com"}
        assert again.owned_tags(["k0@example.com"]) == {"k0@example.com": {"crm"}}
    with SyncLedger.open(url, site="another-site") as other:  # one schema holds many sites apart
        assert other.known_audience() == 0


def test_many_commits_compact_into_one_segment_with_the_same_state(postgres_url: str) -> None:
    url = ledger_url(postgres_url)
    with SyncLedger.open(url, site=SITE) as ledger:
        for round_ in range(6):
            ledger.acknowledge("subscribers", pa.table({
                "key": [f"p{i}@example.com" for i in range(1000)],
                "fp": [f"fp{round_}-{i}" for i in range(1000)],
            }))
        ledger.reset("events")
        assert ledger.segment_count() == 7
    with SyncLedger.open(url, site=SITE, compact_after=2) as compacted:
        assert compacted.segment_count() == 1
        assert compacted.known_audience() == 1000
        last = [(f"p{i}@example.com", f"fp5-{i}") for i in range(1000)]
        assert set(compacted.classify("subscribers", last)) == {UNCHANGED}
    assert scalar(postgres_url, "SELECT count(*) FROM bento_ledger.bento_ledger_ops") == 1001  # 1000 puts, 1 reset


def test_a_role_without_create_rights_is_told_what_to_grant_and_nothing_is_created(postgres_url: str) -> None:
    database = sa.make_url(postgres_url).database
    execute(postgres_url, "CREATE ROLE bento_plain LOGIN PASSWORD 'plain-pw'",
            f'REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC')
    plain = sa.make_url(postgres_url).set(username="bento_plain", password="plain-pw").render_as_string(
        hide_password=False)
    try:
        with pytest.raises(LedgerError, match="needs CREATE rights") as raised:
            SyncLedger.open(ledger_url(plain), site=SITE)
        assert "plain-pw" not in str(raised.value)
        assert scalar(postgres_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'bento_ledger'") == 0
    finally:
        execute(postgres_url, "DROP OWNED BY bento_plain", "DROP ROLE bento_plain")


def test_a_wrong_password_fails_with_the_url_shown_without_it(postgres_url: str) -> None:
    wrong = sa.make_url(postgres_url).set(password="not-the-password-42").render_as_string(hide_password=False)
    with pytest.raises(LedgerError, match="cannot connect to the Postgres ledger") as raised:
        SyncLedger.open(ledger_url(wrong), site=SITE)
    assert "not-the-password-42" not in str(raised.value) and ":***@" in str(raised.value)


def test_a_schema_name_that_is_not_a_plain_identifier_is_refused(postgres_url: str) -> None:
    with pytest.raises(LedgerError, match="plain lower-case name"):
        SyncLedger.open(ledger_url(postgres_url, 'x"; DROP TABLE y; --'), site=SITE)


# -- the lock ---------------------------------------------------------------------------------------------


def test_the_advisory_lock_is_exclusive_names_its_holder_and_is_freed_on_release(postgres_url: str) -> None:
    first = lock_for_ledger(ledger_url(postgres_url), SITE, "subscribers")
    second = lock_for_ledger(ledger_url(postgres_url), SITE, "subscribers")
    other_operation = lock_for_ledger(ledger_url(postgres_url), SITE, "events")
    assert isinstance(first, PostgresAdvisoryLock) and isinstance(second, PostgresAdvisoryLock)
    assert isinstance(other_operation, PostgresAdvisoryLock)
    password = sa.make_url(postgres_url).password
    assert password and password not in first.description and password not in str(first.path)
    first.acquire()
    try:
        other_operation.acquire()  # another operation of the same site is another lock
        with pytest.raises(BentoBusyError, match=f"pid {os.getpid()} on ") as busy:
            second.acquire(wait=0.3)
        assert busy.value.holder["pid"] == os.getpid() and busy.value.holder["started_at"]
    finally:
        first.release()
        other_operation.release()
    second.acquire()
    assert second.held
    second.release()


def test_a_killed_holder_frees_the_lock_with_no_cleanup(postgres_url: str, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, pathlib; from bento_destination.ledger_lock import lock_for_ledger; "
         "lock = lock_for_ledger(sys.argv[1], 'site-pg', 'subscribers'); lock.acquire(); "
         "pathlib.Path(sys.argv[2]).touch(); time.sleep(120)",
         ledger_url(postgres_url), str(ready)],
        env=base_env(), cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert holder.poll() is None and time.monotonic() < deadline, "the holder did not take the lock"
            time.sleep(0.05)
        lock = lock_for_ledger(ledger_url(postgres_url), SITE, "subscribers")
        assert lock is not None
        with pytest.raises(BentoBusyError, match=f"pid {holder.pid} on "):
            lock.acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        lock.acquire(wait=30)  # the server ended the dead session and its lock
        assert lock.held
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=30)


def test_a_lock_whose_connection_is_cut_reports_itself_lost(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pglock, "CHECK_SECONDS", 0.0)
    reasons: list[str] = []
    lock = PostgresAdvisoryLock(ledger_url(postgres_url), SITE, "subscribers", on_lost=reasons.append)
    lock.acquire()
    try:
        lock.verify()
        assert reasons == [] and lock.held
        execute(postgres_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              f"WHERE application_name LIKE 'bento-dlt pid {os.getpid()} on %%'")
        lock.verify()
        assert not lock.held
        assert len(reasons) == 1 and "was lost" in reasons[0] and "another run may take it over" in reasons[0]
    finally:
        lock.release()


# -- bento-dlt sync with the ledger in Postgres ----------------------------------------------------------


ROWS = 1200


def write_contacts(url: str, changed: frozenset[int] = frozenset()) -> None:
    execute(url, "DROP TABLE IF EXISTS contacts",
            "CREATE TABLE contacts (email text, first_name text, score bigint, tags text)",
            "INSERT INTO contacts SELECT 'person' || i || '@example.com', 'Person ' || i, "
            f"i + CASE WHEN i IN ({', '.join(str(i) for i in changed) or '-1'}) THEN 1000 ELSE 0 END, "
            f"'crm' FROM generate_series(0, {ROWS - 1}) i")


def run_sync(url: str, env: dict[str, str], folder: Path, *extra: str) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    result = cli("sync", "--from", url, "--table", "contacts", "--as", "subscribers", "--yes", "--json",
                 "--pipelines-dir", str(folder / "pipelines"), "--ledger-url", ledger_url(url), *extra,
                 env=env, cwd=folder)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    password = sa.make_url(url).password
    assert password and password not in result.stdout + result.stderr
    return as_json(result)


def sent_emails(emu: BentoEmulator) -> list[str]:
    return sorted(e for r in emu.requests("/batch/subscribers") if r.status == 200 for e in r.emails)


def test_sync_keeps_its_ledger_in_postgres_and_a_second_runner_shares_it(
    emu: BentoEmulator, postgres_url: str, tmp_path: Path
) -> None:
    env = base_env(**emu.env(), BENTO_REQUESTS_PER_MINUTE="60000")
    write_contacts(postgres_url)
    first = run_sync(postgres_url, env, tmp_path / "a")
    assert first["rows"] == ROWS and len(emu.store.subscribers) == ROWS
    assert not list(tmp_path.rglob("bento_ledger.duckdb"))  # no local ledger file: the ledger is in Postgres
    assert scalar(postgres_url, "SELECT count(*) FROM bento_ledger.bento_ledger_ops WHERE op = 'put' "
                                "AND ns = 'subscribers'") == ROWS

    emu.reset_log()
    run_sync(postgres_url, env, tmp_path / "b")  # a fresh runner: its own empty folder
    assert posts(emu) == []

    write_contacts(postgres_url, changed=frozenset({7, 1100}))
    emu.reset_log()
    run_sync(postgres_url, env, tmp_path / "b")
    assert sent_emails(emu) == ["person1100@example.com", "person7@example.com"]
    emu.reset_log()
    run_sync(postgres_url, env, tmp_path / "a")  # B's acknowledgements reached A through Postgres
    assert posts(emu) == []
    assert emu.store.subscribers["person7@example.com"].fields["score"] == 1007


def test_a_sync_killed_mid_load_reruns_to_every_subscriber_once(
    emu: BentoEmulator, postgres_url: str, tmp_path: Path
) -> None:
    write_contacts(postgres_url)
    folder = tmp_path / "runner"
    folder.mkdir()
    slow = base_env(**emu.env(), BENTO_REQUESTS_PER_MINUTE="60")  # a batch a second: time to kill it mid-load
    argv = ["sync", "--from", postgres_url, "--table", "contacts", "--as", "subscribers", "--yes", "--json",
            "--pipelines-dir", str(folder / "pipelines"), "--ledger-url", ledger_url(postgres_url)]
    child = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *argv], env=slow, cwd=folder,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while scalar(postgres_url, "SELECT count(*) FROM pg_namespace WHERE nspname = 'bento_ledger'") == 0 or (
                scalar(postgres_url, "SELECT count(*) FROM bento_ledger.bento_ledger_ops WHERE op = 'put'") == 0):
            assert child.poll() is None, "the sync finished before it could be killed"
            assert time.monotonic() < deadline, "no acknowledged batch reached the ledger in time"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    acknowledged_before = set(sent_emails(emu))
    assert 0 < len(acknowledged_before) < ROWS

    emu.reset_log()
    fast = base_env(**emu.env(), BENTO_REQUESTS_PER_MINUTE="60000")
    rerun = run_sync(postgres_url, fast, folder, "--wait", "60")
    assert rerun["rows"] == ROWS
    resent = Counter(e for r in emu.requests("/batch/subscribers") if r.status == 200 for e in r.emails)
    assert max(resent.values()) == 1
    assert set(resent) | acknowledged_before == {f"person{i}@example.com" for i in range(ROWS)}  # nothing lost
    assert len(set(resent) & acknowledged_before) < len(acknowledged_before)  # the ledger remembered acks
    emu.reset_log()
    run_sync(postgres_url, fast, folder)
    assert posts(emu) == []
