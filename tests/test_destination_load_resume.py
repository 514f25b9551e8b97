"""Issue 6: a load killed with SIGKILL resumes at the first unacknowledged batch.

A subprocess runs the DataFrame pipeline (20,000 subscribers in 4 load files, so 4 jobs load side by
side) against the emulator in this process, which answers 20% of batch requests with a 502, some with
a 429, and adds a little latency. When the emulator's log shows N acknowledged batch requests, the
subprocess is killed; a new subprocess runs `pipeline.load()` on the same pipelines_dir, and is killed
in turn, three times, then allowed to finish. Every subscriber must arrive, and a batch (identified by
its sequence of emails) may be applied twice only if it was in flight at a kill: among the last requests
applied before it, no more than the client's cap on requests in flight.

This file is also the subprocess's program: `python test_destination_load_resume.py run|load SPEC`.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig, Fault
from bento_api.limits import DEFAULT_MAX_IN_FLIGHT

ROWS = 20_000
FILE_ROWS = 5_000  # file_max_items: 4 load files, 4 parallel jobs, each with its own resume offsets
BATCH = 1_000
KILL_AFTER = (3, 8, 13)  # acknowledged batch requests seen in the emulator's log before each kill
PIPELINE = "resume_after_kill"
CLIENT_RPM = 1_200.0  # paced to 20 requests/s so the kills land mid-load


@pytest.fixture
def emu() -> Iterator[BentoEmulator]:
    config = EmulatorConfig(
        requests_per_minute=1e7, stats_requests_per_hour=1e9, bucket_capacity=1e6, subscribers=0, seed=6
    )
    with BentoEmulator(config) as emulator:
        emulator.add_fault(Fault(kind="rate_limit", probability=0.1, path_prefix="/batch", seconds=1))
        emulator.add_fault(Fault(kind="server_error", probability=0.2, path_prefix="/batch", status=502))
        emulator.add_fault(Fault(kind="latency", seconds=0.05, path_prefix="/batch"))
        yield emulator


def child(mode: str, spec: dict[str, Any]) -> None:
    """The loading subprocess: `run` sends the frame through the pipeline, `load` resumes the pending package."""
    import dlt
    import pandas as pd

    from bento_destination import bento
    from pipelines import dataframe_to_bento

    kwargs = {**spec["credentials"], "requests_per_minute": CLIENT_RPM}
    if mode == "run":
        frame = pd.DataFrame(
            {"email": [f"kill{i:05d}@example.com" for i in range(ROWS)], "first_name": [f"K{i}" for i in range(ROWS)]}
        )
        dataframe_to_bento.run(
            frame, "subscribers", pipeline_name=PIPELINE, pipelines_dir=spec["pipelines_dir"],
            file_max_items=FILE_ROWS, out=lambda _: None, **kwargs,
        )
    else:
        pipeline = dlt.pipeline(PIPELINE, pipelines_dir=spec["pipelines_dir"], destination=bento(**kwargs))
        assert pipeline.has_pending_data, "the killed load left no pending package"
        pipeline.load()


def acknowledged(emu: BentoEmulator) -> list[tuple[str, ...]]:
    """Each applied (200) subscribers request, as its sequence of emails, in the emulator's log order."""
    return [tuple(r.emails) for r in emu.requests(path="/batch/subscribers") if r.status == 200]


def start(mode: str, spec: dict[str, Any], logs: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTO_", "DESTINATION__", "DATA_WRITER__"))}
    out = (logs / f"{mode}-{time.monotonic_ns()}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, __file__, mode, json.dumps(spec)], stdout=out, stderr=subprocess.STDOUT, env=env
    )


def kill_when(proc: subprocess.Popen[bytes], emu: BentoEmulator, seen: int, deadline: float = 40.0) -> None:
    stop_at = time.monotonic() + deadline
    while len(acknowledged(emu)) < seen:
        assert proc.poll() is None, f"the loader exited (code {proc.returncode}) before {seen} batches"
        assert time.monotonic() < stop_at, f"fewer than {seen} batches within {deadline}s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.4)  # requests that reached the emulator before the kill finish and are logged


def test_killed_loads_resume_without_resending_acknowledged_batches(emu: BentoEmulator, tmp_path: Path) -> None:
    spec = {"pipelines_dir": str(tmp_path / "pipelines"), "credentials": dict(emu.credentials)}
    boundaries: list[int] = []
    for number, seen in enumerate(KILL_AFTER):
        kill_when(start("run" if number == 0 else "load", spec, tmp_path), emu, seen)
        boundaries.append(len(acknowledged(emu)))
    last = start("load", spec, tmp_path)
    code = last.wait(timeout=60)
    assert code == 0, "\n".join(log.read_text()[-3000:] for log in sorted(tmp_path.glob("*.log")))

    assert len(emu.store.subscribers) == ROWS  # every subscriber arrived
    batches = acknowledged(emu)
    segments = [0, *boundaries, len(batches)]  # log positions where each process's requests start

    def segment(position: int) -> int:
        return next(s for s in range(len(segments) - 1) if position < segments[s + 1])

    applied: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for position, batch in enumerate(batches):
        assert len(batch) == BATCH
        applied[batch].append(position)
    assert sum(len(b) for b in applied) == ROWS  # 20 distinct batches of 1000
    sent_again: dict[int, list[tuple[str, ...]]] = defaultdict(list)  # by the killed process that sent it first
    for batch, positions in applied.items():
        for earlier, later in itertools.pairwise(positions):
            process = segment(later)
            assert process > segment(earlier), f"a batch was applied twice by one process: {batch[0]}"
            # it was in flight at the kill: among the last requests the killed process had applied (the client
            # holds at most DEFAULT_MAX_IN_FLIGHT requests in flight; each is recorded done once answered)
            killed = segment(earlier)
            assert earlier >= segments[killed + 1] - DEFAULT_MAX_IN_FLIGHT, (
                f"{batch[0]}: a batch acknowledged well before a kill was sent again"
            )
            sent_again[killed].append(batch)
    for process, again in sent_again.items():
        assert len(again) <= DEFAULT_MAX_IN_FLIGHT, f"process {process}: more sent again than were in flight: {again}"
    statuses = [r.status for r in emu.requests(path="/batch/subscribers")]
    assert {200, 502, 429} <= set(statuses)
    print(json.dumps({  # the figures quoted in BENCHMARKS.md
        "requests_by_status": {str(k): statuses.count(k) for k in sorted(set(statuses))},
        "applied_batches": len(batches), "distinct_batches": len(applied),
        "sent_again_by_process": [len(sent_again.get(k, [])) for k in range(len(segments) - 1)],
    }))


if __name__ == "__main__":
    child(sys.argv[1], json.loads(sys.argv[2]))
