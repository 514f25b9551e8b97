"""The sync ledgers one run context holds open: one per (location, site), shared by the run's threads.

dlt's parallel load jobs of one run all write to the same ledger (it is thread-safe), so each run
context (runcontext.py) opens it once and closes it when the run ends. A plain run's context outlives
its load, so a new load reopens the ledger (a folder ledger then sees other processes' segments).
"""

from __future__ import annotations

import threading

from .ledger import SyncLedger


class RunLedgers:
    """One run's open ledgers (thread-safe); `close()` when the run ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], tuple[SyncLedger, str]] = {}

    def ledger(self, location: str, site: str, load_id: str) -> SyncLedger:
        """The run's ledger for (location, site); reopened when a new load starts (fresh view of a folder)."""
        key = (location, site)
        with self._lock:
            entry = self._open.get(key)
            if entry is not None and entry[1] == load_id:
                return entry[0]
            if entry is not None:
                entry[0].close()
            ledger = SyncLedger.open(location, site=site)
            self._open[key] = (ledger, load_id)
            return ledger

    def close_location(self, location: str, site: str) -> None:
        """Close the ledger of (location, site) if this run holds it (before opening it on its own)."""
        with self._lock:
            entry = self._open.pop((location, site), None)
        if entry is not None:
            entry[0].close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        """Close every ledger of the run; what was committed is already durable."""
        with self._lock:
            ledgers, self._open = [ledger for ledger, _ in self._open.values()], {}
        for ledger in ledgers:
            ledger.close()
