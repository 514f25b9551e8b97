"""Engine benchmark (issue 15, acceptance c): the diff where the data lives, against DuckDB alone.

A DuckDB file (and, with --postgres, a Postgres table) of N subscribers; a sync ledger holding each row's
version 2 fingerprint, as the Python path records it (`subscriber_fingerprint_v2(*map_subscriber(row))`,
computed here row by row in Python and acknowledged through the ledger's API); the emulator in its own
process. Then, side by side in one run:

- measured: `bento-dlt sync --from <file> --table contacts --as subscribers` of the unchanged table, a fresh
  process, whole wall time, and its batch requests (from the emulator's log);
- measured: a fresh `python -c` that imports duckdb alone, attaches the same input and ledger files and
  runs the same diff query (the engine's own SQL) to its end: the baseline;
- measured: the same sync after 1% of the rows changed (every 100th gets a new `plan`), its batch requests.
- with --postgres, the baseline of the Postgres syncs is a fresh `python -c` with psycopg and duckdb alone:
  Postgres computes the pairs (the engine's SQL), `COPY` brings them out, DuckDB joins them with the ledger
  (the engine's SQL). Their ratio to the DuckDB file's baseline is shown too.

Claims: the unchanged re-sync sends 0 batch requests and takes at most 10x the baseline; 1% changed sends
at most ceil(changed/1000) + 10 requests.

    .venv/bin/python -m bench.bench_engine --rows 1000000 --postgres

With --postgres the same rows go into a table of a Postgres server started for the run (the tests' own
`tests/postgres_server.py`: Debian's package, a throwaway cluster on loopback), and the same two syncs run
from `postgresql://...` against a copy of the seeded ledger.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from bento_destination.engine.columns import plan_subscribers
from bento_destination.engine.duckdb_diff import ALIAS, diff_sql, duckdb_columns
from bento_destination.ledger import SyncLedger
from bento_destination.mapping import MappingOptions, map_subscriber
from bento_destination.subscriber_fingerprint import subscriber_fingerprint_v2

from .emulator_process import EmulatorProcess, emulator_process

TIME_FACTOR = 10.0
#: rows per Arrow batch read for the seeding, and per acknowledgement (the ledger's steady memory cap takes
#: a few thousand at once; the sink acknowledges 1000 per request)
CHUNK = 5_000
TABLE = "contacts"


def write_duckdb(path: Path, rows: int) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute(
            f"CREATE TABLE {TABLE} AS SELECT 'user' || i || '@example.com' AS email, 'Person ' || i AS first_name, "
            "CASE WHEN i % 2 = 0 THEN 'free' ELSE 'pro' END AS plan, i AS score, "
            "CASE WHEN i % 3 = 0 THEN 'crm,pro' ELSE 'crm' END AS tags FROM range(?) t(i)", [rows],
        )


def seed_ledger(ledger_file: Path, site: str, input_rows: Any) -> float:
    """Acknowledge each row's v2 fingerprint computed by the Python mapping; seconds taken."""
    started = time.perf_counter()
    options = MappingOptions()
    with SyncLedger.open(str(ledger_file), site=site) as ledger:
        for chunk in input_rows:
            pairs = []
            for row in chunk:
                mapped = map_subscriber({k: v for k, v in row.items() if v is not None}, options)
                email = mapped.payload["email"] if mapped.payload else mapped.commands[0]["email"]
                pairs.append((email, subscriber_fingerprint_v2(mapped.payload, mapped.commands)))
            ledger.acknowledge("subscribers", pairs)
    return time.perf_counter() - started


def duckdb_rows(path: Path) -> Any:
    with duckdb.connect(str(path), read_only=True) as con:
        reader = con.sql(f"SELECT * FROM {TABLE}").to_arrow_reader(CHUNK)
        for batch in reader:
            yield batch.to_pylist()


def cli_sync(source: str, emu: EmulatorProcess, workdir: Path, ledger_file: Path) -> tuple[float, int, str]:
    """`bento-dlt sync` in a fresh process: (wall seconds, batch requests, its stderr)."""
    emu.reset_log()
    env = {**os.environ, **emu.env, "BENTO_REQUESTS_PER_MINUTE": "1000000", "RUNTIME__DLTHUB_TELEMETRY": "false"}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "sync", "--from", source, "--table", TABLE, "--as", "subscribers",
         "--yes", "--json", "--no-results", "--pipelines-dir", str(workdir / "p"), "--ledger-url", str(ledger_file)],
        env=env, capture_output=True, text=True, check=False,
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"sync failed ({done.returncode}): {done.stderr[-2000:]}")
    requests = [r for r in emu.log() if r["path"] == "/batch/subscribers"]
    return elapsed, len(requests), done.stderr


BASELINE = """
import sys, duckdb
input_file, ledger_file, sql, site = sys.argv[1:5]
con = duckdb.connect(ledger_file, read_only=True)
con.execute("SET enable_progress_bar = false")
con.execute(f"ATTACH '{input_file}' AS {alias} (READ_ONLY)")
rows = 0
for batch in con.sql(sql, params=[site, "subscribers"]).to_arrow_reader(1000):
    rows += batch.num_rows
print(rows)
"""


def baseline(input_file: Path, ledger_file: Path, site: str) -> tuple[float, int]:
    """A fresh process with duckdb alone runs the engine's diff query to its end: (seconds, rows to send)."""
    plan = plan_subscribers(duckdb_columns(input_file, TABLE))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", BASELINE.replace("{alias}", ALIAS), str(input_file), str(ledger_file),
         diff_sql(plan, TABLE), site],
        capture_output=True, text=True, check=True,
    )
    return time.perf_counter() - started, int(done.stdout.split()[-1])


def write_postgres(url: str, rows: int) -> None:
    """The same rows as `write_duckdb`, in Postgres."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as con:
            con.exec_driver_sql(
                f"CREATE TABLE {TABLE} AS SELECT 'user' || i || '@example.com' AS email, 'Person ' || i AS first_name,"
                " CASE WHEN mod(i, 2) = 0 THEN 'free' ELSE 'pro' END AS plan, i::bigint AS score, "
                "CASE WHEN mod(i, 3) = 0 THEN 'crm,pro' ELSE 'crm' END AS tags "
                f"FROM generate_series(0, {rows - 1}) t(i)"
            )
    finally:
        engine.dispose()


def change_postgres(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as con:
            con.exec_driver_sql(f"UPDATE {TABLE} SET plan = 'team' WHERE mod(score, 100) = 0")
    finally:
        engine.dispose()


def postgres_runs(emu: EmulatorProcess, workdir: Path, ledger_file: Path, rows: int) -> dict[str, Any]:
    """The unchanged and the 1%-changed sync from a Postgres table of the same rows."""
    # the tests' server helper (tests/ is not among the type-checked packages, and it imports untyped psycopg2)
    server: Any = importlib.import_module("tests.postgres_server").PostgresServer.start()
    try:
        url = server.url(server.create_database())
        write_postgres(url, rows)
        base_s, base_rows = postgres_baseline(url, ledger_file, emu.env["BENTO_SITE_UUID"])
        same_s, same_requests, same_err = cli_sync(url, emu, workdir, ledger_file)
        print(same_err.strip().splitlines()[-3:], flush=True)
        change_postgres(url)
        changed_s, changed_requests, _ = cli_sync(url, emu, workdir, ledger_file)
    finally:
        server.stop()
    return {"postgres_alone_diff_seconds": round(base_s, 2), "postgres_alone_rows_to_send": base_rows,
            "postgres_unchanged_resync_seconds": round(same_s, 2),
            "postgres_unchanged_resync_batch_requests": same_requests,
            "postgres_changed_1pct_seconds": round(changed_s, 2),
            "postgres_changed_1pct_batch_requests": changed_requests}


PG_BASELINE = """
import os, sys, tempfile, duckdb, psycopg
url, ledger_file, pairs_sql, judged_sql, site = sys.argv[1:6]
pairs = os.path.join(tempfile.mkdtemp(), "pairs.tsv")
with psycopg.connect(url) as pg, pg.cursor().copy(f"COPY ({pairs_sql}) TO STDOUT") as copy, open(pairs, "wb") as out:
    for block in copy:
        out.write(block)
con = duckdb.connect(ledger_file, read_only=True)
con.execute("SET enable_progress_bar = false")
con.execute(f"CREATE TEMP TABLE bento_engine_pairs AS SELECT * FROM read_csv('{pairs}', delim = '\\t', "
            "header = false, nullstr = '\\\\N', columns = {'key': 'VARCHAR', 'ok': 'BOOLEAN', 'fp': 'VARCHAR'})")
to_send = f"SELECT count(*) FILTER (WHERE NOT same) FROM ({judged_sql})"
print(con.execute(to_send, [site, "subscribers"]).fetchall()[0][0])
"""


def postgres_baseline(url: str, ledger_file: Path, site: str) -> tuple[float, int]:
    """A fresh process with psycopg and duckdb alone: Postgres computes the pairs (the engine's SQL), COPY brings
    them out, DuckDB joins them with the ledger (the engine's SQL): (seconds, rows to send)."""
    from bento_destination.engine.postgres_diff import _judged, pairs_sql, postgres_columns

    plan = plan_subscribers(postgres_columns(url, TABLE))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PG_BASELINE, url, str(ledger_file), pairs_sql(plan, TABLE),
         _judged(plan, "$1", "$2"), site],
        capture_output=True, text=True, check=True,
    )
    return time.perf_counter() - started, int(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", action="store_true", help="the same from a Postgres table")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    emu_args = ["--requests-per-minute", "10000000", "--capacity", "1000000", "--no-log-bodies", "--subscribers", "0"]
    result: dict[str, Any] = {"rows": args.rows}
    try:
        with emulator_process(emu_args) as emu:
            site = emu.env["BENTO_SITE_UUID"]
            data, ledger_file = workdir / "crm.duckdb", workdir / "ledger.duckdb"
            write_duckdb(data, args.rows)
            result["ledger_seed_seconds_python"] = round(seed_ledger(ledger_file, site, duckdb_rows(data)), 1)
            pg_ledger = workdir / "ledger_pg.duckdb"
            shutil.copyfile(ledger_file, pg_ledger)  # the DuckDB runs below record what they send
            base_s, base_rows = baseline(data, ledger_file, site)
            same_s, same_requests, same_err = cli_sync(str(data), emu, workdir, ledger_file)
            print(same_err.strip().splitlines()[-3:], flush=True)
            with duckdb.connect(str(data)) as con:
                con.execute(f"UPDATE {TABLE} SET plan = 'team' WHERE score % 100 = 0")
            changed_rows = math.ceil(args.rows / 100)
            changed_s, changed_requests, _ = cli_sync(str(data), emu, workdir, ledger_file)
            if args.postgres:
                shutil.rmtree(workdir / "p", ignore_errors=True)
                result.update(postgres_runs(emu, workdir, pg_ledger, args.rows))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    bound = math.ceil(changed_rows / 1000) + 10
    result.update({
        "duckdb_alone_diff_seconds": round(base_s, 2),
        "duckdb_alone_rows_to_send": base_rows,
        "unchanged_resync_seconds": round(same_s, 2),
        "unchanged_resync_batch_requests": same_requests,
        "ratio_to_duckdb_alone": round(same_s / base_s, 2),
        "changed_1pct_rows": changed_rows,
        "changed_1pct_seconds": round(changed_s, 2),
        "changed_1pct_batch_requests": changed_requests,
        "changed_1pct_bound": bound,
    })
    print(json.dumps(result, indent=2))
    if args.postgres:
        pg_s = result["postgres_unchanged_resync_seconds"]
        result["postgres_ratio_to_duckdb_alone"] = round(pg_s / base_s, 2)
        result["postgres_ratio_to_postgres_and_duckdb_alone"] = round(pg_s / result["postgres_alone_diff_seconds"], 2)
    held = same_requests == 0 and same_s <= TIME_FACTOR * base_s and changed_requests <= bound and (
        not args.postgres or (result["postgres_unchanged_resync_batch_requests"] == 0
                              and result["postgres_ratio_to_postgres_and_duckdb_alone"] <= TIME_FACTOR
                              and result["postgres_changed_1pct_batch_requests"] <= bound))
    print("HOLDS" if held else "DOES NOT HOLD",
          f"(0 requests unchanged, at most {TIME_FACTOR:g}x DuckDB alone; 1% changed within ceil(changed/1000) + 10)")


if __name__ == "__main__":
    main()
