"""The ledger's reads: classify (key, fingerprint) pairs, keys seen, audience, consent, tags, entries.

Each is one join of the batch against the ledger table on the ledger's thread; none touches the network.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar, cast

import duckdb
import numpy
import pyarrow as pa

from bento_api.facts import normalise_email

from .classes import CHANGED, NEW, STALE, UNCHANGED
from .database import BULK_ROWS
from .keys import VERSION_SQL
from .replica import fetch_one, sql_literal
from .transaction import TAGS_NS, UNSUBSCRIBED_NS, Pairs, as_list, check_operation, pairs_table, string_array
from .upgrade import OlderFingerprints, settle_stale
from .worker import Worker, on_worker

logger = logging.getLogger(__name__)
_R = TypeVar("_R")


class LedgerReads:
    """Reads of `SyncLedger` (store.py), which provides the connection, the thread and the lock."""

    _worker: Worker
    _con: duckdb.DuckDBPyConnection
    _site: str
    _memory_limits: tuple[str, str]  # (steady, bulk) DuckDB caps
    full_resync: bool

    def _locked(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _ensure_open(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _roomy(self, rows: int) -> Iterator[None]:
        """Raise DuckDB's cap to the bulk one while a statement handles more than BULK_ROWS rows."""
        steady, bulk = self._memory_limits
        if rows <= BULK_ROWS or steady == bulk:
            yield
            return
        self._con.execute(f"SET memory_limit = '{sql_literal(bulk)}'")
        try:
            yield
        finally:
            self._con.execute(f"SET memory_limit = '{sql_literal(steady)}'")

    def _with_room(self, rows: int, work: Callable[[], _R]) -> _R:
        """`work()` under the cap for ``rows`` rows (`_roomy`); on DuckDB's out-of-memory error, once more under
        the bulk cap. The steady cap is small on purpose (it is most of the ledger's memory), and a statement
        of unusual rows (many tags to a person) may need more; ``work`` must be safe to repeat."""
        steady, bulk = self._memory_limits
        try:
            with self._roomy(rows):
                return work()
        except duckdb.OutOfMemoryException as error:
            if rows > BULK_ROWS or steady == bulk:
                raise  # it already ran under the bulk cap: the same try again would only fail again
            logger.info("a ledger statement ran out of DuckDB memory (%s); running it again under the bulk cap", error)
            with self._roomy(BULK_ROWS + 1):
                return work()

    def restamp(self, operation: str, keys: Sequence[str], older: Sequence[str], newer: Sequence[str]) -> int:
        raise NotImplementedError

    @on_worker
    def partition(
        self, operation: str, items: Pairs, older: OlderFingerprints | None = None
    ) -> tuple[list[int], list[int], list[int]]:
        """Split (key, fingerprint) pairs into indexes of (new, changed, unchanged) rows.

        New: no fingerprint stored; changed: a different one; unchanged: the same, so not sent. A row
        whose entry an older fingerprint version wrote (STALE) is compared with ``older(indexes)``, its
        fingerprints by that version, and re-stamped when equal (`upgrade.settle_stale`); without
        ``older`` it counts as changed. One join of the batch against the ledger table; pass large
        batches (a load file) at once.
        """
        klass = self._classify(operation, items)
        if older is not None:
            table = pairs_table(items, "key", "fp")
            settle_stale(
                self, operation, table.column("key").combine_chunks(), table.column("fp").combine_chunks(), klass, older
            )
        index = numpy.arange(len(klass))
        return (
            cast(list[int], index[klass == NEW].tolist()),
            cast(list[int], index[(klass == CHANGED) | (klass == STALE)].tolist()),
            cast(list[int], index[klass == UNCHANGED].tolist()),
        )

    @on_worker
    def classify(self, operation: str, items: Pairs) -> numpy.ndarray[Any, numpy.dtype[numpy.int8]]:
        """Per (key, fingerprint) pair, in order: NEW (0), CHANGED (1), UNCHANGED (2) or STALE (3), as numpy.

        STALE: the stored fingerprint's version (`keys.fingerprint_version`) is older than the given one's.
        :meth:`partition` without the Python lists, for large batches (the pre-pass over a load file
        passes a two-column Arrow table).
        """
        return self._classify(operation, items)

    def _classify(self, operation: str, items: Pairs) -> numpy.ndarray[Any, numpy.dtype[numpy.int8]]:
        ns = check_operation(operation)
        batch = pairs_table(items, "key", "fp")
        n = batch.num_rows
        self._ensure_open()
        if self.full_resync or n == 0:
            return numpy.zeros(n, numpy.int8)
        batch = batch.append_column("i", pa.array(numpy.arange(n, dtype=numpy.int64)))
        stored, given = VERSION_SQL.format(value="e.value"), VERSION_SQL.format(value="b.fp")
        query = f"""
            SELECT b.i, CASE WHEN e.value = b.fp THEN {UNCHANGED}
                             WHEN {stored} < {given} THEN {STALE}
                             ELSE {CHANGED} END::TINYINT AS c
            FROM ledger_batch b
            JOIN ledger_entries e
              ON e.site = ? AND e.ns = ? AND e.sub = '' AND e.key = b.key
        """
        with self._locked():
            self._con.register("ledger_batch", batch)
            try:
                result = self._with_room(n, lambda: self._con.execute(query, [self._site, ns]).fetchnumpy())
            finally:
                self._con.unregister("ledger_batch")
        out = numpy.zeros(n, numpy.int8)
        out[result["i"]] = result["c"]
        return out

    @on_worker
    def holds_older_fingerprints(self, operation: str, version: int) -> bool:
        """Does the ledger hold a fingerprint of ``operation`` written by a version older than ``version``?

        False once every entry was re-stamped or re-sent: callers then skip computing older fingerprints.
        Entries of ``version`` itself are passed over by their prefix, before the version is parsed.
        """
        ns = check_operation(operation)
        with self._locked():
            (found,) = fetch_one(
                self._con,
                f"""
                SELECT count(*) FROM (SELECT 1 FROM ledger_entries
                WHERE site = ? AND ns = ? AND sub = '' AND NOT starts_with(value, ?)
                  AND {VERSION_SQL.format(value="value")} < ? LIMIT 1)
                """,
                [self._site, ns, f"s{version}:", version],
            )
        return bool(found)

    @on_worker
    def seen(self, operation: str, keys: Iterable[str]) -> set[str]:
        """The keys among ``keys`` already acknowledged (events: do not send these again)."""
        ns = check_operation(operation)
        array = string_array(as_list(keys), "key")
        self._ensure_open()
        if self.full_resync or not len(array):
            return set()
        return self._lookup_keys(ns, array)

    def _lookup_keys(self, ns: str, keys: pa.Array) -> set[str]:
        with self._locked():
            self._con.register("ledger_keys", pa.table({"key": keys}))
            try:
                rows = self._with_room(len(keys), lambda: self._con.execute(
                    """
                    SELECT e.key FROM ledger_entries e
                    SEMI JOIN ledger_keys k ON e.key = k.key
                    WHERE e.site = ? AND e.ns = ?
                    """,
                    [self._site, ns],
                ).fetchall())
            finally:
                self._con.unregister("ledger_keys")
        return {row[0] for row in rows}

    @on_worker
    def known_audience(self, operation: str = "subscribers") -> int:
        """How many keys (for subscribers: people) Bento acknowledged: the blast-radius denominator."""
        ns = check_operation(operation)
        with self._locked():
            (count,) = fetch_one(
                self._con, "SELECT count(*) FROM ledger_entries WHERE site = ? AND ns = ?", [self._site, ns]
            )
        return int(count)

    @on_worker
    def owned_tags(self, emails: Iterable[str]) -> dict[str, set[str]]:
        """For each email (normalised: trimmed, lower-case), the tags this connector added."""
        wanted = sorted({normalise_email(e) for e in as_list(emails)})
        owned: dict[str, set[str]] = {email: set() for email in wanted}
        self._ensure_open()
        if not wanted:
            return owned
        for email, tag in self._rows_for(TAGS_NS, string_array(wanted, "email"), "e.key, e.sub"):
            owned[email].add(tag)
        return owned

    @on_worker
    def unsubscribed(self, emails: Iterable[str]) -> set[str]:
        """The emails (normalised) known to be unsubscribed. Not affected by ``full_resync``."""
        array = string_array([normalise_email(e) for e in as_list(emails)], "email")
        self._ensure_open()
        if not len(array):
            return set()
        return self._lookup_keys(UNSUBSCRIBED_NS, array)

    @on_worker
    def entries(self, ns: str, keys: Iterable[str] | None = None) -> list[tuple[str, str, str | None, int]]:
        """(key, sub, value, seq) of a reserved namespace, for ``keys`` or all of it; ignores ``full_resync``."""
        with self._locked():
            if keys is None:
                rows = self._with_room(0, lambda: self._con.execute(
                    "SELECT key, sub, value, seq FROM ledger_entries WHERE site = ? AND ns = ? ORDER BY seq",
                    [self._site, ns],
                ).fetchall())
            else:
                array = string_array(as_list(keys), "key")
                if not len(array):
                    return []
                rows = list(self._rows_for(ns, array, "e.key, e.sub, e.value, e.seq", "ORDER BY e.seq"))
        return [(str(k), str(s), v, int(q)) for k, s, v, q in rows]

    def _rows_for(self, ns: str, keys: pa.Array, columns: str, order: str = "") -> Iterator[tuple[Any, ...]]:
        """``columns`` of the entries of ``ns`` whose key is among ``keys``."""
        with self._locked():
            self._con.register("ledger_keys", pa.table({"key": keys}))
            try:
                rows = self._with_room(len(keys), lambda: self._con.execute(
                    f"""
                    SELECT {columns} FROM ledger_entries e SEMI JOIN ledger_keys k ON e.key = k.key
                    WHERE e.site = ? AND e.ns = ? {order}
                    """,
                    [self._site, ns],
                ).fetchall())
            finally:
                self._con.unregister("ledger_keys")
        yield from rows
