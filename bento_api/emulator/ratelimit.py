"""Token-bucket rate limiter per endpoint family, as docs/bento-api.md ("Rate limits") models Bento's budget.

A bucket holds up to `capacity` tokens and refills continuously at the family's rate. A request takes
one token; an empty bucket answers 429 and takes nothing. Capacity 2 (the default) forgives arrival
jitter of an evenly paced client; capacity 1 is strict. The refill is computed from a monotonic clock
on every call, so the limiter is exact over any window (bench/bench_pacing.py relies on that).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Final

from . import limits

RETRY_AFTER_MODES: Final = ("seconds", "http-date", None)


@dataclass(frozen=True)
class RateLimit:
    """A family's budget; per_second None means unlimited."""

    per_second: float | None
    capacity: float = limits.BUCKET_CAPACITY
    retry_after: str | None = "seconds"

    @classmethod
    def of(
        cls,
        per_minute: float | None = None,
        per_hour: float | None = None,
        capacity: float = limits.BUCKET_CAPACITY,
        retry_after: str | None = "seconds",
    ) -> RateLimit:
        """Build from the units Bento documents; both None disables the limit."""
        if per_minute is not None and per_hour is not None:
            raise ValueError("give per_minute or per_hour, not both")
        if retry_after not in RETRY_AFTER_MODES:
            raise ValueError("retry_after must be 'seconds', 'http-date' or None")
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        rate: float | None = None
        if per_minute is not None:
            rate = per_minute / 60.0
        elif per_hour is not None:
            rate = per_hour / 3600.0
        if rate is not None and rate <= 0:
            raise ValueError("rate must be > 0")
        return cls(per_second=rate, capacity=capacity, retry_after=retry_after)


@dataclass(frozen=True)
class Decision:
    """Outcome of one acquire: allowed, or refused with the seconds until a token is available."""

    allowed: bool
    wait: float = 0.0
    retry_after: str | None = "seconds"


class TokenBucket:
    """One family's bucket. Not locked itself: the RateLimiter holds the lock."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self.tokens = limit.capacity
        self.stamp = now

    def acquire(self, now: float) -> Decision:
        rate = self.limit.per_second
        if rate is None:
            return Decision(True)
        self.tokens = min(self.limit.capacity, self.tokens + max(0.0, now - self.stamp) * rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return Decision(True)
        return Decision(False, wait=(1.0 - self.tokens) / rate, retry_after=self.limit.retry_after)


class RateLimiter:
    """All families' buckets behind one lock; limits can change while the server runs."""

    def __init__(self, limits_by_family: dict[str, RateLimit], clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self._buckets = {fam: TokenBucket(lim, now) for fam, lim in limits_by_family.items()}

    def set(self, family: str, limit: RateLimit) -> None:
        """Replace a family's limit ('*' for all families); the bucket starts full."""
        families = limits.FAMILIES if family in ("*", "all") else (family,)
        for fam in families:
            if fam not in limits.FAMILIES:
                raise ValueError(f"unknown family {fam!r}; expected one of {limits.FAMILIES} or '*'")
        with self._lock:
            now = self._clock()
            for fam in families:
                self._buckets[fam] = TokenBucket(limit, now)

    def get(self, family: str) -> RateLimit | None:
        with self._lock:
            bucket = self._buckets.get(family)
            return None if bucket is None else bucket.limit

    def refund(self, family: str) -> None:
        """Give a token back (a forced 429 fault must not cost budget, like a real 429)."""
        with self._lock:
            bucket = self._buckets.get(family)
            if bucket is not None and bucket.limit.per_second is not None:
                bucket.tokens = min(bucket.limit.capacity, bucket.tokens + 1.0)

    def acquire(self, family: str) -> Decision:
        with self._lock:
            bucket = self._buckets.get(family)
            if bucket is None:
                return Decision(True)
            return bucket.acquire(self._clock())


def retry_after_header(seconds: float, mode: str | None, wall: Callable[[], float] = time.time) -> str | None:
    """Retry-After value: integer seconds rounded up, an HTTP-date that far ahead, or no header."""
    if mode is None:
        return None
    whole = max(1, math.ceil(seconds - 1e-9))
    if mode == "http-date":
        # An HTTP-date has whole-second resolution: round the target time up so waiting until it is enough.
        return formatdate(math.ceil(wall() + seconds), usegmt=True)
    return str(whole)
