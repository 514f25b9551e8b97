"""The diff where the data lives, for a DuckDB file: one query over the user's table and the ledger.

The ledger's DuckDB connection ATTACHes the user's file READ_ONLY (never read-write: a writer's lock
would shut out the user's dashboards for the whole run) and one query computes each row's email key and
version 2 fingerprint, joins the ledger and returns the new and changed rows in full, streamed as Arrow
record batches. Rows the SQL cannot prove (see `sql.provable_sql`) and rows sharing an email with another
row (the Python path picks one per email) come back too, so the Python path decides them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa

from ..ledger import SyncLedger
from .columns import BOOLEAN, INTEGER, TEXT, EngineDeclined
from .events import TIMESTAMP
from .expressions import TablePlan, namespace, row_fingerprint_sql, row_key_sql, row_provable_sql, unchanged_sql
from .ledger_access import ledger_part_sql, on_ledger, partition_sql, partitions, roomy, steady, with_more_room
from .sql import DUCKDB, literal, quote

ALIAS: Final = "bento_input"
#: DuckDB column types whose values `sql.text_sql` renders exactly as `value_text`
DUCKDB_KINDS: Final = {
    "VARCHAR": TEXT,
    "BOOLEAN": BOOLEAN,
    **{name: INTEGER for name in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")},
    **{name: TIMESTAMP for name in ("TIMESTAMP WITH TIME ZONE", "TIMESTAMP", "DATE")},  # an event's `date` only
}
#: the engine's own columns in the query (a user column with one of these names makes the engine decline)
KEY, OK, FP, COPIES, SAME = "__bento_key", "__bento_ok", "__bento_fp", "__bento_copies", "__bento_same"


def table_ref(table: str) -> str:
    """`schema.table` or `table` of the attached file, quoted part by part."""
    return ".".join([ALIAS, *(quote(part) for part in table.split("."))])


def diff_sql(plan: TablePlan, table: str, part: int = 0, parts: int = 1) -> str:
    """The query: the new and changed rows in full, with the input's columns only, of one partition of keys.

    Parameters: the site, then the ledger namespace. Only narrow columns (key, provable, fingerprint) meet
    the ledger, and rows sharing an email are found by a count per key alone: a count per email over whole
    rows (a window) could not spill and needed 512 MB at 10,000,000 rows. Every row of a key to send goes
    (for an event key, its copies too: the Python path decides them). A partition holds every row of its
    keys, so the partitions together give what the whole query would, each with 1/`parts` of the memory.
    """
    source = table_ref(table)
    key, ok, fp = row_key_sql(plan, DUCKDB), row_provable_sql(plan, DUCKDB), row_fingerprint_sql(plan, DUCKDB)
    mine = partition_sql(key, part, parts)
    same = unchanged_sql(plan, f"n.{OK}", "1", "e.value", "e.key", f"n.{FP}")
    shared = f" OR {key} IN (SELECT {KEY} FROM shared)" if namespace(plan) == "subscribers" else ""
    return f"""
        WITH n AS (
            SELECT {key} AS {KEY}, {ok} AS {OK}, {fp} AS {FP} FROM {source} WHERE {mine}
        ), e AS (
            {ledger_part_sql("$1", "$2", part, parts)}
        ), send AS (
            SELECT n.{KEY} FROM n LEFT JOIN e ON e.key = n.{KEY} WHERE NOT {same}
        ), shared AS (
            SELECT {key} AS {KEY} FROM {source} WHERE {mine} GROUP BY 1 HAVING count(*) > 1
        )
        SELECT * FROM {source} WHERE {mine} AND (NOT {ok} OR {key} IN (SELECT {KEY} FROM send){shared})"""


def duckdb_columns(path: str | Path, table: str) -> list[tuple[str, str]]:
    """(name, kind) of a table of a DuckDB file, through a private in-memory DuckDB that attaches it read-only.

    EngineDeclined if a column has a name the engine's query uses for itself.
    """
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH {literal(str(Path(path).expanduser().resolve()))} AS {ALIAS} (READ_ONLY)")
        rows = con.execute(f"DESCRIBE SELECT * FROM {table_ref(table)}").fetchall()
    finally:
        con.close()
    columns = [(str(name), DUCKDB_KINDS.get(str(kind), str(kind))) for name, kind, *_ in rows]
    if {KEY, OK, FP, COPIES, SAME} & {name for name, _ in columns}:
        raise EngineDeclined("a column has a name the engine uses for itself")
    return columns


class DuckDBDiff:
    """New and changed subscriber rows of one table of a DuckDB file, against one ledger.

    `batches()` streams the rows to send; `unchanged` is the count of the others, known when `batches()` ends.
    """

    def __init__(self, ledger: SyncLedger, site: str, path: str | Path, table: str,
                 allow_secret_columns: bool = False) -> None:
        self._ledger = ledger
        self._site = site
        self._path = str(Path(path).expanduser().resolve())
        self._table = table
        self._allow_secret = allow_secret_columns
        self.unchanged = 0
        self.sent = 0

    def _attach(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"ATTACH {literal(self._path)} AS {ALIAS} (READ_ONLY)")

    def _detach(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"DETACH DATABASE IF EXISTS {ALIAS}")

    def batches(self, plan: TablePlan, rows: int = 1000) -> Iterator[pa.RecordBatch]:
        """The new and changed rows, `rows` at a time, one partition of keys after the other (`partitions`);
        the file stays attached (read-only) from the count to the last row: no writer can change it meanwhile."""
        params = [self._site, namespace(plan)]
        reader: pa.RecordBatchReader | None = None

        def count(con: duckdb.DuckDBPyConnection) -> int:
            self._attach(con)
            roomy(con)
            sql = f"SELECT count(*) FROM {table_ref(self._table)}"
            return with_more_room(con, lambda: int(con.execute(sql).fetchall()[0][0]))

        def opener(part: int, parts: int) -> Callable[[duckdb.DuckDBPyConnection], pa.RecordBatch | None]:
            def open_part(con: duckdb.DuckDBPyConnection) -> pa.RecordBatch | None:
                def first_batch() -> pa.RecordBatch | None:
                    nonlocal reader
                    if reader is not None:
                        reader.close()
                    reader = con.sql(diff_sql(plan, self._table, part, parts), params=params).to_arrow_reader(rows)
                    return next_batch(con)  # the join and the count per key run here

                return with_more_room(con, first_batch)

            return open_part

        def next_batch(_con: duckdb.DuckDBPyConnection) -> pa.RecordBatch | None:
            assert reader is not None
            try:
                return reader.read_next_batch()
            except StopIteration:
                return None

        def finish(con: duckdb.DuckDBPyConnection) -> None:
            if reader is not None:
                reader.close()
            steady(con)
            self._detach(con)

        try:
            total = on_ledger(self._ledger, count)
            parts = partitions(total)
            for part in range(parts):
                batch = on_ledger(self._ledger, opener(part, parts))
                while batch is not None:
                    if batch.num_rows:
                        self.sent += batch.num_rows
                        yield batch
                    batch = on_ledger(self._ledger, next_batch)
            if not self.sent and reader is not None:  # no row to send: the table still gets its load (and report)
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
            self.unchanged = total - self.sent
        finally:
            on_ledger(self._ledger, finish)
