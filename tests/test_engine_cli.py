"""`bento-dlt sync --from file.duckdb --table T --as subscribers`: the engine finds the changed rows in DuckDB.

The user's file is attached read-only by the ledger's DuckDB; an unchanged re-sync reads no row into Python
and sends no batch request, one changed row sends one request of one row, and the report counts the rest as
`unchanged`. The user's file is never written, and another process reading it meanwhile is not shut out.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from bento_api.emulator import BentoEmulator
from bento_destination.sync import EXIT_OK

from .engine_support import ledger_path, record_v2
from .test_cli import as_json, base_env, cli, posts

ROWS = 300


@pytest.fixture
def env(emu: BentoEmulator) -> dict[str, str]:
    return base_env(**emu.env(), BENTO_REQUESTS_PER_MINUTE="60000")


def write_contacts(path: Path, rows: int = ROWS) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE TABLE contacts AS SELECT 'Person' || i || '@Example.com' AS email, "
            "'Person ' || i AS \"First Name\", i AS score, i % 2 = 0 AS vip, "
            "CASE WHEN i % 3 = 0 THEN 'crm, pro' ELSE 'crm' END AS tags, "
            "'hunter' || i AS password FROM range(?) t(i)", [rows],
        )


def sync_contacts(path: Path | str, env: dict[str, str], cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("sync", "--from", str(path), "--table", "contacts", "--as", "subscribers", "--yes", "--json",
               "--pipelines-dir", "p", *extra, env=env, cwd=cwd)


def table_report(result: subprocess.CompletedProcess[str], table: str = "contacts") -> dict[str, int]:
    """The table's counts summed over the run's loads."""
    out: dict[str, int] = {}
    for load in as_json(result)["loads"]:
        for name, value in load["tables"].get(table, {}).items():
            if isinstance(value, int):
                out[name] = out.get(name, 0) + value
    return out


def contact_rows(path: Path) -> list[dict[str, object]]:
    with duckdb.connect(str(path), read_only=True) as con:
        relation = con.sql("SELECT * FROM contacts")
        return [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_a_shared_email_goes_to_python(
    source: Path | str, kind: str, emu: BentoEmulator, env: dict[str, str], cwd: Path
) -> None:
    """A first sync of the contacts (one email held by two rows), then an unchanged re-sync: the engine leaves
    out every row but the two copies, and Python, which keeps one of them, finds it unchanged."""
    assert sync_contacts(source, env, cwd).returncode == EXIT_OK
    assert len(emu.store.subscribers) == ROWS
    emu.reset_log()
    again = sync_contacts(source, env, cwd)
    assert again.returncode == EXIT_OK, again.stderr
    assert f"contacts: {ROWS - 1} unchanged rows found in {kind} and not read; 2 new or changed rows go on" in (
        again.stderr)
    assert posts(emu) == []


def test_unchanged_resync_sends_nothing_and_one_changed_row_sends_one_request(
    emu: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "crm.duckdb"
    write_contacts(data)
    first = sync_contacts(data, env, tmp_path)
    assert first.returncode == EXIT_OK, first.stderr
    assert len(emu.store.subscribers) == ROWS
    sub = emu.store.subscribers["person3@example.com"]
    assert sub.fields["first_name"] == "Person 3" and sub.fields["score"] == 3 and sub.fields["vip"] is False
    assert "password" not in sub.fields
    assert set(emu.store.tag_names(sub)) == {"crm", "pro"}

    assert record_v2(ledger_path(tmp_path), emu.site_uuid, contact_rows(data)) == ROWS

    emu.reset_log()
    before = digest(data)
    again = sync_contacts(data, env, tmp_path)
    assert again.returncode == EXIT_OK, again.stderr
    assert posts(emu) == []
    assert digest(data) == before  # read-only: the user's file is not written
    assert "contacts: 300 unchanged rows found in duckdb and not read; 0 new or changed rows go on" in again.stderr
    report = table_report(again)
    assert report["unchanged"] == ROWS and report["sent"] == 0 and report["requests"] == 0, report

    with duckdb.connect(str(data)) as con:
        con.execute("UPDATE contacts SET score = 1000 WHERE email = 'Person7@Example.com'")
    emu.reset_log()
    changed = sync_contacts(data, env, tmp_path)
    assert changed.returncode == EXIT_OK, changed.stderr
    assert [r.emails for r in emu.requests("/batch/subscribers")] == [["person7@example.com"]]
    assert emu.store.subscribers["person7@example.com"].fields["score"] == 1000
    assert "contacts: 299 unchanged rows found in duckdb and not read; 1 new or changed rows go on" in changed.stderr
    report = table_report(changed)
    assert report["unchanged"] == ROWS - 1 and report["sent"] == 1, report



def test_rows_sharing_an_email_go_to_python_every_time_and_the_rest_stay_in_duckdb(
    emu: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    # the engine finds rows that share an email by a count per key; Python picks one per email, as without it
    data = tmp_path / "crm.duckdb"
    write_contacts(data)
    with duckdb.connect(str(data)) as con:
        con.execute("INSERT INTO contacts SELECT ' person5@example.com ', 'Person 5', 5, FALSE, 'crm', 'x'")
    assert_a_shared_email_goes_to_python(data, "duckdb", emu, env, tmp_path)

    with duckdb.connect(str(data)) as con:
        con.execute("UPDATE contacts SET score = 1000 WHERE email = 'Person9@Example.com'")
    emu.reset_log()
    changed = sync_contacts(data, env, tmp_path)
    assert changed.returncode == EXIT_OK, changed.stderr
    assert f"contacts: {ROWS - 2} unchanged rows found in duckdb and not read; 3 new or changed rows go on" in (
        changed.stderr)
    assert [r.emails for r in emu.requests("/batch/subscribers")] == [["person9@example.com"]]


def test_events_with_their_own_keys_are_diffed_in_duckdb_and_a_new_event_is_the_only_one_sent(
    emu: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "events.duckdb"
    with duckdb.connect(str(data)) as con:
        con.execute(
            "CREATE TABLE purchases AS SELECT 'Buyer' || (i % 40) || '@Example.com' AS email, '$purchase' AS type, "
            "'order-' || i AS unique_key, i * 10 AS amount, TIMESTAMPTZ '2026-11-01 10:00:00+00' AS date "
            "FROM range(120) t(i)"
        )

    def sync_events() -> subprocess.CompletedProcess[str]:
        return cli("sync", "--from", str(data), "--table", "purchases", "--as", "events", "--yes", "--json",
                   "--pipelines-dir", "p", env=env, cwd=tmp_path)

    first = sync_events()
    assert first.returncode == EXIT_OK, first.stderr
    sent = [e for r in emu.requests("/batch/events") for e in r.body["events"]]
    assert len(sent) == 120 and {e["details"]["unique"]["key"] for e in sent} == {f"order-{i}" for i in range(120)}

    emu.reset_log()
    again = sync_events()
    assert again.returncode == EXIT_OK, again.stderr
    assert emu.requests("/batch/events") == []
    assert "purchases: 120 unchanged rows found in duckdb and not read; 0 new or changed rows go on" in again.stderr

    with duckdb.connect(str(data)) as con:  # a new event, and a changed amount on a key Bento already keeps
        con.execute("INSERT INTO purchases VALUES ('new@example.com', '$purchase', 'order-new', 5, "
                    "TIMESTAMPTZ '2026-11-02 10:00:00+00')")
        con.execute("UPDATE purchases SET amount = 0 WHERE unique_key = 'order-7'")
    emu.reset_log()
    third = sync_events()
    assert third.returncode == EXIT_OK, third.stderr
    [request] = emu.requests("/batch/events")
    assert [e["details"]["unique"]["key"] for e in request.body["events"]] == ["order-new"]
    assert "purchases: 120 unchanged rows found in duckdb and not read; 1 new or changed rows go on" in third.stderr


def test_rows_the_sql_cannot_prove_go_to_python_and_a_float_column_leaves_the_engine_aside(
    emu: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "crm.duckdb"
    write_contacts(data)
    with duckdb.connect(str(data)) as con:  # an invalid email, a non-ASCII one, and two rows of one person
        con.execute("UPDATE contacts SET email = 'not-an-email' WHERE email = 'Person1@Example.com'")
        con.execute("UPDATE contacts SET email = 'zoë@example.com' WHERE email = 'Person2@Example.com'")
        con.execute("INSERT INTO contacts SELECT * REPLACE (301 AS score) FROM contacts "
                    "WHERE email = 'Person5@Example.com'")
    first = sync_contacts(data, env, tmp_path)
    assert first.returncode == EXIT_OK, first.stderr
    rejected = table_report(first)["rejected"]  # the bad email; the second row of person5 too
    assert rejected >= 1 and "zoë@example.com" in emu.store.subscribers
    unproven = ("not-an-email", "zoë@example.com", "Person5@Example.com")  # the ledger keeps what Python wrote
    record_v2(ledger_path(tmp_path), emu.site_uuid, [r for r in contact_rows(data) if r["email"] not in unproven])

    emu.reset_log()
    again = sync_contacts(data, env, tmp_path)
    assert again.returncode == EXIT_OK, again.stderr
    # proven unchanged: 301 rows less the bad email, the non-ASCII one and both rows of person5
    assert "contacts: 297 unchanged rows found in duckdb and not read; 4 new or changed rows go on" in again.stderr
    assert posts(emu) == []  # Python found the two rows it decides unchanged and rejected the bad one again
    report = table_report(again)
    assert report["unchanged"] == 297 + 4 - rejected and report["rejected"] == rejected, report

    with duckdb.connect(str(data)) as con:
        con.execute("ALTER TABLE contacts ADD COLUMN ltv DOUBLE")
        con.execute("UPDATE contacts SET ltv = 1.5 WHERE email = 'Person3@Example.com'")
    emu.reset_log()
    floats = sync_contacts(data, env, tmp_path)
    assert floats.returncode == EXIT_OK, floats.stderr
    assert "not in duckdb: `ltv` is a DOUBLE" in floats.stderr
    assert [r.emails for r in emu.requests("/batch/subscribers")] != []
    assert emu.store.subscribers["person3@example.com"].fields["ltv"] == 1.5


HOLD_READ_ONLY = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
print(con.execute("SELECT count(*) FROM contacts").fetchone()[0], flush=True)
sys.stdin.read()  # hold the connection until the test closes stdin
print(con.execute("SELECT count(*) FROM contacts").fetchone()[0], flush=True)
"""


def test_the_users_file_is_attached_read_only_beside_a_dashboard_reading_it(
    emu: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    """A dashboard holds a read-only connection in another process for the whole sync: the engine, which only
    attaches the file READ_ONLY, runs beside it (DuckDB refuses a read-write open while another process holds
    the file), never writes it, and lets go of it, so a writer can open it right after the run."""
    data = tmp_path / "crm.duckdb"
    write_contacts(data)
    assert sync_contacts(data, env, tmp_path).returncode == EXIT_OK
    record_v2(ledger_path(tmp_path), emu.site_uuid, contact_rows(data))
    before = digest(data)
    dashboard = subprocess.Popen([sys.executable, "-c", HOLD_READ_ONLY, str(data)], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    try:
        assert dashboard.stdout is not None and dashboard.stdout.readline().strip() == str(ROWS)
        with pytest.raises(duckdb.IOException):  # the lock the engine must never take: a writer's
            duckdb.connect(str(data))
        emu.reset_log()
        again = sync_contacts(data, env, tmp_path)
        assert again.returncode == EXIT_OK, again.stderr
        assert "300 unchanged rows found in duckdb" in again.stderr
        assert posts(emu) == []
        out, _ = dashboard.communicate("", timeout=30)
        assert out.strip() == str(ROWS) and dashboard.returncode == 0  # it kept reading through the sync
    finally:
        if dashboard.poll() is None:
            dashboard.kill()
            dashboard.wait()
    assert digest(data) == before
    with duckdb.connect(str(data)) as writer:  # nothing of the run holds the file any more
        writer.execute("UPDATE contacts SET score = -1 WHERE email = 'Person1@Example.com'")


# -- Postgres ---------------------------------------------------------------------------------------------


def write_pg_contacts(url: str, rows: int = ROWS) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as con:
            con.exec_driver_sql(
                "CREATE TABLE contacts AS SELECT 'Person' || i || '@Example.com' AS email, "
                "'Person ' || i AS \"First Name\", i::bigint AS score, mod(i, 2) = 0 AS vip, "
                "CASE WHEN mod(i, 3) = 0 THEN 'crm, pro' ELSE 'crm' END AS tags, "
                f"'hunter' || i AS password FROM generate_series(0, {rows - 1}) AS t(i)"
            )
    finally:
        engine.dispose()


def pg_rows(url: str) -> list[dict[str, object]]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            return [dict(row) for row in con.exec_driver_sql("SELECT * FROM contacts").mappings()]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_unchanged_resync_sends_nothing_and_one_changed_row_sends_one_request(
    emu: BentoEmulator, env: dict[str, str], postgres_url: str, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    write_pg_contacts(postgres_url)
    first = sync_contacts(postgres_url, env, tmp_path)
    assert first.returncode == EXIT_OK, first.stderr
    assert len(emu.store.subscribers) == ROWS
    assert emu.store.subscribers["person4@example.com"].fields["vip"] is True
    assert record_v2(ledger_path(tmp_path), emu.site_uuid, pg_rows(postgres_url)) == ROWS

    emu.reset_log()
    again = sync_contacts(postgres_url, env, tmp_path)
    assert again.returncode == EXIT_OK, again.stderr
    assert posts(emu) == []
    assert "contacts: 300 unchanged rows found in postgres and not read; 0 new or changed rows go on" in again.stderr
    report = table_report(again)
    assert report["unchanged"] == ROWS and report["sent"] == 0 and report["requests"] == 0, report

    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as con:
            con.exec_driver_sql("UPDATE contacts SET tags = 'crm,vip' WHERE email = 'Person8@Example.com'")
    finally:
        engine.dispose()
    emu.reset_log()
    changed = sync_contacts(postgres_url, env, tmp_path)
    assert changed.returncode == EXIT_OK, changed.stderr
    assert [r.emails for r in emu.requests("/batch/subscribers")] == [["person8@example.com"]]
    assert set(emu.store.tag_names(emu.store.subscribers["person8@example.com"])) == {"crm", "vip"}
    assert "contacts: 299 unchanged rows found in postgres and not read; 1 new or changed rows go on" in changed.stderr
    report = table_report(changed)
    assert report["unchanged"] == ROWS - 1 and report["sent"] == 1, report


@pytest.mark.postgres
def test_postgres_rows_sharing_an_email_go_to_python_every_time(
    emu: BentoEmulator, env: dict[str, str], postgres_url: str, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    write_pg_contacts(postgres_url)
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as con:
            con.exec_driver_sql(
                "INSERT INTO contacts VALUES (' person5@example.com ', 'Person 5', 5, FALSE, 'crm', 'x')")
    finally:
        engine.dispose()
    assert_a_shared_email_goes_to_python(postgres_url, "postgres", emu, env, tmp_path)


@pytest.mark.postgres
def test_postgres_with_most_rows_changed_reads_the_table_once_and_still_sends_only_the_changed_rows(
    emu: BentoEmulator, env: dict[str, str], postgres_url: str, tmp_path: Path
) -> None:
    import sqlalchemy as sa

    write_pg_contacts(postgres_url)
    assert sync_contacts(postgres_url, env, tmp_path).returncode == EXIT_OK
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as con:  # 150 of 300 rows change (past WIDE_SHARE), one of them the SQL cannot prove
            con.exec_driver_sql("UPDATE contacts SET score = score + 1000 WHERE mod(score, 2) = 1")
            con.exec_driver_sql("UPDATE contacts SET tags = '[\"json\"]' WHERE email = 'Person1@Example.com'")
    finally:
        engine.dispose()
    emu.reset_log()
    changed = sync_contacts(postgres_url, env, tmp_path)
    assert changed.returncode == EXIT_OK, changed.stderr
    sent = sorted(e for r in emu.requests("/batch/subscribers") for e in r.emails)
    assert sent == sorted(f"person{i}@example.com" for i in range(1, ROWS, 2))
    assert emu.store.subscribers["person3@example.com"].fields["score"] == 1003
    assert emu.store.subscribers["person4@example.com"].fields["score"] == 4  # unchanged: not sent again
    assert "contacts: 150 unchanged rows found in postgres and not read; 150 new or changed rows go on" in (
        changed.stderr)
    report = table_report(changed)
    assert report["unchanged"] == 150 and report["sent"] == 150, report


@pytest.mark.postgres
def test_postgres_rows_reach_the_sink_as_arrow_tables_with_the_tables_values(
    postgres_url: str, tmp_path: Path
) -> None:
    """A first sync's rows (the one-pass read) and a re-sync's changed rows (read by key) come as Arrow tables
    typed from the table's columns, so dlt writes parquet and the sink maps whole columns."""
    import pyarrow as pa
    import sqlalchemy as sa

    from bento_destination.engine.postgres_diff import PostgresDiff
    from bento_destination.engine.rows import EngineSource, plan_for
    from bento_destination.ledger import SyncLedger

    write_pg_contacts(postgres_url)
    plan = plan_for(EngineSource("postgres", postgres_url, "contacts"), "subscribers", False)
    ledger = SyncLedger.open(str(tmp_path / "ledger.duckdb"), site="site")
    diff = PostgresDiff(ledger, "site", postgres_url, "contacts")
    try:
        batches = list(diff.batches(plan, rows=70))
    finally:
        diff.close()
        ledger.close()
    assert batches and all(isinstance(batch, pa.Table) for batch in batches)
    table = pa.concat_tables(batches)  # type: ignore[arg-type]
    assert table.schema.types == [pa.string(), pa.string(), pa.int64(), pa.bool_(), pa.string(), pa.string()]
    assert sorted(table.to_pylist(), key=str) == sorted(pg_rows(postgres_url), key=str)
    assert (diff.sent, diff.unchanged) == (ROWS, 0)

    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as con:
            con.exec_driver_sql("UPDATE contacts SET score = -1 WHERE email = 'Person8@Example.com'")
    finally:
        engine.dispose()
    ledger = SyncLedger.open(str(tmp_path / "ledger.duckdb"), site="site")
    diff = PostgresDiff(ledger, "site", postgres_url, "contacts")
    try:
        again = list(diff.batches(plan))  # nothing acknowledged in the ledger: every row is new, read by keys
    finally:
        diff.close()
        ledger.close()
    assert all(isinstance(batch, pa.Table) for batch in again)
    assert sum(batch.num_rows for batch in again) == ROWS  # type: ignore[union-attr]


def test_rows_with_a_timestamp_stay_dicts_and_others_become_arrow() -> None:
    """An event's `date` (a timestamp: zone and precision are the driver's) keeps rows as dicts; text,
    integer and boolean columns make one Arrow table, the query's own trailing columns dropped."""
    import datetime as dt

    import pyarrow as pa

    from bento_destination.engine.columns import BOOLEAN, INTEGER, TEXT
    from bento_destination.engine.events import TIMESTAMP
    from bento_destination.engine.postgres_diff import arrow_schema, as_batch, same_columns

    plain = [("email", TEXT), ("score", INTEGER), ("vip", BOOLEAN)]
    rows = [("a@x.com", 1, True, "key-a", True), ("b@x.com", None, None, "key-b", False)]
    table = as_batch(plain, arrow_schema(plain), rows)
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == [{"email": "a@x.com", "score": 1, "vip": True},
                                 {"email": "b@x.com", "score": None, "vip": None}]
    dated = [("email", TEXT), ("date", TIMESTAMP)]
    when = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)
    assert arrow_schema(dated) is None
    assert as_batch(dated, None, [("a@x.com", when, "key")]) == [{"email": "a@x.com", "date": when}]
    same_columns(["email", "score", "vip", "__bento_key"], plain)
    with pytest.raises(RuntimeError, match="columns changed"):
        same_columns(["email", "vip", "__bento_key"], plain)


@pytest.mark.postgres
def test_postgres_is_only_read_by_a_select_only_role_beside_an_open_write_transaction(
    emu: BentoEmulator, env: dict[str, str], postgres_url: str, tmp_path: Path
) -> None:
    """The engine's queries run in READ ONLY transactions: a role that may only SELECT the table is enough, and
    a writer holding an open transaction on the table meanwhile neither blocks the sync nor is blocked."""
    import sqlalchemy as sa

    write_pg_contacts(postgres_url)
    admin = sa.create_engine(postgres_url)
    with admin.begin() as con:
        con.exec_driver_sql("CREATE ROLE bento_reader LOGIN PASSWORD 'reader-pw'")
        con.exec_driver_sql("GRANT SELECT ON contacts TO bento_reader")
    reader_url = sa.make_url(postgres_url).set(username="bento_reader", password="reader-pw").render_as_string(
        hide_password=False)
    try:
        assert sync_contacts(reader_url, env, tmp_path).returncode == EXIT_OK
        record_v2(ledger_path(tmp_path), emu.site_uuid, pg_rows(postgres_url))
        writer = admin.connect()
        transaction = writer.begin()
        writer.exec_driver_sql("UPDATE contacts SET score = -1 WHERE email = 'Person9@Example.com'")
        try:
            emu.reset_log()
            again = sync_contacts(reader_url, env, tmp_path)
            assert again.returncode == EXIT_OK, again.stderr
            assert "300 unchanged rows found in postgres" in again.stderr  # the writer's change is not visible yet
            assert posts(emu) == []
            transaction.commit()  # the writer was never blocked by the sync's reads
        finally:
            writer.close()
        emu.reset_log()
        changed = sync_contacts(reader_url, env, tmp_path)
        assert changed.returncode == EXIT_OK, changed.stderr
        assert [r.emails for r in emu.requests("/batch/subscribers")] == [["person9@example.com"]]
    finally:
        with admin.begin() as con:
            con.exec_driver_sql("DROP OWNED BY bento_reader")
            con.exec_driver_sql("DROP ROLE bento_reader")
        admin.dispose()


def test_a_diff_out_of_duckdb_memory_is_run_again_with_more_room(
    emu: BentoEmulator, env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bento_destination.engine import duckdb_diff, ledger_access
    from bento_destination.engine.rows import EngineSource, engine_rows

    data = tmp_path / "crm.duckdb"
    write_contacts(data, rows=20_000)
    tries: list[str] = []
    real_roomy = ledger_access.roomy

    def tight_first(con: duckdb.DuckDBPyConnection, limit: str = "1MB") -> None:  # the engine's cap: too small
        tries.append(limit)
        real_roomy(con, limit)

    monkeypatch.setattr(duckdb_diff, "roomy", tight_first)
    monkeypatch.setattr(ledger_access, "roomy", tight_first)
    rows = engine_rows(EngineSource("duckdb", str(data), "contacts"), operation="subscribers", table_name="contacts",
                       ledger_location=str(tmp_path / "ledger.duckdb"), site=emu.site_uuid)
    assert rows is not None
    assert sum(batch.num_rows for batch in rows) == 20_000  # every row new, each once
    assert tries[0] == "1MB" and tries[1:] == ["512MB"]  # out of memory at 1 MB, then done at the next cap


def _engine_diff(source: str, kind: str, ledger: Path, site: str) -> tuple[list[str], int]:
    """The rows the engine returns (their emails as written, sorted) and the count it found unchanged."""
    from bento_destination.engine.rows import EngineSource, engine_rows

    rows = engine_rows(EngineSource(kind, source, "contacts"), operation="subscribers", table_name="contacts",
                       ledger_location=str(ledger), site=site, note=lambda _: None)
    assert rows is not None
    emails: list[str] = []
    for batch in rows:
        listed = batch.to_pylist() if hasattr(batch, "to_pylist") else batch
        emails += [str(row["email"]) for row in listed]
    return sorted(emails), rows.unchanged


def _mixed_input_ledger(rows: list[dict[str, object]], ledger: Path, site: str) -> None:
    """A ledger knowing every row but a tenth (new) and with another tenth changed since."""
    known = [dict(r, score=-1) if i % 10 == 1 else r for i, r in enumerate(rows) if i % 10 != 0]
    record_v2(ledger, site, known)


MIXED_ROWS = ["' person5@example.com ', 'Person 5', 5, FALSE, 'crm', 'x'",  # shares person5's email
              "'not-an-email', 'Nobody', 1, FALSE, 'crm', 'x'",  # the SQL cannot prove it
              "'zoë@example.com', 'Zoë', 2, TRUE, NULL, 'x'"]


@pytest.mark.parametrize("kind", ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_diff_in_partitions_of_keys_returns_what_one_query_returns(
    kind: str, emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # the engine diffs PARTITION_ROWS input rows at a time (its memory follows the partition, not the table):
    # new, changed, unchanged, shared-email and unprovable rows come back exactly as from one query
    from bento_destination.engine import ledger_access

    if kind == "duckdb":
        source = str(tmp_path / "crm.duckdb")
        write_contacts(Path(source))
        with duckdb.connect(source) as con:
            for values in MIXED_ROWS:
                con.execute(f"INSERT INTO contacts VALUES ({values})")
        rows = contact_rows(Path(source))
    else:
        import sqlalchemy as sa

        source = request.getfixturevalue("postgres_url")
        write_pg_contacts(source)
        engine = sa.create_engine(source)
        try:
            with engine.begin() as con:
                for values in MIXED_ROWS:
                    con.exec_driver_sql(f"INSERT INTO contacts VALUES ({values})")
        finally:
            engine.dispose()
        rows = pg_rows(source)
    ledger = tmp_path / "ledger.duckdb"
    _mixed_input_ledger(rows, ledger, emu.site_uuid)

    whole, whole_unchanged = _engine_diff(source, kind, ledger, emu.site_uuid)
    assert ledger_access.partitions(len(rows)) == 1
    monkeypatch.setattr(ledger_access, "PARTITION_ROWS", 40)
    assert ledger_access.partitions(len(rows)) == 8
    parted, parted_unchanged = _engine_diff(source, kind, ledger, emu.site_uuid)
    assert parted == whole and parted_unchanged == whole_unchanged
    assert whole_unchanged == len(rows) - len(whole)
    assert {"not-an-email", "zoë@example.com", "Person5@Example.com", " person5@example.com "} <= set(whole)
    assert len(whole) >= 60 + 4  # a tenth new, a tenth changed, the unprovable and the shared rows
