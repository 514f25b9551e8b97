"""One thread runs every DuckDB call of a ledger, in order; callers wait for their result.

dlt runs load jobs in a thread pool, and a DuckDB connection must not be used by two threads at once.
Memory that DuckDB (and Arrow) allocate on a thread is also cached per thread by the allocators: when
ten load jobs each touched the connection, ten caches grew (about 50 MB more at 1,000,000 keys).
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import pyarrow as pa

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Worker:
    """The ledger's thread. Calls from the worker itself run inline (no deadlock), and so do calls once the
    worker is stopped or gone (interpreter exit, after a fork)."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            call, future = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller, which re-raises it
                future.set_exception(exc)
            del call, future, task
            # Arrow's allocator keeps what a thread freed for that thread's reuse; give it back now
            pa.default_memory_pool().release_unused()

    def call(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``fn(*args, **kwargs)`` on the worker thread; its result, or its exception re-raised here."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return fn(*args, **kwargs)
        future: Future[_R] = Future()
        self._queue.put((functools.partial(fn, *args, **kwargs), future))
        return future.result()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        """Queue ``fn()`` on the worker thread and return at once; its future holds the result or exception.
        Inline (done when returned) on the worker itself or once the worker is gone, as `call`."""
        future: Future[Any] = Future()
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)
            return future
        self._queue.put((fn, future))
        return future

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()


class HasWorker(Protocol):
    """An object whose methods run on its worker thread (the ledger)."""

    _worker: Worker


_S = TypeVar("_S", bound=HasWorker)


def on_worker(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Run a method on its object's worker thread (see `Worker`)."""

    @functools.wraps(method)
    def wrapper(self: _S, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return self._worker.call(method, self, *args, **kwargs)

    return wrapper
