"""Writes Bento has accepted but not applied yet: the bento_like mode's queue of imports and commands.

Bento answers a batch import or a command at once and applies it later ("typically instant but may take
up to 5 minutes"; see docs/bento-api.md). A write submitted here is applied `delay` seconds after it was
accepted, in the order accepted. Nothing runs in the background: due writes are applied when someone
looks (every API request, `apply_due`), and `drain` applies them all at once, so tests never sleep
and an injected clock decides exactly what is due.

Every write is applied under the store's lock, the same lock the handlers read under, so a reader
sees a write entirely or not at all, and writes never overtake each other.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Apply = Callable[[], None]


@dataclass(frozen=True)
class _Pending:
    due: float
    apply: Apply


class WriteQueue:
    """Applies writes at once (`delay` None: the default mode) or `delay` seconds after they are accepted."""

    def __init__(self, lock: threading.RLock, delay: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = lock
        self.delay = delay
        self._clock = clock
        self._pending: deque[_Pending] = deque()
        self.applied_total = 0

    def submit(self, apply: Apply) -> None:
        """Apply now (no delay) or queue `apply` to run once its delay has passed."""
        with self._lock:
            if self.delay is None:
                apply()
                self.applied_total += 1
                return
            self._pending.append(_Pending(self._clock() + self.delay, apply))

    def apply_due(self) -> int:
        """Apply every queued write whose delay has passed; how many were applied."""
        with self._lock:
            now = self._clock()
            return self._apply_while(lambda item: item.due <= now)

    def drain(self) -> int:
        """Apply every queued write now, due or not (as if the delay had passed); how many were applied."""
        with self._lock:
            return self._apply_while(lambda item: True)

    def pending(self) -> int:
        """Writes accepted and not applied yet (after applying the due ones)."""
        with self._lock:
            self.apply_due()
            return len(self._pending)

    def next_due_in(self) -> float | None:
        """Seconds until the last queued write is due (0 if already due), None if nothing is queued."""
        with self._lock:
            if not self._pending:
                return None
            return max(0.0, self._pending[-1].due - self._clock())

    def _apply_while(self, ready: Callable[[_Pending], bool]) -> int:
        # Delays are equal, so due times grow along the queue: stop at the first write not ready.
        applied = 0
        while self._pending and ready(self._pending[0]):
            self._pending.popleft().apply()
            applied += 1
        self.applied_total += applied
        return applied
