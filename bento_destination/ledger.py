"""Sync ledger: what Bento last acknowledged, so reverse-ETL sends only what changed.

Reverse-ETL runs over whole tables on a schedule, and Bento allows about a request a second: resending a
1,000,000-row table costs 10 to 17 minutes every run. The ledger keeps, per (site, operation, key), the
fingerprint of the payload Bento last acknowledged, so a rerun sends only new and changed rows, and events
already acknowledged are not sent twice. It also remembers who is known to be unsubscribed (consent) and
which tags this connector added (tag ownership), and offers the blast-radius guard.

Storage (see docs/ledger.md):
- a local DuckDB file (``*.duckdb``): one table, written in a transaction per acknowledgement;
- any other location (a folder, ``file://``, ``memory://``, ``s3://``, ``gs://``, ... through fsspec):
  immutable Parquet segments under ``<location>/<site>/``, one per commit, published atomically; they are
  read into a private DuckDB cache when the ledger opens, and compacted into one when there are many.

Everything is vectorised through Arrow and DuckDB (a batch is joined against the ledger table), so a
million keys never become a million Python objects inside the ledger. All DuckDB work runs on one thread
per ledger (`_Worker`): dlt runs load jobs in a thread pool, a DuckDB connection must not be used by two
threads at once, and memory DuckDB allocates from ten threads stays in ten allocator arenas (about 50 MB
more at 1,000,000 acknowledged rows). DuckDB is capped too (`memory_limit`, one DuckDB thread): beyond
the cap it spills to its temporary folder instead of growing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import functools
import hashlib
import json
import math
import os
import posixpath
import queue
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, cast

import duckdb
import fsspec  # type: ignore[import-untyped]  # fsspec ships no type hints
import numpy
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

from bento_api.errors import BentoError
from bento_api.facts import normalise_email
from bento_api.timestamps import InvalidTimestamp, format_utc_key

__all__ = [
    "DEFAULT_MAX_SHARE",
    "BlastRadiusExceeded",
    "LedgerBusyError",
    "LedgerError",
    "LedgerTransaction",
    "SyncLedger",
    "check_blast_radius",
    "derive_event_key",
    "event_ledger_key",
    "fingerprint",
]

#: default share of the known audience a run may unsubscribe or strip tags from before it stops
DEFAULT_MAX_SHARE = 0.10

#: classes of :meth:`SyncLedger.classify`
NEW, CHANGED, UNCHANGED = 0, 1, 2

#: reserved namespaces (a leading underscore can never be an operation name)
TAGS_NS = "_tags"
UNSUBSCRIBED_NS = "_unsubscribed"
#: a reset row with this namespace resets every operation (not consent, not tags)
ALL_OPERATIONS = "*"

FORMAT_VERSION = "1"
SEGMENT_PREFIX = "segment-"
SEGMENT_SUFFIX = ".parquet"
TMP_PREFIX = ".tmp-"
DEFAULT_COMPACT_AFTER = 32
#: DuckDB's working-memory cap for the ledger; beyond it DuckDB spills to its temporary folder (joins,
#: compaction) or evicts table blocks it can read again. 1,000,000 keys are about 40 MB in DuckDB's
#: format. Not much lower: a checkpoint needs a few MB pinned, and at 8 MB it failed (a fatal error).
DEFAULT_MEMORY_LIMIT = "32MB"
#: the cap while one statement handles more than BULK_ROWS rows (a million keys acknowledged at once,
#: reading many segments, compacting): such a statement needs room for its intermediates, and the
#: steady cap comes back when it is done
DEFAULT_BULK_MEMORY_LIMIT = "512MB"
BULK_ROWS = 200_000
#: DuckDB worker threads of the ledger connection: the ledger is used by one thread at a time anyway,
#: and each DuckDB thread keeps its own buffers
DEFAULT_THREADS = 1

_OPERATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SITE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")
#: filesystems whose single PUT is atomic: write the final name directly (a rename there is copy + delete)
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2"})

_SEGMENT_FIELDS: list[pa.Field[Any]] = [
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("op", pa.string(), nullable=False),  # put | del | reset
    pa.field("ns", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),
    pa.field("sub", pa.string(), nullable=False),
    pa.field("value", pa.string()),
]
SEGMENT_SCHEMA = pa.schema(_SEGMENT_FIELDS, metadata={"bento_ledger": FORMAT_VERSION})

_DDL = """
CREATE TABLE IF NOT EXISTS ledger_entries (
    site VARCHAR NOT NULL,
    ns VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    sub VARCHAR NOT NULL,
    value VARCHAR,
    seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_meta (k VARCHAR PRIMARY KEY, v VARCHAR);
"""

_RAW_DDL = """
CREATE OR REPLACE TEMP TABLE ledger_raw (
    seq BIGINT, op VARCHAR, ns VARCHAR, key VARCHAR, sub VARCHAR, value VARCHAR
)
"""


class LedgerError(BentoError):
    """The ledger cannot be opened, read or written; the message says what to check."""


class LedgerBusyError(LedgerError):
    """Another process holds the DuckDB ledger file: this run stops before sending anything."""


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


class BlastRadiusExceeded(BentoError):
    """A run would unsubscribe people or remove tags for too large a share of the audience.

    Raised before anything is sent, so a wrong source table cannot strip a whole list.
    """

    def __init__(
        self, message: str, *, would_unsubscribe: int, would_remove_tags: int, known_audience: int, max_share: float
    ) -> None:
        super().__init__(message)
        self.would_unsubscribe = would_unsubscribe
        self.would_remove_tags = would_remove_tags
        self.known_audience = known_audience
        self.max_share = max_share


# --------------------------------------------------------------------------- fingerprints and keys


def _json_default(value: Any) -> Any:
    """Encode the few non-JSON scalars a mapped payload may still hold, the way they are sent."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    raise TypeError(f"cannot fingerprint a value of type {type(value).__name__}; map it to JSON first")


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no whitespace, UTF-8 kept, so equal payloads hash equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def fingerprint(payload: Mapping[str, Any]) -> str:
    """The payload's fingerprint: sha256 of its canonical JSON, first 32 hex digits (128 bits)."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:32]


def _normalise_date(date: Any) -> Any:
    """Same instant, same key: "...Z", "+00:00" and datetime objects all become one UTC ISO text.

    Numbers pass through as they are; text the timestamp rule does not accept is kept as written.
    """
    if date is None:
        return None
    if isinstance(date, int | float) and not isinstance(date, bool) and math.isfinite(date):
        return date
    if isinstance(date, dt.date):  # datetimes too
        return format_utc_key(date)
    if isinstance(date, str):
        try:
            return format_utc_key(date)
        except InvalidTimestamp:
            return date.strip()
    raise TypeError(f"cannot derive an event key from a date of type {type(date).__name__}")


def derive_event_key(email: str, type: str, date: Any = None, details: Mapping[str, Any] | str | None = None) -> str:
    """A unique key derived from an event's content: (email, type, date, details).

    For event tables without their own key. The trade-off: two genuinely identical events (same person,
    type, instant and details) then count once, in Bento and in the ledger. Without a date, every repeat
    of the same event counts once, ever. An existing ``details.unique`` is left out of the hash.
    """
    if isinstance(details, str):
        with contextlib.suppress(json.JSONDecodeError):
            details = json.loads(details) if details.strip() else None
    if isinstance(details, Mapping):
        details = {k: v for k, v in details.items() if k != "unique"} or None
    content = ["event-v1", normalise_email(email), type.strip(), _normalise_date(date), details]
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()[:32]


def event_ledger_key(email: str, type: str, unique_key: str) -> str:
    """The ledger key of a keyed event: Bento keeps one event per (email, type, key), so must we."""
    return canonical_json([normalise_email(email), type.strip(), unique_key])


# --------------------------------------------------------------------------- blast radius


def check_blast_radius(
    would_unsubscribe: int,
    would_remove_tags: int,
    known_audience: int,
    max_share: float = DEFAULT_MAX_SHARE,
    force: bool = False,
) -> None:
    """Stop a run, before anything is sent, that would unsubscribe or untag too many people.

    ``would_unsubscribe`` and ``would_remove_tags`` count people (distinct emails); each is compared with
    ``max_share * known_audience`` on its own. With no known audience (a first run) any removal exceeds
    the share: pass ``max(ledger.known_audience(), people in this run)`` to size the first run instead.
    """
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"max_share must be between 0 and 1, got {max_share!r}")
    if min(would_unsubscribe, would_remove_tags, known_audience) < 0:
        raise ValueError("counts must not be negative")
    if force:
        return
    limit = max_share * known_audience
    problems = []
    for count, what in ((would_unsubscribe, "unsubscribe"), (would_remove_tags, "remove tags from")):
        if count > 0 and count > limit:
            share = f"{count / known_audience:.1%}" if known_audience else "all"
            problems.append(f"{what} {count:,} people ({share} of {known_audience:,} known)")
    if problems:
        raise BlastRadiusExceeded(
            f"nothing was sent: this run would {' and '.join(problems)}, more than the allowed "
            f"{max_share:.1%}. Check the source table; if this is intended, rerun with force=True "
            f"or raise max_share.",
            would_unsubscribe=would_unsubscribe,
            would_remove_tags=would_remove_tags,
            known_audience=known_audience,
            max_share=max_share,
        )


# --------------------------------------------------------------------------- helpers


def _check_operation(operation: str) -> str:
    if not isinstance(operation, str) or not _OPERATION_RE.match(operation):
        raise ValueError(f"operation must be a name like 'subscribers' or 'events', got {operation!r}")
    return operation


def _string_array(values: Iterable[Any] | pa.Array | pa.ChunkedArray, what: str) -> pa.Array:
    """Arrow strings, refusing None and non-strings: a missing key would silently match nothing."""
    try:
        if isinstance(values, pa.ChunkedArray):
            array = values.combine_chunks().cast(pa.string())
        elif isinstance(values, pa.Array):
            array = values.cast(pa.string())
        else:
            array = pa.array(values if isinstance(values, list | tuple) else list(values), type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise TypeError(f"every {what} must be a string: {exc}") from exc
    if array.null_count:
        raise ValueError(f"a {what} is missing (None)")
    return array


#: (key, value) pairs: a sequence of 2-tuples, or a two-column Arrow table (vectorised callers)
Pairs = Sequence[tuple[str, str]] | pa.Table


def _pairs_table(items: Pairs, first: str, second: str) -> pa.Table:
    """Two Arrow columns from (a, b) pairs, built column-wise (no per-row Arrow objects)."""
    if isinstance(items, pa.Table):
        if items.num_columns != 2:
            raise ValueError(f"an Arrow table of pairs needs exactly two columns ({first}, {second})")
        return pa.table({first: _string_array(items.column(0), first), second: _string_array(items.column(1), second)})
    a = _string_array([pair[0] for pair in items], first)
    b = _string_array([pair[1] for pair in items], second)
    return pa.table({first: a, second: b})


def _ops_table(
    op: str, ns: str, keys: pa.Array, subs: pa.Array | None = None, values: pa.Array | None = None
) -> pa.Table:
    """Rows of the segment schema; ``seq`` is stamped at commit."""
    n = len(keys)
    return pa.table(
        {
            "seq": pa.nulls(n, pa.int64()),
            "op": pa.repeat(pa.scalar(op, pa.string()), n),
            "ns": pa.repeat(pa.scalar(ns, pa.string()), n),
            "key": keys,
            "sub": subs if subs is not None else pa.repeat(pa.scalar("", pa.string()), n),
            "value": values if values is not None else pa.nulls(n, pa.string()),
        }
    )


class _Clock:
    """Sequence numbers: nanoseconds since the epoch, strictly increasing, above anything already stored.

    Rows carry them, so "last write wins" holds across segments, compactions and processes.
    """

    def __init__(self) -> None:
        self._last = 0

    def observe(self, seq: int) -> None:
        self._last = max(self._last, seq)

    def take(self, count: int) -> int:
        base = max(time.time_ns(), self._last + 1)
        self._last = base + max(count, 1) - 1
        return base


# --------------------------------------------------------------------------- segment store (URLs)


class SegmentStore:
    """Immutable Parquet segments in one fsspec folder: publish atomically, list, fetch, delete.

    Publishing never leaves half a segment visible: local folders get write + fsync + rename; object
    stores get one PUT (atomic there); other filesystems write a ``.tmp-`` name, then move it.
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
        self.local = isinstance(fs, LocalFileSystem)
        self.object_store = any(p in _OBJECT_STORES for p in protocols)
        if not self.object_store:
            fs.makedirs(self.root, exist_ok=True)

    def list(self) -> list[str]:
        """Published segments, oldest first (names start with their first sequence number)."""
        try:
            names = self.fs.ls(self.root, detail=False, refresh=True)
        except FileNotFoundError:
            bucket = self.root.split("/", 1)[0]
            if self.object_store and not self.fs.exists(bucket):
                # else the run would send every row and only then fail to record any of them
                raise LedgerError(
                    f"the ledger's bucket {bucket!r} does not exist (the ledger never creates one): create it, or "
                    "check the URL and the endpoint"
                ) from None
            return []  # a new ledger: nothing published yet
        found = [
            str(name)
            for name in names
            if posixpath.basename(str(name)).startswith(SEGMENT_PREFIX) and str(name).endswith(SEGMENT_SUFFIX)
        ]
        return sorted(found, key=posixpath.basename)

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def publish(self, local_file: str, name: str) -> str:
        """Make ``local_file`` visible as segment ``name``, all or nothing; durable when it returns."""
        final = self.path(name)
        if self.object_store:
            self.fs.put_file(local_file, final)
            return final
        tmp = self.path(TMP_PREFIX + name)
        if self.local:
            with open(local_file, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
        else:
            self.fs.put_file(local_file, tmp)
        self._rename(tmp, final)
        return final

    def _rename(self, tmp: str, final: str) -> None:
        """The commit point: before it the segment does not exist, after it it does."""
        if self.local:
            os.replace(tmp, final)
            _fsync_dir(os.path.dirname(final))
        else:
            self.fs.mv(tmp, final)

    def fetch(self, path: str, local_dir: str) -> str:
        """A local path to read the segment from (the file itself when the folder is local)."""
        if self.local:
            if not os.path.exists(path):
                raise FileNotFoundError(path)
            return path
        target = os.path.join(local_dir, "fetch-" + uuid.uuid4().hex + SEGMENT_SUFFIX)
        self.fs.get_file(path, target)
        return target

    def delete(self, paths: Sequence[str]) -> None:
        """Remove replaced segments; one already gone (another process compacted) is fine."""
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(path)


def _fsync_dir(path: str) -> None:
    """Make a rename durable (POSIX); platforms that cannot open a folder skip it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- one thread for DuckDB

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _Worker:
    """One thread that runs every DuckDB call of a ledger, in order; callers wait for their result.

    Memory that DuckDB (and Arrow) allocate on a thread is cached per thread by the allocators; when ten
    dlt load jobs each touched the connection, ten caches grew. Calls from the worker itself run inline
    (no deadlock), and so do calls once the worker is stopped or gone (interpreter exit, after a fork).
    """

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            task = self._queue.get()
            if task is None:
                return
            call, future = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller, which re-raises it
                future.set_exception(exc)
            del call, future, task
            # Arrow's allocator keeps what a thread freed for that thread's reuse; give it back now
            pa.default_memory_pool().release_unused()

    def call(self, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """``fn(*args, **kwargs)`` on the worker thread; its result, or its exception re-raised here."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return fn(*args, **kwargs)
        future: Future[_R] = Future()
        self._queue.put((functools.partial(fn, *args, **kwargs), future))
        return future.result()

    def stop(self) -> None:
        """Finish what is queued, then end the thread."""
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join()


def _on_worker(method: Callable[Concatenate[SyncLedger, _P], _R]) -> Callable[Concatenate[SyncLedger, _P], _R]:
    """Run a SyncLedger method on the ledger's worker thread (see `_Worker`)."""

    @functools.wraps(method)
    def wrapper(self: SyncLedger, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        return self._worker.call(method, self, *args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- the ledger


class LedgerTransaction:
    """Changes collected in memory and committed as one unit (one segment, one DuckDB transaction).

    Use it to record what one acknowledged Bento batch implies (fingerprints, tags added,
    unsubscribes) so that a crash can never keep half of it.
    """

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []

    def acknowledge(self, operation: str, items: Pairs) -> None:
        """Record (key, fingerprint) pairs that Bento acknowledged."""
        ns = _check_operation(operation)
        table = _pairs_table(items, "key", "value")
        if table.num_rows:
            self._parts.append(
                _ops_table(
                    "put", ns, table.column("key").combine_chunks(), values=table.column("value").combine_chunks()
                )
            )

    def add_owned_tags(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Record (email, tag) pairs this connector added, so ``remove_tags`` may later take them off."""
        self._tag_op("put", pairs)

    def remove_owned_tags(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Forget (email, tag) pairs, after the connector removed them."""
        self._tag_op("del", pairs)

    def _tag_op(self, op: str, pairs: Iterable[tuple[str, str]]) -> None:
        listed = [(normalise_email(e), t.strip()) for e, t in pairs]
        if listed:
            table = _pairs_table(listed, "email", "tag")
            self._parts.append(
                _ops_table(
                    op, TAGS_NS, table.column("email").combine_chunks(), subs=table.column("tag").combine_chunks()
                )
            )

    def mark_unsubscribed(self, emails: Iterable[str]) -> None:
        """Remember that these people are unsubscribed: no sync may resubscribe them."""
        self._email_op("put", emails)

    def clear_unsubscribed(self, emails: Iterable[str]) -> None:
        """Forget an unsubscribe: only for an explicit, user-given resubscription."""
        self._email_op("del", emails)

    def _email_op(self, op: str, emails: Iterable[str]) -> None:
        keys = _string_array([normalise_email(e) for e in _as_list(emails)], "email")
        if len(keys):
            self._parts.append(_ops_table(op, UNSUBSCRIBED_NS, keys))

    def put_entries(self, ns: str, rows: Sequence[tuple[str, str, str]]) -> None:
        """Write (key, sub, value) rows of a reserved namespace (``_emails``): the last write per (key, sub) wins.

        Reserved namespaces start with an underscore, so ``reset`` of every operation never touches them.
        """
        if not ns.startswith("_"):
            raise ValueError(f"put_entries writes reserved namespaces (a leading underscore), got {ns!r}")
        if rows:
            keys = _string_array([r[0] for r in rows], "key")
            subs = _string_array([r[1] for r in rows], "sub")
            values = _string_array([r[2] for r in rows], "value")
            self._parts.append(_ops_table("put", ns, keys, subs=subs, values=values))

    def reset(self, operation: str | None = None, *, consent: bool = False, tags: bool = False) -> None:
        """Forget fingerprints of one operation (or all); consent and tag memory only when asked."""
        namespaces = [ALL_OPERATIONS if operation is None else _check_operation(operation)]
        if consent:
            namespaces.append(UNSUBSCRIBED_NS)
        if tags:
            namespaces.append(TAGS_NS)
        for ns in namespaces:
            self._parts.append(_ops_table("reset", ns, pa.array([""], pa.string())))

    def _ops(self) -> pa.Table | None:
        if not self._parts:
            return None
        return pa.concat_tables(self._parts)


def _as_list(values: Iterable[str]) -> list[str]:
    """A lone string means one email, not its characters."""
    return [values] if isinstance(values, str) else list(values)


class SyncLedger:
    """Per (site, operation, key): the fingerprint Bento last acknowledged; plus consent and tag memory.

    Open with :meth:`open`. Thread-safe. Reads (partition, seen, ...) never touch the network; each
    commit (acknowledge, tags, consent, reset) is durable when it returns.
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        *,
        site: str,
        location: str,
        store: SegmentStore | None = None,
        cache_dir: str | None = None,
        full_resync: bool = False,
        worker: _Worker | None = None,
    ) -> None:
        self._worker = worker or _Worker(f"bento-ledger-{site}")
        self._memory_limits = (DEFAULT_MEMORY_LIMIT, DEFAULT_BULK_MEMORY_LIMIT)
        self._con = con
        self._site = site
        self._store = store
        self._cache_dir = cache_dir
        self._clock = _Clock()
        self._lock = threading.RLock()
        self._closed = False
        self.location = location
        self.full_resync = full_resync
        #: segments this ledger has read or written (folder ledgers), so `refresh` reads only newer ones
        self._known_segments: set[str] = set()
        (last,) = self._worker.call(
            self._fetchone, "SELECT coalesce(max(seq), 0) FROM ledger_entries WHERE site = ?", [site]
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
            opener: Callable[[_Worker], SyncLedger] = functools.partial(
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
        worker = _Worker(f"bento-ledger-{site}")
        try:
            ledger = worker.call(opener, worker)
        except BaseException:
            worker.stop()
            raise
        ledger._memory_limits = (memory_limit, bulk_memory_limit)
        return ledger

    @classmethod
    def _open_duckdb(
        cls, path: str, worker: _Worker, *, site: str, full_resync: bool, config: dict[str, Any]
    ) -> SyncLedger:
        file = Path(path).expanduser()
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(file), config=config)
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                raise LedgerBusyError(
                    f"cannot open the ledger file {file}: it is in use by another run. Another process holds it "
                    f"({_first_line(exc)}); a DuckDB ledger file serves one pipeline run at a time. This run "
                    "sends nothing more; run it again once the other one has finished"
                ) from exc
            raise LedgerError(
                f"cannot open the ledger file {file}: {exc}. Another process may hold it: "
                "a DuckDB ledger file serves one pipeline run at a time"
            ) from exc
        con.execute(_DDL)
        con.execute("INSERT OR IGNORE INTO ledger_meta VALUES ('format', ?)", [FORMAT_VERSION])
        return cls(con, site=site, location=str(file), full_resync=full_resync, worker=worker)

    @classmethod
    def _open_segments(
        cls,
        url: str,
        worker: _Worker,
        *,
        site: str,
        full_resync: bool,
        compact_after: int,
        storage_options: Mapping[str, Any] | None,
        config: dict[str, Any],
    ) -> SyncLedger:
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
            con.execute(_DDL)
            ledger = cls(
                con, site=site, location=url, store=store, cache_dir=cache_dir, full_resync=full_resync, worker=worker
            )
        except BaseException:
            shutil.rmtree(cache_dir, ignore_errors=True)
            raise
        try:
            ledger._load_segments(compact_after)
        except BaseException:
            ledger.close()
            raise
        return ledger

    # ----------------------------------------------------------------- reading

    @staticmethod
    def fingerprint(payload: Mapping[str, Any]) -> str:
        """See :func:`fingerprint`."""
        return fingerprint(payload)

    @_on_worker
    def partition(self, operation: str, items: Pairs) -> tuple[list[int], list[int], list[int]]:
        """Split (key, fingerprint) pairs into indexes of (new, changed, unchanged) rows.

        New: no fingerprint stored; changed: a different one; unchanged: the same, so not sent.
        One join of the batch against the ledger table; pass large batches (a load file) at once.
        """
        klass = self._classify(operation, items)
        index = numpy.arange(len(klass))
        return (
            cast(list[int], index[klass == NEW].tolist()),
            cast(list[int], index[klass == CHANGED].tolist()),
            cast(list[int], index[klass == UNCHANGED].tolist()),
        )

    @_on_worker
    def classify(self, operation: str, items: Pairs) -> numpy.ndarray[Any, numpy.dtype[numpy.int8]]:
        """Per (key, fingerprint) pair, in order: NEW (0), CHANGED (1) or UNCHANGED (2), as a numpy array.

        :meth:`partition` without the Python lists, for large batches (the pre-pass over a load file
        passes a two-column Arrow table).
        """
        return self._classify(operation, items)

    def _classify(self, operation: str, items: Pairs) -> numpy.ndarray[Any, numpy.dtype[numpy.int8]]:
        ns = _check_operation(operation)
        batch = _pairs_table(items, "key", "fp")
        n = batch.num_rows
        self._ensure_open()
        if self.full_resync or n == 0:
            return numpy.zeros(n, numpy.int8)
        batch = batch.append_column("i", pa.array(numpy.arange(n, dtype=numpy.int64)))
        with self._locked(), self._roomy(n):
            self._con.register("ledger_batch", batch)
            try:
                result = self._con.execute(
                    """
                    SELECT b.i, CASE WHEN e.value = b.fp THEN 2 ELSE 1 END::TINYINT AS c
                    FROM ledger_batch b
                    JOIN ledger_entries e
                      ON e.site = ? AND e.ns = ? AND e.sub = '' AND e.key = b.key
                    """,
                    [self._site, ns],
                ).fetchnumpy()
            finally:
                self._con.unregister("ledger_batch")
        out = numpy.zeros(n, numpy.int8)
        out[result["i"]] = result["c"]
        return out

    @_on_worker
    def seen(self, operation: str, keys: Iterable[str]) -> set[str]:
        """The keys among ``keys`` already acknowledged (events: do not send these again)."""
        ns = _check_operation(operation)
        array = _string_array(_as_list(keys), "key")
        self._ensure_open()
        if self.full_resync or not len(array):
            return set()
        return self._lookup_keys(ns, array)

    def _lookup_keys(self, ns: str, keys: pa.Array) -> set[str]:
        with self._locked():
            self._con.register("ledger_keys", pa.table({"key": keys}))
            try:
                rows = self._con.execute(
                    """
                    SELECT DISTINCT e.key FROM ledger_entries e
                    SEMI JOIN ledger_keys k ON e.key = k.key
                    WHERE e.site = ? AND e.ns = ?
                    """,
                    [self._site, ns],
                ).fetchall()
            finally:
                self._con.unregister("ledger_keys")
        return {row[0] for row in rows}

    @_on_worker
    def known_audience(self, operation: str = "subscribers") -> int:
        """How many keys (for subscribers: people) Bento acknowledged: the blast-radius denominator."""
        ns = _check_operation(operation)
        with self._locked():
            (count,) = self._fetchone("SELECT count(*) FROM ledger_entries WHERE site = ? AND ns = ?", [self._site, ns])
        return int(count)

    @_on_worker
    def owned_tags(self, emails: Iterable[str]) -> dict[str, set[str]]:
        """For each email (normalised: trimmed, lower-case), the tags this connector added."""
        wanted = sorted({normalise_email(e) for e in _as_list(emails)})
        owned: dict[str, set[str]] = {email: set() for email in wanted}
        self._ensure_open()
        if not wanted:
            return owned
        with self._locked():
            self._con.register("ledger_keys", pa.table({"key": _string_array(wanted, "email")}))
            try:
                rows = self._con.execute(
                    """
                    SELECT e.key, e.sub FROM ledger_entries e SEMI JOIN ledger_keys k ON e.key = k.key
                    WHERE e.site = ? AND e.ns = ?
                    """,
                    [self._site, TAGS_NS],
                ).fetchall()
            finally:
                self._con.unregister("ledger_keys")
        for email, tag in rows:
            owned[email].add(tag)
        return owned

    @_on_worker
    def unsubscribed(self, emails: Iterable[str]) -> set[str]:
        """The emails (normalised) known to be unsubscribed. Not affected by ``full_resync``."""
        array = _string_array([normalise_email(e) for e in _as_list(emails)], "email")
        self._ensure_open()
        if not len(array):
            return set()
        return self._lookup_keys(UNSUBSCRIBED_NS, array)

    @_on_worker
    def entries(self, ns: str, keys: Iterable[str] | None = None) -> list[tuple[str, str, str | None, int]]:
        """(key, sub, value, seq) of a reserved namespace, for ``keys`` or all of it; ignores ``full_resync``."""
        with self._locked():
            if keys is None:
                return [
                    (str(k), str(s), v, int(q))
                    for k, s, v, q in self._con.execute(
                        "SELECT key, sub, value, seq FROM ledger_entries WHERE site = ? AND ns = ? ORDER BY seq",
                        [self._site, ns],
                    ).fetchall()
                ]
            array = _string_array(_as_list(keys), "key")
            if not len(array):
                return []
            self._con.register("ledger_keys", pa.table({"key": array}))
            try:
                rows = self._con.execute(
                    """
                    SELECT e.key, e.sub, e.value, e.seq FROM ledger_entries e
                    SEMI JOIN ledger_keys k ON e.key = k.key
                    WHERE e.site = ? AND e.ns = ? ORDER BY e.seq
                    """,
                    [self._site, ns],
                ).fetchall()
            finally:
                self._con.unregister("ledger_keys")
        return [(str(k), str(s), v, int(q)) for k, s, v, q in rows]

    @_on_worker
    def exclusive(self, work: Callable[[SyncLedger], _R]) -> _R:
        """``work(self)`` with no other reader or writer of this ledger in the process meanwhile.

        A read-then-write inside it (claim a key if nobody holds it) is atomic in the process; a DuckDB
        ledger file is also held by one process at a time, so there it is atomic across processes too.
        """
        with self._locked():
            return work(self)

    @property
    def shared(self) -> bool:
        """True for folder and object-store ledgers, which several processes may write at once."""
        return self._store is not None

    @_on_worker
    def refresh(self, ns: str) -> int:
        """Read the ``ns`` rows of segments other processes published since this ledger opened; how many.

        Folder ledgers only (a DuckDB file is one process's at a time). The newer row per (key, sub)
        wins by sequence number, so reading a segment twice, or a compacted copy, changes nothing.
        """
        if self._store is None:
            return 0
        read = 0
        with self._locked():
            for _ in range(5):
                fresh = [path for path in self._store.list() if path not in self._known_segments]
                if not fresh:
                    break
                self._con.execute(_RAW_DDL)
                try:
                    for path in fresh:
                        with contextlib.suppress(FileNotFoundError):  # compacted meanwhile: the copy is listed
                            self._read_segment(path)
                    self._con.execute("DELETE FROM ledger_raw WHERE ns <> ? OR op <> 'put'", [ns])
                    (count, last) = self._fetchone("SELECT count(*), coalesce(max(seq), 0) FROM ledger_raw")
                    self._merge_newer("ledger_raw")
                    self._clock.observe(int(last))
                    read += int(count)
                finally:
                    self._con.execute("DROP TABLE IF EXISTS ledger_raw")
                self._known_segments.update(fresh)
        return read

    def _merge_newer(self, source: str) -> None:
        """Apply the put rows of ``source`` where they are newer than what the table holds per (ns, key, sub)."""
        self._con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE ledger_latest AS
            SELECT ns, key, sub, arg_max(value, seq) AS value, max(seq) AS seq FROM {source} GROUP BY ns, key, sub
            """
        )
        self._con.execute(
            """
            DELETE FROM ledger_latest l USING ledger_entries e
            WHERE e.site = ? AND e.ns = l.ns AND e.key = l.key AND e.sub = l.sub AND e.seq >= l.seq
            """,
            [self._site],
        )
        self._con.execute(
            """
            DELETE FROM ledger_entries e USING ledger_latest l
            WHERE e.site = ? AND e.ns = l.ns AND e.key = l.key AND e.sub = l.sub
            """,
            [self._site],
        )
        self._con.execute(
            "INSERT INTO ledger_entries SELECT ?, ns, key, sub, value, seq FROM ledger_latest", [self._site]
        )
        self._con.execute("DROP TABLE ledger_latest")

    # ----------------------------------------------------------------- writing

    @contextlib.contextmanager
    def transaction(self) -> Iterator[LedgerTransaction]:
        """Collect several changes and commit them as one unit when the block ends without error."""
        self._ensure_open()
        tx = LedgerTransaction()
        yield tx
        ops = tx._ops()
        if ops is not None:
            self._commit(ops)

    @_on_worker
    def record(self, changes: Callable[[LedgerTransaction], None]) -> None:
        """``changes(tx)`` collects changes; they are committed as one unit, like :meth:`transaction`.

        The whole of it runs on the ledger's thread, Arrow tables included, so a thread pool of
        callers does not leave Arrow memory cached in every thread's allocator.
        """
        with self.transaction() as tx:
            changes(tx)

    def acknowledge(self, operation: str, items: Pairs) -> None:
        """Record (key, fingerprint) pairs. Call ONLY after Bento acknowledged the batch."""
        self.record(lambda tx: tx.acknowledge(operation, items))

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

    @_on_worker
    def _commit(self, ops: pa.Table) -> None:
        """Stamp sequence numbers, make the change durable (segment), then apply it to the table."""
        with self._locked():
            base = self._clock.take(ops.num_rows)
            ops = ops.set_column(0, "seq", pa.array(range(base, base + ops.num_rows), pa.int64()))
            if self._store is not None:
                # the segment is the durable record; the cache follows it (and is rebuilt from it on open)
                self._write_segment(ops, f"{SEGMENT_PREFIX}{base:020d}-{uuid.uuid4().hex}{SEGMENT_SUFFIX}")
            self._con.execute("BEGIN TRANSACTION")
            try:
                self._apply(ops)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    def _write_segment(self, ops: pa.Table, name: str) -> None:
        assert self._store is not None and self._cache_dir is not None
        local = os.path.join(self._cache_dir, "out-" + name)
        try:
            pq.write_table(ops.cast(SEGMENT_SCHEMA), local, compression="zstd")
            try:
                self._known_segments.add(self._store.publish(local, name))
            except (OSError, ValueError) as exc:
                raise LedgerError(
                    f"cannot write the ledger at {self.location!r}: {exc}. The batch was sent but is not "
                    "recorded: it will be sent again next run"
                ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(local)

    def _apply(self, ops: pa.Table) -> None:
        """Apply an Arrow table of ops (any number, any mix) to ledger_entries."""
        self._con.register("ledger_ops", ops)
        try:
            with self._roomy(ops.num_rows):
                self._apply_from("ledger_ops")
        finally:
            self._con.unregister("ledger_ops")

    def _apply_from(self, source: str) -> None:
        """Apply the ops in table ``source``: resets first, then the last op per key wins.

        Vectorised: a handful of statements whatever the number of rows, so a 1,000-row acknowledgement
        and a 1,000,000-row segment load cost the same number of round trips.
        """
        self._con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE ledger_resets AS
            SELECT ns, max(seq) AS seq FROM {source} WHERE op = 'reset' GROUP BY ns
            """
        )
        self._con.execute(
            """
            DELETE FROM ledger_entries e USING ledger_resets r
            WHERE e.site = $site
              AND (e.ns = r.ns OR (r.ns = $all AND NOT starts_with(e.ns, '_')))
            """,
            {"site": self._site, "all": ALL_OPERATIONS},
        )
        self._con.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE ledger_latest AS
            SELECT ns, key, sub, arg_max(op, seq) AS op, arg_max(value, seq) AS value, max(seq) AS seq
            FROM {source} WHERE op IN ('put', 'del') GROUP BY ns, key, sub
            """
        )
        self._con.execute(
            """
            DELETE FROM ledger_entries e USING ledger_latest l
            WHERE e.site = ? AND e.ns = l.ns AND e.key = l.key AND e.sub = l.sub
            """,
            [self._site],
        )
        self._con.execute(
            """
            INSERT INTO ledger_entries
            SELECT $site, l.ns, l.key, l.sub, l.value, l.seq FROM ledger_latest l
            WHERE l.op = 'put'
              AND l.seq > coalesce((SELECT max(r.seq) FROM ledger_resets r
                                    WHERE r.ns = l.ns OR (r.ns = $all AND NOT starts_with(l.ns, '_'))), -1)
            """,
            {"site": self._site, "all": ALL_OPERATIONS},
        )
        self._con.execute("DROP TABLE ledger_latest")
        self._con.execute("DROP TABLE ledger_resets")

    # ----------------------------------------------------------------- segments: load and compact

    def _load_segments(self, compact_after: int, attempts: int = 5) -> None:
        """Read every segment into the cache (compacting if there are more than ``compact_after``).

        Retried if a segment vanishes meanwhile: another process compacted the folder.
        """
        assert self._store is not None
        for attempt in range(attempts):
            segments = self._store.list()
            with self._locked():
                try:
                    self._con.execute(_RAW_DDL)
                    for path in segments:
                        self._read_segment(path)
                except FileNotFoundError:
                    if attempt == attempts - 1:
                        raise
                    continue
                try:
                    (raw,) = self._fetchone("SELECT count(*) FROM ledger_raw")
                    with self._roomy(int(raw)):
                        self._con.execute("DELETE FROM ledger_entries WHERE site = ?", [self._site])
                        self._apply_from("ledger_raw")
                        (last,) = self._fetchone("SELECT coalesce(max(seq), 0) FROM ledger_raw")
                        self._clock.observe(int(last))
                        self._known_segments.update(segments)
                        if len(segments) > max(compact_after, 1):
                            self._compact(segments)
                finally:
                    self._con.execute("DROP TABLE IF EXISTS ledger_raw")
            return

    def _read_segment(self, path: str) -> None:
        assert self._store is not None and self._cache_dir is not None
        local = self._store.fetch(path, self._cache_dir)
        try:
            self._con.execute(
                "INSERT INTO ledger_raw SELECT seq, op, ns, key, sub, value FROM read_parquet(?)", [local]
            )
        except duckdb.Error as exc:
            raise LedgerError(f"ledger segment {path!r} is unreadable: {exc}") from exc
        finally:
            if local != path:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(local)

    @_on_worker
    def compact(self) -> None:
        """Rewrite all segments as one (URL ledgers) or checkpoint the file (DuckDB ledgers)."""
        with self._locked():
            if self._store is None:
                self._con.execute("CHECKPOINT")
                return
            self._load_segments(compact_after=1)

    def _compact(self, segments: list[str]) -> None:
        """One segment with the live state, tombstones and latest resets; then delete what it replaced.

        Order matters for crashes: the new segment is published first, so old and new together still
        read as the same state. Tombstones and reset markers are kept because an old segment that
        survives a crash mid-delete must stay overruled.
        """
        assert self._store is not None and self._cache_dir is not None
        if len(segments) < 2:
            return
        with self._locked():
            (last,) = self._fetchone("SELECT coalesce(max(seq), 0) FROM ledger_raw")
            local = os.path.join(self._cache_dir, f"compact-{uuid.uuid4().hex}{SEGMENT_SUFFIX}")
            self._con.execute(
                f"""
                COPY (
                    WITH resets AS (
                        SELECT ns, max(seq) AS seq FROM ledger_raw WHERE op = 'reset' GROUP BY ns
                    ),
                    latest AS (
                        SELECT ns, key, sub, arg_max(op, seq) AS op, arg_max(value, seq) AS value, max(seq) AS seq
                        FROM ledger_raw WHERE op IN ('put', 'del') GROUP BY ns, key, sub
                    )
                    SELECT seq, 'reset' AS op, ns, '' AS key, '' AS sub, NULL::VARCHAR AS value FROM resets
                    UNION ALL
                    SELECT l.seq, l.op, l.ns, l.key, l.sub, l.value FROM latest l
                    WHERE l.seq > coalesce((SELECT max(r.seq) FROM resets r
                                            WHERE r.ns = l.ns OR (r.ns = '{ALL_OPERATIONS}'
                                                                  AND NOT starts_with(l.ns, '_'))), -1)
                ) TO '{_sql_literal(local)}' (FORMAT parquet, COMPRESSION zstd)
                """
            )
            try:
                self._known_segments.add(
                    self._store.publish(local, f"{SEGMENT_PREFIX}{int(last):020d}-{uuid.uuid4().hex}{SEGMENT_SUFFIX}")
                )
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(local)
        self._store.delete(segments)

    def segment_count(self) -> int:
        """Published segments (0 for a DuckDB file): for tests, ``doctor`` and deciding to compact."""
        return 0 if self._store is None else len(self._store.list())

    # ----------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _roomy(self, rows: int) -> Iterator[None]:
        """Raise DuckDB's cap to the bulk one while a statement handles more than BULK_ROWS rows."""
        steady, bulk = self._memory_limits
        if rows <= BULK_ROWS or steady == bulk:
            yield
            return
        self._con.execute(f"SET memory_limit = '{_sql_literal(bulk)}'")
        try:
            yield
        finally:
            self._con.execute(f"SET memory_limit = '{_sql_literal(steady)}'")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            self._ensure_open()
            yield

    def _ensure_open(self) -> None:
        if self._closed:
            raise LedgerError("the ledger is closed")

    def _fetchone(self, sql: str, params: Sequence[Any] | None = None) -> tuple[Any, ...]:
        """The single row of ``sql``, fetched fully (DuckDB refuses new work while a result is open)."""
        rows = self._con.execute(sql, params or []).fetchall()
        assert len(rows) == 1
        return tuple(rows[0])

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
            if self._cache_dir is not None:
                shutil.rmtree(self._cache_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _sql_literal(text: str) -> str:
    return text.replace("'", "''")
