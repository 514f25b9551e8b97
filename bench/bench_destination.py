"""Destination benchmark: our dlt destination against a plain loop, side by side in one run.

The plain loop is how Bento's SDKs are used: the DataFrame to dicts, 1000-row chunks, one POST after
another with httpx, sleeping on 429. Both talk to the emulator in its own process; each side runs in
its own process (bench/bench_destination_worker.py) so its peak RSS is its own.

Claims (issues 6 and 15):
  (a) 100,000 subscribers, budget R requests/min, 300 ms latency per request, side by side in one run:
      a plain `pipeline.run(df, table_name="subscribers")` of ONE whole DataFrame after
      `check_credentials(pipeline=...)`, as the README shows it (its load step, from dlt's trace; the same
      run without that call is measured and shown too, where the load step sends the check's GET), and
      `bento-dlt sync --from INPUT.parquet` (the command line in its own process; from its first batch
      request to its last answer, in the emulator's log) each take at most 1.05 x the bound 100 * 60 / R
      seconds at 60 and 100/min, 1.08 x at 600/min, and meet no 429 (`--with-loop` adds the plain loop's
      time and 429s);
  (b) unthrottled rows per second (no rate limit, no latency), each side against a fresh emulator: with the
      sync ledger on, our load step at least 0.8 x and our whole run at least 0.5 x the plain loop's;
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
FAST_TIME_FACTOR = 1.08
#: claim (b): with the sync ledger on, the load step at least this share of the plain loop's rows/s, and the
#: whole run (extract, normalize, load) at least RUN_SHARE
LOAD_SHARE = 0.8
RUN_SHARE = 0.5


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


def send_window(emu: EmulatorProcess, latency: float) -> float:
    """Seconds from the first batch request's arrival to the last one's answer (its arrival plus the latency)."""
    starts = sorted(r["t"] for r in emu.log() if r["path"] == "/batch/subscribers")
    return round(starts[-1] - starts[0] + latency, 3) if starts else 0.0


def time_factor(rpm: float) -> float:
    """Claim (a)'s allowance over the bound: 1.05 up to 100 requests/min, 1.08 above (600/min)."""
    return TIME_FACTOR if rpm <= 100 else FAST_TIME_FACTOR


def paced(path: Path, rows: int, rpm: float, latency: float, loop: bool = False) -> dict[str, Any]:
    """Claim (a): a plain `pipeline.run` of the whole DataFrame and `bento-dlt sync`, one after the other
    against one emulator (and the plain loop with `loop`)."""
    args = ["--requests-per-minute", str(rpm), "--capacity", "2", "--fault", f"latency:seconds={latency}",
            "--no-log-bodies", "--subscribers", "0"]
    bound = (rows / 1000) * 60.0 / rpm
    factor = time_factor(rpm)
    with emulator_process(args) as emu:
        run = side("plain-run", path, emu, rpm)
        run["emulator_statuses"] = statuses(emu)
        run["send_seconds"] = send_window(emu, latency)
        emu.reset_log()
        unchecked = side("plain-run-unchecked", path, emu, rpm)
        unchecked["emulator_statuses"] = statuses(emu)
        emu.reset_log()
        cli = side("cli-sync", path, emu, rpm)
        cli["emulator_statuses"] = statuses(emu)
        cli["send_seconds"] = send_window(emu, latency)
        cli["timeline"] = timeline(emu, float(cli.pop("started_monotonic")))
        plain: dict[str, Any] | None = None
        if loop:
            emu.reset_log()
            plain = side("plain", path, emu, rpm)
            plain["emulator_statuses"] = statuses(emu)
    run_429 = run["emulator_statuses"].get("429", 0)
    cli_429 = cli["emulator_statuses"].get("429", 0)
    cli_sent = int(cli["emulator_statuses"].get("200", 0)) * 1000
    result: dict[str, Any] = {
        "rows": rows, "budget_rpm": rpm, "latency_seconds": latency, "bound_seconds": round(bound, 2),
        "allowed_factor": factor, "plain_run": run, "cli_sync": cli,
        "plain_run_load_over_bound": round(run["load_seconds"] / bound, 4),
        "plain_run_unchecked": unchecked,
        "plain_run_unchecked_load_over_bound": round(unchecked["load_seconds"] / bound, 4),
        "plain_run_unchecked_429": unchecked["emulator_statuses"].get("429", 0),
        "cli_sync_send_over_bound": round(cli["send_seconds"] / bound, 4),
        "plain_run_429": run_429, "cli_sync_429": cli_429,
        "holds": (run["load_seconds"] <= factor * bound and cli["send_seconds"] <= factor * bound
                  and run_429 == 0 and cli_429 == 0 and run["sent"] == rows and cli_sent == rows),
    }
    if plain is not None:
        result["plain_loop"] = plain
        result["plain_loop_over_bound"] = round(plain["total_seconds"] / bound, 4)
    return result


def unthrottled(path: Path, rows: int) -> dict[str, Any]:
    """Claim (b). Each side gets a fresh emulator: every side then inserts the same new people (a second side
    against the same emulator would only update them, which costs the emulator less and flatters it)."""

    def fresh(who: str, destination: dict[str, Any] | None = None) -> dict[str, Any]:
        with emulator_process(["--no-rate-limit", "--no-log-bodies", "--subscribers", "0"]) as emu:
            return side(who, path, emu, 1e7, destination)

    plain = fresh("plain")
    ours = fresh("ours")
    no_ledger = fresh("ours", NO_LEDGER)
    ours_rate = rows / ours["total_seconds"]
    plain_rate = rows / plain["total_seconds"]
    return {
        "rows": rows, "ours": ours, "ours_without_ledger": no_ledger, "plain": plain,
        "ours_rows_per_second": round(ours_rate), "ours_load_rows_per_second": round(rows / ours["load_seconds"]),
        "ours_without_ledger_rows_per_second": round(rows / no_ledger["total_seconds"]),
        "plain_rows_per_second": round(plain_rate), "ours_over_plain": round(ours_rate / plain_rate, 3),
        "ours_load_over_plain": round(rows / ours["load_seconds"] / plain_rate, 3),
        "holds": (rows / ours["load_seconds"] >= LOAD_SHARE * plain_rate and ours_rate >= RUN_SHARE * plain_rate
                  and ours["sent"] == rows),
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
    parser.add_argument("--with-loop", action="store_true", help="(a): time the plain loop at each budget too")
    args = parser.parse_args()

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_destination_") as folder:
        small = Path(folder) / "subscribers_small.parquet"
        write_input(small, args.rows)
        if "a" in args.only:
            for rpm in (float(r) for r in args.rpm.split(",")):
                results[f"a_paced_{rpm:g}"] = paced(small, args.rows, rpm, args.latency, args.with_loop)
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
              f"(a) at {a['budget_rpm']:g}/min, bound {a['bound_seconds']}s (<= {a['allowed_factor']} x): "
              f"plain pipeline.run load step {a['plain_run_load_over_bound']} x, {a['plain_run_429']} 429s, "
              f"{a['plain_run']['load_files']} load file(s) (without check_credentials first: "
              f"{a['plain_run_unchecked_load_over_bound']} x, {a['plain_run_unchecked_429']} 429s); "
              f"bento-dlt sync {a['cli_sync_send_over_bound']} x, "
              f"{a['cli_sync_429']} 429s"
              + (f"; plain loop {a['plain_loop_over_bound']} x" if "plain_loop" in a else ""))
    if "b_unthrottled" in results:
        b = results["b_unthrottled"]
        print("HOLDS" if b["holds"] else "DOES NOT HOLD",
              f"(b) rows/s unthrottled: ours {b['ours_rows_per_second']} ({b['ours_over_plain']} x, claim >= "
              f"{RUN_SHARE}), load step alone {b['ours_load_rows_per_second']} ({b['ours_load_over_plain']} x, "
              f"claim >= {LOAD_SHARE}); without the sync ledger {b['ours_without_ledger_rows_per_second']}; "
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
