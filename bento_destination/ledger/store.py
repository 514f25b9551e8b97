"""The ledger store: per (site, operation, key) the fingerprint Bento last acknowledged, consent and tag memory.

Storage (see docs/ledger.md): a local DuckDB file (``*.duckdb``), one table written in a transaction per
commit; or any other location (a folder, ``file://``, ``memory://``, ``s3://``, ...) holding immutable
Parquet segments under ``<location>/<site>/`` (`segments.py`), mirrored into a private DuckDB cache
(`replica.py`). Everything is vectorised through Arrow and DuckDB (a batch is joined against the ledger
table), so a million keys never become a million Python objects. All DuckDB work runs on one thread per
ledger (`worker.py`), and DuckDB is capped (`memory_limit`, one thread): beyond the cap it spills to its
temporary folder instead of growing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import posixpath
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import duckdb
import fsspec  # type: ignore[import-untyped]  # fsspec ships no type hints
import pyarrow as pa

from .database import (
    DEFAULT_BULK_MEMORY_LIMIT,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_THREADS,
    open_file,
    prepare,
)
from .errors import LedgerError
from .group_commit import GroupCommit
from .keys import fingerprint
from .lww import SequenceClock, apply_ops
from .postgres_store import PostgresSegmentStore, display_location, is_postgres_location
from .reads import LedgerReads
from .replica import SegmentReplica, fetch_one
from .segments import Segments, SegmentStore
from .transaction import LedgerTransaction, Pairs, check_operation, pairs_table
from .worker import Worker, on_worker

DEFAULT_COMPACT_AFTER = 32
_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
_R = TypeVar("_R")


class SyncLedger(LedgerReads):
    """Per (site, operation, key): the fingerprint Bento last acknowledged; plus consent and tag memory.

    Open with :meth:`open`. Thread-safe. Reads (classify, seen, ...) never touch the network; each
    commit (acknowledge, tags, consent, reset) is durable when it returns.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        site: str,
        location: str,
        store: Segments | None = None,
        cache_dir: str | None = None,
        full_resync: bool = False,
        worker: Worker | None = None,
    ) -> None:
        self._worker = worker or Worker(f"bento-ledger-{site}")
        self._group: GroupCommit[Callable[[LedgerTransaction], None]] = GroupCommit(
            self._record_all, self._worker.submit
        )
        self._memory_limits = (DEFAULT_MEMORY_LIMIT, DEFAULT_BULK_MEMORY_LIMIT)
        self._con = con
        self._site = site
        self._clock = SequenceClock()
        self._lock = threading.RLock()
        self._closed = False
        self.location = location
        self.full_resync = full_resync
        self._replica = (
            None
            if store is None or cache_dir is None
            else SegmentReplica(
                con,
                site=site,
                location=display_location(location),
                store=store,
                cache_dir=cache_dir,
                clock=self._clock,
                roomy=self._roomy,
            )
        )
        (last,) = self._worker.call(
            fetch_one, con, "SELECT coalesce(max(seq), 0) FROM ledger_entries WHERE site = ?", [site]
        )
        self._clock.observe(int(last))

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        location: str | os.PathLike[str] | None,
        *,
        site: str,
        default_path: str | os.PathLike[str] | None = None,
        full_resync: bool = False,
        compact_after: int = DEFAULT_COMPACT_AFTER,
        storage_options: Mapping[str, Any] | None = None,
        memory_limit: str = DEFAULT_MEMORY_LIMIT,
        threads: int = DEFAULT_THREADS,
        bulk_memory_limit: str = DEFAULT_BULK_MEMORY_LIMIT,
    ) -> SyncLedger:
        """Open (or create) the ledger of ``site``.

        ``location`` None uses ``default_path``, a local DuckDB file the caller chooses (e.g. in the
        pipeline's working folder). A path or ``file://`` URL ending in ``.duckdb`` is a DuckDB file.
        Anything else is a folder or fsspec URL (``/dir``, ``file:///dir``, ``memory://x``,
        ``s3://bucket/prefix``) holding Parquet segments under ``<location>/<site>/``, which outlives
        the pipeline's working folder. ``full_resync`` ignores the stored fingerprints for this run
        (everything counts as new) but still records what is acknowledged. ``storage_options`` go to
        fsspec (credentials, endpoint); ``memory_limit`` caps DuckDB's working memory (it spills beyond),
        ``bulk_memory_limit`` while a statement handles more than ``BULK_ROWS`` rows, and ``threads``
        sets DuckDB's worker threads.
        """
        if not isinstance(site, str) or not _SITE_RE.match(site) or site in {".", ".."}:
            raise ValueError(f"site must be a Bento site uuid (letters, digits, '-', '_', '.'), got {site!r}")
        if location is None:
            if default_path is None:
                raise ValueError("no ledger location: pass a location or a default_path for the local DuckDB file")
            location = default_path
        text = os.fspath(location)
        if text.startswith("file://"):
            local_candidate: str | None = text[len("file://") :]
        elif "://" in text:
            local_candidate = None
        else:
            local_candidate = text
        config: dict[str, Any] = {
            "memory_limit": memory_limit,
            "threads": max(1, int(threads)),
            "preserve_insertion_order": False,  # no query relies on it; keeping it costs buffers
        }
        if text.endswith(".duckdb"):
            if local_candidate is None:
                raise LedgerError(
                    f"a DuckDB ledger file must be local, got {text!r}; for remote storage give a folder URL "
                    "such as s3://bucket/bento-ledger (Parquet segments)"
                )
            opener: Callable[[Worker], SyncLedger] = functools.partial(
                cls._open_duckdb, local_candidate, site=site, full_resync=full_resync, config=config
            )
        else:
            opener = functools.partial(
                cls._open_segments,
                text,
                site=site,
                full_resync=full_resync,
                compact_after=compact_after,
                storage_options=storage_options,
                config=config,
            )
        worker = Worker(f"bento-ledger-{site}")
        try:
            ledger = worker.call(opener, worker)
        except BaseException:
            worker.stop()
            raise
        ledger._memory_limits = (memory_limit, bulk_memory_limit)
        return ledger

    @classmethod
    def _open_duckdb(
        cls, path: str, worker: Worker, *, site: str, full_resync: bool, config: dict[str, Any]
    ) -> SyncLedger:
        file = Path(path).expanduser()
        con = open_file(file, config)
        return cls(con, site=site, location=str(file), full_resync=full_resync, worker=worker)

    @classmethod
    def _open_segments(
        cls,
        url: str,
        worker: Worker,
        *,
        site: str,
        full_resync: bool,
        compact_after: int,
        storage_options: Mapping[str, Any] | None,
        config: dict[str, Any],
    ) -> SyncLedger:
        store: Segments
        if is_postgres_location(url):
            store = PostgresSegmentStore(url, site)
        else:
            try:
                fs, root = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
                store = SegmentStore(fs, posixpath.join(root, site))
            except (ImportError, ValueError, OSError) as exc:
                raise LedgerError(
                    f"cannot use the ledger location {url!r}: {exc}. Check the URL and that its fsspec driver "
                    "(s3fs, gcsfs, adlfs, ...) is installed and has credentials"
                ) from exc
        cache_dir = tempfile.mkdtemp(prefix="bento-ledger-")
        try:
            con = duckdb.connect(os.path.join(cache_dir, "cache.duckdb"), config=config)
            prepare(con, "the ledger cache")
            ledger = cls(
                con, site=site, location=url, store=store, cache_dir=cache_dir, full_resync=full_resync, worker=worker
            )
        except BaseException:
            shutil.rmtree(cache_dir, ignore_errors=True)
            store.close()
            raise
        try:
            with ledger._locked():
                assert ledger._replica is not None
                ledger._replica.load(compact_after)
        except BaseException:
            ledger.close()
            raise
        return ledger

    @staticmethod
    def fingerprint(payload: Mapping[str, Any]) -> str:
        """See :func:`keys.fingerprint` (version 1)."""
        return fingerprint(payload)

    # ----------------------------------------------------------------- writing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[LedgerTransaction]:
        """Collect several changes and commit them as one unit when the block ends without error."""
        self._ensure_open()
        tx = LedgerTransaction()
        yield tx
        ops = tx.ops()
        if ops is not None:
            self._commit(ops)

    def record(self, changes: Callable[[LedgerTransaction], None]) -> None:
        """``changes(tx)`` collects changes, committed as one unit; callers that record while a commit runs share
        the next one (group_commit.py), and each returns once its own changes are committed."""
        self._group.submit(changes)

    def record_later(self, changes: Callable[[LedgerTransaction], None]) -> Future[None]:
        """As `record`, without waiting: the future is done once ``changes`` are committed, or holds why not."""
        return self._group.submit_later(changes)

    @on_worker
    def _record_all(self, changes: list[Callable[[LedgerTransaction], None]]) -> None:
        """All of it on the ledger's thread, so a pool of callers leaves no Arrow memory in their allocators."""
        with self.transaction() as tx:
            for change in changes:
                change(tx)

    def acknowledge(self, operation: str, items: Pairs) -> None:
        """Record (key, fingerprint) pairs. Call ONLY after Bento acknowledged the batch."""
        self.record(lambda tx: tx.acknowledge(operation, items))

    @on_worker
    def restamp(self, operation: str, keys: Sequence[str], older: Sequence[str], newer: Sequence[str]) -> int:
        """Replace stored fingerprints ``older`` by ``newer`` (the same row, fingerprinted by a newer version).

        Only where the stored value still is ``older`` (in this process, atomically); nothing is sent, so
        this is for rows found unchanged against their older fingerprint. Returns how many were replaced.
        """
        ns = check_operation(operation)
        batch = pairs_table(list(zip(keys, older, strict=True)), "key", "old")
        batch = batch.append_column("new", pairs_table(list(zip(keys, newer, strict=True)), "k", "new").column(1))
        if not batch.num_rows:
            return 0
        with self._locked():
            self._con.register("ledger_restamp", batch)
            try:
                matched = self._con.sql(
                    "SELECT b.key, b.new FROM ledger_restamp b JOIN ledger_entries e ON e.site = ? AND e.ns = ? "
                    "AND e.sub = '' AND e.key = b.key AND e.value = b.old", params=[self._site, ns],
                ).to_arrow_table()
                assert matched is not None
            finally:
                self._con.unregister("ledger_restamp")
            if matched.num_rows:
                with self.transaction() as tx:
                    tx.acknowledge(operation, matched)
        return int(matched.num_rows)

    def add_owned_tags(self, pairs: Iterable[tuple[str, str]]) -> None:
        """See :meth:`LedgerTransaction.add_owned_tags`."""
        self.record(lambda tx: tx.add_owned_tags(pairs))

    def remove_owned_tags(self, pairs: Iterable[tuple[str, str]]) -> None:
        """See :meth:`LedgerTransaction.remove_owned_tags`."""
        self.record(lambda tx: tx.remove_owned_tags(pairs))

    def mark_unsubscribed(self, emails: Iterable[str]) -> None:
        """See :meth:`LedgerTransaction.mark_unsubscribed`."""
        self.record(lambda tx: tx.mark_unsubscribed(emails))

    def clear_unsubscribed(self, emails: Iterable[str]) -> None:
        """See :meth:`LedgerTransaction.clear_unsubscribed`."""
        self.record(lambda tx: tx.clear_unsubscribed(emails))

    def reset(self, operation: str | None = None, *, consent: bool = False, tags: bool = False) -> None:
        """Forget fingerprints of ``operation`` (None: all), so the next run sends everything again.

        Consent (unsubscribes) and tag ownership are kept unless ``consent`` / ``tags`` say otherwise:
        forgetting them would weaken the guards, not just cost requests.
        """
        self.record(lambda tx: tx.reset(operation, consent=consent, tags=tags))

    @on_worker
    def _commit(self, ops: pa.Table) -> None:
        """Stamp sequence numbers, make the change durable (segment), then apply it to the table."""
        with self._locked():
            base = self._clock.take(ops.num_rows)
            ops = ops.set_column(0, "seq", pa.array(range(base, base + ops.num_rows), pa.int64()))
            if self._replica is not None:
                # the segment is the durable record; the cache follows it (and is rebuilt from it on open)
                self._replica.publish(ops, base)
            self._with_room(ops.num_rows, lambda: self._apply(ops))

    def _apply(self, ops: pa.Table) -> None:
        """Apply stamped ops in one transaction; a failure rolls all of them back (safe to repeat)."""
        self._con.execute("BEGIN TRANSACTION")
        self._con.register("ledger_ops", ops)
        try:
            apply_ops(self._con, "ledger_ops", self._site)
            self._con.execute("COMMIT")
        except BaseException:
            self._con.execute("ROLLBACK")  # first: an aborted transaction refuses everything else
            raise
        finally:
            self._con.unregister("ledger_ops")

    # ----------------------------------------------------------------- segments

    @on_worker
    def refresh(self, ns: str) -> int:
        """Read the ``ns`` rows of segments other processes published since this ledger opened; how many.
        Folder ledgers only (a DuckDB file is one process's at a time)."""
        if self._replica is None:
            return 0
        with self._locked():
            return self._replica.refresh(ns)

    @on_worker
    def compact(self) -> None:
        """Rewrite all segments as one (URL ledgers) or checkpoint the file (DuckDB ledgers)."""
        with self._locked():
            if self._replica is None:
                self._con.execute("CHECKPOINT")
                return
            self._replica.compact_all()

    def segment_count(self) -> int:
        """Published segments (0 for a DuckDB file): for tests, ``doctor`` and deciding to compact."""
        return 0 if self._replica is None else self._replica.count()

    @property
    def shared(self) -> bool:
        """True for folder and object-store ledgers, which several processes may write at once."""
        return self._replica is not None

    @on_worker
    def exclusive(self, work: Callable[[SyncLedger], _R]) -> _R:
        """``work(self)`` with no other reader or writer of this ledger in the process meanwhile.

        A read-then-write inside it (claim a key if nobody holds it) is atomic in the process; a DuckDB
        ledger file is also held by one process at a time, so there it is atomic across processes too.
        """
        with self._locked():
            return work(self)

    # ----------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self._ensure_open()
            yield

    def _ensure_open(self) -> None:
        if self._closed:
            raise LedgerError("the ledger is closed")

    def close(self) -> None:
        """Release the DuckDB connection, its thread and the local cache; committed data is already durable."""
        try:
            self._worker.call(self._close)
        finally:
            self._worker.stop()

    def _close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._con.close()
            if self._replica is not None:
                shutil.rmtree(self._replica.cache_dir, ignore_errors=True)
                self._replica.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
