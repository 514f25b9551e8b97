"""A folder or object-store ledger's segments, mirrored into the ledger's private DuckDB cache.

The segments are the durable record (`segments.py`); the cache is what queries read. It is rebuilt from
every segment when the ledger opens (compacting when there are many), follows each commit, and reads the
segments other processes published since (`refresh`). Callers hold the ledger's lock.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import LedgerError
from .keys import FORMAT_VERSION
from .lww import SequenceClock, apply_ops, resolved_ops
from .segments import SEGMENT_SCHEMA, SEGMENT_SUFFIX, Segments, segment_format, segment_name

_RAW_DDL = """
CREATE OR REPLACE TEMP TABLE ledger_raw (
    seq BIGINT, op VARCHAR, ns VARCHAR, key VARCHAR, sub VARCHAR, value VARCHAR
)
"""


def fetch_one(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...]:
    """The single row of ``sql``, fetched fully (DuckDB refuses new work while a result is open)."""
    rows = con.execute(sql, params or []).fetchall()
    assert len(rows) == 1
    return tuple(rows[0])


def sql_literal(text: str) -> str:
    return text.replace("'", "''")


class SegmentReplica:
    """The segments of one site's folder, kept in the cache's ``ledger_entries`` by the last-write-wins rule."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        site: str,
        location: str,
        store: Segments,
        cache_dir: str,
        clock: SequenceClock,
        roomy: Callable[[int], AbstractContextManager[None]],
    ) -> None:
        self._con = con
        self._site = site
        self._location = location
        self.store = store
        self.cache_dir = cache_dir
        self._clock = clock
        self._roomy = roomy
        #: segments read or written, so `refresh` reads only newer ones
        self._known: set[str] = set()

    def publish(self, ops: pa.Table, first_seq: int) -> None:
        """Write one commit's ops as a segment; the commit is durable when this returns."""
        name = segment_name(first_seq)
        local = os.path.join(self.cache_dir, "out-" + name)
        try:
            pq.write_table(ops.cast(SEGMENT_SCHEMA), local, compression="zstd")
            try:
                self._known.add(self.store.publish(local, name))
            except (OSError, ValueError) as exc:
                raise LedgerError(
                    f"cannot write the ledger at {self._location!r}: {exc}. The batch was sent but is not "
                    "recorded: it will be sent again next run"
                ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(local)

    def load(self, compact_after: int, attempts: int = 5) -> None:
        """Read every segment into the cache (compacting if there are more than ``compact_after``).

        Retried if a segment vanishes meanwhile: another process compacted the folder.
        """
        for attempt in range(attempts):
            segments = self.store.list()
            try:
                self._con.execute(_RAW_DDL)
                for path in segments:
                    self._read(path)
            except FileNotFoundError:
                if attempt == attempts - 1:
                    raise
                continue
            try:
                (raw,) = fetch_one(self._con, "SELECT count(*) FROM ledger_raw")
                with self._roomy(int(raw)):
                    self._con.execute("DELETE FROM ledger_entries WHERE site = ?", [self._site])
                    apply_ops(self._con, "ledger_raw", self._site)
                    (last,) = fetch_one(self._con, "SELECT coalesce(max(seq), 0) FROM ledger_raw")
                    self._clock.observe(int(last))
                    self._known.update(segments)
                    if len(segments) > max(compact_after, 1):
                        self._compact(segments)
            finally:
                self._con.execute("DROP TABLE IF EXISTS ledger_raw")
            return

    def _read(self, path: str) -> None:
        local = self.store.fetch(path, self.cache_dir)
        try:
            written = segment_format(pq.read_schema(local).metadata)
            if written > FORMAT_VERSION:
                raise LedgerError(
                    f"ledger segment {path!r} was written by a newer release (format {written}; this one reads up "
                    f"to {FORMAT_VERSION}): upgrade bento-dlt before syncing with this ledger"
                )
            self._con.execute(
                "INSERT INTO ledger_raw SELECT seq, op, ns, key, sub, value FROM read_parquet(?)", [local]
            )
        except (duckdb.Error, pa.ArrowInvalid) as exc:
            raise LedgerError(f"ledger segment {path!r} is unreadable: {exc}") from exc
        finally:
            if local != path:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(local)

    def refresh(self, ns: str) -> int:
        """Read the ``ns`` put rows of segments other processes published since; how many.

        The newer row per (key, sub) wins by sequence number, so reading a segment twice, or a compacted
        copy, changes nothing.
        """
        read = 0
        for _ in range(5):
            fresh = [path for path in self.store.list() if path not in self._known]
            if not fresh:
                break
            self._con.execute(_RAW_DDL)
            try:
                for path in fresh:
                    with contextlib.suppress(FileNotFoundError):  # compacted meanwhile: the copy is listed
                        self._read(path)
                self._con.execute("DELETE FROM ledger_raw WHERE ns <> ? OR op <> 'put'", [ns])
                (count, last) = fetch_one(self._con, "SELECT count(*), coalesce(max(seq), 0) FROM ledger_raw")
                apply_ops(self._con, "ledger_raw", self._site, only_newer=True)
                self._clock.observe(int(last))
                read += int(count)
            finally:
                self._con.execute("DROP TABLE IF EXISTS ledger_raw")
            self._known.update(fresh)
        return read

    def compact_all(self) -> None:
        """Rewrite every segment as one."""
        self.load(compact_after=1)

    def _compact(self, segments: list[str]) -> None:
        """One segment with the ops that still matter (`lww.resolved_ops`); then delete what it replaced.

        Order matters for crashes: the new segment is published first, so old and new together still
        read as the same state.
        """
        if len(segments) < 2:
            return
        (last,) = fetch_one(self._con, "SELECT coalesce(max(seq), 0) FROM ledger_raw")
        local = os.path.join(self.cache_dir, f"compact-{uuid.uuid4().hex}{SEGMENT_SUFFIX}")
        # the schema's metadata goes along, so the compacted segment says its format too
        metadata = ", ".join(
            f"{k.decode()}: '{sql_literal(v.decode())}'" for k, v in (SEGMENT_SCHEMA.metadata or {}).items()
        )
        self._con.execute(
            f"COPY ({resolved_ops('ledger_raw')}) TO '{sql_literal(local)}' "
            f"(FORMAT parquet, COMPRESSION zstd, KV_METADATA {{{metadata}}})"
        )
        try:
            self._known.add(self.store.publish(local, segment_name(int(last))))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(local)
        self.store.delete(segments)

    def count(self) -> int:
        """Published segments."""
        return len(self.store.list())
