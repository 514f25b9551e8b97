"""Even spacing of requests per endpoint family, shared by every thread and client in the process.

Bento counts requests per minute (stats: per hour). Bursts get 429s, so each request reserves the
next free slot on its family's timeline and sleeps until it. After a 429 the spacing widens and
recovers slowly once requests succeed again; a Retry-After holds the whole family. A request may
weigh more than one slot (an emails request holds one slot per email on the emails timeline).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], None]

#: widen the spacing by this factor on each 429, never past MAX_SLOWDOWN times the budget's spacing
SLOWDOWN_FACTOR = 1.5
MAX_SLOWDOWN = 8.0
#: after this many successes in a row, narrow the spacing by RECOVERY_FACTOR (back to the budget in ~20)
RECOVERY_STREAK = 5
RECOVERY_FACTOR = 0.8
#: spacing is this much wider than the budget's, so that arrival jitter does not trip a strict limiter
SAFETY_MARGIN = 1.02


class Pacer:
    """Hands out send times spaced `interval` seconds apart; thread-safe."""

    def __init__(self, interval: float, *, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self.base_interval = interval * SAFETY_MARGIN
        self.interval = self.base_interval
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = float("-inf")
        self._last_start = float("-inf")
        self._last_weight = 1.0
        self._streak = 0

    def reserve(self, weight: float = 1.0) -> float:
        """Reserve the next slot (`weight` slots long) and return how long the caller must wait for it."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval * weight
            return slot - now

    def acquire(self, weight: float = 1.0, sleep: Sleep | None = None) -> float:
        """Wait for the next slot, and at least one interval after the last request that really started.

        A thread that wakes late for its slot (a busy CPU, the GIL) would otherwise go out right next to
        the thread holding the following slot; two requests together are what a strict limiter answers
        with 429. `weight`: the slots this request uses (the next request starts that much later). `sleep`
        replaces the pacer's own (a caller's wait that a cancel interrupts by raising). Returns the seconds waited.
        """
        waited = 0.0
        wait = self.reserve(weight)
        while True:
            if wait > 0:
                (sleep or self._sleep)(wait)
                waited += wait
            with self._lock:
                now = self._clock()
                earliest = self._last_start + self.interval * self._last_weight
                if now >= earliest:
                    self._last_start = now
                    self._last_weight = weight
                    return waited
                wait = earliest - now

    def hold_until(self, when: float) -> None:
        """No request of this family before `when` (clock time), e.g. after a Retry-After."""
        with self._lock:
            self._next_slot = max(self._next_slot, when)

    def slow_down(self) -> None:
        with self._lock:
            self.interval = min(self.interval * SLOWDOWN_FACTOR, self.base_interval * MAX_SLOWDOWN)
            self._streak = 0

    def succeeded(self) -> None:
        with self._lock:
            self._streak += 1
            if self._streak >= RECOVERY_STREAK and self.interval > self.base_interval:
                self.interval = max(self.base_interval, self.interval * RECOVERY_FACTOR)
                self._streak = 0


class PacerRegistry:
    """One pacer per (endpoint, account, family, spacing): clients in one process share the budget."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pacers: dict[tuple[str, str, str, float], Pacer] = {}

    def get(
        self,
        base_url: str,
        site_uuid: str,
        family: str,
        interval: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> Pacer:
        key = (base_url, site_uuid, family, interval)
        with self._lock:
            pacer = self._pacers.get(key)
            if pacer is None:
                pacer = self._pacers[key] = Pacer(interval, clock=clock, sleep=sleep)
            return pacer


#: the process-wide registry used unless a client is given its own (tests with injected clocks)
PACERS = PacerRegistry()
