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

import contextlib
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

from bento_api.settings import REDACTED

from .errors import LedgerError, first_line
from .segments import SEGMENT_SCHEMA, SEGMENT_SUFFIX

#: URL schemes of a Postgres ledger (SQLAlchemy's driver suffixes are accepted and ignored)
POSTGRES_SCHEMES: Final = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")
DEFAULT_SCHEMA: Final = "bento_ledger"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLUMNS: Final = ("seq", "op", "ns", "key", "sub", "value")
#: segment rows turned into CSV at a time for a COPY
BATCH_ROWS: Final = 65_536


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
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{REDACTED}@{host}"))


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


def import_psycopg() -> Any:
    """psycopg (3), or a LedgerError naming the extra that brings it."""
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
        self._psycopg = import_psycopg()
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
        """Make the segment file visible as segment `name`: its rows and its listing in one transaction.

        The rows go as CSV (strings quoted, NULL unquoted and empty: how Postgres's CSV tells them apart),
        BATCH_ROWS at a time, so a segment of a million acknowledgements is never whole in memory.
        """
        segment = pq.ParquetFile(local_file)
        metadata = {k.decode(): v.decode() for k, v in (segment.schema_arrow.metadata or {}).items()}
        try:
            with self._con.transaction():
                with self._con.cursor() as cursor, cursor.copy(
                    f"COPY {self._ops} (site, segment, {', '.join(_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"
                ) as copy:
                    for batch in segment.iter_batches(batch_size=BATCH_ROWS, columns=list(_COLUMNS)):
                        framed = pa.Table.from_arrays(
                            [pa.repeat(pa.scalar(self.site), batch.num_rows),
                             pa.repeat(pa.scalar(name), batch.num_rows), *batch.columns],
                            names=["site", "segment", *_COLUMNS],
                        )
                        text = io.BytesIO()
                        pacsv.write_csv(framed, text, pacsv.WriteOptions(include_header=False))
                        copy.write(text.getbuffer())
                self._con.execute(
                    f"INSERT INTO {self._segments} (site, name, ops, metadata) VALUES (%s, %s, %s, %s)",
                    [self.site, name, segment.metadata.num_rows, json.dumps(metadata, sort_keys=True)],
                )
        except self._psycopg.Error as exc:
            raise LedgerError(
                f"cannot write the ledger at {self._shown}: {first_line(exc)}. The batch was sent but is not "
                "recorded: it will be sent again next run"
            ) from exc
        return name

    def fetch(self, path: str, local_dir: str) -> str:
        """The segment's rows as a local Parquet file; FileNotFoundError if it was deleted (compacted).

        COPY writes them to a local CSV file, which is turned into Parquet a block at a time.
        """
        found = self._run(
            f"SELECT metadata FROM {self._segments} WHERE site = %s AND name = %s", [self.site, path], "read"
        )
        if not found:
            raise FileNotFoundError(path)
        stem = os.path.join(local_dir, "fetch-" + uuid.uuid4().hex)
        query = (f"COPY (SELECT {', '.join(_COLUMNS)} FROM {self._ops} WHERE site = %s AND segment = %s) "
                 "TO STDOUT WITH (FORMAT csv)")
        try:
            with open(stem + ".csv", "wb") as text:
                try:
                    with self._con.transaction(), self._con.cursor() as cursor, cursor.copy(
                        query, [self.site, path]
                    ) as copy:
                        for block in copy:
                            text.write(block)
                except self._psycopg.Error as exc:
                    raise LedgerError(f"cannot read the ledger at {self._shown}: {first_line(exc)}") from exc
            metadata = json.loads(str(found[0][0])) or SEGMENT_SCHEMA.metadata
            schema = SEGMENT_SCHEMA.with_metadata(metadata)
            reader = pacsv.open_csv(
                stem + ".csv",
                read_options=pacsv.ReadOptions(column_names=list(_COLUMNS), use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types={field.name: field.type for field in SEGMENT_SCHEMA},
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=False,
                ),
            )
            with reader, pq.ParquetWriter(stem + SEGMENT_SUFFIX, schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_table(pa.Table.from_batches([batch]).cast(schema))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(stem + ".csv")
        return stem + SEGMENT_SUFFIX

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
