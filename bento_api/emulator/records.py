"""The request log: one record per request that reached the emulator's API, for tests and benchmarks.

CountingLog is the counts mode's log: the same summary from counters, no records (a million-request run
would otherwise hold every request's emails).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    """What arrived and what was answered.

    path is relative to /api/v1 (e.g. "/batch/subscribers"); rows counts the items of a batch or
    command body; emails lists their (normalised) emails so duplicates across requests can be
    counted; status is 0 when the connection was dropped without an answer (dropped=True); t is
    time.monotonic() at arrival; fault names the injected fault that shaped the answer, if any.
    """

    method: str
    path: str
    query: dict[str, str]
    body: Any | None
    status: int
    family: str
    rows: int
    emails: list[str]
    user_agent: str | None
    t: float
    dropped: bool = False
    fault: str | None = None
    duration: float = 0.0

    def to_dict(self, bodies: bool = False) -> dict[str, Any]:
        out = asdict(self)
        if not bodies:
            out.pop("body")
        return out


@dataclass
class RequestLog:
    """Thread-safe append-only list of RequestRecord."""

    _records: list[RequestRecord] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    @property
    def total(self) -> int:
        """Requests logged so far."""
        with self._lock:
            return len(self._records)

    def snapshot(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def filter(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        """Records with exactly this path (relative to /api/v1) and/or method, in completion order."""
        m = method.upper() if method else None
        return [r for r in self.snapshot() if (path is None or r.path == path) and (m is None or r.method == m)]

    def summary(self) -> dict[str, Any]:
        """Requests per path and status, rows and duplicate emails per path."""
        by_path: dict[str, Counter[str]] = defaultdict(Counter)
        by_status: Counter[str] = Counter()
        rows: Counter[str] = Counter()
        emails: dict[str, Counter[str]] = defaultdict(Counter)
        records = self.snapshot()
        for r in records:
            key = "dropped" if r.dropped else str(r.status)
            by_path[r.path][key] += 1
            by_status[key] += 1
            if 200 <= r.status < 300 or r.dropped:
                rows[r.path] += r.rows
                emails[r.path].update(r.emails)
        return {
            "total": len(records),
            "by_status": dict(by_status),
            "by_path": {p: dict(c) for p, c in by_path.items()},
            "rows_by_path": dict(rows),
            "distinct_emails_by_path": {p: len(c) for p, c in emails.items()},
            "duplicate_emails_by_path": {p: sum(n - 1 for n in c.values() if n > 1) for p, c in emails.items()},
        }


class RecordsNotKept(RuntimeError):
    """The counts mode keeps no request records: read the summary instead."""


@dataclass
class CountingLog(RequestLog):
    """A request log that keeps only counters: requests by path and status, rows of accepted requests, 429s."""

    _total: int = 0
    _by_path: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    _rows: Counter[str] = field(default_factory=Counter)

    def append(self, record: RequestRecord) -> None:
        key = "dropped" if record.dropped else str(record.status)
        with self._lock:
            self._total += 1
            self._by_path[record.path][key] += 1
            if 200 <= record.status < 300 or record.dropped:
                self._rows[record.path] += record.rows

    def clear(self) -> None:
        with self._lock:
            self._total = 0
            self._by_path.clear()
            self._rows.clear()

    @property
    def total(self) -> int:
        with self._lock:
            return self._total

    def snapshot(self) -> list[RequestRecord]:
        raise RecordsNotKept("the emulator runs with records='counts' and keeps no request records; "
                             "use summary() (GET /_emulator/summary) for requests by path and status")

    def summary(self) -> dict[str, Any]:
        """RequestLog.summary's counts (no per-email figures: the tally counts distinct people)."""
        with self._lock:
            by_status: Counter[str] = Counter()
            for counts in self._by_path.values():
                by_status.update(counts)
            return {
                "records": "counts",
                "total": self._total,
                "by_status": dict(by_status),
                "by_path": {p: dict(c) for p, c in self._by_path.items()},
                "rows_by_path": dict(self._rows),
                "rate_limited": by_status.get("429", 0),
            }
