"""Timestamps as Bento writes them (ISO 8601, UTC, milliseconds, 'Z') and a parser for filters.

Kept apart from `bento_api.timestamps` on purpose, like the emulator's limits: it checks the client's
rule independently instead of sharing it.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

SEED_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)  # seeded objects are dated after this, always in the past


def iso(dt: datetime | None) -> str | None:
    """Format like Bento's Rails API: 2024-08-06T05:44:04.444Z."""
    if dt is None:
        return None
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    """Parse an ISO 8601 date or datetime; naive values are taken as UTC. Raises ValueError."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected an ISO 8601 string")
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt


class MonotonicUTC:
    """Wall-clock UTC 'now' that never repeats or goes back at millisecond resolution.

    Why: incremental loads filter on updated_at with exclusive bounds; two changes in the same
    millisecond, or a clock step, would make a change invisible to the next run.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = SEED_EPOCH

    def now(self) -> datetime:
        with self._lock:
            real = datetime.now(UTC)
            real = real.replace(microsecond=(real.microsecond // 1000) * 1000)
            nxt = max(real, self._last + timedelta(milliseconds=1))
            self._last = nxt
            return nxt
