"""Ten million subscribers from DuckDB and from Postgres (issue 15, acceptance d): wall time and peak RSS.

For each input, `bento-dlt sync --from <input> --table subscribers --as subscribers` runs twice as a subprocess:
a first sync with the budget raised (the client's `--requests-per-minute` and the emulator's limit), then an
unchanged re-sync. Each is timed (wall clock) and its peak RSS is read from `os.wait4` (ru_maxrss of the
subprocess, its own children included). The emulator runs in its own process in the counts mode
(`--records counts`: counts and hashes, no records), so ten million upserts fit in it; its summary says how many
batch requests each sync sent, how many people Bento holds and how many upserts it accepted.

The claim: peak RSS <= 300 MB for every sync. It can fail; the output says which rows hold.

    .venv/bin/python -m bench.bench_10m --rows 10000000
    .venv/bin/python -m bench.bench_10m --rows 1000000 --inputs duckdb
    .venv/bin/python -m bench.bench_10m --rows 10000000 --inputs postgres --ledger-from LEDGER.duckdb

The last form runs only the unchanged re-sync, with a copy of a ledger a first sync of the same rows wrote
(`--ledger-url`; either input: the keys and fingerprints are the same), for when a first sync would not fit
the time. The people Bento holds are then 0: that emulator never took the first sync.

Postgres comes from the tests' server helper (Debian's package: `make postgres-server`; the `[postgres]` extra
brings the drivers): a throwaway cluster on a free port of 127.0.0.1, deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb

from .emulator_process import EmulatorProcess, emulator_process

CLAIM_RSS_MB = 300.0
TABLE = "subscribers"
BATCH_PATH = "/batch/subscribers"
#: the table both inputs hold: an email, a plan and a score per row
SELECT_ROWS = ("SELECT 'user' || i || '@example.com' AS email, CASE WHEN i % 2 = 0 THEN 'free' ELSE 'pro' END "
               "AS plan, i AS score FROM {series}")


@dataclass
class SyncRun:
    """One `bento-dlt sync`: what it took and what Bento received."""

    input: str
    run: str
    exit_code: int
    wall_seconds: float
    peak_rss_mb: float
    batch_requests: int
    rate_limited: int
    upserts_accepted: int
    people: int

    @property
    def holds(self) -> bool:
        return self.exit_code == 0 and self.peak_rss_mb <= CLAIM_RSS_MB


def duckdb_input(folder: Path, rows: int) -> str:
    path = folder / "warehouse.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE TABLE {TABLE} AS " + SELECT_ROWS.format(series=f"range({rows}) AS t(i)"))
    return str(path)


@contextmanager
def postgres_input(rows: int) -> Iterator[str]:
    """A throwaway Postgres server holding the table; yields its SQLAlchemy URL (psycopg 3)."""
    import psycopg

    from tests.postgres_server import PostgresServer

    server = PostgresServer.start()
    try:
        url = server.url(server.create_database())
        with psycopg.connect(url) as con:
            con.execute(f"CREATE TABLE {TABLE} AS "
                        + SELECT_ROWS.format(series=f"generate_series(0, {rows - 1}) AS t(i)"))
        yield url.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.stop()


def seed_ledger(ledger: Path, folder: Path, label: str) -> list[str]:
    """A copy of a ledger file (and its write-ahead log, if any), and the sync's flags that use it: the keys and
    fingerprints of the same rows are the same from either input, so the re-sync is an unchanged one. (Not in
    the pipeline's folder: dlt empties the folder of a pipeline that has no state yet.)"""
    copy = folder / f"ledger_{label}.duckdb"
    shutil.copy(ledger, copy)
    wal = ledger.with_name(ledger.name + ".wal")
    if wal.exists():
        shutil.copy(wal, copy.with_name(copy.name + ".wal"))
    return ["--ledger-url", str(copy)]


def bento_dlt() -> str:
    """The `bento-dlt` of the interpreter running this benchmark (its venv)."""
    return str(Path(sys.executable).with_name("bento-dlt"))


def measured(argv: list[str], env: dict[str, str]) -> tuple[int, float, float]:
    """Run argv; (exit code, wall seconds, peak RSS in MB of it and its children) from wait4."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, elapsed, usage.ru_maxrss / 1024  # Linux reports kilobytes


def sync_once(
    emu: EmulatorProcess, source: str, label: str, run: str, workdir: Path, rpm: float, extra: list[str] | None = None
) -> SyncRun:
    before = emu.summary()
    argv = [bento_dlt(), "sync", "--from", source, "--table", TABLE, "--as", "subscribers", "--yes", "--quiet",
            "--requests-per-minute", str(rpm), "--pipelines-dir", str(workdir / "pipelines"),
            "--pipeline-name", f"bench_10m_{label}", *(extra or [])]
    code, wall, rss = measured(argv, {**os.environ, **emu.env})
    after = emu.summary()

    def grew(section: str, *keys: str) -> int:
        def get(summary: dict[str, Any]) -> int:
            value: Any = summary[section]
            for key in keys:
                value = value.get(key, 0) if isinstance(value, dict) else 0
            return int(value)

        return get(after) - get(before)

    result = SyncRun(
        input=label, run=run, exit_code=code, wall_seconds=round(wall, 1), peak_rss_mb=round(rss, 1),
        batch_requests=grew("requests", "by_path", BATCH_PATH, "200"),
        rate_limited=grew("requests", "rate_limited"),
        upserts_accepted=grew("objects", "accepted_by_path", BATCH_PATH),
        people=int(after["objects"]["subscribers"]),
    )
    print(json.dumps(asdict(result)), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--inputs", default="duckdb,postgres", help="comma list of duckdb, postgres")
    parser.add_argument("--ledger-from", type=Path, metavar="LEDGER.duckdb",
                        help="skip the first syncs: give each input's sync a copy of this ledger file (--ledger-url; "
                             "one a first sync of the same rows wrote, e.g. from the other input) and run only "
                             "the unchanged re-sync")
    parser.add_argument("--requests-per-minute", type=float, default=1_000_000.0,
                        help="the client's budget for the syncs (raised: the emulator's limit is raised too)")
    args = parser.parse_args()
    inputs = [name.strip() for name in args.inputs.split(",") if name.strip()]
    unknown = set(inputs) - {"duckdb", "postgres"}
    if unknown:
        parser.error(f"unknown inputs {sorted(unknown)}")

    workdir = Path(tempfile.mkdtemp(prefix="bench-10m-"))
    emu_args = ["--records", "counts", "--requests-per-minute", "10000000", "--capacity", "1000000",
                "--subscribers", "0"]
    results: list[SyncRun] = []
    emulator_peaks: dict[str, float] = {}
    try:
        for name in inputs:
            # one emulator per input: each first sync starts from an empty Bento
            with emulator_process(emu_args) as emu:
                started = time.perf_counter()
                runs: tuple[str, ...] = ("first", "unchanged")
                extra: list[str] = []
                if args.ledger_from is not None:
                    extra = seed_ledger(args.ledger_from, workdir, name)
                    runs = ("unchanged",)
                if name == "duckdb":
                    source = duckdb_input(workdir, args.rows)
                    print(f"duckdb input: {args.rows} rows in {time.perf_counter() - started:.1f}s", flush=True)
                    results += [sync_once(emu, source, name, run, workdir, args.requests_per_minute, extra)
                                for run in runs]
                else:
                    with postgres_input(args.rows) as source:
                        print(f"postgres input: {args.rows} rows in {time.perf_counter() - started:.1f}s", flush=True)
                        results += [sync_once(emu, source, name, run, workdir, args.requests_per_minute, extra)
                                    for run in runs]
                emulator_peaks[name] = round(emu.peak_rss_mb(), 1)
                print(f"emulator ({name}): peak RSS {emulator_peaks[name]} MB, records=counts", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nrows: {args.rows}; claim: peak RSS <= {CLAIM_RSS_MB:g} MB per sync")
    print(f"{'input':9} {'run':10} {'exit':>4} {'wall s':>8} {'peak MB':>8} {'batches':>8} {'429s':>5} "
          f"{'upserts':>9} {'people':>9}  claim")
    for r in results:
        print(f"{r.input:9} {r.run:10} {r.exit_code:>4} {r.wall_seconds:>8.1f} {r.peak_rss_mb:>8.1f} "
              f"{r.batch_requests:>8} {r.rate_limited:>5} {r.upserts_accepted:>9} {r.people:>9}  "
              f"{'holds' if r.holds else 'DOES NOT HOLD'}")
    for name, peak in emulator_peaks.items():
        print(f"emulator process ({name} runs, records=counts): peak RSS {peak} MB")


if __name__ == "__main__":
    main()
