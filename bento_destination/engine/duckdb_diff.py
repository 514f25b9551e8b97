"""The diff where the data lives, for a DuckDB file: one query over the user's table and the ledger.

The ledger's DuckDB connection ATTACHes the user's file READ_ONLY (never read-write: a writer's lock
would shut out the user's dashboards for the whole run) and one query computes each row's email key and
version 2 fingerprint, joins the ledger and returns the new and changed rows in full, streamed as Arrow
record batches. Rows the SQL cannot prove (see `sql.provable_sql`) and rows sharing an email with another
row (the Python path picks one per email) come back too, so the Python path decides them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import duckdb
import pyarrow as pa

from ..ledger import SyncLedger
from .columns import BOOLEAN, INTEGER, TEXT, EngineDeclined
from .events import TIMESTAMP
from .expressions import TablePlan, namespace, row_fingerprint_sql, row_key_sql, row_provable_sql, unchanged_sql
from .ledger_access import on_ledger, roomy, steady, with_more_room
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


def diff_sql(plan: TablePlan, table: str) -> str:
    """The query: the new and changed rows in full, with the input's columns only.

    Parameters: the site, then the ledger namespace. Only narrow columns (key, provable, fingerprint) meet
    the ledger, and rows sharing an email are found by a count per key alone: a count per email over whole
    rows (a window) could not spill and needed 512 MB at 10,000,000 rows, this runs in 128 MB. Every row of
    a key to send goes (for an event key, its copies too: the Python path decides them).
    """
    source = table_ref(table)
    key, ok, fp = row_key_sql(plan, DUCKDB), row_provable_sql(plan, DUCKDB), row_fingerprint_sql(plan, DUCKDB)
    same = unchanged_sql(plan, f"n.{OK}", "1", "e.value", "e.key", f"n.{FP}")
    shared = f" OR {key} IN (SELECT {KEY} FROM shared)" if namespace(plan) == "subscribers" else ""
    return f"""
        WITH n AS (
            SELECT {key} AS {KEY}, {ok} AS {OK}, {fp} AS {FP} FROM {source}
        ), send AS (
            SELECT n.{KEY} FROM n
            LEFT JOIN ledger_entries e ON e.site = $1 AND e.ns = $2 AND e.sub = '' AND e.key = n.{KEY}
            WHERE NOT {same}
        ), shared AS (
            SELECT {key} AS {KEY} FROM {source} GROUP BY 1 HAVING count(*) > 1
        )
        SELECT * FROM {source} WHERE NOT {ok} OR {key} IN (SELECT {KEY} FROM send){shared}"""


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
        """The new and changed rows, `rows` at a time; the file stays attached until the last batch."""
        params = [self._site, namespace(plan)]

        def start(con: duckdb.DuckDBPyConnection) -> tuple[int, pa.RecordBatchReader, pa.RecordBatch | None]:
            self._attach(con)
            reader: pa.RecordBatchReader | None = None
            try:
                roomy(con)

                def first_batch() -> tuple[int, pa.RecordBatchReader, pa.RecordBatch | None]:
                    nonlocal reader
                    if reader is not None:
                        reader.close()
                    total = con.execute(f"SELECT count(*) FROM {table_ref(self._table)}").fetchall()[0][0]
                    reader = con.sql(diff_sql(plan, self._table), params=params).to_arrow_reader(rows)
                    return int(total), reader, read(reader)  # the join and the count per key run here

                total, opened, first = with_more_room(con, first_batch)
            except BaseException:
                finish(con, reader)
                raise
            return total, opened, first

        def read(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
            try:
                return reader.read_next_batch()
            except StopIteration:
                return None

        def finish(con: duckdb.DuckDBPyConnection, reader: pa.RecordBatchReader | None) -> None:
            if reader is not None:
                reader.close()
            steady(con)
            self._detach(con)

        # the file stays attached (read-only) from the count to the last row: no writer can change it meanwhile
        total, reader, batch = on_ledger(self._ledger, start)
        try:
            while True:
                if batch is None:
                    break
                if batch.num_rows:
                    self.sent += batch.num_rows
                    yield batch
                batch = on_ledger(self._ledger, lambda _con: read(reader))
            if not self.sent:  # no row to send: the table still gets its load (and its report) with 0 rows
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
            self.unchanged = total - self.sent
        finally:
            on_ledger(self._ledger, lambda con: finish(con, reader))
