"""Requests of one sink call in flight side by side, each finished on its own as soon as Bento answers.

The sink's thread reads and plans; requests run on a small pool shared by the run's load jobs, at most
`in_flight` at once (the client's own cap, pacing and the run's gate apply inside `client.post`), with a few
windows' requests planned and waiting, so reading never runs far ahead. Nothing waits for a group of
requests: a sink call waits only at its very end, for the last requests of its file and their ledger commits
(`after`). The first failure stops new requests from starting; those in flight finish (and are
acknowledged); `finish()` raises that failure.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

#: requests planned or in flight per request in flight: with 8 in flight, 16, which covers the requests of
#: the next window (5 at 5,000 rows) while those of this one go out. Every planned request holds its rows'
#: payloads: at 6 per slot (48 requests of 1,000 rows) a streamed 1,000,000-row sync peaked higher, with the
#: same rows/s (settings.MAX_LOAD_JOBS has the figures).
QUEUED_PER_SLOT = 2


def request_pool(in_flight: int) -> ThreadPoolExecutor:
    """Threads for requests: share one among the load jobs of a run, so that no more threads wait on the
    client's pacing than it lets requests fly (a thread that got its turn and then waits for a free slot
    would start its request late, together with the next one: a 429 at a strict limiter)."""
    return ThreadPoolExecutor(max_workers=max(1, in_flight), thread_name_prefix="bento-request")


def request_slots(in_flight: int) -> threading.BoundedSemaphore:
    """Requests planned or in flight at once: share one among the load jobs of a run, as the pool, so that
    eight jobs do not each hold their files' planned requests (with 100 load files of 10,000 rows, the items
    of eight whole files sat in memory)."""
    return threading.BoundedSemaphore(max(1, in_flight) * QUEUED_PER_SLOT)


class RequestPipeline:
    """A bounded pool of request tasks (see the module docstring)."""

    def __init__(
        self, in_flight: int, pool: ThreadPoolExecutor | None = None, slots: threading.Semaphore | None = None
    ) -> None:
        self._own = pool is None
        self._pool = pool or request_pool(in_flight)
        self._slots = slots or request_slots(in_flight)
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._futures: list[Future[None]] = []

    @property
    def failed(self) -> bool:
        with self._lock:
            return self._error is not None

    def submit(self, task: Callable[[], None]) -> Future[None] | None:
        """Run `task` on the pool (blocks while the pool is full); None once a task has failed."""
        self._slots.acquire()
        if self.failed:
            self._slots.release()
            return None
        future = self._pool.submit(self._run, task)
        with self._lock:
            self._futures = [f for f in self._futures if not f.done()]
            self._futures.append(future)
        return future

    def after(self, committed: Future[None], step: Callable[[], None]) -> None:
        """Run `step` once `committed` is done (on the thread that completes it), and wait for both in
        `finish()`: a request's rows are committed to the ledger after its thread moved on to the next
        request, and only then is it marked done. A failure of either stops new requests, as a request's."""
        settled: Future[None] = Future()

        def run_step(done: Future[None]) -> None:
            # a failed commit's error is shared by its group's futures: handed on, never re-raised here
            error = done.exception()
            if error is None:
                try:
                    step()
                except BaseException as raised:
                    error = raised
            if error is None:
                settled.set_result(None)
            else:
                self._fail(error)
                settled.set_exception(error)

        with self._lock:
            self._futures.append(settled)
        committed.add_done_callback(run_step)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = error

    def _run(self, task: Callable[[], None]) -> None:
        try:
            task()
        except BaseException as error:
            self._fail(error)
            raise
        finally:
            self._slots.release()

    def finish(self) -> None:
        """Wait for every request still in flight, then raise the first failure, if any."""
        while True:  # a request that finishes adds its commit's future (`after`): wait until none is left
            with self._lock:
                futures = [f for f in self._futures if not f.done()]
            if not futures:
                break
            wait(futures)
        if self._own:
            self._pool.shutdown(wait=True)
        with self._lock:
            error = self._error
        if error is not None:
            raise error
