"""Group commit: records that arrive while another is being committed go into the next commit together.

The sink acknowledges each request on its own, as soon as Bento answers, and up to 8 requests are in flight;
one ledger commit costs tens of milliseconds, on the ledger's one thread. Committed one by one, 100 requests
spent about 5 s in commits on an unthrottled 100,000-row load; grouped, each commit carries the requests
answered meanwhile. A request is marked done only once its rows are in the ledger (a crash loses no
acknowledgement): `submit` returns after the commit, and `submit_later` hands back a future that the sink
chains that mark to, so the request's thread need not wait for the commit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final, Generic, TypeVar

_C = TypeVar("_C")


#: changes of at most this many callers go into one commit: each is one request's rows (up to 1000), and a
#: commit's ops are grouped in DuckDB under the ledger's steady memory cap (24 MB), which a commit of 100
#: requests' rows exceeded (an unthrottled 1,000,000-row sync, whose answers outran the commits)
MAX_GROUP: Final = 8
#: `submit_later` waits while this many changes wait for their commit: the sink sends no faster than the
#: ledger commits, and what it holds for uncommitted requests stays bounded
MAX_WAITING: Final = 32


class GroupCommit(Generic[_C]):
    """Commit each caller's changes, several at once when they queue up; `commit(changes)` commits a list as one.

    `submit` waits for its commit; `submit_later` returns once its changes are queued, and `schedule` (the
    ledger's thread) commits what is queued, at most `max_group` callers' changes a commit, oldest first. If
    a combined commit fails, every caller of that group gets its exception (none of them is committed).
    """

    def __init__(
        self,
        commit: Callable[[list[_C]], None],
        schedule: Callable[[Callable[[], None]], object] | None = None,
        *,
        max_group: int = MAX_GROUP,
        max_waiting: int = MAX_WAITING,
    ) -> None:
        self._commit = commit
        self._schedule = schedule
        self._max_group = max(1, max_group)
        self._max_waiting = max(1, max_waiting)
        self._queued: list[tuple[_C, Future[None]]] = []
        self._queue_lock = threading.Condition(threading.Lock())
        self._committing = threading.Lock()
        self._drain_scheduled = False

    def submit(self, changes: _C) -> None:
        """Returns once `changes` are committed (alone or with others queued meanwhile), or raises why not."""
        done = self._queue(changes)
        while not done.done():
            self._commit_queued()
        done.result()

    def submit_later(self, changes: _C) -> Future[None]:
        """Queue `changes` and return a future, done once they are committed (the request threads of the sink
        go on sending meanwhile; what marks a request done waits for it). Waits first while `max_waiting`
        changes are queued."""
        if self._schedule is None:
            raise RuntimeError("this group commit has no thread to commit on (pass schedule=)")
        done: Future[None] = Future()
        with self._queue_lock:  # one region: the bound holds exactly, and one drain is scheduled at a time
            while len(self._queued) >= self._max_waiting:
                self._queue_lock.wait()
            self._queued.append((changes, done))
            schedule, self._drain_scheduled = not self._drain_scheduled, True
        if schedule:
            self._schedule(self._drain)
        return done

    def _queue(self, changes: _C) -> Future[None]:
        done: Future[None] = Future()
        with self._queue_lock:
            self._queued.append((changes, done))
        return done

    def _drain(self) -> None:
        with self._queue_lock:
            self._drain_scheduled = False
        while self._commit_queued():
            pass

    def _commit_queued(self) -> bool:
        """Commit the oldest queued changes (at most `max_group`) as one; False if none was queued. The futures
        are settled after the commit lock is let go (their callbacks must not hold up the next commit)."""
        with self._committing:  # one commit at a time
            with self._queue_lock:
                group, self._queued = self._queued[: self._max_group], self._queued[self._max_group :]
                self._queue_lock.notify_all()
            if not group:
                return False
            try:
                self._commit([entry for entry, _ in group])
            except BaseException as error:
                failure: BaseException | None = error
            else:
                failure = None
        for _, future in group:
            if failure is None:
                future.set_result(None)
            else:
                future.set_exception(failure)
        return True
