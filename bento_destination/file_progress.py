"""Which requests of a load file Bento acknowledged, kept in dlt's load package state, for exact resume.

The sink reads a file in windows of input rows (load_files.py): small ones first, then WINDOW_ROWS each
(the file's schedule, SCHEDULES).
Before the first request of a window goes out, the window's plan is committed: which of its rows survived
the ledger's filter (a bitmap) and how many items each request holds (`main`: the operation's own
requests; `derived`: commands made from rows). The plan fixes every request's rows for good: request k
holds the planned items k-th in order. Each request, once Bento answered and the ledger acknowledged it,
is added to the window's `done` list and the state is committed; a window whose requests are all done
shrinks to `1`. A resumed load (after a crash, a signal or the breaker) re-reads the file, skips done
windows, re-plans nothing, and sends only the requests not in `done`: no acknowledged request is sent
twice and no row is skipped.

A package left pending by the release before this one kept dlt's own offsets (`"<table>.<file_id>" ->
rows done`, batches of 1000); those rows are skipped and windows count from there.
"""

from __future__ import annotations

import base64
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy

#: window schedules: the first windows are small and grow, so the first requests go out at once and each
#: window is mapped while the one before it is being sent; then windows of one size for good, large enough
#: that requests of changed rows fill up, small enough that the load jobs' windows fit in memory (at
#: 20,000 rows, a 1,000,000-row sync held about 130 MB more). Whole thousands, so full windows pack into
#: full requests. A file's schedule is kept in its state: a package planned with an earlier schedule resumes
#: with the windows it was planned in.
SCHEDULES: Final = {
    1: ((2_000, 3_000, 5_000, 8_000, 12_000, 16_000), 20_000),
    2: ((2_000, 3_000), 5_000),
}
SCHEDULE: Final = 2
RAMP, WINDOW_ROWS = SCHEDULES[SCHEDULE]


def window_sizes(schedule: int = SCHEDULE) -> Iterator[int]:
    """The size of each window in turn: the schedule's ramp, then its window size for good."""
    ramp, size = SCHEDULES[schedule]
    yield from ramp
    while True:
        yield size


def window_span(number: int, schedule: int = SCHEDULE) -> tuple[int, int]:
    """(first row, rows) of window `number`, counted from where the file's reading starts."""
    offset = 0
    for index, size in enumerate(window_sizes(schedule)):
        if index == number:
            return offset, size
        offset += size
    raise AssertionError("window_sizes() never ends")


#: the state's key prefix (dlt's own offsets use the bare `<table>.<file_id>`)
STATE_PREFIX: Final = "bento:"
DONE: Final = 1


@dataclass
class WindowPlan:
    """A window's requests, fixed when first planned: kept rows, items per request, requests done."""

    kept: numpy.ndarray[Any, numpy.dtype[numpy.bool_]]
    main: list[int]
    derived: list[int]
    done: set[str] = field(default_factory=set)

    def encode(self) -> dict[str, Any]:
        packed = numpy.packbits(self.kept).tobytes()
        return {
            "rows": len(self.kept),
            "kept": base64.b64encode(zlib.compress(packed)).decode("ascii"),
            "main": self.main, "derived": self.derived, "done": sorted(self.done),
        }

    @classmethod
    def decode(cls, data: dict[str, Any]) -> WindowPlan:
        packed = numpy.frombuffer(zlib.decompress(base64.b64decode(data["kept"])), numpy.uint8)
        kept = numpy.unpackbits(packed)[: int(data["rows"])].astype(numpy.bool_)
        return cls(kept, list(data["main"]), list(data["derived"]), set(data.get("done", [])))

    @property
    def requests(self) -> list[str]:
        return [f"m{k}" for k in range(len(self.main))] + [f"d{k}" for k in range(len(self.derived))]

    def main_rows_done(self) -> int:
        return sum(size for k, size in enumerate(self.main) if f"m{k}" in self.done)


class FileProgress:
    """One load file's windows in the package state (dlt's `destination_state()`), committed under a lock."""

    def __init__(
        self, state: dict[str, Any], commit: Callable[[], None], lock: threading.Lock, key: str
    ) -> None:
        self._state = state
        self._commit = commit
        self._lock = lock
        self._key = key
        self.legacy_offset = int(state.get(key, 0) or 0)  # the previous release's rows done (batches of 1000)

    @property
    def schedule(self) -> int:
        """The file's window schedule: the one it was first planned with, else this release's."""
        with self._lock:
            return entry_schedule(self._state.get(STATE_PREFIX + self._key))

    def _windows(self) -> dict[str, Any]:
        entry: dict[str, Any] = self._state.setdefault(STATE_PREFIX + self._key, {"schedule": SCHEDULE})
        windows: dict[str, Any] = entry.setdefault("windows", {})
        return windows

    def window(self, index: int) -> WindowPlan | int | None:
        """DONE, the window's plan, or None if it was never planned."""
        with self._lock:
            value = self._windows().get(str(index))
        if value is None or value == DONE:
            return value
        return WindowPlan.decode(value)

    def plan(self, index: int, plan: WindowPlan) -> None:
        with self._lock:  # dlt's own lock of the state: no commit serializes it while it changes
            self._windows()[str(index)] = DONE if not plan.requests else plan.encode()
        self._commit()

    def finish(self, index: int) -> None:
        """A window with nothing (more) to send: rejected, refused as a whole, or an email window sent."""
        with self._lock:
            self._windows()[str(index)] = DONE
        self._commit()

    def request_done(self, index: int, request: str) -> None:
        with self._lock:
            windows = self._windows()
            value = windows.get(str(index))
            if value is None or value == DONE:
                return
            done = set(value.get("done", [])) | {request}
            planned = len(value["main"]) + len(value["derived"])
            windows[str(index)] = DONE if len(done) >= planned else {**value, "done": sorted(done)}
        self._commit()


def package_progress(key: str) -> FileProgress:
    """The progress of one load file in the package dlt is loading (call on the sink's own thread).

    dlt finds the package state through a context of the calling thread; the requests run on threads of
    our own, so the state, its commit and its lock are taken here, once.
    """
    from dlt.common.configuration.container import Container
    from dlt.common.storages.load_package import LoadPackageStateInjectableContext, destination_state

    context = Container()[LoadPackageStateInjectableContext]
    return FileProgress(destination_state(), context.commit, context.state_save_lock, key)


def entry_schedule(entry: dict[str, Any] | None) -> int:
    """The schedule of a file's state entry: none yet is this release's; one without it was planned by the
    first release that read files in windows (schedule 1)."""
    if not entry:
        return SCHEDULE
    return int(entry.get("schedule", 1))


def rows_not_done(state: dict[str, Any], key: str, rows: int) -> int:
    """Rows of a file no acknowledged request covers yet (for the stop message and progress): an estimate
    for planned windows (rows of done requests of the operation's own requests)."""
    start = int(state.get(key, 0) or 0)
    entry = state.get(STATE_PREFIX + key) or {}
    windows: dict[str, Any] = entry.get("windows", {})
    schedule = entry_schedule(entry)
    left = max(0, rows - start)
    for name, value in windows.items():
        offset, span = window_span(int(name), schedule)
        first = start + offset
        size = max(0, min(span, rows - first))
        if value == DONE:
            left -= size
        else:
            plan = WindowPlan.decode(value)
            left -= size - int(plan.kept.sum()) + plan.main_rows_done()
    return max(0, left)


def ranges(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each request over the planned items."""
    out, start = [], 0
    for size in sizes:
        out.append((start, start + size))
        start += size
    return out
