"""`bento-dlt demo`: both directions in one command, always against a local emulator (never a real account).

1. writes a sample CRM (DuckDB: contacts and product events, with a few deliberately bad rows);
2. pushes it into a seeded in-process Bento emulator through the `bento` destination (the `sync` path);
3. extracts everything back through `bento_source` into DuckDB and into Parquet files;
4. prints tables, row counts, rejects with their reasons, and where the files are.

BENTO_* and dlt config are ignored for the target: the demo passes the emulator's credentials itself.
Budgets are raised for the emulator only (and the output says so); the defaults stay Bento's.
BENTO_EMULATOR_MODE=bento_like runs it against the Bento-like emulator, which queues writes: the demo
then waits for them to be applied before reading back, as a pipeline against Bento has to.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

import duckdb

from bento_api import Budgets, resolve_settings
from bento_api.emulator import BentoEmulator, EmulatorConfig
from bento_source import ALL_RESOURCES

from .cli_common import EXIT_FAILED, EXIT_OK, PROG, Console, Result
from .cli_extract import ExtractSettings, extract
from .cli_input import open_input
from .cli_sync_push import push
from .cli_sync_settings import SyncSettings
from .telemetry import turn_off_dlt_telemetry

DEFAULT_OUTPUT = "demo_output"
#: budgets against the emulator only (Bento's real defaults: 60 requests/min, stats 30/hour)
DEMO_BUDGETS = Budgets(requests_per_minute=60_000.0, stats_requests_per_hour=1_000_000.0)
#: what the demo creates inside the output folder (and removes again before a rerun)
ARTIFACTS = ("crm.duckdb", "bento_data.duckdb", "parquet", "pipelines")
SYNCS = (("crm_contacts", "subscribers"), ("product_events", "events"))
#: subscribers the demo's emulator starts with (the pushed contacts come on top)
SEEDED_SUBSCRIBERS = 500
#: bento_like mode: seconds the emulator holds a write before applying it (Bento: up to 5 minutes), short
#: so the demo stays quick; the default mode applies writes at once and ignores it
DEMO_WRITE_DELAY = 0.5

CONTACTS_SQL = """
CREATE TABLE crm_contacts AS
SELECT
    'customer' || i || '@example.com' AS email,
    ['Ada', 'Grace', 'Alan', 'Edsger', 'Barbara', 'Ken'][1 + i % 6] AS first_name,
    ['Lovelace', 'Hopper', 'Turing', 'Dijkstra', 'Liskov', 'Thompson'][1 + (i // 6) % 6] AS last_name,
    'Company ' || (i % 97) AS company,
    ['free', 'pro', 'team'][1 + i % 3] AS plan,
    round((i * 37) % 5000 / 10.0, 2) AS lifetime_value,
    TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_days(i % 600) AS signed_up_at,
    CASE WHEN i % 3 = 0 THEN 'customer,newsletter' ELSE 'lead' END AS tags,
    i % 400 = 399 AS unsubscribed
FROM range(?) AS t(i)
"""
#: deliberately bad contacts, so that the rejects show (reason in the comment)
BAD_CONTACTS = [
    ("not-an-email", "invalid_email"),
    ("jane doe@example.com", "invalid_email"),
    ("two@@example.com", "invalid_email"),
    (None, "missing_email"),
]
EVENTS_SQL = """
CREATE TABLE product_events AS
SELECT
    'customer' || (i * 7 % (? + 300)) || '@example.com' AS email,
    ['$purchase', 'signed_in', 'viewed_pricing', 'invited_teammate'][1 + i % 4] AS type,
    TIMESTAMPTZ '2025-01-01 00:00:00+00' + to_minutes(i * 13) AS date,
    '{"plan": "' || ['free', 'pro', 'team'][1 + i % 3] || '"}' AS fields,
    '{"value": {"amount": ' || (i % 200) || '.5, "currency": "USD"}, "source": "demo"}' AS details,
    CASE WHEN i % 4 = 0 THEN 'order-' || i END AS unique_key
FROM range(?) AS t(i)
"""
#: deliberately bad events: (email, type, fields) and the reason the destination gives
BAD_EVENTS = [
    ("customer1@example.com", None, '{"plan": "pro"}', "missing_type"),
    ("customer2@example.com", "", '{"plan": "pro"}', "missing_type"),
    ("nobody-at-example.com", "signed_in", '{"plan": "free"}', "invalid_email"),
    ("customer3@example.com", "signed_in", '{"address": {"city": "Paris"}}', "nested_fields"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default=DEFAULT_OUTPUT, metavar="DIR",
                        help=f"folder for the sample CRM, the extracted data and the pipeline state "
                             f"(default ./{DEFAULT_OUTPUT}; the demo's own files there are replaced)")
    parser.add_argument("--contacts", type=int, default=2500, metavar="N", help="sample contacts (default 2500)")
    parser.add_argument("--events", type=int, default=3000, metavar="N", help="sample events (default 3000)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the emulator's data (default 7)")


def write_crm(path: Path, contacts: int, events: int) -> dict[str, int]:
    """The sample CRM; returns rows per table (bad rows included)."""
    with duckdb.connect(str(path)) as con:
        con.execute(CONTACTS_SQL, [contacts])
        con.executemany(
            "INSERT INTO crm_contacts (email, first_name, plan, tags) VALUES (?, 'Bad', 'free', 'lead')",
            [[email] for email, _ in BAD_CONTACTS],
        )
        con.execute(EVENTS_SQL, [contacts, events])
        con.executemany(
            "INSERT INTO product_events (email, type, date, fields) "
            "VALUES (?, ?, TIMESTAMPTZ '2025-02-01 00:00:00+00', ?)",
            [[email, kind, fields] for email, kind, fields, _ in BAD_EVENTS],
        )
        counts: dict[str, int] = {}
        for table in ("crm_contacts", "product_events"):
            rows = con.execute(f"SELECT count(*) FROM {table}").fetchall()
            counts[table] = int(rows[0][0]) if rows else 0
        return counts


def _clean(output: Path) -> None:
    for name in ARTIFACTS:
        target = output / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def run(args: argparse.Namespace, console: Console) -> Result:
    turn_off_dlt_telemetry()  # the demo reaches nothing but its emulator on 127.0.0.1
    started = time.monotonic()
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    _clean(output)
    crm = output / "crm.duckdb"
    crm_rows = write_crm(crm, args.contacts, args.events)
    pipelines_dir = str(output / "pipelines")
    config = EmulatorConfig(seed=args.seed, subscribers=SEEDED_SUBSCRIBERS, broadcasts=120,
                            requests_per_minute=6_000_000.0, stats_requests_per_hour=1e9, bucket_capacity=100_000.0,
                            log_bodies=False, write_delay_seconds=DEMO_WRITE_DELAY)
    with BentoEmulator(config) as emulator:
        settings = resolve_settings(**emulator.credentials, env={})
        console.note(f"Local Bento emulator on {emulator.base_url} (seeded; no real Bento account is touched). "
                     f"Budgets raised for it: {DEMO_BUDGETS.requests_per_minute:,.0f} requests/min, stats "
                     f"{DEMO_BUDGETS.stats_requests_per_hour:,.0f}/hour (Bento's real defaults: 60/min, 30/hour).")
        pushed: list[dict[str, Any]] = []
        texts: list[str] = []
        for table, operation in SYNCS:
            console.note(f"pushing {table} as {operation} ...")
            cfg = SyncSettings(operation=operation, settings=settings, budgets=DEMO_BUDGETS,
                               pipeline_name=f"demo_sync_{operation}", pipelines_dir=pipelines_dir)
            with contextlib.closing(open_input(str(crm), table)) as source:
                _, summary, text = push(source, cfg, console)
            pushed.append(summary)
            texts.append(text)
        if config.queues_writes:
            console.note(f"bento_like emulator: waiting for {emulator.queued} queued write requests to be applied "
                         f"(its delay: {DEMO_WRITE_DELAY:g}s; Bento's: up to 5 minutes) ...")
            if not emulator.wait_for_writes(timeout=DEMO_WRITE_DELAY + 60.0):
                console.note("some writes were still queued; the extract may not show them all")
        source_kwargs = {**emulator.credentials, "requests_per_minute": DEMO_BUDGETS.requests_per_minute,
                         "stats_requests_per_hour": DEMO_BUDGETS.stats_requests_per_hour}
        extracted = {}
        for to, out in (("duckdb", output / "bento_data.duckdb"), ("parquet", output / "parquet")):
            console.note(f"extracting every resource into {to} ...")
            extracted[to] = extract(ExtractSettings(
                to=to, output=str(out), pipeline_name=f"demo_to_{to}", pipelines_dir=pipelines_dir,
                source_kwargs=source_kwargs, progress=False,
            ), console)
        emulator_requests = emulator.summary()["requests"]["total"]
    empty = [r for r in ALL_RESOURCES for to in extracted if not extracted[to]["tables"].get(r)]
    code = EXIT_FAILED if empty or not all(p["totals"].get("sent") for p in pushed) else EXIT_OK
    summary = {
        "command": "demo", "exit_code": code, "ok": code == EXIT_OK, "output": str(output),
        "crm": {"file": str(crm), "rows": crm_rows}, "pushed": pushed, "extracted": extracted,
        "emulator_requests": emulator_requests, "emulator_mode": config.mode, "empty_resources": sorted(set(empty)),
        "budgets": {"requests_per_minute": DEMO_BUDGETS.requests_per_minute,
                    "stats_requests_per_hour": DEMO_BUDGETS.stats_requests_per_hour, "raised_for_emulator": True},
        "elapsed_seconds": round(time.monotonic() - started, 2),
    }
    return Result(code, summary, format_demo(summary, texts))


def format_demo(summary: dict[str, Any], push_texts: list[str]) -> str:
    output = Path(summary["output"])
    crm, budgets = summary["crm"], summary["budgets"]
    bad = len(BAD_CONTACTS) + len(BAD_EVENTS)
    mode = "" if summary["emulator_mode"] == "default" else f", mode {summary['emulator_mode']}"
    lines = [
        f"bento-dlt demo: both directions against a local Bento emulator{mode} (no real account was touched)",
        f"budgets raised for the emulator: {budgets['requests_per_minute']:,.0f} requests/min, "
        f"stats {budgets['stats_requests_per_hour']:,.0f}/hour (defaults for the real Bento: 60/min, 30/hour)",
        "",
        f"1. Sample CRM {crm['file']}: "
        + ", ".join(f"{table} {rows} rows" for table, rows in crm["rows"].items())
        + f" ({bad} of them deliberately bad)",
        "",
        "2. Warehouse -> Bento (destination `bento`)",
    ]
    lines += ["   " + line for text in push_texts for line in text.splitlines()]
    lines += ["", "3. Bento -> DuckDB and Parquet (source `bento_source`, every resource)"]
    duck, parquet = summary["extracted"]["duckdb"], summary["extracted"]["parquet"]
    tables = sorted(set(duck["tables"]) | set(parquet["tables"]))
    width = max(len(t) for t in tables) if tables else 5
    lines.append(f"   {'table':<{width}}  {'duckdb':>8}  {'parquet':>8}")
    for table in tables:
        lines.append(f"   {table:<{width}}  {duck['tables'].get(table, 0):>8}  {parquet['tables'].get(table, 0):>8}")
    if summary["empty_resources"]:
        lines.append(f"   EMPTY resources (unexpected): {', '.join(summary['empty_resources'])}")
    lines += [
        "",
        "Files:",
        f"   sample CRM      {crm['file']}",
        f"   DuckDB          {duck['output']} (dataset {duck['dataset']})",
        f"   Parquet         {parquet['output']}/<table>/",
        f"   pipeline state  {output / 'pipelines'} (rejects and load reports under <pipeline>/bento_rejects/)",
        "",
        "Look again:",
        f"   {PROG} rejects --pipelines-dir {output / 'pipelines'}",
        f"   {PROG} report --pipelines-dir {output / 'pipelines'}",
        "",
        f"{summary['emulator_requests']} requests to the emulator; done in {summary['elapsed_seconds']:.1f}s",
    ]
    return "\n".join(lines)
