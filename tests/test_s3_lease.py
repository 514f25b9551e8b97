"""One run at a time on an `s3://` ledger: the lease object, on a real S3 API (moto in server mode on 127.0.0.1).

Two `bento-dlt sync` processes with their own pipelines folders (two machines) share one `s3://` ledger; the
second starts while the emulator's log shows the first one's batches. It stops with exit 75 and one line
naming the holder, or with `--wait` goes after the first and sends nothing; a SIGKILLed holder's lease is
taken over once it expires, with no cleanup. Lower down, the lease itself: two takers of one expired lease
(one wins), renewal past the term, and a stalled holder (SIGSTOP) whose lease was taken over stopping its
run when it wakes up. Bento is the emulator; every test asserts on its store and request log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from bento_api.emulator import BentoEmulator, Fault
from bento_destination.ledger_lock import lock_for_ledger
from bento_destination.runlock import BentoBusyError
from bento_destination.s3lease import ENV_LEASE_SECONDS, LeaseSnapshot, S3LeaseLock
from bento_destination.sync import EXIT_BUSY, EXIT_OK

from .s3_server import ACCESS_KEY, SECRET_KEY, S3Server, clean_aws_environ
from .test_run_control import one_line, wait_for
from .test_s3_ledger import Runner, assert_contacts_in_bento, write_contacts

pytestmark = pytest.mark.s3

CONTACTS = 1200
#: seconds the first run's first batch request takes, so that the second process (seconds to start) meets it
SLOW_REQUEST = 10.0
RUN_TIMEOUT = 120.0
SITE = "site-1"


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


def lease_url(bucket: str, site: str, operation: str = "subscribers") -> str:
    return f"s3://{bucket}/ledger/.bento-locks/{site}.{operation}.lease"


def start(runner: Runner, source: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pipelines.cli", *runner.argv(source)], env=env or runner.env,
                            cwd=runner.folder, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def run(runner: Runner, source: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *runner.argv(source, *extra)], env=runner.env,
                          cwd=runner.folder, text=True, capture_output=True, stdin=subprocess.DEVNULL,
                          timeout=RUN_TIMEOUT)


def first_runner_sending(
    emu: BentoEmulator, s3_server: S3Server, bucket: str, tmp_path: Path
) -> tuple[Path, str, subprocess.Popen[str], Runner]:
    """Runner A syncs the contacts to a shared s3 ledger, slowly, and is sending; runner B is ready beside it.

    Returns the source, the ledger URL, A's process and runner B.
    """
    source = tmp_path / "crm.duckdb"
    write_contacts(source, CONTACTS)
    ledger = f"s3://{bucket}/ledger"
    runner_a = Runner(emu, s3_server, tmp_path / "a", ledger)
    emu.add_fault(Fault("latency", seconds=SLOW_REQUEST, count=1, path_prefix="/batch"))  # the first run is slow
    first = start(runner_a, source)
    wait_for(lambda: len(subscriber_batches(emu)) >= 1)  # the first run is sending
    return source, ledger, first, Runner(emu, s3_server, tmp_path / "b", ledger)


def subscriber_batches(emu: BentoEmulator) -> list[list[str]]:
    return [r.emails for r in emu.request_log if r.method == "POST" and r.path == "/batch/subscribers"]


@pytest.fixture
def s3_env(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process (the test's own lease objects) reaches moto with the same settings as the CLI runs."""
    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in s3_server.env(tmp_path).items():
        monkeypatch.setenv(key, value)


# -- two runners sharing one ledger ----------------------------------------------------------------


def test_a_second_runner_on_the_shared_s3_ledger_stops_with_75_naming_the_holder(
    emu: BentoEmulator, s3_server: S3Server, bucket: str, tmp_path: Path, s3_env: None
) -> None:
    source, ledger, first, runner_b = first_runner_sending(emu, s3_server, bucket, tmp_path)

    holder = S3LeaseLock(lease_url(bucket, emu.site_uuid), "reader").read()
    assert holder is not None and holder.holder["pid"] == first.pid and not holder.expired
    second = run(runner_b, source)
    assert second.returncode == EXIT_BUSY, second.stderr
    line = one_line(second.stderr)
    assert f"pid {first.pid} on host" in line and f"sync ledger {ledger}" in line, line
    assert "its lease runs until" in line and "nothing was sent" in line, line
    runner_b.assert_loopback_only()

    _, err = first.communicate(timeout=RUN_TIMEOUT)
    assert first.returncode == EXIT_OK, err
    sent = Counter(e for batch in subscriber_batches(emu) for e in batch)
    assert len(sent) == CONTACTS and max(sent.values()) == 1  # nothing left the second run
    assert_contacts_in_bento(emu, CONTACTS)
    assert S3LeaseLock(lease_url(bucket, emu.site_uuid), "reader").read() is None  # released at the end


def test_with_wait_the_second_runner_goes_after_the_first_and_sends_nothing(
    emu: BentoEmulator, s3_server: S3Server, bucket: str, tmp_path: Path, s3_env: None
) -> None:
    source, _, first, runner_b = first_runner_sending(emu, s3_server, bucket, tmp_path)

    second = run(runner_b, source, "--wait", "90")
    assert first.wait(timeout=RUN_TIMEOUT) == EXIT_OK
    assert second.returncode == EXIT_OK, second.stderr
    summary = json.loads(second.stdout)
    assert summary["totals"]["sent"] == 0 and summary["totals"]["received"] == CONTACTS, summary["totals"]
    sent = Counter(e for batch in subscriber_batches(emu) for e in batch)
    assert len(sent) == CONTACTS and max(sent.values()) == 1  # the first run acknowledged everything
    assert_contacts_in_bento(emu, CONTACTS)


def test_a_killed_holders_lease_is_taken_over_after_it_expires(
    emu: BentoEmulator, s3_server: S3Server, bucket: str, tmp_path: Path, s3_env: None
) -> None:
    source = tmp_path / "crm.duckdb"
    write_contacts(source, CONTACTS)
    ledger = f"s3://{bucket}/ledger"
    runner_a = Runner(emu, s3_server, tmp_path / "a", ledger)
    runner_b = Runner(emu, s3_server, tmp_path / "b", ledger)
    # A's first batch hangs (the emulator logs a request once it answers it); its others are answered
    emu.add_fault(Fault("latency", seconds=600, count=1, path_prefix="/batch"))
    first = start(runner_a, source, env=dict(runner_a.env, **{ENV_LEASE_SECONDS: "2"}))
    try:
        wait_for(lambda: len(subscriber_batches(emu)) >= 1)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    answered_to_a = {e for batch in subscriber_batches(emu) for e in batch}
    assert 0 < len(answered_to_a) < CONTACTS
    reader = S3LeaseLock(lease_url(bucket, emu.site_uuid), "reader")
    dead = reader.read()
    assert dead is not None and dead.holder["pid"] == first.pid and dead.term == 2.0  # the dead run's lease

    before = len(subscriber_batches(emu))
    second = run(runner_b, source, "--wait", "60")  # no cleanup: B waits out the dead lease and takes it over
    assert second.returncode == EXIT_OK, second.stderr
    by_b = Counter(e for batch in subscriber_batches(emu)[before:] for e in batch)
    assert max(by_b.values()) == 1
    assert set(by_b) | answered_to_a == {f"person{i}@example.com" for i in range(CONTACTS)}  # nothing lost
    assert json.loads(second.stdout)["totals"]["sent"] == sum(by_b.values())
    assert_contacts_in_bento(emu, CONTACTS)
    assert reader.read() is None  # B released the lease it took over


# -- the lease object ------------------------------------------------------------------------------


def test_an_s3_ledger_is_locked_by_a_lease_beside_its_segments(s3_env: None) -> None:
    lock = lock_for_ledger("s3://bucket/ledger/", "site", "events")
    assert isinstance(lock, S3LeaseLock)
    assert lock.path == "s3://bucket/ledger/.bento-locks/site.events.lease"  # outside the site's segment folder
    assert (lock.bucket, lock.key) == ("bucket", "ledger/.bento-locks/site.events.lease")
    assert lock.description == "sync ledger s3://bucket/ledger/ (site site, events)"


def write_dead_lease(s3: S3Server, url: str, lease_seconds: float) -> None:
    """The lease a run killed long ago left: its holder is gone, its term `lease_seconds`."""
    holder = {"host": "gone-host", "pid": 999999, "started_at": "2026-01-01T00:00:00+00:00",
              "lease_seconds": lease_seconds}
    s3.filesystem().pipe(url.removeprefix("s3://"), json.dumps(holder).encode())


def wait_expired(lock: S3LeaseLock) -> LeaseSnapshot:
    """Poll the store until its own clock says the lease expired (no sleeping on this host's clock)."""
    snapshot = lock.read()
    while snapshot is not None and not snapshot.expired:
        time.sleep(0.2)
        snapshot = lock.read()
    assert snapshot is not None
    return snapshot


def test_two_takers_of_one_expired_lease_only_one_wins(s3_server: S3Server, bucket: str, s3_env: None) -> None:
    url = lease_url(bucket, SITE, "events")
    write_dead_lease(s3_server, url, 1)
    first = S3LeaseLock(url, "first taker", lease_seconds=30)
    second = S3LeaseLock(url, "second taker", lease_seconds=30)
    try:
        seen_by_first, seen_by_second = wait_expired(first), wait_expired(second)
        assert seen_by_first.etag == seen_by_second.etag  # both decided on the same expired lease
        assert not first.create() and not second.create()  # it exists: creating it is refused to both
        assert first.take_over(seen_by_first)
        assert not second.take_over(seen_by_second)  # its If-Match names a lease that is gone: 412
        assert first.held and not second.held
        with pytest.raises(BentoBusyError) as busy:
            second.acquire()
        assert f"pid {os.getpid()} on host" in busy.value.message and "first taker" not in busy.value.message
        assert busy.value.holder["what"] == "first taker" and busy.value.holder["pid"] == os.getpid()
    finally:
        first.release()
        second.release()
    assert first.read() is None


def test_the_holder_renews_its_lease_past_its_term(s3_server: S3Server, bucket: str, s3_env: None) -> None:
    url = lease_url(bucket, SITE, "events")
    holder = S3LeaseLock(url, "holder", lease_seconds=1)
    other = S3LeaseLock(url, "other", lease_seconds=1)
    holder.acquire()
    try:
        first_etag = holder.read()
        assert first_etag is not None
        started = time.monotonic()
        while time.monotonic() - started < 3.5:  # more than the term and its extra second
            with pytest.raises(BentoBusyError):
                other.acquire()
            time.sleep(0.5)
        now = holder.read()
        assert now is not None and now.etag != first_etag.etag and not now.expired  # renewed, not expired
        assert holder.held and holder.lost is None
    finally:
        holder.release()
    other.acquire()  # released: free at once, no waiting for the term
    other.release()


def test_a_wait_ends_when_the_holder_releases(s3_server: S3Server, bucket: str, s3_env: None) -> None:
    url = lease_url(bucket, SITE, "events")
    holder = S3LeaseLock(url, "holder", lease_seconds=30)
    holder.acquire()
    waiter = S3LeaseLock(url, "waiter", lease_seconds=30)
    with pytest.raises(BentoBusyError) as busy:
        waiter.acquire(wait=0.5)
    assert "after waiting 0.5s" in busy.value.message
    holder.release()
    waiter.acquire(wait=5)
    current = waiter.read()
    assert current is not None and current.holder["what"] == "waiter"
    waiter.release()


def test_release_leaves_a_lease_another_run_took_over(s3_server: S3Server, bucket: str, s3_env: None) -> None:
    url = lease_url(bucket, SITE, "events")
    holder = S3LeaseLock(url, "holder", lease_seconds=30)
    holder.acquire()
    write_dead_lease(s3_server, url, 30)  # another run's write replaced it (its ETag is not the holder's)
    replaced = holder.read()
    holder.release()  # DELETE If-Match on the holder's ETag: 412, so the other run's lease stays
    after = holder.read()
    assert replaced is not None and after is not None and after.etag == replaced.etag
    assert after.holder["host"] == "gone-host"


def test_a_holder_that_cannot_renew_gives_its_lease_up_before_it_can_expire(tmp_path: Path) -> None:
    """The store goes away: before each request the run's check finds the lease overdue and stops the run."""
    server = S3Server(tmp_path / "moto.log").start()
    options = {"key": ACCESS_KEY, "secret": SECRET_KEY, "endpoint_url": server.endpoint, "skip_instance_cache": True}
    try:
        bucket = server.new_bucket()
        lost: list[str] = []
        holder = S3LeaseLock(lease_url(bucket, SITE, "events"), "sync ledger x (site s, events)", lease_seconds=1.5,
                             on_lost=lost.append, storage_options=options)
        acquiring = time.monotonic()
        holder.acquire()
        holder.verify()
        assert holder.held and lost == []  # just renewed: trusted
    finally:
        server.stop()
    wait_for(lambda: (holder.verify(), bool(lost))[1], timeout=30)
    assert time.monotonic() - acquiring >= 1.0  # trusted for two thirds of the term from its last write
    assert len(lost) == 1 and "the lease on the sync ledger x (site s, events) went" in lost[0], lost
    assert "without a renewal" in lost[0] and not holder.held
    holder.release()  # the store is gone: nothing to delete, and no error


STALLED_HOLDER = textwrap.dedent(
    """
    import sys, time
    from bento_destination.runcontext import RunContext
    from bento_api.gate import BentoCancelledError

    run = RunContext(sys.argv[1])
    run.hold_ledger(sys.argv[2], sys.argv[3], "events")
    print("held", flush=True)
    while run.breaker is None:
        time.sleep(0.05)
    try:
        run.check()
    except BentoCancelledError as stopped:
        print(stopped, flush=True)
    """
)


def test_a_stalled_holder_whose_lease_was_taken_over_stops_its_run(
    s3_server: S3Server, bucket: str, tmp_path: Path, s3_env: None
) -> None:
    """SIGSTOP the holder past its term, take its lease over, SIGCONT: its next renewal trips its breaker."""
    ledger = f"s3://{bucket}/ledger"
    env = dict(os.environ, **{ENV_LEASE_SECONDS: "1"}, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    child = subprocess.Popen([sys.executable, "-c", STALLED_HOLDER, str(tmp_path / "pipe"), ledger, SITE], env=env,
                             text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        os.kill(child.pid, signal.SIGSTOP)
        taker = S3LeaseLock(lease_url(bucket, SITE, "events"), "taker", lease_seconds=30)
        wait_expired(taker)
        taker.acquire()
        os.kill(child.pid, signal.SIGCONT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert out.strip() == (
        f"not sent: the run is stopping because the lease on the sync ledger {ledger} (site {SITE}, events) "
        f"was taken over by pid {os.getpid()} on host {os.uname().nodename} since "
        f"{taker.read().holder['started_at']}"  # type: ignore[union-attr]
    )
    current = taker.read()
    assert current is not None and current.holder["what"] == "taker"  # the woken holder did not take it back
    taker.release()


CHECKING_HOLDER = textwrap.dedent(
    """
    import sys, time
    from bento_destination.runcontext import RunContext
    from bento_api.gate import BentoCancelledError

    run = RunContext(sys.argv[1])
    run.hold_ledger(sys.argv[2], sys.argv[3], "events")
    print("held", flush=True)
    while True:
        try:
            run.check()  # what every request does before it starts
        except BentoCancelledError as stopped:
            print(stopped, flush=True)
            break
        time.sleep(0.01)
    """
)


def test_a_run_whose_store_went_away_stops_before_its_next_request(tmp_path: Path) -> None:
    """The run's check before each request gives up an overdue lease: no request after it could have lapsed."""
    server = S3Server(tmp_path / "moto.log").start()
    try:
        bucket = server.new_bucket()
        ledger = f"s3://{bucket}/ledger"
        env = dict(clean_aws_environ(), **server.env(tmp_path), **{ENV_LEASE_SECONDS: "1.5"},
                   PYTHONPATH=str(Path(__file__).resolve().parents[1]))
        child = subprocess.Popen([sys.executable, "-c", CHECKING_HOLDER, str(tmp_path / "pipe"), ledger, SITE],
                                 env=env, text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE)
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        time.sleep(1.5)  # renewals went through meanwhile: the run goes on
        assert child.poll() is None
    finally:
        server.stop()
    try:
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert out.startswith(f"not sent: the run is stopping because the lease on the sync ledger {ledger} "
                          f"(site {SITE}, events) went "), out
    assert "without a renewal (the run stalled or the store is out of reach)" in out
