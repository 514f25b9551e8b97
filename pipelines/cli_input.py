"""The `--from` of `bento-dlt sync`: a DuckDB file, a CSV or Parquet file, or a SQLAlchemy URL, read as a stream.

Files are read through DuckDB (CSV and Parquet become a view named `input`, so `--query` can select from
them) and stay Arrow record batches all the way to the destination; databases behind a SQLAlchemy URL
are streamed with a server-side cursor in lists of dicts. Nothing holds the whole table in memory.
Anything that cannot be read (missing file, unknown table, bad SQL, unreachable database) is an
`InputError`: exit code 2, with a message that says what to fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pyarrow as pa

from bento_destination.engine import EngineSource
from bento_destination.values import field_key

from .cli_common import EXIT_USAGE, CliError

#: rows per batch handed to dlt (= the destination's sink batch, one full subscribers/events request)
BATCH_ROWS = 1000
DUCKDB_SUFFIXES = (".duckdb", ".ddb", ".db")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
_NAME_RE = re.compile(r"[^A-Za-z0-9_]+")
#: DuckDB's CSV sniffer dumps its settings under an error ("  delimiter = , (Auto-Detected)"): noise to a user
_SNIFFER_LINE = re.compile(r"^\s+[a-z_]+ = ")
#: encodings DuckDB's CSV reader knows without an extension
CSV_ENCODINGS = ("utf-8", "utf-16", "latin-1")
ENCODING_ALIASES = {"utf8": "utf-8", "utf16": "utf-16", "latin1": "latin-1", "iso-8859-1": "latin-1",
                    "iso8859-1": "latin-1"}
#: columns each operation cannot do without, by the destination's name normalisation (`Email` counts)
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "subscribers": ("email",),
    "events": ("email", "type"),
    "commands": ("command", "email"),
    "emails": ("to", "from", "subject", "html_body"),
}

Batch = pa.RecordBatch | list[dict[str, Any]]


class InputError(CliError):
    """The input cannot be read; nothing was sent."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class SyncInput(Protocol):
    """Rows to sync: a label for messages, the dlt table name, a row count and a stream of batches."""

    label: str
    table_name: str

    def count(self) -> int: ...

    def columns(self) -> list[str]: ...

    def batches(self, size: int = BATCH_ROWS) -> Iterator[Batch]: ...

    def close(self) -> None: ...


def engine_source(source: SyncInput) -> EngineSource | None:
    """The table the engine may read for this input (a DuckDB file's or Postgres's), else None."""
    return getattr(source, "engine_source", None)


def _table_name(text: str) -> str:
    """A dlt table name from a table or file name (`crm.contacts` -> `contacts`, `New Leads.csv` -> `new_leads`)."""
    name = _NAME_RE.sub("_", text.rsplit(".", 1)[-1] if "." in text else text).strip("_").lower()
    return name or "rows"


def _quote(identifier: str) -> str:
    """A possibly schema-qualified name, quoted part by part for SQL."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in identifier.split("."))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _without_semicolon(query: str) -> str:
    return query.strip().rstrip(";").strip()


class DuckDBInput:
    """A DuckDB file (read-only), or CSV/Parquet files seen through an in-memory DuckDB as the view `input`."""

    def __init__(
        self, con: duckdb.DuckDBPyConnection, sql: str, label: str, table_name: str, user_sql: bool = False
    ) -> None:
        self._con = con
        self.sql = sql
        self._user_sql = user_sql  # errors point into the user's --query, not into SQL of ours
        self.label = label
        self.table_name = table_name
        #: a table of a DuckDB file: the engine may find its changed rows (bento_destination/engine)
        self.engine_source: EngineSource | None = None

    def count(self) -> int:
        try:
            self._con.sql(self.sql)  # parse and bind the user's SQL alone, so its errors point into it
            rows = self._con.execute(f"SELECT count(*) FROM ({self.sql}) AS bento_input").fetchall()
        except duckdb.Error as error:
            raise InputError(f"cannot read {self.label}: {cause(error, self._user_sql)}") from None
        return int(rows[0][0]) if rows else 0

    def columns(self) -> list[str]:
        try:
            return [str(name) for name in self._con.sql(self.sql).columns]
        except duckdb.Error as error:
            raise InputError(f"cannot read {self.label}: {cause(error, self._user_sql)}") from None

    def batches(self, size: int = BATCH_ROWS) -> Iterator[Batch]:
        try:
            relation = self._con.sql(self.sql)
            reader = relation.to_arrow_reader(size) if hasattr(relation, "to_arrow_reader") else (
                relation.fetch_arrow_reader(size)
            )
            for batch in reader:
                if batch.num_rows:
                    yield batch
        except duckdb.Error as error:
            raise InputError(f"cannot read {self.label}: {cause(error, self._user_sql)}") from None

    def close(self) -> None:
        self._con.close()


class SqlAlchemyInput:
    """A table or query of any database SQLAlchemy reaches (the engine dlt's sql_database uses)."""

    def __init__(self, url: str, table: str | None, query: str | None) -> None:
        import sqlalchemy as sa

        self._sa = sa
        try:
            self._engine = sa.create_engine(url)
        except Exception as error:  # bad URL, missing driver
            raise InputError(f"cannot use the database URL: {cause(error)}") from None
        shown = self._engine.url.render_as_string(hide_password=True)
        #: a Postgres table: the engine may find its changed rows (bento_destination/engine)
        self.engine_source: EngineSource | None = None
        if query:
            self._statement: Any = sa.text(_without_semicolon(query))
            self.label = f"query on {shown}"
            self.table_name = "query"
        elif table:
            schema, _, name = table.rpartition(".")
            self._statement = sa.select(sa.text("*")).select_from(sa.table(name, schema=schema or None))
            self.label = f"table {table} of {shown}"
            self.table_name = _table_name(name)
            if self._engine.dialect.name == "postgresql":
                self.engine_source = EngineSource("postgres", url, table)
        else:
            raise InputError("a database URL needs --table T or --query SQL")

    def count(self) -> int:
        sa = self._sa
        if isinstance(self._statement, sa.Select):
            counted: Any = sa.select(sa.func.count()).select_from(self._statement.subquery())
        else:
            counted = sa.text(f"SELECT count(*) FROM ({self._statement.text}) AS bento_input")
        try:
            with self._engine.connect() as con:
                return int(con.execute(counted).scalar() or 0)
        except sa.exc.SQLAlchemyError as error:
            raise InputError(f"cannot read {self.label}: {cause(error)}") from None

    def columns(self) -> list[str]:
        sa = self._sa
        try:
            with self._engine.connect() as con:  # no rows: only the names
                names = con.execute(self._no_rows()).keys()
                return [str(name) for name in names]
        except sa.exc.SQLAlchemyError as error:
            raise InputError(f"cannot read {self.label}: {cause(error)}") from None

    def _no_rows(self) -> Any:
        sa = self._sa
        if isinstance(self._statement, sa.Select):
            return self._statement.limit(0)
        return sa.text(f"SELECT * FROM ({self._statement.text}) AS bento_input LIMIT 0")

    def batches(self, size: int = BATCH_ROWS) -> Iterator[Batch]:
        sa = self._sa
        try:
            with self._engine.connect() as con:
                result = con.execution_options(stream_results=True, yield_per=size).execute(self._statement)
                for part in result.mappings().partitions(size):
                    yield [dict(row) for row in part]
        except sa.exc.SQLAlchemyError as error:
            raise InputError(f"cannot read {self.label}: {cause(error)}") from None

    def close(self) -> None:
        self._engine.dispose()


def cause(error: BaseException, show_sql: bool = True) -> str:
    """The error's whole message, without the noise around it: DuckDB's sniffer settings, SQLAlchemy's link.

    The cause is often past the first line ("CSV Error on Line: 2" / "... not utf-8 encoded"), so no line
    of substance is cut. `show_sql=False` drops DuckDB's pointer into, and advice about, SQL the user did not
    write. A CSV that is not UTF-8 gets the flag that reads it.
    """
    lines = [line.rstrip() for line in str(error).strip().splitlines()]
    kept: list[str] = []
    pointer = False
    for line in lines:
        if not show_sql and (line.startswith("LINE ") or (pointer and line.strip().startswith("^"))):
            pointer = True
            continue
        pointer = False
        if not show_sql and line.startswith("Possible Solution:"):
            continue  # advice in terms of DuckDB's SQL options, which the command line does not take
        if line.strip() and not _SNIFFER_LINE.match(line) and not line.startswith("(Background on this error at"):
            kept.append(line)
    text = "\n  ".join(kept) if kept else type(error).__name__
    if "not utf-8 encoded" in text:
        kept = [line for line in kept if "encoding=" not in line]
        text = "\n  ".join(kept) + "\n  Read it with --encoding latin-1 (or utf-16): the file's real encoding."
    return text


def csv_encoding(name: str) -> str:
    """DuckDB's name for a CSV encoding (`latin1`, `ISO-8859-1` -> `latin-1`); InputError for others."""
    chosen = name.strip().lower().replace("_", "-")
    chosen = ENCODING_ALIASES.get(chosen, chosen)
    if chosen not in CSV_ENCODINGS:
        raise InputError(f"--encoding {name}: the CSV reader knows {', '.join(CSV_ENCODINGS)} "
                         "(convert other encodings first, e.g. with iconv)")
    return chosen


def require_columns(source: SyncInput, operation: str) -> None:
    """Refuse (exit 2) an input that lacks a column the operation needs, before any row or request.

    Without this check every row would be rejected one by one (`missing_email` x N, exit 3).
    """
    columns = source.columns()
    keys = {field_key(column) for column in columns}
    missing = [name for name in REQUIRED_COLUMNS[operation] if name not in keys]
    if missing:
        found = ", ".join(columns) if columns else "none"
        raise InputError(
            f"--as {operation} needs the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
            f"{source.label} has: {found} (rename one with --query, e.g. SELECT mail AS email, ...)"
        )


def _open_duckdb_file(path: Path, table: str | None, query: str | None) -> DuckDBInput:
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as error:
        raise InputError(f"cannot open the DuckDB file {path}: {cause(error)}") from None
    if query:
        return DuckDBInput(con, _without_semicolon(query), f"query on {path}", "query", True)
    if not table:
        tables = [str(row[0]) for row in con.execute(
            "SELECT CASE WHEN schema_name = 'main' THEN table_name ELSE schema_name || '.' || table_name END "
            "FROM duckdb_tables() WHERE NOT internal ORDER BY 1"
        ).fetchall()]
        if len(tables) != 1:
            con.close()
            listed = ", ".join(tables) if tables else "none"
            raise InputError(f"{path} holds {len(tables)} tables ({listed}): name one with --table, or use --query")
        table = tables[0]
    opened = DuckDBInput(con, f"SELECT * FROM {_quote(table)}", f"table {table} of {path}", _table_name(table))
    opened.engine_source = EngineSource("duckdb", str(path), table)
    return opened


def _open_file_view(path: Path, reader: str, query: str | None, options: str = "") -> DuckDBInput:
    con = duckdb.connect()
    target = str(path / "*.parquet") if path.is_dir() else str(path)
    try:
        con.execute(f"CREATE VIEW input AS SELECT * FROM {reader}({_literal(target)}{options})")
    except duckdb.Error as error:
        con.close()
        raise InputError(f"cannot read {path}: {cause(error, show_sql=False)}") from None
    name = _table_name(path.name.split(".", 1)[0])
    if query:
        return DuckDBInput(con, _without_semicolon(query), f"query on {path} (as `input`)", "query", True)
    return DuckDBInput(con, "SELECT * FROM input", str(path), name)


def open_input(
    source: str, table: str | None = None, query: str | None = None, encoding: str | None = None
) -> SyncInput:
    """Open `--from`; InputError (exit 2) if it is missing, of an unknown kind, or ambiguous.

    `encoding`: of a CSV file (utf-8 by default, as DuckDB reads it); refused for other inputs.
    """
    if table and query:
        raise InputError("give --table or --query, not both")
    is_csv = "://" not in source.removeprefix("file://") and source.lower().endswith(CSV_SUFFIXES)
    if encoding and not is_csv:
        raise InputError(f"--encoding applies to CSV files (.csv, .tsv), not to {source}")
    if encoding:
        encoding = csv_encoding(encoding)
    if "://" in source and not source.startswith("file://"):
        return SqlAlchemyInput(source, table, query)
    path = Path(source.removeprefix("file://")).expanduser()
    if not path.exists():
        raise InputError(f"input not found: {path}")
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        chosen = f", encoding = {_literal(encoding)}" if encoding else ""
        return _open_file_view(path, "read_csv_auto", query, chosen)
    if name.endswith(PARQUET_SUFFIXES) or (path.is_dir() and any(path.glob("*.parquet"))):
        return _open_file_view(path, "read_parquet", query)
    if name.endswith(DUCKDB_SUFFIXES):
        return _open_duckdb_file(path, table, query)
    raise InputError(
        f"cannot tell what {path} is: use a DuckDB file (.duckdb, .db), a CSV (.csv, .tsv), "
        "Parquet (.parquet or a folder of them), or a SQLAlchemy URL such as postgresql://user@host/db"
    )
