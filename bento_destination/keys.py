"""Unique keys for events (and other rows Bento keeps once per key): derived by default, identical rows numbered.

Bento keeps one event per (person, type, `details.unique.key`) (docs/bento-api.md), so a key makes a resent
event harmless: a rerun of the same table, or a retry after a lost answer, never stores it twice. Most
event tables have no key column, so the destination derives one from the event's content
(`ledger.derive_event_key`: email, type, date, details), unchanged since it was an opt-in, so keys already in
users' ledgers stay valid. Two identical rows in one input are two events, so they must not share a key:
the n-th identical row gets the key plus `#n` (`number_identical`). Which of the identical rows gets which
number does not matter (they are identical); only how many there are, so the keys of an input do not depend
on the order in which the engine returns its rows.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy

from bento_api import BentoConfigError

from .ledger import derive_event_key

#: `event_keys` modes: "derived" (the default) gives events without their own key one derived from their
#: content; "none" sends them without a key (at-least-once: a rerun or a retry may store them again)
EVENT_KEY_MODES: Final = ("derived", "none")
DEFAULT_EVENT_KEYS: Final = "derived"
#: the column the pre-pass adds to an event table's load files: n for the n-th identical row (n >= 2),
#: so the number is part of the data and a resumed or retried load sends the same keys
COPY_COLUMN: Final = "_bento_identical_row"
#: table hint the pre-pass sets in the load package's schema: it numbered this event table and counted its
#: derived keys (the sink then does not count them again)
NUMBERED_HINT: Final = "x-bento-numbered"


def check_event_keys(mode: Any) -> str:
    """The `event_keys` mode, or BentoConfigError (before anything is extracted)."""
    if mode not in EVENT_KEY_MODES:
        raise BentoConfigError(f"event_keys must be one of {', '.join(map(repr, EVENT_KEY_MODES))}, got {mode!r}")
    return str(mode)


def numbered(key: str, n: int) -> str:
    """The key of the n-th identical row: the plain key for the first, `key#n` after it."""
    return key if n <= 1 else f"{key}#{n}"


def number_identical(keys: Iterable[str]) -> list[str]:
    """Final keys for base keys in input order: the first occurrence plain, the n-th `key#n`."""
    seen: Counter[str] = Counter()
    out: list[str] = []
    for key in keys:
        seen[key] += 1
        out.append(numbered(key, seen[key]))
    return out


def _key_hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "little", signed=True)


class IdenticalRows:
    """`number_identical` for inputs too large to hold their keys: occurrence numbers over a stream of chunks.

    Keeps a sorted array of 64-bit key hashes with their counts (16 bytes per distinct key, not a Python
    dict of strings). Two distinct keys sharing a 64-bit hash would share a count: at a million distinct
    keys the chance is about 3 in 100 million, and the cost one key with a number it did not need.
    """

    def __init__(self) -> None:
        self._hashes = numpy.zeros(0, numpy.int64)
        self._counts = numpy.zeros(0, numpy.int64)

    def occurrences(self, keys: Sequence[str]) -> numpy.ndarray[Any, numpy.dtype[numpy.int64]]:
        """For each key of this chunk, its occurrence number (1-based) counting every earlier chunk."""
        size = len(keys)
        if not size:
            return numpy.zeros(0, numpy.int64)
        hashes = numpy.fromiter((_key_hash(k) for k in keys), numpy.int64, size)
        order = numpy.argsort(hashes, kind="stable")
        ordered = hashes[order]
        starts = numpy.ones(size, numpy.bool_)
        starts[1:] = ordered[1:] != ordered[:-1]
        first = numpy.maximum.accumulate(numpy.where(starts, numpy.arange(size), 0))
        rank = numpy.arange(size) - first  # 0 for the first of equal keys in this chunk
        before = numpy.zeros(size, numpy.int64)
        if len(self._hashes):  # counts of earlier chunks
            at = numpy.minimum(numpy.searchsorted(self._hashes, ordered), len(self._hashes) - 1)
            before = numpy.where(self._hashes[at] == ordered, self._counts[at], 0)
        out = numpy.empty(size, numpy.int64)
        out[order] = before + rank + 1
        unique, counts = numpy.unique(ordered, return_counts=True)
        merged, inverse = numpy.unique(numpy.concatenate([self._hashes, unique]), return_inverse=True)
        self._counts = numpy.bincount(
            inverse, weights=numpy.concatenate([self._counts, counts]), minlength=len(merged)
        ).astype(numpy.int64)
        self._hashes = merged
        return out


# --------------------------------------------------------------------------- event payloads


def explicit_event_key(payload: Mapping[str, Any]) -> str | None:
    """The key the row brought (`unique_key` column, or `details.unique.key`): it wins over a derived one."""
    details = payload.get("details")
    unique = details.get("unique") if isinstance(details, Mapping) else None
    if isinstance(unique, Mapping) and unique.get("key") is not None:
        return str(unique["key"])
    return None


def base_event_key(payload: Mapping[str, Any]) -> str:
    """The key derived from a mapped event's content (before numbering)."""
    return derive_event_key(payload["email"], payload["type"], payload.get("date"), payload.get("details"))


def set_event_key(payload: dict[str, Any], key: str) -> None:
    """Write the key where Bento reads it, `details.unique.key`."""
    details = payload.get("details")
    payload["details"] = {**(details if isinstance(details, dict) else {}), "unique": {"key": key}}


def ensure_event_key(payload: dict[str, Any], mode: str, copy: int | None = None) -> tuple[str | None, bool]:
    """(the event's key, whether it was derived): its own key, else (mode "derived") the numbered derived key.

    `copy` is the row's number among identical rows (None or 1 for the first); the key is written into the
    payload, so what Bento stores is what the ledger records.
    """
    key = explicit_event_key(payload)
    if key is not None or mode == "none":
        return key, False
    key = numbered(base_event_key(payload), copy or 1)
    set_event_key(payload, key)
    return key, True


def key_events(payloads: Sequence[dict[str, Any]], copies: Sequence[int | None], mode: str) -> int:
    """Key one sink batch of mapped events; returns how many keys were derived.

    Rows the pre-pass numbered carry their number (`copies`); the others (a plain `pipeline.run`, which
    has no pre-pass) are numbered among themselves, within this batch only.
    """
    if mode == "none":
        return 0
    bases: list[tuple[int, str]] = [
        (i, base_event_key(p)) for i, p in enumerate(payloads) if explicit_event_key(p) is None
    ]
    loose = [(i, base) for i, base in bases if not copies[i]]
    for (i, _), key in zip(loose, number_identical(base for _, base in loose), strict=True):
        set_event_key(payloads[i], key)
    for i, base in bases:
        copy = copies[i]
        if copy:
            set_event_key(payloads[i], numbered(base, int(copy)))
    return len(bases)
