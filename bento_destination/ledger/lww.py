"""Last write wins: the one rule that turns ledger ops (put, del, reset) into entries.

Every op carries a sequence number (`SequenceClock`). Per (namespace, key, sub) the op with the highest
number wins; a reset of a namespace (or of every operation, `*`) overrules what is older than it. The
same rule applies a commit, rebuilds the cache from segments, reads other processes' segments and writes
the compacted segment, so a crash at any point, a segment read twice or a compacted copy beside its
originals all read as the same state.
"""

from __future__ import annotations

import contextlib
import time
from typing import Final

import duckdb

#: a reset row with this namespace resets every operation (not consent, not tags: reserved namespaces)
ALL_OPERATIONS: Final = "*"


class SequenceClock:
    """Sequence numbers: nanoseconds since the epoch, strictly increasing, above anything already stored.

    Rows carry them, so "last write wins" holds across segments, compactions and processes.
    """

    def __init__(self) -> None:
        self._last = 0

    def observe(self, seq: int) -> None:
        self._last = max(self._last, seq)

    def take(self, count: int) -> int:
        base = max(time.time_ns(), self._last + 1)
        self._last = base + max(count, 1) - 1
        return base


def _covers(reset_ns: str, ns: str) -> str:
    """SQL: a reset of namespace ``reset_ns`` applies to namespace ``ns``."""
    return f"({reset_ns} = {ns} OR ({reset_ns} = '{ALL_OPERATIONS}' AND NOT starts_with({ns}, '_')))"


def resolved_ops(source: str) -> str:
    """SQL: the ops of table ``source`` that still matter, in the segment schema (seq, op, ns, key, sub, value).

    The latest reset per namespace, and per (ns, key, sub) the latest put or del that no reset overrules.
    Tombstones (del) and resets stay: written as a compacted segment, they keep overruling an older
    segment that survived a crash mid-delete.
    """
    return f"""
        WITH resets AS (
            SELECT ns, max(seq) AS seq FROM {source} WHERE op = 'reset' GROUP BY ns
        ),
        latest AS (
            SELECT ns, key, sub, arg_max(op, seq) AS op, arg_max(value, seq) AS value, max(seq) AS seq
            FROM {source} WHERE op IN ('put', 'del') GROUP BY ns, key, sub
        )
        SELECT seq, 'reset' AS op, ns, '' AS key, '' AS sub, NULL::VARCHAR AS value FROM resets
        UNION ALL
        SELECT l.seq, l.op, l.ns, l.key, l.sub, l.value FROM latest l
        WHERE l.seq > coalesce((SELECT max(r.seq) FROM resets r WHERE {_covers("r.ns", "l.ns")}), -1)
    """


def apply_ops(con: duckdb.DuckDBPyConnection, source: str, site: str, *, only_newer: bool = False) -> None:
    """Apply the ops of table ``source`` to ``ledger_entries`` of ``site``.

    A handful of statements whatever the number of rows, so a 1,000-row acknowledgement and a
    1,000,000-row segment load cost the same number of round trips. ``only_newer``: an op not newer than
    the entry stored for its key changes nothing (reading segments other processes wrote); a ledger's own
    commits are always newer, so they skip that join.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE ledger_resolved AS {resolved_ops(source)}")
    try:
        if only_newer:
            con.execute(
                """
                DELETE FROM ledger_resolved o USING ledger_entries e
                WHERE o.op <> 'reset' AND e.site = ? AND e.ns = o.ns AND e.key = o.key AND e.sub = o.sub
                  AND e.seq >= o.seq
                """,
                [site],
            )
        con.execute(
            f"""
            DELETE FROM ledger_entries e USING ledger_resolved r
            WHERE r.op = 'reset' AND e.site = ? AND {_covers("r.ns", "e.ns")} AND e.seq < r.seq
            """,
            [site],
        )
        con.execute(
            """
            DELETE FROM ledger_entries e USING ledger_resolved o
            WHERE o.op <> 'reset' AND e.site = ? AND e.ns = o.ns AND e.key = o.key AND e.sub = o.sub
            """,
            [site],
        )
        con.execute(
            "INSERT INTO ledger_entries SELECT ?, ns, key, sub, value, seq FROM ledger_resolved WHERE op = 'put'",
            [site],
        )
    finally:  # in a transaction a failed statement aborted, its rollback drops the table (and this would fail)
        with contextlib.suppress(duckdb.TransactionException):
            con.execute("DROP TABLE IF EXISTS ledger_resolved")
