"""Destination benchmark: our dlt destination against a plain loop, side by side in one run.

The plain loop is how Bento's SDKs are used: the DataFrame to dicts, 1000-row chunks, one POST after
another with httpx, sleeping on 429. Both talk to the emulator in its own process; each side runs in
its own process (bench/bench_destination_worker.py) so its peak RSS is its own.

Claims (issue 6):
  (a) 100,000 subscribers, budget R requests/min, 300 ms latency per request: our load step
      (`pipeline.load()` after `extract()` and `normalize()`) takes at most 1.05 x the bound
      100 * 60 / R seconds, and meets no 429; the plain loop's time and 429s are shown;
  (b) unthrottled rows per second of both (no rate limit, no latency);
  (c) peak RSS pushing 1,000,000 rows: ours (streaming the Parquet file) at most 300 MB.

    .venv/bin/python -m bench.bench_destination --rpm 60,100,600
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .emulator_process import EmulatorProcess, emulator_process

RSS_LIMIT_MB = 300.0
TIME_FACTOR = 1.05


def write_input(path: Path, rows: int) -> None:
    """Subscribers with a few custom fields, as a Parquet file both sides read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    for start in range(0, rows, 100_000):
        ids = range(start, min(rows, start + 100_000))
        table = pa.table({
            "email": [f"bench{i:07d}@example.com" for i in ids],
            "first_name": [f"Person {i}" for i in ids],
            "plan": [("free", "pro", "team")[i % 3] for i in ids],
            "score": [i % 1000 for i in ids],
        })
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


#: the sync ledger (issue 8, on by default) off: the sending path alone
NO_LEDGER = {"sync_ledger": False}


def side(
    who: str, path: Path, emu: EmulatorProcess, rpm: float, destination: dict[str, Any] | None = None
) -> dict[str, Any]:
    spec = json.dumps({"credentials": emu.credentials, "rpm": rpm, "destination": destination or {}})
    done = subprocess.run(
        [sys.executable, "-m", "bench.bench_destination_worker", who, str(path), spec],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{who} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def statuses(emu: EmulatorProcess) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in emu.log():
        if record["path"] == "/batch/subscribers":
            counts[str(record["status"])] = counts.get(str(record["status"]), 0) + 1
    return counts


def timeline(emu: EmulatorProcess, load_started: float) -> dict[str, float]:
    """Where the load step's time went: first batch request's start, the mean gap between starts, the last."""
    starts = sorted(r["t"] for r in emu.log() if r["path"] == "/batch/subscribers")
    return {
        "first_start_seconds": round(starts[0] - load_started, 3) if starts else 0.0,
        "mean_gap_seconds": round((starts[-1] - starts[0]) / (len(starts) - 1), 4) if len(starts) > 1 else 0.0,
        "last_start_seconds": round(starts[-1] - load_started, 3) if starts else 0.0,
    }


def paced(path: Path, rows: int, rpm: float, latency: float) -> dict[str, Any]:
    args = ["--requests-per-minute", str(rpm), "--capacity", "2", "--fault", f"latency:seconds={latency}",
            "--no-log-bodies", "--subscribers", "0"]
    with emulator_process(args) as emu:
        ours = side("ours", path, emu, rpm)
        ours["emulator_statuses"] = statuses(emu)
        ours["timeline"] = timeline(emu, float(ours.pop("load_started_monotonic")))
        emu.reset_log()
        plain = side("plain", path, emu, rpm)
        plain["emulator_statuses"] = statuses(emu)
    bound = (rows / 1000) * 60.0 / rpm
    ours_429 = ours["emulator_statuses"].get("429", 0)
    return {
        "rows": rows, "budget_rpm": rpm, "latency_seconds": latency, "bound_seconds": round(bound, 2),
        "ours": ours, "plain": plain,
        "ours_load_over_bound": round(ours["load_seconds"] / bound, 4),
        "plain_over_bound": round(plain["total_seconds"] / bound, 4),
        "ours_429": ours_429, "plain_429": plain["emulator_statuses"].get("429", 0),
        "holds": ours["load_seconds"] <= TIME_FACTOR * bound and ours_429 == 0 and ours["sent"] == rows,
    }


def unthrottled(path: Path, rows: int) -> dict[str, Any]:
    with emulator_process(["--no-rate-limit", "--no-log-bodies", "--subscribers", "0"]) as emu:
        ours = side("ours", path, emu, 1e7)
        no_ledger = side("ours", path, emu, 1e7, NO_LEDGER)
        plain = side("plain", path, emu, 1e7)
    ours_rate = rows / ours["total_seconds"]
    plain_rate = rows / plain["total_seconds"]
    return {
        "rows": rows, "ours": ours, "ours_without_ledger": no_ledger, "plain": plain,
        "ours_rows_per_second": round(ours_rate), "ours_load_rows_per_second": round(rows / ours["load_seconds"]),
        "ours_without_ledger_rows_per_second": round(rows / no_ledger["total_seconds"]),
        "plain_rows_per_second": round(plain_rate), "ours_over_plain": round(ours_rate / plain_rate, 3),
    }


def memory(path: Path, rows: int) -> dict[str, Any]:
    with emulator_process(["--no-rate-limit", "--no-log-bodies", "--subscribers", "0"]) as emu:
        ours = side("ours-stream", path, emu, 1e7)
        arrived = int(emu.summary()["objects"]["subscribers"])
        no_ledger = side("ours-stream", path, emu, 1e7, NO_LEDGER)
        plain = side("plain", path, emu, 1e7)
    return {
        "rows": rows, "ours": ours, "ours_without_ledger": no_ledger, "plain": plain,
        "subscribers_after_ours": arrived, "ours_maxrss_mb": ours["maxrss_mb"],
        "ours_without_ledger_maxrss_mb": no_ledger["maxrss_mb"], "plain_maxrss_mb": plain["maxrss_mb"],
        "plain_over_ours": round(plain["maxrss_mb"] / ours["maxrss_mb"], 2),
        "holds": ours["maxrss_mb"] <= RSS_LIMIT_MB and ours["sent"] == rows,
        "holds_without_ledger": no_ledger["maxrss_mb"] <= RSS_LIMIT_MB and no_ledger["sent"] == rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rpm", default="60,100,600", help="budgets of claim (a), requests/min, comma-separated")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds the emulator waits per request in (a)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of claims (a) and (b)")
    parser.add_argument("--rss-rows", type=int, default=1_000_000, help="rows of claim (c)")
    parser.add_argument("--only", default="abc", help="which claims to run, e.g. 'ab'")
    args = parser.parse_args()

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_destination_") as folder:
        small = Path(folder) / "subscribers_small.parquet"
        write_input(small, args.rows)
        if "a" in args.only:
            for rpm in (float(r) for r in args.rpm.split(",")):
                results[f"a_paced_{rpm:g}"] = paced(small, args.rows, rpm, args.latency)
        if "b" in args.only:
            results["b_unthrottled"] = unthrottled(small, args.rows)
        if "c" in args.only:
            big = Path(folder) / "subscribers_big.parquet"
            write_input(big, args.rss_rows)
            results["c_memory"] = memory(big, args.rss_rows)
    print(json.dumps(results, indent=2))
    for key in (k for k in results if k.startswith("a_paced")):
        a = results[key]
        print("HOLDS" if a["holds"] else "DOES NOT HOLD",
              f"(a) at {a['budget_rpm']:g}/min our load step {a['ours_load_over_bound']} x "
              f"the bound {a['bound_seconds']}s "
              f"(<= {TIME_FACTOR}), {a['ours_429']} 429s; plain loop {a['plain_over_bound']} x, {a['plain_429']} 429s; "
              f"ours' timeline {a['ours']['timeline']}")
    if "b_unthrottled" in results:
        b = results["b_unthrottled"]
        print("SHOWN", f"(b) rows/s unthrottled: ours {b['ours_rows_per_second']} (load step alone "
              f"{b['ours_load_rows_per_second']}; without the sync ledger {b['ours_without_ledger_rows_per_second']}), "
              f"plain loop {b['plain_rows_per_second']}")
    if "c_memory" in results:
        c = results["c_memory"]
        print("HOLDS" if c["holds"] else "DOES NOT HOLD",
              f"(c) peak RSS for {c['rows']} rows: ours {c['ours_maxrss_mb']} MB (<= {RSS_LIMIT_MB}), "
              f"plain loop {c['plain_maxrss_mb']} MB")
        print("HOLDS" if c["holds_without_ledger"] else "DOES NOT HOLD",
              f"(c) without the sync ledger: ours {c['ours_without_ledger_maxrss_mb']} MB (<= {RSS_LIMIT_MB})")


if __name__ == "__main__":
    main()
