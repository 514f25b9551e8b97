"""Sync ledger benchmark (issue 8): re-syncing an unchanged table against a full resend at Bento's budget.

Claim: re-syncing an unchanged N-row subscribers table sends 0 batch requests; with 1% changed it sends at
most ceil(N/100/1000) + (load files) batch requests. The emulator runs in its own process
(`--no-log-bodies`) with its limit raised so the first (seeding) load is quick; the client's budget for
the loads is raised too. Figures:

- measured: wall time of the unchanged re-sync and of the 1%-changed re-sync (whole `sync()`: extract,
  normalize, the ledger pre-pass, load), and every request count (from the emulator's log);
- computed: the full resend's time at budget R requests/min, from its request count (requests x 60 / R),
  a lower bound (the budget allows no more).

    .venv/bin/python -m bench.bench_ledger --rows 1000000 --budget 60
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from bento_destination.changes import close_ledgers
from bento_destination.sync import sync

from .emulator_process import emulator_process

CHUNK = 10_000


def rows(n: int, changed_every: int | None = None) -> Iterator[list[dict[str, Any]]]:
    """n subscribers in lists of 10,000; with `changed_every`, every such row gets a new plan."""
    for start in range(0, n, CHUNK):
        yield [
            {
                "email": f"user{i}@example.com",
                "plan": "team" if changed_every and i % changed_every == 0 else ["free", "pro"][i % 2],
                "score": i,
            }
            for i in range(start, min(n, start + CHUNK))
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--budget", type=float, default=60.0, help="Bento's batch budget, requests/min")
    parser.add_argument("--file-max-items", type=int, default=100_000)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bench-ledger-")
    emu_args = ["--requests-per-minute", "10000000", "--capacity", "1000000", "--no-log-bodies", "--subscribers", "0"]
    result: dict[str, Any] = {"rows": args.rows, "budget_rpm": args.budget, "file_max_items": args.file_max_items}
    try:
        with emulator_process(emu_args) as emu:

            def run(data: Any, label: str) -> tuple[float, int, Any]:
                emu.reset_log()
                started = time.perf_counter()
                reports = sync(
                    data, pipeline_name="bench_ledger", pipelines_dir=workdir, table_name="subscribers",
                    file_max_items=args.file_max_items, out=lambda _: None, **dict[str, Any](emu.credentials),
                    requests_per_minute=1_000_000.0,
                )
                elapsed = time.perf_counter() - started
                close_ledgers()
                requests = [r for r in emu.log() if r["path"] == "/batch/subscribers"]
                table = reports[-1].tables["subscribers"]
                print(f"{label}: {elapsed:.1f}s, {len(requests)} batch requests, sent {table.sent}, "
                      f"unchanged {table.unchanged}, changed {table.changed}", flush=True)
                return elapsed, len(requests), table

            seed_s, full_requests, _ = run(rows(args.rows), "first load (seeds Bento and the ledger)")
            same_s, same_requests, same = run(rows(args.rows), "unchanged re-sync")
            changed_s, changed_requests, changed = run(rows(args.rows, changed_every=100), "1% changed re-sync")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    files = math.ceil(args.rows / args.file_max_items)
    full_at_budget = full_requests * 60.0 / args.budget
    bound_changed = math.ceil(args.rows / 100 / 1000) + files
    result.update(
        {
            "first_load_seconds_measured_unpaced": round(seed_s, 1),
            "full_resend_requests": full_requests,
            "full_resend_seconds_at_budget_computed": round(full_at_budget, 1),
            "unchanged_resync_seconds_measured": round(same_s, 1),
            "unchanged_resync_batch_requests": same_requests,
            "unchanged_rows_reported": same.unchanged,
            "changed_1pct_seconds_measured": round(changed_s, 1),
            "changed_1pct_batch_requests": changed_requests,
            "changed_1pct_bound": bound_changed,
            "changed_rows_reported": changed.changed,
            "speedup_unchanged_vs_full_resend": round(full_at_budget / same_s, 1),
        }
    )
    print(json.dumps(result, indent=2))
    held = same_requests == 0 and changed_requests <= bound_changed
    print("HOLDS" if held else "DOES NOT HOLD", "(0 requests unchanged; 1% changed within ceil(N/100/1000) + files)")


if __name__ == "__main__":
    main()
