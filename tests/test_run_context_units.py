"""The run context's parts on their own: the lock file (holder, wait, other processes, paths), and the client
honouring a run's gate (attempts capped across calls, a cancel ending a back-off wait, retries counted once).

Real files, real processes, real HTTP against the emulator; the gate is the destination's own RunContext.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bento_api import BentoAttemptsSpentError, BentoCancelledError, BentoClient, RequestStats, resolve_settings
from bento_api.emulator import BentoEmulator, Fault
from bento_api.limits import resolve_budgets
from bento_api.pacing import PacerRegistry
from bento_api.retry import RetryPolicy, resolve_retry_policy
from bento_destination.ledger_lock import lock_for_ledger
from bento_destination.runcontext import MAX_ATTEMPTS, RunCancel, RunContext
from bento_destination.runlock import BentoBusyError, FileRunLock, pipeline_lock
from bento_destination.send import BatchOutcome, Sender

HOLD = """
import sys, time
from bento_destination.runlock import FileRunLock
lock = FileRunLock(sys.argv[1], "test lock")
lock.acquire()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_in_child(path: Path, seconds: float) -> subprocess.Popen[str]:
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], text=True, cwd=repo,
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(repo)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_busy_lock_names_its_holder_and_is_taken_once_the_holder_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = hold_in_child(path, 60)
    try:
        with pytest.raises(BentoBusyError) as caught:
            FileRunLock(path, "test lock").acquire()
        assert caught.value.holder["pid"] == holder.pid
        assert f"pid {holder.pid} on host " in str(caught.value) and "nothing was sent" in str(caught.value)
    finally:
        holder.kill()  # dies without releasing anything
        holder.wait()
    with FileRunLock(path, "test lock") as lock:
        assert lock.read_holder()["pid"] == os.getpid()


def test_wait_polls_until_the_holder_ends(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    holder = hold_in_child(path, 1.0)
    started = time.monotonic()
    lock = FileRunLock(path, "test lock")
    lock.acquire(wait=60)
    assert time.monotonic() - started > 0.2  # it did wait
    lock.release()
    holder.wait()


def test_lock_paths_beside_the_pipeline_folder_and_the_ledger(tmp_path: Path) -> None:
    assert pipeline_lock(tmp_path / "pipes" / "p").path == tmp_path / "pipes" / ".bento-locks" / "p.lock"
    duck = lock_for_ledger(str(tmp_path / "l.duckdb"), "site", "events")
    assert duck is not None and duck.path == tmp_path / "l.duckdb.site.events.lock"
    folder = lock_for_ledger(f"file://{tmp_path}/ledger", "site", "emails")
    assert folder is not None and folder.path == tmp_path / "ledger" / ".bento-locks" / "site.emails.lock"
    assert lock_for_ledger("gs://bucket/ledger", "site", "events") is None  # no lease there (only on S3)


def client_for(emu: BentoEmulator, backoff: float = 0.01) -> BentoClient:
    return BentoClient(resolve_settings(**emu.credentials, env={}), resolve_budgets(600_000.0, env={}),
                       pacers=PacerRegistry(), retry=RetryPolicy(backoff_base=backoff))


def test_a_request_gets_six_attempts_per_run_across_calls(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.add_fault(Fault("drop_after_apply", path_prefix="/batch"))
    run = RunContext(tmp_path)
    body = {"subscribers": [{"email": "a@gate.example.com"}]}
    with client_for(emu) as client:
        outcome = BatchOutcome()
        sender = Sender(client, outcome, gates=lambda key: run.gate("load", key))
        with pytest.raises(BentoAttemptsSpentError):
            sender.post("batch-1", "/batch/subscribers", body)
        with pytest.raises(BentoCancelledError):  # dlt's job retry of the same batch: no attempt left
            sender.post("batch-1", "/batch/subscribers", body)
    assert len(emu.requests("/batch/subscribers")) == MAX_ATTEMPTS
    assert outcome.stats.requests == MAX_ATTEMPTS and outcome.stats.retries == MAX_ATTEMPTS - 1


def test_a_cancel_ends_a_back_off_wait_and_the_retry_is_not_counted(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.add_fault(Fault("server_error", status=503, path_prefix="/batch"))
    cancel = RunCancel()
    run = RunContext(tmp_path, cancel=cancel)
    stats = RequestStats()
    threading.Timer(0.5, cancel.cancel).start()  # during the first back-off wait (30 to 60 s)
    with client_for(emu, backoff=60.0) as client, pytest.raises(BentoCancelledError):
        client.post("/batch/subscribers", {"subscribers": [{"email": "a@gate.example.com"}]}, stats=stats,
                    gate=run.gate("load", "batch-1"))
    assert stats.requests == 1 and stats.retries == 0 and stats.server_errors == 1
    assert len(emu.requests("/batch/subscribers")) == 1


def test_backoff_base_from_the_environment() -> None:
    assert resolve_retry_policy({"BENTO_RETRY_BACKOFF_SECONDS": "0.05"}).backoff_base == 0.05
    assert resolve_retry_policy({}).backoff_base == 1.0
    with pytest.raises(ValueError):
        resolve_retry_policy({"BENTO_RETRY_BACKOFF_SECONDS": "soon"})
