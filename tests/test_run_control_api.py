"""The run context from Python: `sync(cancel=...)` raises a typed error and leaves signal handlers alone,
`bento_run` locks a plain `pipeline.run` end to end, and a plain run takes the lock on its first batch.

The other process is real: a child interpreter (`python -c`) holds or wants the same lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bento_api.emulator import BentoEmulator, Fault
from bento_destination import BentoBusyError, BentoRunCancelled, RunCancel, bento_run
from bento_destination.runlock import pipeline_lock
from bento_destination.sync import pending_rows, sync

from .destination_support import ENV_PREFIXES, FAST

REPO = Path(__file__).resolve().parents[1]
EVENTS = 3000

CHILD = """
import json, sys, dlt
from bento_destination import bento, bento_run, BentoBusyError
options = json.loads(sys.argv[1])
pipeline = dlt.pipeline(options["name"], pipelines_dir=options["dir"],
                        destination=bento(requests_per_minute=60000.0, **options["credentials"]))
rows = [{"email": f"c{i}@child.example.com", "first_name": "C"} for i in range(50)]
try:
    if options["with_block"]:
        with bento_run(pipeline):
            pipeline.run(rows, table_name="subscribers")
    else:
        pipeline.run(rows, table_name="subscribers")
except BentoBusyError as error:
    print("busy:", error)
    sys.exit(75)
except Exception as error:
    print("failed:", type(error).__name__, error)
    sys.exit(1)
"""


def child(emu: BentoEmulator, pipes: Path, with_block: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith((*ENV_PREFIXES, "RUNTIME__"))}
    env.update(PYTHONPATH=str(REPO), RUNTIME__LOG_LEVEL="CRITICAL", RUNTIME__DLTHUB_TELEMETRY="false")
    options = {"name": "plain", "dir": str(pipes), "credentials": emu.credentials, "with_block": with_block}
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps(options)], env=env, cwd=REPO, text=True,
                          capture_output=True, timeout=120)


@pytest.mark.usefixtures("destination_env")
@pytest.mark.parametrize("with_block", [True, False])
def test_a_plain_run_cannot_send_while_another_process_holds_the_pipeline(
    emu: BentoEmulator, tmp_path: Path, with_block: bool
) -> None:
    with pipeline_lock(tmp_path / "plain") as lock:  # this process is the other run
        result = child(emu, tmp_path, with_block)
        assert lock.read_holder()["pid"] == os.getpid()
    assert result.returncode == (75 if with_block else 1), result.stdout + result.stderr
    assert "busy" in result.stdout and f"pid {os.getpid()}" in result.stdout
    assert not [r for r in emu.request_log if r.method == "POST"]  # nothing sent
    again = child(emu, tmp_path, True)  # the lock is free: the package left pending is loaded, then the data
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(emu.store.subscribers) == 50


@pytest.mark.usefixtures("destination_env")
def test_sync_cancelled_from_another_thread_raises_a_typed_error_and_installs_no_handler(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    rows = [{"email": f"p{i % 40}@api.example.com", "type": "$visit", "unique_key": f"k{i}"} for i in range(EVENTS)]
    emu.add_fault(Fault("latency", seconds=0.5, path_prefix="/batch"))
    cancel = RunCancel()
    handlers = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))

    def cancel_after_first_batch() -> None:
        while not any(r.path == "/batch/events" for r in emu.request_log):
            threading.Event().wait(0.01)
        cancel.cancel()

    watcher = threading.Thread(target=cancel_after_first_batch, daemon=True)
    watcher.start()
    with pytest.raises(BentoRunCancelled) as caught:
        sync(rows, pipeline_name="api", pipelines_dir=tmp_path, table_name="events", file_max_items=500,
             out=lambda _: None, requests_per_minute=120.0, cancel=cancel, **emu.credentials)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    error = caught.value
    assert error.signal_number is None and "the next run resumes it" in str(error)
    sent = sum(r.rows for r in emu.request_log if r.path == "/batch/events" and r.status == 200)
    assert error.sent == sent and 0 < sent < EVENTS
    assert error.not_sent == EVENTS - sent
    emu.clear_faults()
    sync(rows, pipeline_name="api", pipelines_dir=tmp_path, table_name="events", out=lambda _: None,
         requests_per_minute=FAST, **emu.credentials)
    assert len(emu.store.events) == EVENTS


@pytest.mark.usefixtures("destination_env")
def test_a_second_run_in_the_same_process_is_busy_too(tmp_path: Path) -> None:
    with bento_run(tmp_path / "p"), pytest.raises(BentoBusyError), bento_run(tmp_path / "p"):
        pass
    with bento_run(tmp_path / "p"):  # released
        pass


def test_pending_rows_is_zero_without_packages(tmp_path: Path) -> None:
    import dlt

    pipeline = dlt.pipeline("empty", pipelines_dir=str(tmp_path), destination="duckdb")
    assert pending_rows(pipeline) == 0


@pytest.mark.usefixtures("destination_env")
def test_a_plain_run_stopped_by_its_breaker_resumes_with_a_later_load_in_the_same_process(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    # a notebook: pipeline.run stops after a request failed on all its attempts; the package stays pending,
    # and pipeline.load() in the same kernel must resume it, not find the breaker of the call that stopped
    import dlt
    from dlt.pipeline.exceptions import PipelineStepFailed

    from bento_destination import bento
    from bento_destination.runcontext import end_plain_runs

    rows = [{"email": f"n{i}@notebook.example.com", "first_name": "N"} for i in range(1500)]
    pipeline = dlt.pipeline("notebook", pipelines_dir=str(tmp_path),
                            destination=bento(requests_per_minute=FAST, **emu.credentials))
    emu.add_fault(Fault("server_error", status=503, path_prefix="/batch"))
    os.environ["BENTO_RETRY_BACKOFF_SECONDS"] = "0.01"
    try:
        with pytest.raises(PipelineStepFailed, match=r"6 (attempts|times)"):
            pipeline.run(rows, table_name="subscribers")
        assert pipeline.has_pending_data
        emu.clear_faults()
        pipeline.load()
    finally:
        os.environ.pop("BENTO_RETRY_BACKOFF_SECONDS", None)
        end_plain_runs()
    assert not pipeline.has_pending_data
    assert len(emu.store.subscribers) == 1500
