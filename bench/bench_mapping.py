"""The sink's own Python per 1000-row batch: map and validate rows, the ledger filter, JSON encoding.

Runs the sink's batch routine (`bento_destination.sink._process`) on realistic 1000-row batches, from a
list of dicts (jsonl load files) and from an Arrow RecordBatch (parquet load files), for subscribers and
events, with the sync ledger on (every batch holds new people, so every row is sent, as in a first load)
and off. The client is a stand-in that encodes each request body as the real client does
(`json.dumps(..., allow_nan=False).encode()`) and answers at once: no network, no pacing, so the figure is
the CPU the sink spends per batch, which bounds how many batches one process can send per second.

    .venv/bin/python -m bench.bench_mapping                 # ms per 1000-row batch; batches/s on 10 threads
    .venv/bin/python -m bench.bench_mapping --profile subscribers-list   # cProfile of one case
    .venv/bin/python -m bench.bench_mapping --whole-batch   # 100k rows: batch mapper vs map_row vs to_dict
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import pstats
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pyarrow as pa

from bento_api import BentoClient
from bento_destination.arrow_mapping import map_subscriber_batch
from bento_destination.changes import LedgerOptions, batch_changes, close_ledgers
from bento_destination.mapping import MappingOptions, map_row
from bento_destination.rows import iter_rows
from bento_destination.send import BatchOutcome
from bento_destination.sink import _process
from bento_destination.subscriber_fingerprint import subscriber_fingerprint_v2

ROWS = 1000
PLANS = ("free", "pro", "team")


class EncodingClient:
    """Stands in for BentoClient.post: encodes the body like the real client, answers `failed: 0`."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0

    def post(self, path: str, body: Any, **_: Any) -> Any:
        content = json.dumps(body, allow_nan=False).encode()
        self.requests += 1
        self.bytes += len(content)
        return {"results": 1, "failed": 0}


def subscriber_rows(start: int, n: int = ROWS) -> list[dict[str, Any]]:
    return [
        {
            "email": f"User{i}@Example.com",
            "first_name": f"Name {i}",
            "plan": PLANS[i % 3],
            "score": i * 0.5,
            "tags": ["customer", PLANS[i % 3]],
            "company": None,
        }
        for i in range(start, start + n)
    ]


def event_rows(start: int, n: int = ROWS) -> list[dict[str, Any]]:
    base = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    return [
        {
            "email": f"user{i}@example.com",
            "type": "$purchase",
            "date": base + dt.timedelta(seconds=i),
            "fields__plan": PLANS[i % 3],
            "details__cart__total": i * 1.25,
            "details__cart__items": i % 7,
            "unique_key": f"order-{i}",
            "note": None,
        }
        for i in range(start, start + n)
    ]


MAKERS: dict[str, tuple[str, Callable[[int], list[dict[str, Any]]]]] = {
    "subscribers": ("subscribers", subscriber_rows),
    "events": ("events", event_rows),
}


def make_batch(table: str, form: str, start: int) -> Any:
    rows = MAKERS[table][1](start)
    return pa.RecordBatch.from_pylist(rows) if form == "arrow" else rows


def run_batch(items: Any, table: str, workdir: str, ledger: bool) -> BatchOutcome:
    outcome = BatchOutcome()
    options = LedgerOptions(sync_ledger=ledger)
    changes = batch_changes(options, workdir, "bench-site", "bench-load", table, table, outcome)
    client = EncodingClient()
    _process(items, table, table, cast(BentoClient, client), outcome, MappingOptions(), changes)
    if outcome.rejected or outcome.sent != ROWS:
        raise RuntimeError(f"unexpected outcome: sent {outcome.sent}, rejected {dict(outcome.rejected_by_reason)}")
    return outcome


_next_start = iter(range(0, 10**12, 1_000_000))


def new_batch(table: str, form: str) -> Any:
    """A batch of people never seen before (the ledger would skip rows it has acknowledged)."""
    return make_batch(table, form, next(_next_start))


def measure(table: str, form: str, ledger: bool, repeats: int, workdir: str) -> tuple[float, float]:
    """(median wall ms, median CPU ms of this thread) per 1000-row batch; batches are built beforehand."""
    batches = [new_batch(table, form) for _ in range(repeats + 1)]
    run_batch(batches[0], table, workdir, ledger)  # warm-up: imports, ledger opening, regex caches
    wall, cpu = [], []
    for items in batches[1:]:
        started, started_cpu = time.perf_counter(), time.thread_time()
        run_batch(items, table, workdir, ledger)
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def throughput(table: str, form: str, ledger: bool, threads: int, per_thread: int, workdir: str) -> float:
    """Batches per second when `threads` threads (dlt's parallel load jobs) run the sink side by side."""
    batches = [new_batch(table, form) for _ in range(threads * per_thread)]
    run_batch(new_batch(table, form), table, workdir, ledger)
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda items: run_batch(items, table, workdir, ledger), batches))
    return len(batches) / (time.perf_counter() - started)


# --------------------------------------------------------------------------- whole batches (issue 15, claim b)

WHOLE_ROWS = 100_000


def whole_batch_tables(rows: int) -> dict[str, pa.Table]:
    """The destination benchmark's input (email, first_name, plan, score), and a wider one with tags and a date."""
    ids = range(rows)
    narrow = pa.table({
        "email": [f"bench{i:07d}@example.com" for i in ids],
        "first_name": [f"Person {i}" for i in ids],
        "plan": [PLANS[i % 3] for i in ids],
        "score": [i % 1000 for i in ids],
    })
    base = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
    wide = narrow.append_column("ratio", pa.array([i * 0.25 for i in ids])).append_column(
        "signed_up_at", pa.array([base + dt.timedelta(seconds=i) for i in ids], pa.timestamp("us", "UTC"))
    ).append_column("tags", pa.array([["customer", PLANS[i % 3]] for i in ids])).append_column(
        "unsubscribed", pa.array([i % 50 == 0 for i in ids])
    )
    return {"4 columns": narrow, "8 columns (+float, timestamp, tags list, unsubscribed)": wide}


def batch_mapper(table: pa.Table, dicts: bool, chunk: int = ROWS) -> int:
    """map_subscriber_batch per `chunk`-row slice, with payload dicts of every row (a first load) or without."""
    sent = 0
    for batch in table.to_batches(max_chunksize=chunk):
        mapped = map_subscriber_batch(batch, MappingOptions())
        rows = mapped.sendable()
        sent += len(mapped.payloads(rows)[0]) if dicts else len(rows)
    return sent


def per_row(table: pa.Table) -> int:
    """What the sink does today per row: iter_rows, map_row, and the version 2 fingerprint."""
    sent = 0
    for batch in table.to_batches(max_chunksize=ROWS):
        for row in iter_rows(batch):
            mapped = map_row("subscribers", row, MappingOptions())
            subscriber_fingerprint_v2(mapped.payload, mapped.commands)
            sent += 1
    return sent


def plain_loop(table: pa.Table) -> int:
    """The plain loop's own work before sending: the DataFrame to dicts (`df.to_dict("records")`)."""
    return len(table.to_pandas().to_dict("records"))


def whole_batch(rows: int, repeats: int) -> None:
    """Rows per second of each way, best of `repeats`, side by side in one run."""
    ways: dict[str, Callable[[pa.Table], int]] = {
        "batch mapper + v2 fingerprints + payload dicts": lambda t: batch_mapper(t, True),
        "batch mapper + v2 fingerprints, no dicts (unchanged rows)": lambda t: batch_mapper(t, False),
        "batch mapper, whole table as one batch, + payload dicts": lambda t: batch_mapper(t, True, t.num_rows),
        "batch mapper, whole table as one batch, no dicts": lambda t: batch_mapper(t, False, t.num_rows),
        "per row: iter_rows + map_row + v2 fingerprint": per_row,
        "plain loop: DataFrame to dicts": plain_loop,
    }
    print(f"{rows:,} rows, 1000-row batches unless said, rows/s (best of {repeats})")
    for title, table in whole_batch_tables(rows).items():
        print(f"\n{title}")
        rates: dict[str, float] = {}
        for way, run in ways.items():
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                if run(table) != rows:
                    raise RuntimeError(f"{way}: not every row was mapped")
                best = min(best, time.perf_counter() - started)
            rates[way] = rows / best
        plain = rates["plain loop: DataFrame to dicts"]
        for way, rate in rates.items():
            print(f"  {way:<58} {rate:>11,.0f} rows/s  {rate / plain:5.2f}x the plain loop")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--profile", metavar="TABLE-FORM", help="cProfile one case, e.g. subscribers-list")
    parser.add_argument("--no-ledger", action="store_true", help="with --profile: sync_ledger=False")
    parser.add_argument("--whole-batch", action="store_true", help="100k rows: batch mapper vs map_row vs to_dict")
    parser.add_argument("--rows", type=int, default=WHOLE_ROWS, help="with --whole-batch: rows of the table")
    args = parser.parse_args()
    if args.whole_batch:
        whole_batch(args.rows, 3)
        return
    workdir = tempfile.mkdtemp(prefix="bench-mapping-")
    try:
        if args.profile:
            table, form = args.profile.split("-")
            items = [new_batch(table, form) for _ in range(2)]
            run_batch(items[0], table, workdir, not args.no_ledger)
            profiler = cProfile.Profile()
            profiler.enable()
            run_batch(items[1], table, workdir, not args.no_ledger)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(35)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return
        print(f"ms per {ROWS}-row batch, median of {args.repeats}: wall / CPU of the sink's thread")
        print(f"{'table':<12} {'input':<7} {'ledger on':>15} {'ledger off':>15}")
        for table in ("subscribers", "events"):
            for form in ("list", "arrow"):
                on = measure(table, form, True, args.repeats, workdir)
                off = measure(table, form, False, args.repeats, workdir)
                print(f"{table:<12} {form:<7} {on[0]:>7.1f} / {on[1]:>5.1f} {off[0]:>7.1f} / {off[1]:>5.1f}")
        print(f"\n{args.threads} threads side by side (dlt's parallel load jobs), batches per second:")
        for table in ("subscribers", "events"):
            for ledger in (True, False):
                rate = throughput(table, "arrow", ledger, args.threads, 5, workdir)
                print(f"{table:<12} arrow   ledger {'on ' if ledger else 'off'} {rate:6.1f} batches/s")
    finally:
        close_ledgers()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
