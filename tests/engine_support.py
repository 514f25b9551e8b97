"""Helpers for the engine's tests: rows as the Python path sees them, and a ledger holding version 2 fingerprints.

While the Python path still acknowledges subscribers with version 1 fingerprints, the engine (which computes
version 2) finds every row changed. `record_v2` puts into a ledger what the Python path records once it writes
version 2, through the ledger's own API: the fingerprints are `subscriber_fingerprint_v2` of `map_subscriber`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bento_destination.changes import LEDGER_FILENAME
from bento_destination.engine.columns import dlt_name
from bento_destination.ledger import SyncLedger
from bento_destination.mapping import MappingOptions, map_subscriber
from bento_destination.subscriber_fingerprint import subscriber_fingerprint_v2
from bento_destination.values import RowError


def as_sink_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An input row as the sink receives it: dlt's column names, nulls left out."""
    return {dlt_name(column): value for column, value in row.items() if value is not None}


def python_fingerprint(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """(email key, v2 fingerprint) the Python path computes for an input row; None if it rejects the row."""
    try:
        mapped = map_subscriber(as_sink_row(row), MappingOptions())
    except RowError:
        return None
    email = mapped.payload["email"] if mapped.payload else mapped.commands[0]["email"]
    return str(email), subscriber_fingerprint_v2(mapped.payload, mapped.commands)


def ledger_path(cwd: Path, pipeline: str = "bento_sync_subscribers") -> Path:
    return cwd / "p" / pipeline / LEDGER_FILENAME


def record_v2(ledger_file: Path, site: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Acknowledge the rows' version 2 fingerprints in the ledger file; how many."""
    pairs = [pair for pair in map(python_fingerprint, rows) if pair is not None]
    with SyncLedger.open(str(ledger_file), site=site) as ledger:
        ledger.acknowledge("subscribers", pairs)
    return len(pairs)
