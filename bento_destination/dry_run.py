"""The dry run: how rows compare with the sync ledger (new, changed, unchanged) without sending anything.

`bento-dlt sync --dry-run` and the run report use it; the same keys and fingerprints as a sync
(`changes.classify_mapped`), and identical events numbered as a sync numbers them (keys.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from .changes import classify_mapped
from .config import LedgerOptions
from .keys import DEFAULT_EVENT_KEYS, IdenticalRows, base_event_key, check_event_keys, explicit_event_key
from .ledger import CHANGED, NEW, UNCHANGED, OlderFingerprints, SyncLedger, settle_stale, subscriber_fingerprint_v1
from .ledger_admin import location_or_fail
from .mapping import MappedRow, MappingOptions, map_row
from .rows import iter_rows
from .settings import SINK_BATCH_SIZE
from .values import RowError


@dataclass
class ChangeCounts:
    """How the rows of a table compare with the ledger (the dry run and the run report show these)."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    invalid: int = 0
    untracked: int = 0  # events without a key (always sent), commands, emails

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("new", "changed", "unchanged", "invalid", "untracked")}


def classify_rows(
    rows: Iterable[Mapping[str, Any]],
    operation: str,
    *,
    site_uuid: str,
    ledger_url: str | None = None,
    working_dir: str | Path | None = None,
    derive_event_keys: bool | None = None,
    allow_secret_columns: bool = False,
    event_keys: str = DEFAULT_EVENT_KEYS,
) -> ChangeCounts:
    """Classify rows against the ledger as new, changed or unchanged without sending anything (dry run).

    `working_dir` is the pipeline's working folder (where the default ledger file lives) when no
    `ledger_url` is given (keyword, else the destination's config `ledger_url`). Streams: rows are read, mapped
    and joined against the ledger 1000 at a time, so any number of rows takes the memory of one chunk.
    Identical events are numbered as a sync numbers them (keys.py); `derive_event_keys` is deprecated.
    """
    options = LedgerOptions(ledger_url=ledger_url, event_keys=check_event_keys(event_keys))
    identical = IdenticalRows()
    location = location_or_fail(options, working_dir)
    counts = ChangeCounts()
    mapping = MappingOptions(allow_secret_columns)
    with SyncLedger.open(location, site=site_uuid) as ledger:
        for chunk in _chunks(iter_rows(rows)):
            keys: list[str] = []
            fps: list[str] = []
            rows_mapped: list[MappedRow] = []
            events: list[MappedRow] = []
            for row in chunk:
                try:
                    mapped = map_row(operation, row, mapping)
                except RowError:
                    counts.invalid += 1
                    continue
                if operation == "events" and options.event_keys == "derived":
                    events.append(mapped)  # keyed below, once the chunk's identical rows are numbered
                    continue
                pair = classify_mapped(operation, mapped, options.event_keys)
                if pair is None:
                    counts.untracked += 1
                else:
                    keys.append(pair[0])
                    fps.append(pair[1])
                    rows_mapped.append(mapped)
            for key, fp in _numbered_pairs(events, identical):
                keys.append(key)
                fps.append(fp)
            if not keys:
                continue
            klass = ledger.classify(operation, pa.table({"key": pa.array(keys, pa.string()), "fp": fps}))
            if operation == "subscribers":  # entries of an older version: compared with it; a dry run writes nothing
                settle_stale(ledger, operation, keys, fps, klass, _v1_fingerprints(rows_mapped), restamp=False)
            counts.new += int((klass == NEW).sum())
            counts.changed += int((klass == CHANGED).sum())
            counts.unchanged += int((klass == UNCHANGED).sum())
    return counts


def _v1_fingerprints(rows: list[MappedRow]) -> OlderFingerprints:
    """The version 1 fingerprints of the chosen mapped subscriber rows (to compare with entries of that version)."""
    return lambda indexes: [subscriber_fingerprint_v1(rows[i].payload, rows[i].commands) for i in indexes]


def _numbered_pairs(events: list[MappedRow], identical: IdenticalRows) -> list[tuple[str, str]]:
    """(ledger key, fingerprint) of mapped events, derived keys numbered over every chunk so far."""
    loose = [m for m in events if m.payload is not None and explicit_event_key(m.payload) is None]
    occurrences = identical.occurrences([base_event_key(m.payload or {}) for m in loose])
    numbers = dict(zip(map(id, loose), occurrences.tolist(), strict=True))
    pairs = []
    for mapped in events:
        copy = numbers.get(id(mapped))
        pair = classify_mapped("events", mapped, DEFAULT_EVENT_KEYS, copy)
        assert pair is not None  # every mapped event has a key in the "derived" mode
        pairs.append(pair)
    return pairs


def _chunks(rows: Iterator[dict[str, Any]], size: int = SINK_BATCH_SIZE) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
