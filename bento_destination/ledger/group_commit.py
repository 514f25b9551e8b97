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
from typing import Generic, TypeVar

_C = TypeVar("_C")


class GroupCommit(Generic[_C]):
    """Commit each caller's changes, several at once when they queue up; `commit(changes)` commits a list as one.

    `submit` waits for its commit; `submit_later` returns at once, and `schedule` (the ledger's thread) runs the
    commit of everything queued by then. If a combined commit fails, every caller of that group gets its
    exception (none of them is committed).
    """

    def __init__(
        self, commit: Callable[[list[_C]], None], schedule: Callable[[Callable[[], None]], object] | None = None
    ) -> None:
        self._commit = commit
        self._schedule = schedule
        self._queued: list[tuple[_C, Future[None]]] = []
        self._queue_lock = threading.Lock()
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
        go on sending meanwhile; what marks a request done waits for it)."""
        if self._schedule is None:
            raise RuntimeError("this group commit has no thread to commit on (pass schedule=)")
        done = self._queue(changes)
        with self._queue_lock:
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
        self._commit_queued()

    def _commit_queued(self) -> None:
        """Commit everything queued so far as one; its futures are settled after the commit lock is let go
        (their callbacks may take time: they must not hold up the next commit)."""
        with self._committing:  # one commit at a time; the holder takes everything queued so far
            with self._queue_lock:
                group, self._queued = self._queued, []
            if not group:
                return
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
