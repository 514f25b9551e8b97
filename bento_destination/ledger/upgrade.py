"""Upgrades are free: entries written by an older fingerprint version migrate as rows are compared.

A subscriber entry written before version 2 holds a version 1 fingerprint, which a version 2 one can never
equal. `classify` marks such rows STALE; `settle_stale` compares each with the row's version 1 fingerprint:
equal means Bento already holds this row, so it is unchanged, nothing is sent, and its entry is re-stamped
with the version 2 fingerprint; different means changed. After the first re-sync the ledger holds version 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy
import pyarrow as pa

from .classes import CHANGED, STALE, UNCHANGED

#: for the indexes of the STALE rows, their fingerprints by the older version (in that order)
OlderFingerprints = Callable[[numpy.ndarray[Any, numpy.dtype[numpy.int64]]], Sequence[str]]


class _Ledger(Protocol):
    """What settling needs of the ledger (`SyncLedger`): classify pairs, re-stamp entries."""

    def classify(self, operation: str, items: pa.Table) -> numpy.ndarray[Any, numpy.dtype[numpy.int8]]: ...

    def restamp(self, operation: str, keys: Sequence[str], older: Sequence[str], newer: Sequence[str]) -> int: ...


def settle_stale(
    ledger: _Ledger,
    operation: str,
    keys: Sequence[str] | pa.Array,
    fingerprints: Sequence[str] | pa.Array,
    klass: numpy.ndarray[Any, numpy.dtype[numpy.int8]],
    older: OlderFingerprints,
    *,
    restamp: bool = True,
) -> int:
    """Turn the STALE classes of ``klass`` (in place) into UNCHANGED or CHANGED; re-stamp the unchanged ones.

    ``keys`` and ``fingerprints`` are the pairs ``klass`` was computed from; ``older(indexes)`` gives those
    rows' fingerprints by the version their entries were written with. ``restamp`` False (a dry run)
    leaves the ledger as it is. Returns how many rows were found unchanged this way.
    """
    stale = numpy.flatnonzero(klass == STALE)
    if not len(stale):
        return 0
    stale_keys = _take(keys, stale)
    old = list(older(stale))
    again = ledger.classify(
        operation, pa.table({"key": pa.array(stale_keys, pa.string()), "fp": pa.array(old, pa.string())})
    )
    same = again == UNCHANGED
    klass[stale] = numpy.where(same, UNCHANGED, CHANGED).astype(numpy.int8)
    if restamp and same.any():
        picked = numpy.flatnonzero(same)
        ledger.restamp(
            operation,
            [stale_keys[i] for i in picked],
            [old[i] for i in picked],
            _take(fingerprints, stale[picked]),
        )
    return int(same.sum())


def _take(values: Sequence[str] | pa.Array, indexes: numpy.ndarray[Any, numpy.dtype[numpy.int64]]) -> list[str]:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return [str(v) for v in values.take(pa.array(indexes)).to_pylist()]
    return [values[int(i)] for i in indexes]
