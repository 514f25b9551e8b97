"""The last-write-wins rule (bento_destination/ledger/lww.py) on a DuckDB connection of its own."""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from bento_destination.ledger.lww import SequenceClock, apply_ops, resolved_ops

SITE = "s"
Op = tuple[int, str, str, str, str, str | None]


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as con:
        con.execute("CREATE TABLE ledger_entries (site VARCHAR, ns VARCHAR, key VARCHAR, sub VARCHAR, value VARCHAR, "
                    "seq BIGINT)")
        yield con


def ops(rows: list[Op]) -> pa.Table:
    names = ("seq", "op", "ns", "key", "sub", "value")
    return pa.table({name: [row[i] for row in rows] for i, name in enumerate(names)},
                    schema=pa.schema([("seq", pa.int64())] + [(n, pa.string()) for n in names[1:]]))


def apply(con: duckdb.DuckDBPyConnection, rows: list[Op], only_newer: bool = False) -> None:
    con.register("ops", ops(rows))
    apply_ops(con, "ops", SITE, only_newer=only_newer)
    con.unregister("ops")


def entries(con: duckdb.DuckDBPyConnection) -> set[tuple[str, str, str, str | None, int]]:
    return {tuple(r) for r in con.execute("SELECT ns, key, sub, value, seq FROM ledger_entries").fetchall()}


def test_the_latest_op_per_key_wins_and_a_reset_overrules_what_is_older(con: duckdb.DuckDBPyConnection) -> None:
    apply(con, [(1, "put", "subscribers", "a", "", "v1"), (3, "put", "subscribers", "a", "", "v2"),
                (2, "put", "subscribers", "b", "", "x"), (4, "del", "subscribers", "b", "", None),
                (5, "put", "_tags", "a", "vip", None)])
    assert entries(con) == {("subscribers", "a", "", "v2", 3), ("_tags", "a", "vip", None, 5)}
    # a reset of every operation (`*`) forgets fingerprints older than it, never a reserved namespace
    apply(con, [(10, "reset", "*", "", "", None), (11, "put", "events", "e", "", "f"),
                (9, "put", "subscribers", "c", "", "before the reset")])
    assert entries(con) == {("events", "e", "", "f", 11), ("_tags", "a", "vip", None, 5)}


def test_only_newer_ops_change_stored_entries(con: duckdb.DuckDBPyConnection) -> None:
    """Reading a segment twice, or a compacted copy beside its originals, changes nothing."""
    apply(con, [(5, "put", "_emails", "k", "run1", "sent")])
    apply(con, [(4, "put", "_emails", "k", "run1", "sending"), (6, "put", "_emails", "j", "run1", "sending")],
          only_newer=True)
    assert entries(con) == {("_emails", "k", "run1", "sent", 5), ("_emails", "j", "run1", "sending", 6)}


def test_the_compacted_ops_keep_tombstones_and_the_latest_resets(con: duckdb.DuckDBPyConnection) -> None:
    con.register("raw", ops([(1, "put", "subscribers", "a", "", "v1"), (2, "del", "subscribers", "a", "", None),
                             (3, "reset", "events", "", "", None), (4, "reset", "events", "", "", None),
                             (2, "put", "events", "e", "", "old"), (5, "put", "events", "f", "", "new")]))
    kept = con.execute(f"SELECT seq, op, ns, key FROM ({resolved_ops('raw')}) ORDER BY seq").fetchall()
    assert kept == [(2, "del", "subscribers", "a"), (4, "reset", "events", ""), (5, "put", "events", "f")]


def test_sequence_numbers_only_grow() -> None:
    clock = SequenceClock()
    clock.observe(2**62)
    first = clock.take(10)
    assert first == 2**62 + 1 and clock.take(1) == first + 10
