"""One run context per load: the run's locks, its cancellation, its retry budget and its circuit breaker.

dlt calls the sink once per batch, from several threads, and never says when a run starts or ends; what
must hold for the whole run lives here instead of in each call:

- **locks** (runlock.py): the pipeline folder's, for the run from extract to load, and one per (ledger,
  site, operation), taken on the first batch of that operation, so two processes never send one package;
- **cancellation**: `cancel()` (the CLI's signal handler, or a caller's own event) or dlt's signal flag
  (`dlt.common.runtime.signals`: dlt intercepts SIGINT/SIGTERM while it normalizes and loads) stops
  every request before it starts and every back-off wait at once; requests already sent get their
  answer (the client's deadline; the CLI stops waiting after `cancel_grace_seconds()`);
- **retry budget**: a request is attempted at most MAX_ATTEMPTS times in one run, the client's retries
  and dlt's job retries together (dlt re-runs a failed sink batch with the same rows, so the request's
  key is the same), within the client's back-off and deadlines (docs/destination.md gives the bound);
- **circuit breaker**: when one request has spent its budget, the run stops: every job stops starting
  requests, the load package stays pending and the next run resumes it;
- **client** (run_clients.py): the run's Bento client, its credentials check and proof, closed when it ends;
- **ledgers** (run_ledgers.py): the sync ledgers the run's jobs share, closed when it ends.

`sync()` opens a context with `bento_run(...)`; a plain `pipeline.run` gets one on its first batch that
lives as long as the process (wrap the run in `with bento_run(pipeline):` to lock it end to end and to
release the locks when it returns). The sink finds the context of its pipeline's working folder, so
the table of active contexts (`_ACTIVE`) is the one piece of process-wide state here, and it must be:
dlt calls the sink with no handle but the pipeline, so a plain run's sink can only find its context
by the pipeline's folder. Everything else a run holds lives on its context.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from bento_api import BentoError
from bento_api.gate import BentoCancelledError

from .ledger_lock import lock_for_ledger
from .run_clients import RunClients
from .run_ledgers import RunLedgers
from .runlock import BentoBusyError, FileRunLock, RunLock, pipeline_lock

#: attempts of one request in one run, client retries and dlt job retries together
MAX_ATTEMPTS = 6
#: seconds requests in flight get to answer after a cancel before the CLI stops waiting
DEFAULT_CANCEL_GRACE = 10.0
ENV_CANCEL_GRACE = "BENTO_CANCEL_GRACE_SECONDS"
#: how often a back-off wait looks at the cancel flags
PAUSE_SLICE = 0.05
#: what a run remembers per load (reports, verdicts, event numbers): the newest entries only, since a plain
#: run's context lives as long as the process
REMEMBERED = 256
T = TypeVar("T")

#: working folder -> its run context: the anchor a plain run's sink finds its context by (module docstring)
_ACTIVE: dict[str, RunContext] = {}
_ACTIVE_LOCK = threading.Lock()


def cancel_grace_seconds() -> float:
    """DEFAULT_CANCEL_GRACE, or BENTO_CANCEL_GRACE_SECONDS (tests against the emulator shorten it)."""
    text = os.environ.get(ENV_CANCEL_GRACE)
    return float(text) if text else DEFAULT_CANCEL_GRACE


def dlt_signal() -> int | None:
    """The signal dlt intercepted while normalizing or loading (SIGINT, SIGTERM), if any."""
    from dlt.common.runtime import signals

    if not signals.was_signal_received():
        return None
    code = getattr(signals.exception_for_signal(), "signal_code", None)
    return int(code) if isinstance(code, int) else signal.SIGINT


class RunCancel(threading.Event):
    """A caller's way to stop a run from another thread (the CLI's signal handler sets it): `cancel(signal)`."""

    def __init__(self) -> None:
        super().__init__()
        self.signal_number: int | None = None

    def cancel(self, signal_number: int | None = None) -> None:
        if self.signal_number is None:
            self.signal_number = signal_number
        self.set()


class BentoRunCancelled(BentoError):
    """The run was stopped (a signal, or the caller's cancel) before it finished; the next run resumes it.

    `signal_number`: SIGINT or SIGTERM, None for a cancel without a signal; `sent`: rows sent in this run;
    `not_sent`: rows of the pending load packages still to send.
    """

    def __init__(self, message: str, *, signal_number: int | None, sent: int, not_sent: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.sent = sent
        self.not_sent = not_sent


class BentoRunStopped(BentoError):
    """A request failed for good (its retry budget is spent): the run stopped; the next run resumes it."""

    def __init__(self, message: str, *, sent: int, not_sent: int) -> None:
        super().__init__(message)
        self.sent = sent
        self.not_sent = not_sent


class _RequestGate:
    """The gate of one request (bento_api.gate.RequestGate): the run's stop flags and its attempt count."""

    def __init__(self, run: RunContext, key: tuple[str, str]) -> None:
        self._run = run
        self._key = key

    def attempts_left(self) -> int:
        return self._run.attempts_left(self._key)

    def before_attempt(self) -> bool:
        self._run.check()
        return self._run.count_attempt(self._key) > 1

    def pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self._run.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            self._run.wake.wait(min(PAUSE_SLICE, left))


class RunContext:
    """The state of one run of one pipeline folder (thread-safe); see the module docstring."""

    def __init__(
        self,
        working_dir: str | os.PathLike[str],
        *,
        wait: float | None = None,
        cancel: RunCancel | None = None,
        implicit: bool = False,
    ) -> None:
        self.working_dir = Path(working_dir)
        self.wait = wait
        self.implicit = implicit
        self._external = cancel
        self.wake = threading.Event()
        self._lock = threading.Lock()
        self._acquiring = threading.Lock()
        self._locks: dict[str, RunLock] = {}
        self._attempts: dict[tuple[str, str], int] = {}
        self._signal: int | None = None
        self._cancelled = False
        self.breaker: str | None = None
        self.sent = 0
        self.done = 0
        self.planned = 0
        self._load_id: tuple[str, str | None] | None = None
        self.clients = RunClients()
        self.ledgers = RunLedgers()
        #: values of any type, one per key: each caller of a key gets back the type it computed
        self._remembered: dict[tuple[str, ...], Any] = {}
        self._computing: dict[tuple[str, ...], threading.Lock] = {}

    # -- what a load decided once ------------------------------------------------------------

    def remember(self, key: tuple[str, ...], compute: Callable[[], T]) -> T:
        """The value of `key` in this run, computed once: the load's report, the pre-pass's verdict, the
        numbers of identical events. Other threads asking for the same key wait for the first."""
        with self._lock:
            if key in self._remembered:
                return self._remembered[key]
            computing = self._computing.setdefault(key, threading.Lock())
        with computing:
            with self._lock:
                if key in self._remembered:
                    return self._remembered[key]
            value = compute()
            with self._lock:
                self._remembered[key] = value
                self._computing.pop(key, None)
                for stale in list(self._remembered)[:-REMEMBERED]:
                    del self._remembered[stale]
            return value

    # -- locks ---------------------------------------------------------------------------------

    def _hold(self, key: str, lock: RunLock) -> None:
        # one acquisition at a time: the jobs of this run all ask on their first batch, and a second flock
        # of the same file from this process would be refused as if another run held it
        with self._acquiring:
            with self._lock:
                held = self._locks.get(key)
            if held is not None:
                if held.held:
                    return
                held.release()  # a lease this run gave up (S3): deleted if still ours, then taken again or refused
            lock.acquire(self.wait)
            with self._lock:
                self._locks[key] = lock

    def hold_pipeline(self) -> None:
        """Lock the pipeline's working folder (raises BentoBusyError after `wait` if another run has it)."""
        self._hold("pipeline", pipeline_lock(self.working_dir))

    def hold_ledger(self, location: str, site: str, operation: str) -> None:
        """Lock (ledger, site, operation): a lock file, or a lease on S3 whose loss trips the breaker."""
        lock = lock_for_ledger(location, site, operation, on_lost=self.trip)
        if lock is not None:
            self._hold(f"ledger:{lock.path}", lock)

    def release(self) -> None:
        """The run ended: its ledgers closed (before their locks go), its locks released, its clients closed."""
        self.ledgers.close()
        with self._lock:
            locks, self._locks = list(self._locks.values()), {}
        for lock in reversed(locks):
            lock.release()
        self.clients.close()

    @property
    def lock_paths(self) -> list[str]:
        with self._lock:
            return [str(lock.path) for lock in self._locks.values() if isinstance(lock, FileRunLock)]

    # -- cancellation and the breaker ----------------------------------------------------------

    def begin_load(self, load_id: str, call: str | None = None) -> None:
        """A plain run's context outlives its load: a new load starts with the breaker and cancel reset.

        `call` names the `pipeline.run()` / `pipeline.load()` call (dlt's trace id): a package that stopped
        is resumed by a later call with the same load id, in the same process (a notebook), and must not
        find the breaker of the call that stopped it.
        """
        with self._lock:
            if not self.implicit or self._load_id == (load_id, call):
                return
            self._load_id = (load_id, call)
            self.breaker, self._cancelled, self._signal = None, False, None
            self.sent = self.done = self.planned = 0
            self._attempts.clear()

    def cancel(self, signal_number: int | None = None) -> None:
        """Stop the run: no request starts after this, back-off waits end now."""
        with self._lock:
            self._cancelled = True
            if self._signal is None:
                self._signal = signal_number
        self.wake.set()

    def trip(self, reason: str) -> None:
        """The circuit breaker: one request failed for good, so no job of this run starts another."""
        with self._lock:
            if self.breaker is None:
                self.breaker = reason
        self.wake.set()

    @property
    def signal_number(self) -> int | None:
        """The signal that stopped the run (ours or dlt's), noted the first time it is seen."""
        caught = dlt_signal()
        external = self._external
        if caught is None and external is not None and external.is_set():
            caught = external.signal_number
            with self._lock:
                self._cancelled = True
        with self._lock:
            if caught is not None and self._signal is None:
                self._cancelled = True
                self._signal = caught
            return self._signal

    @property
    def cancelled(self) -> bool:
        self.signal_number  # noqa: B018  # notes dlt's flag, which dlt clears when its step ends
        with self._lock:
            return self._cancelled

    def check(self) -> None:
        """Raise BentoCancelledError if the run was cancelled or its breaker tripped (or a lease lapsed)."""
        with self._lock:
            locks = list(self._locks.values())
        for lock in locks:
            lock.verify()  # a lease overdue for renewal trips the breaker here, before the request starts
        if self.cancelled:
            raise BentoCancelledError("not sent: the run is stopping (cancelled); the next run resumes it")
        if self.breaker is not None:
            raise BentoCancelledError(f"not sent: the run is stopping because {self.breaker}")

    # -- the retry budget ----------------------------------------------------------------------

    def gate(self, load_id: str, request_key: str) -> _RequestGate:
        return _RequestGate(self, (load_id, request_key))

    def attempts_left(self, key: tuple[str, str]) -> int:
        with self._lock:
            return MAX_ATTEMPTS - self._attempts.get(key, 0)

    def count_attempt(self, key: tuple[str, str]) -> int:
        """Count one attempt of the request; returns how many it has made in this run, this one included."""
        with self._lock:
            count = self._attempts[key] = self._attempts.get(key, 0) + 1
            return count

    def spent(self, load_id: str, request_key: str) -> bool:
        return self.attempts_left((load_id, request_key)) <= 0

    def add_batch(self, received: int, sent: int) -> None:
        """A sink batch finished: its rows are done (sent, rejected or unchanged), `sent` of them sent."""
        with self._lock:
            self.done += received
            self.sent += sent

    def plan(self, rows: int) -> None:
        """The load step is about to send the rows of packages holding `rows` rows not sent yet."""
        with self._lock:
            self.planned += rows

    @property
    def not_sent(self) -> int:
        """Rows of the packages this run loads that no finished batch has handled yet."""
        with self._lock:
            return max(0, self.planned - self.done)


def _key(working_dir: str | os.PathLike[str]) -> str:
    return str(Path(working_dir).resolve())


def current_run(working_dir: str | os.PathLike[str]) -> RunContext:
    """The run context of this pipeline folder: `sync()`'s or `bento_run`'s, else one for a plain run."""
    key = _key(working_dir)
    with _ACTIVE_LOCK:
        run = _ACTIVE.get(key)
        if run is None:
            run = _ACTIVE[key] = RunContext(working_dir, implicit=True)
        return run


@contextlib.contextmanager
def bento_run(
    pipeline_or_dir: Any, *, wait: float | None = None, cancel: RunCancel | None = None
) -> Iterator[RunContext]:
    """Lock a pipeline's folder for a whole run; `with bento_run(pipeline): pipeline.run(data)`.

    Raises BentoBusyError (nothing sent) if another run holds it after `wait` seconds. The sink takes
    the ledger's locks on its first batch; all are released when the block ends.
    """
    working_dir = getattr(pipeline_or_dir, "working_dir", pipeline_or_dir)
    key = _key(working_dir)
    run = RunContext(working_dir, wait=wait, cancel=cancel)
    with _ACTIVE_LOCK:
        previous = _ACTIVE.get(key)
        if previous is not None and not previous.implicit:
            raise BentoBusyError(f"busy: a run of {working_dir} is already going on in this process; nothing was sent")
        if previous is not None:
            previous.release()  # a plain run's locks, held since its first batch
        _ACTIVE[key] = run
    try:
        run.hold_pipeline()
        yield run
    finally:
        with _ACTIVE_LOCK:
            if _ACTIVE.get(key) is run:
                del _ACTIVE[key]
        run.release()


def end_plain_runs() -> None:
    """Release the locks and close the clients of plain runs in this process (tests; a long-lived process)."""
    with _ACTIVE_LOCK:
        plain = [key for key, run in _ACTIVE.items() if run.implicit]
        runs = [_ACTIVE.pop(key) for key in plain]
    for run in runs:
        run.release()


def active_run(working_dir: str | os.PathLike[str]) -> RunContext | None:
    """The run context of this pipeline folder if a run is going on (never creates one)."""
    with _ACTIVE_LOCK:
        return _ACTIVE.get(_key(working_dir))


@atexit.register
def close_ledgers() -> None:
    """Close the ledgers every run context of this process holds (tests, exit); its locks stay held.

    A run closes its own when it ends (`RunContext.release`); what was committed is already durable.
    """
    with _ACTIVE_LOCK:
        runs = list(_ACTIVE.values())
    for run in runs:
        run.ledgers.close()


def close_ledger_location(location: str, site: str) -> None:
    """Close this process's open handles on one ledger, before a caller opens it on its own (reset, release)."""
    with _ACTIVE_LOCK:
        runs = list(_ACTIVE.values())
    for run in runs:
        run.ledgers.close_location(location, site)
