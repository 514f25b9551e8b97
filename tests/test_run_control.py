"""Trust under real schedules: overlapping runs, signals and lost answers, driven through `bento-dlt sync`.

Each test runs the CLI in real subprocesses against an emulator in this process, the way a scheduler hits
it: a second run started while the emulator's log shows the first one's batches, real SIGINT and SIGTERM
mid-batch, during a back-off wait and against a hanging server, and a server that loses every answer.
Each asserts on the emulator's store and request log (every input row kept exactly once, no batch sent
more than the budget allows) and compares the destination's reports with the log. Budgets are raised,
back-off and the cancel grace shortened (environment), so each test takes seconds.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig, Fault, RequestRecord
from bento_destination import list_reports

from .destination_support import ENV_PREFIXES

REPO = Path(__file__).resolve().parents[1]
EVENTS = 3000
SUBSCRIBERS = 2000
PEOPLE = 50
PIPELINE = "bento_sync_events"
#: generous upper bounds for a run to end; a test that passes never waits for them
RUN_TIMEOUT = 90.0
#: seconds one request of the first run takes, so that a second process (a few seconds to start) meets it
SLOW_REQUEST = 10.0


@pytest.fixture
def emu() -> Iterator[BentoEmulator]:
    config = EmulatorConfig(requests_per_minute=1e7, stats_requests_per_hour=1e9, bucket_capacity=1e6, subscribers=0)
    with BentoEmulator(config) as emulator:
        yield emulator


def cli_env(emu: BentoEmulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith((*ENV_PREFIXES, "RUNTIME__"))}
    env.update(emu.env(), PYTHONPATH=str(REPO), RUNTIME__DLTHUB_TELEMETRY="false", PYTHONUNBUFFERED="1",
               BENTO_REQUESTS_PER_MINUTE="600000", BENTO_RETRY_BACKOFF_SECONDS="0.05",
               BENTO_CANCEL_GRACE_SECONDS="1")
    env.update(extra)
    return env


def sync_args(source: Path, pipes: Path, operation: str = "events", *extra: str) -> list[str]:
    return ["sync", "--from", str(source), "--as", operation, "--yes", "--pipelines-dir", str(pipes), *extra]


def start(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=cwd, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT)


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting for the condition"
        time.sleep(0.01)


def write_events(path: Path, n: int = EVENTS) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "type", "unique_key", "fields__tier"])
        for i in range(n):
            writer.writerow([f"p{i % PEOPLE}@run.example.com", "$purchase", f"k{i}", ("free", "pro")[i % 2]])
    return path


def write_subscribers(path: Path, n: int = SUBSCRIBERS) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["email", "first_name", "plan", "tags"])
        for i in range(n):
            writer.writerow([f"s{i}@run.example.com", f"Ada {i}", ("free", "pro")[i % 2], f"customer,cohort-{i % 3}"])
    return path


def event_posts(emu: BentoEmulator) -> list[RequestRecord]:
    return [r for r in emu.request_log if r.method == "POST" and r.path == "/batch/events"]


def sent_keys(emu: BentoEmulator, *, answered_only: bool = False) -> Counter[str]:
    """How many times each event key reached the emulator in a batch request."""
    keys: Counter[str] = Counter()
    for record in event_posts(emu):
        if answered_only and record.status != 200:
            continue
        for event in (record.body or {}).get("events", []):
            keys[event["details"]["unique"]["key"]] += 1
    return keys


def assert_events_once(emu: BentoEmulator, n: int = EVENTS) -> None:
    """The store holds every input event exactly once, with its fields: 0 lost, 0 kept twice."""
    stored = Counter(str((e.details or {})["unique"]["key"]) for e in emu.store.events)
    assert len(stored) == n, f"{n - len(stored)} events lost"
    assert max(stored.values()) == 1, f"kept twice: {[k for k, c in stored.items() if c > 1][:5]}"
    for event in emu.store.events:
        index = int(str((event.details or {})["unique"]["key"])[1:])
        assert event.email == f"p{index % PEOPLE}@run.example.com"
        assert event.fields == {"tier": ("free", "pro")[index % 2]}


def figures(name: str, **values: Any) -> None:
    """One line of measured figures for RELIABILITY.md (shown with `pytest -s ... | grep FIGURES`)."""
    print(f"RUN CONTROL FIGURES {name} {json.dumps(values, sort_keys=True)}")


def stored_counts(emu: BentoEmulator, n: int = EVENTS) -> dict[str, int]:
    """Lost and kept-twice input events in the store (assert_events_once requires both to be 0)."""
    stored = Counter(str((e.details or {}).get("unique", {}).get("key")) for e in emu.store.events)
    return {"lost": n - len(stored), "kept_twice": sum(1 for c in stored.values() if c > 1)}


def stop_with(proc: subprocess.Popen[str], signum: int) -> tuple[str, float]:
    """Send `signum`; the process must exit with 128 + signum within 15 s. Its stderr and the seconds it took."""
    proc.send_signal(signum)
    signalled = time.monotonic()
    _, err = proc.communicate(timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - signalled
    assert seconds < 15.0
    assert proc.returncode == 128 + signum, err
    return err, seconds


def one_line(stderr: str) -> str:
    """The command's stderr must say what happened in one line: no traceback, nothing but the client's notes
    of the retries it made (`WARNING bento_api: ... retrying in ...`) and its progress lines."""
    notes = ("WARNING bento_api:", "progress:")
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith(notes)]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def reports(pipes: Path, pipeline: str = PIPELINE) -> list[Any]:
    return list_reports(pipeline, pipelines_dir=pipes)


def assert_reports_match_log(emu: BentoEmulator, pipes: Path, runs_from: list[int], pipeline: str = PIPELINE) -> None:
    """Requests, retries and 5xx of every load's report add up to what the emulator logged.

    `runs_from`: the index in the log of each run's first batch request. A retry is a request whose body
    its run sent before (the client's retries and dlt's job retries alike); a resumed batch in a later run
    is that run's first attempt of it.
    """
    posts = event_posts(emu)
    totals = Counter[str]()
    for report in reports(pipes, pipeline):
        for table in report.tables.values():
            totals["requests"] += table.requests
            totals["retries"] += table.retries
            totals["server_errors"] += table.server_errors
    bounds = [*runs_from, len(posts)]
    retries = sum(
        (end - start) - len({json.dumps(r.body, sort_keys=True) for r in posts[start:end]})
        for start, end in itertools.pairwise(bounds)
    )
    assert totals["requests"] == len(posts)
    assert totals["retries"] == retries
    assert totals["server_errors"] == sum(1 for r in posts if r.status >= 500)


# -- one run at a time ---------------------------------------------------------------------------------


LEDGER_KINDS = {"duckdb": (), "folder": ("--ledger-url", "{tmp}/ledger"), "none": ("--no-ledger",)}


@pytest.mark.parametrize("ledger", sorted(LEDGER_KINDS))
def test_an_overlapping_run_stops_with_75_and_sends_nothing(emu: BentoEmulator, tmp_path: Path, ledger: str) -> None:
    source = write_events(tmp_path / "events.csv")
    extra = [a.format(tmp=tmp_path) for a in LEDGER_KINDS[ledger]]
    args = sync_args(source, tmp_path / "pipes", "events", *extra)
    env = cli_env(emu)
    emu.add_fault(Fault("latency", seconds=SLOW_REQUEST, count=1, path_prefix="/batch"))  # the first run is slow
    first = start(args, env, tmp_path)
    wait_for(lambda: len(event_posts(emu)) >= 1)  # the first run is sending
    second = run(args, env, tmp_path)
    assert second.returncode == 75, second.stderr
    line = one_line(second.stderr)
    assert f"pid {first.pid}" in line and "nothing was sent" in line
    _, err = first.communicate(timeout=RUN_TIMEOUT)
    assert first.returncode == 0, err
    assert max(sent_keys(emu).values()) == 1  # no event left the second run
    assert sum(sent_keys(emu).values()) == EVENTS
    assert_events_once(emu)
    figures(f"overlap ledger={ledger}", second_exit=second.returncode, **stored_counts(emu))


def test_a_run_sharing_the_folder_ledger_from_another_pipeline_folder_stops_with_75(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    source = write_events(tmp_path / "events.csv")
    ledger = ["--ledger-url", str(tmp_path / "ledger")]
    env = cli_env(emu)
    emu.add_fault(Fault("latency", seconds=SLOW_REQUEST, count=1, path_prefix="/batch"))
    first = start(sync_args(source, tmp_path / "pipes-a", "events", *ledger), env, tmp_path)
    wait_for(lambda: len(event_posts(emu)) >= 1)
    second = run(sync_args(source, tmp_path / "pipes-b", "events", *ledger), env, tmp_path)
    assert second.returncode == 75, second.stderr
    assert "sync ledger" in one_line(second.stderr)
    assert first.wait(timeout=RUN_TIMEOUT) == 0
    assert sum(sent_keys(emu).values()) == EVENTS
    assert_events_once(emu)


def test_wait_lets_the_second_run_go_after_the_first_and_it_sends_only_changes(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    source = write_subscribers(tmp_path / "subscribers.csv")
    args = sync_args(source, tmp_path / "pipes", "subscribers")
    env = cli_env(emu)
    emu.add_fault(Fault("latency", seconds=SLOW_REQUEST, count=1, path_prefix="/batch"))
    first = start(args, env, tmp_path)
    wait_for(lambda: any(r.path == "/batch/subscribers" for r in emu.request_log))
    second = run([*args, "--wait", "60", "--json"], env, tmp_path)
    assert first.wait(timeout=RUN_TIMEOUT) == 0
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["totals"]["sent"] == 0 and summary["totals"]["received"] == SUBSCRIBERS
    assert sum(t["unchanged"] for load in summary["loads"] for t in load["tables"].values()) == SUBSCRIBERS
    sent = Counter(e for r in emu.request_log if r.path == "/batch/subscribers" for e in r.emails)
    assert len(sent) == SUBSCRIBERS and max(sent.values()) == 1
    assert len(emu.store.subscribers) == SUBSCRIBERS
    for i in (0, 1, SUBSCRIBERS - 1):
        person = emu.store.subscribers[f"s{i}@run.example.com"]
        assert person.fields == {"first_name": f"Ada {i}", "plan": ("free", "pro")[i % 2]}
        assert {emu.store.tags[t].name for t in person.tag_ids} == {"customer", f"cohort-{i % 3}"}


def test_a_dead_holders_lock_is_taken_over(emu: BentoEmulator, tmp_path: Path) -> None:
    source = write_events(tmp_path / "events.csv")
    args = sync_args(source, tmp_path / "pipes")
    env = cli_env(emu)
    emu.add_fault(Fault("latency", seconds=30.0, path_prefix="/batch"))
    first = start(args, env, tmp_path)
    lock = tmp_path / "pipes" / ".bento-locks" / f"{PIPELINE}.lock"
    wait_for(started_loading(tmp_path / "pipes"))
    assert f'"pid": {first.pid}' in lock.read_text()
    first.kill()  # SIGKILL: no cleanup at all
    first.wait(timeout=RUN_TIMEOUT)
    emu.clear_faults()
    second = run(args, env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert_events_once(emu)


# -- signals ---------------------------------------------------------------------------------------------


def a_batch_request_arrives(emu: BentoEmulator) -> Callable[[], bool]:
    """True once the emulator received a batch request (a one-shot marker fault it consumes), however slow
    the machine: a fixed sleep after the load began was not always enough for the first request to go out."""
    marker = Fault("latency", seconds=0.001, count=1, path_prefix="/batch")
    emu.add_fault(marker)
    return lambda: marker not in emu.faults.active()


def started_loading(pipes: Path) -> Callable[[], bool]:
    """True once the sink's first batch began (its report file appears before any request)."""
    folder = pipes / PIPELINE / "bento_rejects"
    return lambda: folder.is_dir() and any(folder.glob("*.report.json"))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_batch_stops_within_the_grace_and_the_next_run_resumes_exactly(
    emu: BentoEmulator, tmp_path: Path, signum: int
) -> None:
    n = 6000
    source = write_events(tmp_path / "events.csv", n)
    pipes = tmp_path / "pipes"
    env = cli_env(emu, BENTO_REQUESTS_PER_MINUTE="100")  # one request every 0.6 s: a slow run
    emu.add_fault(Fault("latency", seconds=0.3, path_prefix="/batch"))
    first = start(sync_args(source, pipes), env, tmp_path)
    wait_for(lambda: len(event_posts(emu)) >= 2)
    err, exit_seconds = stop_with(first, signum)
    line = one_line(err)
    assert signal.Signals(signum).name in line and "the next run resumes it" in line
    before = sum(sent_keys(emu).values())
    assert 0 < before < n
    emu.clear_faults()
    boundary = len(event_posts(emu))
    second = run(sync_args(source, pipes, "events", "--json"), cli_env(emu), tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    assert sum(sent_keys(emu).values()) == n  # the rerun sent only what the first did not
    assert_events_once(emu, n)
    assert_reports_match_log(emu, pipes, [0, boundary])
    received = sorted(sum(t.received for t in r.tables.values()) for r in reports(pipes))
    assert received == [n, n]  # the resumed package's rows exactly once, and the new data's (all unchanged)
    figures(f"signal mid-batch {signal.Signals(signum).name}", exit_seconds=round(exit_seconds, 2),
            sent_before_signal=before, **stored_counts(emu, n))


def test_sigterm_during_a_back_off_wait_stops_at_once(emu: BentoEmulator, tmp_path: Path) -> None:
    source = write_events(tmp_path / "events.csv")
    pipes = tmp_path / "pipes"
    env = cli_env(emu, BENTO_RETRY_BACKOFF_SECONDS="60", BENTO_CANCEL_GRACE_SECONDS="10")
    emu.add_fault(Fault("server_error", status=503, path_prefix="/batch"))
    first = start(sync_args(source, pipes), env, tmp_path)
    wait_for(lambda: any(r.status == 503 for r in event_posts(emu)))
    time.sleep(0.2)  # every job is in its first back-off wait (30 to 60 s)
    err, exit_seconds = stop_with(first, signal.SIGTERM)
    assert "SIGTERM" in one_line(err)
    assert "abandoned" not in err  # the run ended by itself, not through the watchdog
    emu.clear_faults()
    boundary = len(event_posts(emu))
    second = run(sync_args(source, pipes), cli_env(emu), tmp_path)
    assert second.returncode == 0, second.stderr
    assert_events_once(emu)
    assert_reports_match_log(emu, pipes, [0, boundary])
    figures("SIGTERM in back-off", exit_seconds=round(exit_seconds, 2), **stored_counts(emu))


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_against_a_hanging_server_ends_the_run_after_the_grace(
    emu: BentoEmulator, tmp_path: Path, signum: int
) -> None:
    source = write_events(tmp_path / "events.csv")
    pipes = tmp_path / "pipes"
    emu.add_fault(Fault("latency", seconds=60.0, path_prefix="/batch"))
    arrived = a_batch_request_arrives(emu)
    first = start(sync_args(source, pipes), cli_env(emu), tmp_path)
    wait_for(started_loading(pipes))
    wait_for(arrived)  # the request is held by the hanging server now
    time.sleep(0.2)
    err, exit_seconds = stop_with(first, signum)
    line = one_line(err)
    assert "abandoned" in line and f": 0 rows sent in this run, about {EVENTS} not sent yet" in line
    emu.clear_faults()
    second = run(sync_args(source, pipes), cli_env(emu), tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    assert_events_once(emu)
    figures(f"{signal.Signals(signum).name} against a hanging server", exit_seconds=round(exit_seconds, 2),
            **stored_counts(emu))


def test_a_second_sigint_exits_at_once(emu: BentoEmulator, tmp_path: Path) -> None:
    source = write_events(tmp_path / "events.csv")
    pipes = tmp_path / "pipes"
    emu.add_fault(Fault("latency", seconds=60.0, path_prefix="/batch"))
    arrived = a_batch_request_arrives(emu)
    first = start(sync_args(source, pipes), cli_env(emu, BENTO_CANCEL_GRACE_SECONDS="60"), tmp_path)
    wait_for(started_loading(pipes))
    wait_for(arrived)  # a request hangs now: the first SIGINT alone cannot end the run within the grace
    time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    time.sleep(0.3)
    err, exit_seconds = stop_with(first, signal.SIGINT)  # the second: the grace (60 s) is not waited for
    assert "second SIGINT" in one_line(err)
    emu.clear_faults()
    second = run(sync_args(source, pipes), cli_env(emu), tmp_path)
    assert second.returncode == 0, second.stderr
    assert_events_once(emu)
    figures("second SIGINT", exit_seconds_after_second=round(exit_seconds, 2), **stored_counts(emu))


# -- lost answers ------------------------------------------------------------------------------------


def test_lost_answers_send_a_batch_at_most_six_times_then_the_run_stops_and_the_next_resumes(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    source = write_events(tmp_path / "events.csv")
    pipes = tmp_path / "pipes"
    emu.add_fault(Fault("drop_after_apply", path_prefix="/batch"))  # Bento applies, the answer never comes
    first = run(sync_args(source, pipes), cli_env(emu), tmp_path)
    assert first.returncode == 1
    line = one_line(first.stderr)
    assert "failed 6 times in this run" in line and "the next run resumes it" in line
    sends = Counter(json.dumps(r.body, sort_keys=True) for r in event_posts(emu))
    assert max(sends.values()) == 6 and all(count <= 6 for count in sends.values())
    first_run = len(event_posts(emu))
    emu.clear_faults()
    second = run(sync_args(source, pipes), cli_env(emu), tmp_path)
    assert second.returncode == 0, second.stderr
    resumed = event_posts(emu)[first_run:]
    assert resumed and all(r.status == 200 for r in resumed)  # resumed on its first try
    assert_events_once(emu)
    assert_reports_match_log(emu, pipes, [0, first_run])
    figures("every answer lost", max_sends_per_batch=max(sends.values()), batches=len(sends),
            first_run_requests=first_run, rerun_requests=len(resumed), **stored_counts(emu))
