"""The diff where the data lives, for a Postgres table: only (key, fingerprint) pairs leave the server.

Postgres computes each row's email key, whether the SQL can prove it, and its version 2 fingerprint in one
read-only query; those pairs (tens of bytes a row) are streamed into the ledger's DuckDB and diffed against
the ledger there. Then only the rows to send are read in full: the new and changed ones, by chunks of
keys, and those the SQL could not prove (the Python path decides them). Nothing is written to Postgres:
the transactions are READ ONLY.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, Final

import duckdb
import pyarrow as pa

from ..ledger import SyncLedger
from .columns import BOOLEAN, INTEGER, TEXT
from .events import TIMESTAMP
from .expressions import TablePlan, namespace, row_fingerprint_sql, row_key_sql, row_provable_sql, unchanged_sql
from .ledger_access import ledger_part_sql, on_ledger, partition_sql, partitions, roomy, steady, with_more_room
from .sql import POSTGRES, quote

#: Postgres type OIDs whose values `sql.text_sql` renders exactly as `value_text` (text, varchar; int2, int4,
#: int8; bool). char(n) is left out: its padding is cut by a cast to text but not by the driver.
POSTGRES_KINDS: Final = {25: TEXT, 1043: TEXT, 21: INTEGER, 23: INTEGER, 20: INTEGER, 16: BOOLEAN,
                          1184: TIMESTAMP, 1114: TIMESTAMP, 1082: TIMESTAMP}  # timestamps: an event's `date` only
#: pairs read from Postgres per Arrow chunk (the driver hands them over as Python tuples: 50,000 of them put
#: about 30 MB on a 1,000,000-row sync's peak), and keys per query of full rows
PAIR_CHUNK: Final = 10_000
#: DuckDB's cap while the pairs stream in: the pairs table spills to disk beyond it, so the engine's own cap
#: (ENGINE_MEMORY_LIMIT) is needed only by the diff that reads it back
PAIRS_MEMORY_LIMIT: Final = "24MB"
KEY_CHUNK: Final = 10_000
#: above this share of the table to send (a first sync), the rows are read in one pass over the table and
#: the unchanged ones dropped as they come, instead of one scan of the table per KEY_CHUNK keys
WIDE_SHARE: Final = 0.2
PAIRS_TABLE: Final = "bento_engine_pairs"
#: the keys of the unchanged rows, kept in the ledger's DuckDB while a one-pass read drops them
SAME_TABLE: Final = "bento_engine_same"
#: the query's own columns in a one-pass read (a user column of either name makes the engine decline)
KEY_COLUMN, OK_COLUMN = "__bento_key", "__bento_ok"


def table_ref(table: str) -> str:
    return ".".join(quote(part) for part in table.split("."))


def pairs_sql(plan: TablePlan, table: str) -> str:
    """Per row: the key, whether the SQL proves the row, and its fingerprint."""
    return (
        f"SELECT {row_key_sql(plan, POSTGRES)} AS key, {row_provable_sql(plan, POSTGRES)} AS ok, "
        f"{row_fingerprint_sql(plan, POSTGRES)} AS fp FROM {table_ref(table)}"
    )


def _judged(plan: TablePlan, site_param: str, ns_param: str, part: int = 0, parts: int = 1) -> str:
    """Per pair of one partition of keys: its key, provable, and unchanged. Keys held by several rows are
    counted apart (a count per key, not a window over the pairs, which could not spill: 824 MB at 10,000,000
    rows); a partition holds every pair of its keys."""
    copies = "(CASE WHEN c.key IN (SELECT key FROM shared) THEN 2 ELSE 1 END)"
    mine = partition_sql("key", part, parts)
    return f"""
        WITH shared AS (
            SELECT key FROM {PAIRS_TABLE} WHERE {mine} GROUP BY key HAVING count(*) > 1
        ), e AS (
            {ledger_part_sql(site_param, ns_param, part, parts)}
        )
        SELECT c.key, c.ok, {unchanged_sql(plan, "c.ok", copies, "e.value", "e.key", "c.fp")} AS same
        FROM (SELECT * FROM {PAIRS_TABLE} WHERE {mine}) c LEFT JOIN e ON e.key = c.key
    """


def postgres_columns(url: str, table: str) -> list[tuple[str, str]]:
    """(name, kind) of a Postgres table from its result description (no row is read)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as con:
            con.exec_driver_sql("SET TRANSACTION READ ONLY")
            result = con.exec_driver_sql(f"SELECT * FROM {table_ref(table)} LIMIT 0")
            description = result.cursor.description
            result.close()
    finally:
        engine.dispose()
    return [(str(d[0]), POSTGRES_KINDS.get(int(str(d[1])), f"type {d[1]}")) for d in description or ()]


#: Arrow types of the kinds whose driver values convert to Arrow as they are (the types dlt infers from rows)
_ARROW_TYPES: Final = {TEXT: pa.string(), INTEGER: pa.int64(), BOOLEAN: pa.bool_()}


def empty_table(columns: list[tuple[str, str]]) -> pa.Table:
    """No rows, the table's columns: what dlt needs to start a load of the table."""
    return pa.table({name: pa.array([], _ARROW_TYPES.get(kind, pa.null())) for name, kind in columns})


def arrow_schema(columns: list[tuple[str, str]]) -> pa.Schema | None:
    """The Arrow schema of rows of these columns, or None when a kind has no exact Arrow type (timestamps:
    their zone and precision are the driver's; those rows stay dicts, as dlt infers them)."""
    if not all(kind in _ARROW_TYPES for _, kind in columns):
        return None
    return pa.schema([pa.field(name, _ARROW_TYPES[kind]) for name, kind in columns])


def same_columns(keys: Sequence[str], columns: list[tuple[str, str]]) -> None:
    """Refuse to name a read's values after `columns` when the table changed since they were read."""
    names = [name for name, _ in columns]
    if list(keys)[: len(names)] != names:
        raise RuntimeError(f"the table's columns changed during the sync: {names} became {list(keys)}")


def as_batch(columns: list[tuple[str, str]], schema: pa.Schema | None,
             rows: Sequence[Sequence[Any]]) -> pa.Table | list[dict[str, Any]]:
    """Driver rows (the table's columns first, in order; the query's own columns after them are dropped) as
    one Arrow table when `schema` is known, so dlt writes parquet and the sink maps whole columns; else as
    dicts."""
    if schema is None:
        return [dict(zip((name for name, _ in columns), row, strict=False)) for row in rows]
    values = list(zip(*rows, strict=True))[: len(schema)] if rows else [()] * len(schema)
    return pa.table([pa.array(column, field.type) for column, field in zip(values, schema, strict=True)],
                    schema=schema)


class PostgresDiff:
    """New and changed subscriber rows of one Postgres table (through SQLAlchemy), against one ledger."""

    def __init__(self, ledger: SyncLedger, site: str, url: str, table: str, allow_secret_columns: bool = False) -> None:
        import sqlalchemy as sa

        self._ledger = ledger
        self._site = site
        self._url = url
        self._engine = sa.create_engine(url)
        self._table = table
        self._allow_secret = allow_secret_columns
        self.unchanged = 0
        self.sent = 0

    def close(self) -> None:
        self._engine.dispose()

    def _read_only(self) -> Any:
        con = self._engine.connect()
        con.exec_driver_sql("SET TRANSACTION READ ONLY")
        return con

    def _load_pairs(self, plan: TablePlan) -> None:
        """Stream the pairs from Postgres into a temporary table of the ledger's DuckDB."""
        fields: list[pa.Field[Any]] = [
            pa.field("key", pa.string()), pa.field("ok", pa.bool_()), pa.field("fp", pa.string()),
        ]
        schema = pa.schema(fields)

        def create(con: duckdb.DuckDBPyConnection) -> None:
            roomy(con, PAIRS_MEMORY_LIMIT)  # `_diff` raises the cap, and sets the steady settings back
            con.execute(f"CREATE OR REPLACE TEMP TABLE {PAIRS_TABLE} (key VARCHAR, ok BOOLEAN, fp VARCHAR)")

        on_ledger(self._ledger, create)

        def append(chunk: pa.Table) -> None:
            def insert(con: duckdb.DuckDBPyConnection) -> None:
                con.register("bento_engine_chunk", chunk)
                try:
                    con.execute(f"INSERT INTO {PAIRS_TABLE} SELECT key, ok, fp FROM bento_engine_chunk")
                finally:
                    con.unregister("bento_engine_chunk")

            on_ledger(self._ledger, insert)

        try:
            with self._read_only() as con:
                result = con.execution_options(stream_results=True, yield_per=PAIR_CHUNK).exec_driver_sql(
                    pairs_sql(plan, self._table)
                )
                for part in result.partitions(PAIR_CHUNK):
                    keys, oks, fps = zip(*part, strict=True) if part else ((), (), ())
                    append(pa.table([pa.array(keys, pa.string()), pa.array(oks, pa.bool_()),
                                     pa.array(fps, pa.string())], schema=schema))
        except BaseException:
            on_ledger(self._ledger, steady)
            raise

    def _diff(self, plan: TablePlan) -> tuple[int, int, int, pa.Array | None]:
        """(rows, unchanged rows, unprovable rows, keys of the provable rows to send) from the pairs and the
        ledger. When more than WIDE_SHARE of the rows go, no keys (None): the unchanged rows' keys stay in
        SAME_TABLE for a one-pass read (`_one_pass`), which drops it."""

        def run(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int, pa.Array | None]:
            try:
                roomy(con)
                con.execute("CREATE OR REPLACE TEMP TABLE bento_engine_judged (key VARCHAR, ok BOOLEAN, same BOOLEAN)")
                parts = partitions(int(con.execute(f"SELECT count(*) FROM {PAIRS_TABLE}").fetchall()[0][0]))
                for part in range(parts):  # one partition of keys at a time: the memory follows the partition
                    judge = f"INSERT INTO bento_engine_judged {_judged(plan, '$1', '$2', part, parts)}"
                    with_more_room(con, partial(con.execute, judge, [self._site, namespace(plan)]))
                total, same, unproven = con.execute(
                    "SELECT count(*), count(*) FILTER (WHERE same), count(*) FILTER (WHERE NOT ok) "
                    "FROM bento_engine_judged"
                ).fetchall()[0]
                if total - same > WIDE_SHARE * total:
                    con.execute(f"CREATE OR REPLACE TEMP TABLE {SAME_TABLE} AS "
                                "SELECT key FROM bento_engine_judged WHERE same")
                    keys = None
                else:
                    keys = con.sql(
                        "SELECT DISTINCT key FROM bento_engine_judged WHERE ok AND NOT same"
                    ).to_arrow_table().column("key").combine_chunks()
            finally:
                con.execute(f"DROP TABLE IF EXISTS {PAIRS_TABLE}")
                con.execute("DROP TABLE IF EXISTS bento_engine_judged")
                steady(con)
            return int(total), int(same), int(unproven), keys

        return on_ledger(self._ledger, run)

    def _one_pass(self, plan: TablePlan, columns: list[tuple[str, str]],
                  rows: int) -> Iterator[pa.Table | list[dict[str, Any]]]:
        """Every row of the table but the unchanged ones, in one streamed read (most rows go)."""
        sql = (f"SELECT *, {row_key_sql(plan, POSTGRES)} AS {KEY_COLUMN}, {row_provable_sql(plan, POSTGRES)} AS "
               f"{OK_COLUMN} FROM {table_ref(self._table)}")
        key_at, ok_at = len(columns), len(columns) + 1  # the query's own columns follow the table's
        schema = arrow_schema(columns)

        def unchanged(keys: list[str]) -> set[str]:
            def run(con: duckdb.DuckDBPyConnection) -> set[str]:
                con.register("bento_engine_keys", pa.table({"key": pa.array(keys, pa.string())}))
                try:
                    found = con.execute(f"SELECT s.key FROM {SAME_TABLE} s SEMI JOIN bento_engine_keys k "
                                        "ON s.key = k.key").fetchall()
                finally:
                    con.unregister("bento_engine_keys")
                return {str(k) for (k,) in found}

            return on_ledger(self._ledger, run)

        try:
            with self._read_only() as con:
                result = con.execution_options(stream_results=True, yield_per=rows).exec_driver_sql(sql)
                same_columns(result.keys(), columns)
                for part in result.partitions(rows):
                    same = unchanged([str(row[key_at]) for row in part if row[ok_at]])
                    chosen = [row for row in part if not (row[ok_at] and row[key_at] in same)]
                    if chosen:
                        self.sent += len(chosen)
                        yield as_batch(columns, schema, chosen)
        finally:
            on_ledger(self._ledger, lambda con: con.execute(f"DROP TABLE IF EXISTS {SAME_TABLE}"))

    def batches(self, plan: TablePlan, rows: int = 1000) -> Iterator[pa.Table | list[dict[str, Any]]]:
        """The new and changed rows (and the unprovable ones), `rows` at a time: Arrow tables when every
        column has an exact Arrow type (`arrow_schema`), dicts otherwise."""
        columns = postgres_columns(self._url, self._table)
        schema = arrow_schema(columns)
        self._load_pairs(plan)
        _, same, unproven, keys = self._diff(plan)
        if keys is None:
            yield from self._one_pass(plan, columns, rows)
            keys = pa.array([], pa.string())
            unproven = 0  # read in the one pass already
        key, ok = row_key_sql(plan, POSTGRES), row_provable_sql(plan, POSTGRES)
        queries: list[tuple[str, dict[str, Any]]] = []
        if unproven:
            queries.append((f"SELECT * FROM {table_ref(self._table)} WHERE NOT {ok}", {}))
        for start in range(0, len(keys), KEY_CHUNK):
            chunk = keys.slice(start, KEY_CHUNK).to_pylist()
            queries.append((f"SELECT * FROM {table_ref(self._table)} WHERE {ok} AND {key} = ANY(%(keys)s)",
                            {"keys": chunk}))
        with self._read_only() as con:
            for sql, params in queries:
                result = con.execution_options(stream_results=True, yield_per=rows).exec_driver_sql(sql, params)
                same_columns(result.keys(), columns)
                for part in result.partitions(rows):
                    self.sent += len(part)
                    yield as_batch(columns, schema, part)
        self.unchanged = same
        if not self.sent:  # no row to send: the table still gets its load (and its report) with 0 rows
            yield empty_table(columns)
