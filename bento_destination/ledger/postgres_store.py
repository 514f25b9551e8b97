"""A ledger kept in a Postgres schema (opt-in): its segments are rows of two tables there.

For teams whose runners are ephemeral (a Kubernetes pod, an Airflow worker) and whose warehouse is
Postgres: the ledger lives beside the data it describes, is backed up with it and is shared by every
runner, with no bucket to set up. It is the folder ledger's design with Postgres as the folder: each
commit is one segment (its ops as rows of `bento_ledger_ops`, listed in `bento_ledger_segments`),
published in one transaction, so a segment is all there or not there; the DuckDB cache
(`replica.py`) reads them by the same last-write-wins rule. It needs CREATE rights on the database
(the schema and tables are created on first use); the user's own tables are never touched.

    postgresql://bento@db.internal:5432/warehouse?schema=bento_ledger

The password is best left out of the URL (libpq's PGPASSWORD or ~/.pgpass supply it); where it is in
the URL, messages show the URL without it (`display_location`).
"""

from __future__ import annotations

import io
import json
import os
import re
import uuid
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import LedgerError, first_line
from .segments import SEGMENT_SCHEMA, SEGMENT_SUFFIX

#: URL schemes of a Postgres ledger (SQLAlchemy's driver suffixes are accepted and ignored)
POSTGRES_SCHEMES: Final = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
DEFAULT_SCHEMA: Final = "bento_ledger"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMNS: Final = ("seq", "op", "ns", "key", "sub", "value")
#: bytes per write of a COPY
_COPY_BLOCK: Final = 1 << 20


def is_postgres_location(location: str) -> bool:
    return location.split("://", 1)[0].lower() in POSTGRES_SCHEMES if "://" in location else False


def display_location(location: str) -> str:
    """The location for messages and logs: a URL's password replaced by `***`."""
    if "://" not in location:
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def connection_target(location: str) -> tuple[str, str]:
    """(libpq connection URL, schema) of a Postgres ledger location; `?schema=` names the schema."""
    parts = urlsplit(location)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for name, value in query if name == "schema"), DEFAULT_SCHEMA)
    if not _IDENTIFIER.match(schema):
        raise LedgerError(
            f"the ledger's Postgres schema must be a plain lower-case name (letters, digits, _), got {schema!r}"
        )
    rest = urlencode([(name, value) for name, value in query if name != "schema"])
    return urlunsplit(parts._replace(scheme="postgresql", query=rest)), schema


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise LedgerError("a Postgres ledger needs psycopg: pip install 'bento-dlt[postgres]'") from None
    return psycopg


class PostgresSegmentStore:
    """One site's segments in a Postgres schema: publish in one transaction, list, fetch, delete.

    The same contract as `segments.SegmentStore`, so `replica.SegmentReplica` reads either.
    """

    local = False
    object_store = True

    def __init__(self, location: str, site: str) -> None:
        self._psycopg = _psycopg()
        url, self.schema = connection_target(location)
        self.site = site
        self._shown = display_location(location)
        self._ops = f'"{self.schema}".bento_ledger_ops'
        self._segments = f'"{self.schema}".bento_ledger_segments'
        try:
            self._con = self._psycopg.connect(
                url, autocommit=True, application_name=f"bento-dlt ledger {site}"[:63]
            )
        except self._psycopg.Error as exc:
            raise LedgerError(f"cannot connect to the Postgres ledger {self._shown}: {first_line(exc)}") from exc
        try:
            try:
                self._create()
            except LedgerError as exc:  # two first runs created the schema at once: it exists now
                if not isinstance(exc.__cause__, self._psycopg.errors.UniqueViolation):
                    raise
                self._create()
        except BaseException:
            self._con.close()
            raise

    def _create(self) -> None:
        """The schema and its two tables, if missing (needs CREATE rights on the database)."""
        try:
            with self._con.transaction():
                self._con.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                self._con.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._segments} (site text NOT NULL, name text NOT NULL, "
                    "ops bigint NOT NULL, metadata text NOT NULL, written_at timestamptz NOT NULL DEFAULT now(), "
                    "PRIMARY KEY (site, name))"
                )
                self._con.execute(
                    f"CREATE TABLE IF NOT EXISTS {self._ops} (site text NOT NULL, segment text NOT NULL, "
                    "seq bigint NOT NULL, op text NOT NULL, ns text NOT NULL, key text NOT NULL, sub text NOT NULL, "
                    "value text)"
                )
                self._con.execute(
                    f"CREATE INDEX IF NOT EXISTS bento_ledger_ops_segment ON {self._ops} (site, segment)"
                )
        except self._psycopg.errors.InsufficientPrivilege as exc:
            raise LedgerError(
                f"the Postgres ledger {self._shown} needs CREATE rights to make schema {self.schema!r} and its "
                f"tables ({first_line(exc)}): grant them, or keep the ledger in a file or a folder"
            ) from exc
        except self._psycopg.Error as exc:
            raise LedgerError(f"cannot prepare the Postgres ledger {self._shown}: {first_line(exc)}") from exc

    def list(self) -> list[str]:
        """Published segments, oldest first (names start with their first sequence number)."""
        rows = self._run(f"SELECT name FROM {self._segments} WHERE site = %s ORDER BY name", [self.site], "list")
        return [str(name) for (name,) in rows]

    def path(self, name: str) -> str:
        return name

    def publish(self, local_file: str, name: str) -> str:
        """Make the segment file visible as segment `name`: its rows and its listing in one transaction."""
        table = pq.read_table(local_file)
        metadata = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        rows = table.select(list(_COLUMNS))
        rows = rows.add_column(0, "segment", pa.array([name] * rows.num_rows, pa.string()))
        rows = rows.add_column(0, "site", pa.array([self.site] * rows.num_rows, pa.string()))
        text = io.BytesIO()  # strings quoted, NULL unquoted and empty: how Postgres's CSV tells them apart
        pacsv.write_csv(rows, text, pacsv.WriteOptions(include_header=False))
        try:
            with self._con.transaction():
                with self._con.cursor() as cursor, cursor.copy(
                    f"COPY {self._ops} (site, segment, {', '.join(_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
                ) as copy:
                    view = text.getbuffer()
                    for start in range(0, len(view), _COPY_BLOCK):
                        copy.write(view[start : start + _COPY_BLOCK])
                    view.release()
                self._con.execute(
                    f"INSERT INTO {self._segments} (site, name, ops, metadata) VALUES (%s, %s, %s, %s)",
                    [self.site, name, table.num_rows, json.dumps(metadata, sort_keys=True)],
                )
        except self._psycopg.Error as exc:
            raise LedgerError(
                f"cannot write the ledger at {self._shown}: {first_line(exc)}. The batch was sent but is not "
                "recorded: it will be sent again next run"
            ) from exc
        return name

    def fetch(self, path: str, local_dir: str) -> str:
        """The segment's rows as a local Parquet file; FileNotFoundError if it was deleted (compacted)."""
        found = self._run(
            f"SELECT metadata FROM {self._segments} WHERE site = %s AND name = %s", [self.site, path], "read"
        )
        if not found:
            raise FileNotFoundError(path)
        text = io.BytesIO()
        query = (
            f"COPY (SELECT {', '.join(_COLUMNS)} FROM {self._ops} WHERE site = {_sql_text(self.site)} "
            f"AND segment = {_sql_text(path)}) TO STDOUT WITH (FORMAT csv)"
        )
        try:
            with self._con.transaction(), self._con.cursor() as cursor, cursor.copy(query) as copy:
                for block in copy:
                    text.write(block)
        except self._psycopg.Error as exc:
            raise LedgerError(f"cannot read the ledger at {self._shown}: {first_line(exc)}") from exc
        text.seek(0)
        rows = pacsv.read_csv(
            text,
            read_options=pacsv.ReadOptions(column_names=list(_COLUMNS)),
            # Postgres writes NULL unquoted and empty, an empty string as ""
            convert_options=pacsv.ConvertOptions(
                column_types={field.name: field.type for field in SEGMENT_SCHEMA},
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
        metadata = json.loads(str(found[0][0]))
        target = os.path.join(local_dir, "fetch-" + uuid.uuid4().hex + SEGMENT_SUFFIX)
        pq.write_table(
            rows.cast(SEGMENT_SCHEMA.with_metadata(metadata or SEGMENT_SCHEMA.metadata)), target, compression="zstd"
        )
        return target

    def delete(self, paths: Sequence[str]) -> None:
        """Remove replaced segments (rows and listing together); one already gone is fine."""
        names = list(paths)
        try:
            with self._con.transaction():
                where, params = "site = %s AND {} = ANY(%s)", [self.site, names]
                self._con.execute(f"DELETE FROM {self._segments} WHERE {where.format('name')}", params)
                self._con.execute(f"DELETE FROM {self._ops} WHERE {where.format('segment')}", params)
        except self._psycopg.Error as exc:
            raise LedgerError(f"cannot compact the ledger at {self._shown}: {first_line(exc)}") from exc

    def _run(self, sql: str, params: Sequence[Any], what: str) -> Sequence[tuple[Any, ...]]:
        try:
            with self._con.transaction():
                rows: Sequence[tuple[Any, ...]] = self._con.execute(sql, params).fetchall()
                return rows
        except self._psycopg.Error as exc:
            raise LedgerError(f"cannot {what} the ledger at {self._shown}: {first_line(exc)}") from exc

    def close(self) -> None:
        self._con.close()


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
