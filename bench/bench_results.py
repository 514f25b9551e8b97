"""What the sync results cost: a 100,000-row `sync()` with and without them (issue 16).

Each run sends N new subscribers (fresh emails, so every row is sent and gets a row record) to the
emulator in its own process (no rate limit, no latency), alternating results off and on, and reports
the whole `sync()` wall time of each. With results on, the sink appends one short line per sent row to
a spool file and `sync()` loads the spool, the rejects and the report into the DuckDB results file.

    .venv/bin/python -m bench.bench_results --rows 100000 --repeat 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .emulator_process import emulator_process


def rows(run: int, count: int) -> list[dict[str, Any]]:
    return [{"email": f"r{run}-{i:07d}@example.com", "first_name": f"P{i}", "plan": ("free", "pro")[i % 2]}
            for i in range(count)]


#: seconds spent writing the results tables (after the load), per run with results on
WRITES: list[float] = []


def _timing_record_results() -> None:
    """Time `record_results` as sync() calls it, to tell the write after the load from the sink's spooling."""
    import bento_destination.sync as sync_module

    original = sync_module.record_results

    def timed(*args: Any, **kwargs: Any) -> bool:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            WRITES.append(time.perf_counter() - started)

    sync_module.record_results = timed


def timed_sync(credentials: dict[str, Any], folder: Path, run: int, count: int, results: bool) -> float:
    from bento_destination.sync import balanced_file_rows, sync

    data = rows(run, count)
    started = time.perf_counter()
    sync(data, pipeline_name=f"bench_{run}", pipelines_dir=folder, table_name="subscribers", out=lambda _: None,
         file_max_items=balanced_file_rows(count), requests_per_minute=1e6, results=results, **credentials)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each side, alternating")
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    _timing_record_results()
    with emulator_process(["--no-rate-limit", "--no-log-bodies", "--subscribers", "0"]) as emu, \
            tempfile.TemporaryDirectory() as tmp:
        for run in range(args.repeat * 2):
            side = ("off", "on")[run % 2]
            seconds[side].append(timed_sync(emu.credentials, Path(tmp), run, args.rows, side == "on"))
            emu.reset_log()
    off, on = statistics.median(seconds["off"]), statistics.median(seconds["on"])
    print(json.dumps({"rows": args.rows, "seconds": seconds, "median_off": round(off, 2),
                      "median_on": round(on, 2), "cost_share": round(on / off - 1, 3),
                      "results_write_seconds": [round(w, 3) for w in WRITES]}, indent=2))


if __name__ == "__main__":
    main()
