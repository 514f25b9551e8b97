"""One run at a time: a lock on a pipeline's working folder and on each (ledger, site, operation).

Two runs that send the same load package, or diff the same rows against one ledger at the same time,
send everything twice (a cron tick that overlaps a slow run). So a run holds a lock from extract to
load, and a second run either waits for it (`wait` seconds) or stops before sending anything with a
`BentoBusyError` that names the holder (the CLI exits 75, EX_TEMPFAIL).

Local disk: `FileRunLock`, an exclusive `fcntl.flock` on a lock file whose content names the holder
(host, pid, start time). The kernel drops a flock when its process dies, however it dies, so the lock
of a dead run is taken over by the next run with no cleanup. The lock file itself is left in place (it
is reused); its text only says who holds or last held it.

Any operation can be locked (`ledger_lock.lock_for_ledger(location, site, "emails")` for transactional emails):
the lock is keyed by a name, not by what runs under it. An `s3://` ledger gets a lease object instead
(`S3LeaseLock` in s3lease.py: a conditional PUT with an expiry the holder renews). Other object stores
(`gs://`, `az://`, ...) get no lock: there the pipeline folder's lock is what stops two runs of one
pipeline, and two runners sharing one such ledger must not overlap.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

from bento_api import BentoError

#: the folder of lock files, beside the pipeline folders or inside a folder ledger
LOCKS_DIRNAME = ".bento-locks"
#: seconds between two tries while waiting for a busy lock
POLL_SECONDS = 0.2
#: `wait=FOREVER` waits for as long as the holder runs
FOREVER = float("inf")


class BentoBusyError(BentoError):
    """Another run holds the lock; nothing was sent by this run. `holder`: host, pid, started_at, what."""

    def __init__(self, message: str, *, holder: dict[str, Any] | None = None, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.holder = dict(holder or {})


class RunLock(Protocol):
    """What every run lock offers (a local lock file, or a lease object on S3)."""

    #: what the lock protects, for messages ("pipeline folder /srv/p", "ledger x.duckdb, site s, events")
    description: str
    #: where it lives (the lock file, or the lease object's URL): one lock per path in a run
    path: Any

    @property
    def held(self) -> bool:
        """This run holds it now (a lease another run took over is no longer held)."""

    def acquire(self, wait: float | None = None) -> None:
        """Take the lock; if busy, retry for `wait` seconds (None or 0: not at all), then raise BentoBusyError."""

    def release(self) -> None:
        """Give the lock up (idempotent)."""

    def verify(self) -> None:
        """Before a request: a lock that can lapse (a lease) reports itself lost if it may have (see s3lease.py)."""


def holder_text(holder: dict[str, Any]) -> str:
    """`pid 123 on host h since 2026-01-01T00:00:00+00:00` from a holder record (what is known of it)."""
    if not holder:
        return "an unknown process"
    parts = [f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"]
    if holder.get("started_at"):
        parts.append(f"since {holder['started_at']}")
    return " ".join(parts)


class FileRunLock:
    """An exclusive flock on `path`, with the holder written into the file. Use as a context manager."""

    def __init__(self, path: str | os.PathLike[str], description: str) -> None:
        self.path = Path(path)
        self.description = description
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"FileRunLock({str(self.path)!r})"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def read_holder(self) -> dict[str, Any]:
        """The holder recorded in the lock file (empty if unknown or half-written)."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _try(self) -> bool:
        """One try. Each open() is its own file description, so a second run in this process is refused too."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "what": self.description,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self._fd = fd
        return True

    def acquire(self, wait: float | None = None) -> None:
        if self._fd is not None:
            return
        deadline = time.monotonic() + (wait or 0.0)
        while not self._try():
            if time.monotonic() >= deadline:
                holder = self.read_holder()
                waited = f" after waiting {wait:g}s" if wait else ""
                raise BentoBusyError(
                    f"busy: another run holds the {self.description} ({holder_text(holder)}){waited}; "
                    "nothing was sent. Wait for it (--wait SECONDS, or sync(wait=...)) or run later",
                    holder=holder,
                    path=str(self.path),
                )
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))

    def verify(self) -> None:
        """A flock cannot lapse while its process lives: nothing to check."""

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.release()


def pipeline_lock(working_dir: str | os.PathLike[str]) -> FileRunLock:
    """The lock of a pipeline's working folder (`<pipelines_dir>/<pipeline_name>`): one run of it at a time.

    The file lives beside the folder, in `<pipelines_dir>/.bento-locks/<pipeline_name>.lock`: dlt wipes a
    new pipeline's working folder (and `pipeline.drop()` does too), which would take a lock inside with it.
    """
    folder = Path(working_dir)
    return FileRunLock(folder.parent / LOCKS_DIRNAME / f"{folder.name}.lock", f"pipeline folder {folder}")
