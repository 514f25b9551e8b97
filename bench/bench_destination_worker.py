"""One side of the destination benchmark, run in its own process so its peak RSS is its own.

    python -m bench.bench_destination_worker ours|plain|ours-stream|plain-run|plain-run-unchecked|cli-sync INPUT.parquet
        SPEC_JSON

`ours`: the DataFrame through dlt and the bento destination, timing extract+normalize and load apart.
`plain-run`: `pipeline.run(df, table_name="subscribers")` of the whole DataFrame (nothing split), after
`check_credentials(pipeline=...)` as the README shows it; `plain-run-unchecked`: the same without that call.
`cli-sync`: `bento-dlt sync --from INPUT.parquet --as subscribers`, the command line in its own process.
`ours-stream`: the shipped file path (`pipelines.dataframe_to_bento.run(read_file(...))`), never
reading the file whole. `plain`: what Bento's SDKs lead to: the DataFrame to dicts, 1000-row chunks,
one POST after another with httpx, sleeping on 429. Prints one JSON line; `maxrss_mb` is this
process's peak resident set (ru_maxrss).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from typing import Any

CHUNK = 1000


def maxrss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # KiB on Linux


def ours(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    import dlt
    import pandas as pd

    from bento_destination import bento, check_credentials, check_run
    from bento_destination.sync import balanced_file_rows, file_rotation
    from pipelines.dataframe_to_bento import arrow_slices

    credentials, rpm = spec["credentials"], float(spec["rpm"])
    frame = pd.read_parquet(path)
    started = time.monotonic()
    pipeline = dlt.pipeline(
        "bench_destination", pipelines_dir=tempfile.mkdtemp(prefix="bench_dest_"),
        destination=bento(**credentials, requests_per_minute=rpm, **spec.get("destination", {})),
    )
    check_credentials(pipeline=pipeline)  # its run keeps the proof: the load pays no second GET
    with file_rotation(balanced_file_rows(len(frame))):  # as pipelines.dataframe_to_bento.run chooses
        pipeline.extract(dlt.resource(arrow_slices(frame), name="subscribers"))
        pipeline.normalize()
    prepared = time.monotonic()
    info = pipeline.load()
    loaded = time.monotonic()
    table = check_run(pipeline, info)[0].tables["subscribers"]
    jobs = sum(
        1 for package in info.load_packages for job in package.jobs["completed_jobs"]
        if job.job_file_info.table_name == "subscribers"
    )
    return {
        "rows": len(frame), "sent": table.sent, "rejected": table.rejected, "load_files": jobs,
        "requests": table.requests, "rate_limited": table.rate_limited,
        "extract_normalize_seconds": round(prepared - started, 3),
        "load_seconds": round(loaded - prepared, 3), "total_seconds": round(loaded - started, 3),
        "load_started_monotonic": prepared,  # CLOCK_MONOTONIC is system-wide: comparable with the emulator's log
        "maxrss_mb": maxrss_mb(),
    }


def ours_stream(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    from pipelines.dataframe_to_bento import read_file, run

    started = time.monotonic()
    reports = run(
        read_file(path), "subscribers", pipeline_name="bench_destination_stream",
        pipelines_dir=tempfile.mkdtemp(prefix="bench_dest_"),
        out=lambda _: None, requests_per_minute=float(spec["rpm"]), **spec["credentials"],
        **spec.get("destination", {}),
    )
    elapsed = time.monotonic() - started
    table = reports[-1].tables["subscribers"]
    return {
        "rows": table.received, "sent": table.sent, "requests": table.requests,
        "total_seconds": round(elapsed, 3), "maxrss_mb": maxrss_mb(),
    }


def plain_run(path: str, spec: dict[str, Any], checked: bool = True) -> dict[str, Any]:
    """The README's first example: `pipeline.run(df, table_name=...)` of one whole DataFrame, nothing split,
    after `check_credentials(pipeline=...)` as the README shows it (its proof spares the load step its GET);
    `checked=False` leaves that call out, so the load step checks the credentials itself."""
    import dlt
    import pandas as pd

    from bento_destination import bento, check_credentials, check_run

    credentials, rpm = spec["credentials"], float(spec["rpm"])
    frame = pd.read_parquet(path)
    pipeline = dlt.pipeline(
        "bench_plain_run", pipelines_dir=tempfile.mkdtemp(prefix="bench_dest_"),
        destination=bento(**credentials, requests_per_minute=rpm, **spec.get("destination", {})),
    )
    if checked:
        check_credentials(pipeline=pipeline)
    started = time.monotonic()
    info = pipeline.run(frame, table_name="subscribers")
    elapsed = time.monotonic() - started
    table = check_run(pipeline, info)[0].tables["subscribers"]
    trace = pipeline.last_trace
    assert trace is not None, "dlt keeps a trace of the run"
    [load_step] = [step for step in trace.steps if step.step == "load"]
    jobs = sum(
        1 for package in info.load_packages for job in package.jobs["completed_jobs"]
        if job.job_file_info.table_name == "subscribers"
    )
    return {
        "rows": len(frame), "sent": table.sent, "rejected": table.rejected, "load_files": jobs,
        "requests": table.requests, "rate_limited": table.rate_limited,
        "load_seconds": round((load_step.finished_at - load_step.started_at).total_seconds(), 3),
        "total_seconds": round(elapsed, 3), "maxrss_mb": maxrss_mb(),
    }


def cli_sync(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    """`bento-dlt sync --from INPUT --as subscribers` as a user runs it (its own process, its report on stdout)."""
    import os
    import subprocess

    credentials = spec["credentials"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTO_", "DESTINATION__", "DATA_WRITER__"))}
    env.update({f"BENTO_{k.upper()}": v for k, v in credentials.items()})
    folder = tempfile.mkdtemp(prefix="bench_dest_")
    command = [os.path.join(os.path.dirname(sys.executable), "bento-dlt"), "sync", "--from", path, "--as",
               "subscribers", "--pipelines-dir", folder, "--requests-per-minute", str(spec["rpm"]), "--json"]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"bento-dlt sync failed ({done.returncode}):\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return {"rows": summary.get("received", summary.get("rows")), "summary": summary,
            "total_seconds": round(elapsed, 3), "started_monotonic": started}


def plain(path: str, spec: dict[str, Any]) -> dict[str, Any]:
    import httpx
    import pandas as pd

    credentials = spec["credentials"]
    started = time.monotonic()
    frame = pd.read_parquet(path)
    rows = frame.to_dict("records")
    rate_limited = requests = 0
    with httpx.Client(
        base_url=credentials["base_url"], auth=(credentials["publishable_key"], credentials["secret_key"]),
        params={"site_uuid": credentials["site_uuid"]}, headers={"User-Agent": "plain-loop-benchmark/1.0"},
        timeout=60.0,
    ) as client:
        for start in range(0, len(rows), CHUNK):
            while True:
                requests += 1
                response = client.post("/batch/subscribers", json={"subscribers": rows[start : start + CHUNK]})
                if response.status_code == 429:
                    rate_limited += 1
                    time.sleep(float(response.headers.get("Retry-After") or 1))
                    continue
                response.raise_for_status()
                break
    elapsed = time.monotonic() - started
    return {
        "rows": len(rows), "requests": requests, "rate_limited": rate_limited,
        "total_seconds": round(elapsed, 3), "maxrss_mb": maxrss_mb(),
    }


def main() -> None:
    who, path, spec = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    side = {
        "ours": ours, "ours-stream": ours_stream, "plain": plain, "plain-run": plain_run, "cli-sync": cli_sync,
        "plain-run-unchecked": lambda path, spec: plain_run(path, spec, checked=False),
    }[who]
    print(json.dumps({"who": who, **side(path, spec)}))


if __name__ == "__main__":
    main()
