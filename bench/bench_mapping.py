"""The sink's own Python per 1000-row batch: map and validate rows, the ledger filter, JSON encoding.

Runs the sink's batch routine (`bento_destination.sink._process`) on realistic 1000-row batches, from a
list of dicts (jsonl load files) and from an Arrow RecordBatch (parquet load files), for subscribers and
events, with the sync ledger on (every batch holds new people, so every row is sent, as in a first load)
and off. The client is a stand-in that encodes each request body as the real client does
(`json.dumps(..., allow_nan=False).encode()`) and answers at once: no network, no pacing, so the figure is
the CPU the sink spends per batch, which bounds how many batches one process can send per second.

    .venv/bin/python -m bench.bench_mapping                 # ms per 1000-row batch; batches/s on 10 threads
    .venv/bin/python -m bench.bench_mapping --profile subscribers-list   # cProfile of one case
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
from bento_destination.changes import LedgerOptions, batch_changes, close_ledgers
from bento_destination.mapping import MappingOptions
from bento_destination.send import BatchOutcome
from bento_destination.sink import _process

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--profile", metavar="TABLE-FORM", help="cProfile one case, e.g. subscribers-list")
    parser.add_argument("--no-ledger", action="store_true", help="with --profile: sync_ledger=False")
    args = parser.parse_args()
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
