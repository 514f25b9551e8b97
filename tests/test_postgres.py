"""Postgres as a warehouse, both ways, on a real server (Debian's package, started by the `postgres_server` fixture).

Reverse ETL reads a Postgres table through `bento-dlt sync --from postgresql://...` (SQLAlchemy) and through
dlt's `sql_table` into `bento_destination.sync.sync`; the source loads every resource into Postgres with
`bento-dlt extract --to postgres`, configured the dlt way (DESTINATION__POSTGRES__CREDENTIALS). Bento is the
emulator on 127.0.0.1. Run with `make test-postgres` (its own CI step); `make test` leaves these out.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bento_api.emulator import BentoEmulator
from bento_destination.sync import EXIT_OK, EXIT_USAGE, sync

from .postgres_server import PostgresServer, free_port
from .test_cli import as_json, base_env, cli, posts

pytestmark = pytest.mark.postgres

CONTACTS = 300
EVENTS = 120
SIGNUP = dt.datetime(2024, 3, 1, 9, 30, tzinfo=dt.UTC)


def contact(i: int) -> dict[str, Any]:
    return {
        "email": f"Contact{i}@Example.com",
        "first_name": f"First {i}",
        "plan": "pro" if i % 3 == 0 else "free",
        "lifetime_value": Decimal(i * 3) / 2,
        "signed_up_at": SIGNUP + dt.timedelta(hours=i),
        "tags": "crm,pro" if i % 3 == 0 else "crm",
    }


def write_warehouse(url: str) -> None:
    """crm_contacts (numeric, timestamptz and text columns) and product_events (jsonb details) in Postgres."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as con:
            con.execute(sa.text(
                "CREATE TABLE crm_contacts (id serial PRIMARY KEY, email text NOT NULL, first_name text, "
                "plan text, lifetime_value numeric(12, 2), signed_up_at timestamptz, tags text)"
            ))
            con.execute(sa.text(
                "INSERT INTO crm_contacts (email, first_name, plan, lifetime_value, signed_up_at, tags) "
                "VALUES (:email, :first_name, :plan, :lifetime_value, :signed_up_at, :tags)"
            ), [contact(i) for i in range(CONTACTS)])
            con.execute(sa.text(
                "CREATE TABLE product_events (email text, type text, unique_key text, details jsonb)"
            ))
            con.execute(sa.text(
                "INSERT INTO product_events VALUES (:email, '$purchase', :key, CAST(:details AS jsonb))"
            ), [{"email": f"contact{i % CONTACTS}@example.com", "key": f"order-{i}",
                 "details": json.dumps({"value": {"currency": "USD", "amount": 100 + i}})} for i in range(EVENTS)])
    finally:
        engine.dispose()


@pytest.fixture
def warehouse(postgres_url: str) -> str:
    write_warehouse(postgres_url)
    return postgres_url


@pytest.fixture
def env(emu: BentoEmulator) -> dict[str, str]:
    return base_env(**emu.env(), BENTO_REQUESTS_PER_MINUTE="60000")


def assert_contacts_in_bento(emu: BentoEmulator, indexes: range | list[int], fields: set[str]) -> None:
    """Each contact is one subscriber (by its normalised email) with the Postgres values as fields."""
    for i in indexes:
        want = contact(i)
        sub = emu.store.subscribers[want["email"].lower()]
        value = want["lifetime_value"]
        expected = {  # a whole numeric goes as an int, any other as a float
            "first_name": want["first_name"],
            "plan": want["plan"],
            "lifetime_value": int(value) if value == int(value) else float(value),
        }
        for name in fields & expected.keys():
            assert sub.fields.get(name) == expected[name], (i, name, sub.fields)
        if "signed_up_at" in fields:
            assert dt.datetime.fromisoformat(sub.fields["signed_up_at"]) == want["signed_up_at"], (i, sub.fields)
        if "tags" in fields:
            assert set(emu.store.tag_names(sub)) == set(want["tags"].split(",")), i


# -- reverse ETL: Postgres -> Bento ---------------------------------------------------------------------


def test_sync_from_a_postgres_table_then_an_unchanged_resync_sends_nothing(
    emu: BentoEmulator, env: dict[str, str], warehouse: str, tmp_path: Path
) -> None:
    first = cli("sync", "--from", warehouse, "--table", "crm_contacts", "--as", "subscribers", "--yes", "--json",
                "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert first.returncode == EXIT_OK, first.stderr
    assert sa.make_url(warehouse).password not in first.stdout + first.stderr
    summary = as_json(first)
    assert summary["rows"] == CONTACTS
    assert len(emu.store.subscribers) == CONTACTS
    assert sum(r.rows for r in emu.requests("/batch/subscribers")) == CONTACTS
    assert_contacts_in_bento(emu, range(CONTACTS),
                             {"first_name", "plan", "lifetime_value", "signed_up_at", "tags"})

    emu.reset_log()
    again = cli("sync", "--from", warehouse, "--table", "crm_contacts", "--as", "subscribers", "--yes", "--json",
                "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert again.returncode == EXIT_OK, again.stderr
    assert posts(emu) == []  # the ledger knows every row: not one batch request

    engine = sa.create_engine(warehouse)
    try:
        with engine.begin() as con:  # one contact changes in the warehouse: only that row goes
            con.execute(sa.text("UPDATE crm_contacts SET plan = 'enterprise' WHERE email = 'Contact7@Example.com'"))
    finally:
        engine.dispose()
    emu.reset_log()
    changed = cli("sync", "--from", warehouse, "--table", "crm_contacts", "--as", "subscribers", "--yes",
                  "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert changed.returncode == EXIT_OK, changed.stderr
    assert [r.emails for r in emu.requests("/batch/subscribers")] == [["contact7@example.com"]]
    assert emu.store.subscribers["contact7@example.com"].fields["plan"] == "enterprise"


def test_sync_from_a_postgres_query_and_a_schema_qualified_table(
    emu: BentoEmulator, env: dict[str, str], warehouse: str, tmp_path: Path
) -> None:
    result = cli("sync", "--from", warehouse, "--query",
                 "SELECT email, first_name, plan AS tier FROM crm_contacts WHERE plan = 'pro';",
                 "--as", "subscribers", "--yes", "--json", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert result.returncode == EXIT_OK, result.stderr
    pro = [i for i in range(CONTACTS) if contact(i)["plan"] == "pro"]
    assert sorted(emu.store.subscribers) == sorted(contact(i)["email"].lower() for i in pro)
    assert all(sub.fields.get("tier") == "pro" and "plan" not in sub.fields for sub in emu.store.subscribers.values())
    assert_contacts_in_bento(emu, pro, {"first_name"})

    engine = sa.create_engine(warehouse)
    try:
        with engine.begin() as con:
            con.execute(sa.text("CREATE SCHEMA crm"))
            con.execute(sa.text("CREATE TABLE crm.leads AS SELECT email, first_name FROM crm_contacts WHERE id <= 5"))
    finally:
        engine.dispose()
    leads = cli("sync", "--from", warehouse, "--table", "crm.leads", "--as", "subscribers", "--yes", "--json",
                "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert leads.returncode == EXIT_OK, leads.stderr
    assert as_json(leads)["rows"] == 5


def test_unreadable_postgres_inputs_exit_2_and_send_nothing(
    emu: BentoEmulator, env: dict[str, str], warehouse: str, tmp_path: Path
) -> None:
    missing = cli("sync", "--from", warehouse, "--table", "no_such_table", "--as", "subscribers", "--yes",
                  "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert missing.returncode == EXIT_USAGE, missing.stderr
    assert "no_such_table" in missing.stderr
    assert "postgres:***@127.0.0.1" in missing.stderr  # the URL is shown, its password never
    assert sa.make_url(warehouse).password not in missing.stdout + missing.stderr

    bad_sql = cli("sync", "--from", warehouse, "--query", "SELECT email FROM crm_contacts WHERE", "--as",
                  "subscribers", "--yes", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert bad_sql.returncode == EXIT_USAGE, bad_sql.stderr

    wrong_password = sa.make_url(warehouse).set(password="not-the-password-123").render_as_string(hide_password=False)
    refused_login = cli("sync", "--from", wrong_password, "--table", "crm_contacts", "--as", "subscribers", "--yes",
                        "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert refused_login.returncode == EXIT_USAGE, refused_login.stderr
    assert "password authentication failed" in refused_login.stderr
    assert "not-the-password-123" not in refused_login.stdout + refused_login.stderr

    nobody_listens = f"postgresql://postgres:pw@127.0.0.1:{free_port()}/crm"
    refused = cli("sync", "--from", nobody_listens, "--table", "crm_contacts", "--as", "subscribers", "--yes",
                  "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert refused.returncode == EXIT_USAGE, refused.stderr
    assert "cannot read" in refused.stderr
    assert posts(emu) == []


def test_sql_table_into_sync_sends_contacts_and_jsonb_events(
    emu: BentoEmulator, warehouse: str, tmp_path: Path, destination_env: None
) -> None:
    from dlt.sources.sql_database import sql_table

    def resources() -> list[Any]:
        return [sql_table(credentials=warehouse, table=name, backend="pyarrow") for name in
                ("crm_contacts", "product_events")]

    options: dict[str, Any] = {
        **emu.credentials, "requests_per_minute": 60_000.0,
        "table_operations": {"crm_contacts": "subscribers", "product_events": "events"},
    }
    reports = sync(resources(), pipeline_name="pg_to_bento", pipelines_dir=tmp_path, out=lambda _: None, **options)
    sent = {table.table: table.sent for report in reports for table in report.tables.values()}
    assert sent == {"crm_contacts": CONTACTS, "product_events": EVENTS}
    assert_contacts_in_bento(emu, range(CONTACTS), {"first_name", "plan", "lifetime_value", "tags"})
    events = {e.details["unique"]["key"]: e for e in emu.store.events}  # type: ignore[index]
    assert len(emu.store.events) == len(events) == EVENTS
    assert events["order-7"].email == "contact7@example.com"
    assert events["order-7"].details["value"] == {"currency": "USD", "amount": 107}  # type: ignore[index]

    emu.reset_log()
    sync(resources(), pipeline_name="pg_to_bento", pipelines_dir=tmp_path, out=lambda _: None, **options)
    assert posts(emu) == []  # subscribers unchanged, events already acknowledged by key


# -- Bento -> Postgres: the source ---------------------------------------------------------------------


def test_extract_to_postgres_loads_every_resource_with_the_emulators_counts(
    emulator: BentoEmulator, postgres_url: str, tmp_path: Path
) -> None:
    env = base_env(**emulator.env(), BENTO_REQUESTS_PER_MINUTE="60000", BENTO_STATS_REQUESTS_PER_HOUR="1000000",
                   DESTINATION__POSTGRES__CREDENTIALS=postgres_url)
    result = cli("extract", "--to", "postgres", "--dataset", "bento", "--pipelines-dir", "p", "--json",
                 env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == EXIT_OK, result.stderr
    summary = as_json(result)
    store = emulator.store
    templates = {t for seq in store.sequences for t in seq.template_ids}
    templates |= {t for wf in store.workflows for t in wf.template_ids}
    want = {
        "tags": len(store.tags), "fields": len(store.fields), "segments": len(store.segments),
        "broadcasts": len(store.broadcasts), "sequences": len(store.sequences), "workflows": len(store.workflows),
        "email_templates": len(templates), "subscribers": len(store.subscribers),
        "site_stats": 1, "segment_stats": len(store.segments),
    }
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as con:
            in_postgres = {table: con.execute(sa.text(f"SELECT count(*) FROM bento.{table}")).scalar()
                           for table in want}
            emails = {row[0] for row in con.execute(sa.text("SELECT email FROM bento.subscribers"))}
            distinct_ids = con.execute(sa.text("SELECT count(DISTINCT id) FROM bento.subscribers")).scalar()
    finally:
        engine.dispose()
    assert in_postgres == want
    assert {table: summary["tables"][table] for table in want} == want
    assert emails == {sub.email for sub in store.subscribers.values()}
    assert distinct_ids == len(store.subscribers)

    again = cli("extract", "--to", "postgres", "--dataset", "bento", "--resources", "tags", "subscribers",
                "--pipelines-dir", "p", "--json", env=env, cwd=tmp_path, timeout=300)
    assert again.returncode == EXIT_OK, again.stderr
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as con:  # merge: a second run adds no duplicates
            assert con.execute(sa.text("SELECT count(*) FROM bento.subscribers")).scalar() == len(store.subscribers)
            assert con.execute(sa.text("SELECT count(*) FROM bento.tags")).scalar() == len(store.tags)
    finally:
        engine.dispose()


def test_the_fixture_runs_a_real_server_on_loopback(postgres_server: PostgresServer, postgres_url: str) -> None:
    url = sa.make_url(postgres_url)
    assert (url.host, url.port, url.password) == ("127.0.0.1", postgres_server.port, postgres_server.password)
    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            assert con.execute(sa.text("SHOW listen_addresses")).scalar() == "127.0.0.1"
            assert con.execute(sa.text("SELECT current_setting('server_version_num')::int")).scalar() >= 130000
    finally:
        engine.dispose()
