"""Fewer garbage collections while load files are sent: the collector's first threshold raised, then restored.

The sink keeps a few container objects per row in flight (the row, its payload dict, its items, its ledger
plan). CPython collects its youngest generation every 700 new containers and, as those survive, runs full
collections that walk every object in the process, dlt's, pandas' and pyarrow's included: many times per
load, all under the GIL that the request threads and the mapping share. Measured on the unthrottled
100,000-row load of BENCHMARKS.md (claim b), the load step took about a third less time with the collector
off. The objects of a load form no reference cycles of their own, so collecting less often loses nothing;
cycles made meanwhile are still collected, at the raised threshold.

The collector's thresholds belong to the process, not to a run, so this count does too: the first load job
to enter raises the threshold, the last to leave restores whatever it was (a program's own setting included).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

#: new container objects between young collections while a load runs (CPython's default is 700)
LOAD_THRESHOLD: Final = 20_000


class _Raised:
    """How many load jobs are inside `fewer_collections`, and the thresholds to restore after the last."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.inside = 0
        self.saved: tuple[int, int, int] | None = None


_RAISED = _Raised()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the collector's first threshold to LOAD_THRESHOLD (never lower it) while the block runs."""
    with _RAISED.lock:
        if _RAISED.inside == 0:
            _RAISED.saved = gc.get_threshold()
            first, *rest = _RAISED.saved
            if 0 < first < LOAD_THRESHOLD:  # 0: the program turned automatic collection off; leave it so
                gc.set_threshold(LOAD_THRESHOLD, *rest)
        _RAISED.inside += 1
    try:
        yield
    finally:
        with _RAISED.lock:
            _RAISED.inside -= 1
            if _RAISED.inside == 0 and _RAISED.saved is not None:
                gc.set_threshold(*_RAISED.saved)
                _RAISED.saved = None
