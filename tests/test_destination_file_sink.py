"""The sink reads whole load files: one DataFrame, one file, requests side by side, exact resume.

A plain `pipeline.run(df, table_name=...)` gives dlt one load file and one load job; the sink sends its
requests in parallel (the emulator's log shows them overlapping), records each acknowledged request in
the load package's state, and a stopped load resumes without sending an acknowledged request again and
without skipping a row. A lost answer (applied, then the connection dropped) is the only way a request
reaches Bento twice.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import dlt
import pandas as pd
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from bento_api.emulator import BentoEmulator, Fault
from bento_destination import bento
from bento_destination.file_progress import STATE_PREFIX, WINDOW_ROWS, window_span
from bento_destination.runcontext import RunCancel, bento_run, end_plain_runs

LATENCY = 0.3


def frame(rows: int) -> pd.DataFrame:
    return pd.DataFrame({"email": [f"f{i:06d}@example.com" for i in range(rows)], "plan": ["pro"] * rows})


def applied(emu: BentoEmulator) -> list[tuple[str, ...]]:
    return [tuple(r.emails) for r in emu.requests(path="/batch/subscribers") if r.status == 200]


def test_one_dataframe_is_one_file_sent_with_requests_in_flight_side_by_side(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    emu.add_fault(Fault(kind="latency", seconds=LATENCY, path_prefix="/batch"))
    pipeline = dlt.pipeline("one_frame", pipelines_dir=str(tmp_path),
                            destination=bento(**emu.credentials, requests_per_minute=6_000))
    try:
        info = pipeline.run(frame(10_000), table_name="subscribers")
    finally:
        end_plain_runs()
    [package] = info.load_packages
    files = [job for jobs in package.jobs.values() for job in jobs if job.job_file_info.table_name == "subscribers"]
    assert len(files) == 1  # nothing split by the caller: one file, one load job
    arrivals = sorted(r.t for r in emu.requests(path="/batch/subscribers"))
    assert len(arrivals) == 10 and len(emu.store.subscribers) == 10_000
    # a request arrived while another was still waiting out its latency: they were in flight together
    overlapping = max(sum(1 for t in arrivals if start <= t < start + LATENCY) for start in arrivals)
    assert overlapping >= 4


def test_a_stopped_load_resumes_mid_file_without_resending_and_lost_answers_are_the_only_repeats(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    rows = sum(window_span(3)) + WINDOW_ROWS  # several windows of one file, the last a full one
    emu.add_fault(Fault(kind="drop_after_apply", count=2, path_prefix="/batch/subscribers"))
    emu.add_fault(Fault(kind="latency", seconds=0.05, path_prefix="/batch"))
    pipeline = dlt.pipeline("stopped", pipelines_dir=str(tmp_path),
                            destination=bento(**emu.credentials, requests_per_minute=600))
    cancel = RunCancel()

    def stop_after_ten() -> None:
        while len(applied(emu)) < 10:
            time.sleep(0.01)
        cancel.cancel()

    watcher = threading.Thread(target=stop_after_ten, daemon=True)
    watcher.start()
    with pytest.raises(PipelineStepFailed), bento_run(pipeline, cancel=cancel):
        pipeline.run(frame(rows), table_name="subscribers")
    watcher.join(5)
    assert pipeline.has_pending_data
    first = len(applied(emu))
    assert 10 <= first < rows // 1000  # stopped mid-file
    [load_id] = pipeline.list_normalized_load_packages()
    state = pipeline.get_load_package_state(load_id)["destination_state"]
    assert any(key.startswith(STATE_PREFIX + "subscribers.") for key in state)  # progress of the file, per request

    with bento_run(pipeline):
        pipeline.load()

    assert not pipeline.has_pending_data
    assert len(emu.store.subscribers) == rows  # no row skipped
    requests = applied(emu)
    again = [r for r, n in Counter(requests).items() if n > 1]
    dropped = {tuple(r.emails) for r in emu.requests(path="/batch/subscribers") if r.dropped}
    assert len(dropped) == 2 and set(again) <= dropped  # only a lost answer made a request arrive twice
    assert all(n == 1 for r, n in Counter(requests[first:]).items() if r not in dropped)
    assert not set(requests[first:]) & (set(requests[:first]) - dropped)  # nothing acknowledged was sent again


def test_a_file_planned_with_the_earlier_window_schedule_resumes_in_its_windows(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bento_destination import file_progress

    # a package the first windowed release planned: its windows of schedule 1, its state without "schedule"
    monkeypatch.setitem(file_progress.SCHEDULES, file_progress.SCHEDULE, file_progress.SCHEDULES[1])
    rows = 34_000  # schedule 1: windows of 2,000, 3,000, 5,000, 8,000, 12,000, then 4,000 rows
    emu.add_fault(Fault(kind="latency", seconds=0.05, path_prefix="/batch"))
    pipeline = dlt.pipeline("old_windows", pipelines_dir=str(tmp_path),
                            destination=bento(**emu.credentials, requests_per_minute=600))
    cancel = RunCancel()

    def stop_after_twelve() -> None:
        while len(applied(emu)) < 12:
            time.sleep(0.01)
        cancel.cancel()

    watcher = threading.Thread(target=stop_after_twelve, daemon=True)
    watcher.start()
    with pytest.raises(PipelineStepFailed), bento_run(pipeline, cancel=cancel):
        pipeline.run(frame(rows), table_name="subscribers")
    watcher.join(5)
    first = len(applied(emu))
    assert 12 <= first < rows // 1000
    [load_id] = pipeline.list_normalized_load_packages()
    storage = pipeline._get_load_storage().normalized_packages
    state = storage.get_load_package_state(load_id)
    entries = [v for k, v in state["destination_state"].items() if k.startswith(STATE_PREFIX)]
    assert entries and all(entry.pop("schedule") == file_progress.SCHEDULE for entry in entries)
    storage.save_load_package_state(load_id, state)
    monkeypatch.undo()  # this release's schedule again: the file must still be read in its own windows

    with bento_run(pipeline):
        pipeline.load()
    assert not pipeline.has_pending_data
    assert len(emu.store.subscribers) == rows  # no row skipped
    requests = applied(emu)
    assert len(requests) == len(set(requests)) == rows // 1000  # none sent twice
