"""Work on the sync ledger's own DuckDB connection, on the ledger's worker thread, with room to do it.

The engine's diff joins the input against the ledger table where it lives: in the ledger's DuckDB (the
file, or the cache a folder ledger reads its segments into). The ledger runs every DuckDB call on one
thread and caps DuckDB's memory for its steady work; while a diff over a whole table runs, DuckDB gets the
engine's cap and threads (ENGINE_MEMORY_LIMIT, ENGINE_THREADS), and the steady settings come back after it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Final, TypeVar

import duckdb

from ..ledger import DEFAULT_MEMORY_LIMIT, DEFAULT_THREADS, SyncLedger

_R = TypeVar("_R")
logger = logging.getLogger(__name__)
#: DuckDB's memory cap and threads while the engine's query runs over a whole table (DuckDB spills to its
#: temporary folder beyond the cap). The diff runs one partition of keys at a time (`partitions`), so its
#: memory follows PARTITION_ROWS, not the table. The diff of 10,000,000 rows alone (BENCHMARKS.md, ten
#: million rows): in one query under 128 MB 314 MB (first sync) and 333 MB (unchanged); in five partitions
#: under 64 MB 237 MB and 270 MB, in ten no lower and slower (each partition scans the table again)
ENGINE_MEMORY_LIMIT = "64MB"
ENGINE_THREADS = 2
#: input rows per partition of keys
PARTITION_ROWS: Final = 2_000_000
#: caps tried in turn when DuckDB runs out of memory under the one before: for rows wider than measured
MORE_ROOM: Final = ("512MB", "2GB")


def partitions(total_rows: int) -> int:
    """How many partitions of keys a table of `total_rows` is diffed in: PARTITION_ROWS each (at least one)."""
    return max(1, -(-total_rows // PARTITION_ROWS))


def partition_sql(key: str, part: int, parts: int) -> str:
    """SQL: the key falls in partition `part` of `parts`, by DuckDB's hash (a NULL key hashes too, so every row
    falls in exactly one partition). Every row of a key is in its partition: counts per key stay whole."""
    return "TRUE" if parts == 1 else f"hash({key}) % {parts} = {part}"


def ledger_part_sql(site: str, ns: str, part: int, parts: int) -> str:
    """SQL: (key, value) of the ledger's entries of one namespace and site whose keys fall in the partition;
    `site` and `ns` are SQL expressions (parameters)."""
    return (f"SELECT key, value FROM ledger_entries WHERE site = {site} AND ns = {ns} AND sub = '' "
            f"AND {partition_sql('key', part, parts)}")


def on_ledger(ledger: SyncLedger, work: Callable[[duckdb.DuckDBPyConnection], _R]) -> _R:
    """`work(connection)` on the ledger's connection, alone in the process (`SyncLedger.exclusive`)."""
    return ledger.exclusive(lambda held: work(held._con))


def roomy(con: duckdb.DuckDBPyConnection, limit: str = ENGINE_MEMORY_LIMIT) -> None:
    """The engine's memory cap and threads, for one statement over a whole table (and no progress bar of
    DuckDB's on stdout, which is the command's JSON summary)."""
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET memory_limit = '{limit}'")
    con.execute(f"SET threads = {min(ENGINE_THREADS, max(1, os.cpu_count() or 1))}")


def with_more_room(con: duckdb.DuckDBPyConnection, work: Callable[[], _R]) -> _R:
    """`work()` under the engine's cap; if DuckDB runs out of memory, again under each cap of MORE_ROOM (the
    work must be safe to repeat: nothing of it was handed on yet). The last failure is raised."""
    for larger in MORE_ROOM:
        try:
            return work()
        except duckdb.OutOfMemoryException as error:
            logger.info("the engine's query ran out of DuckDB memory (%s); trying again with %s", error, larger)
            roomy(con, larger)
    return work()


def steady(con: duckdb.DuckDBPyConnection) -> None:
    """The ledger's steady settings back."""
    con.execute(f"SET memory_limit = '{DEFAULT_MEMORY_LIMIT}'")
    con.execute(f"SET threads = {DEFAULT_THREADS}")
