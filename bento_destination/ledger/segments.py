"""Immutable Parquet segments in one fsspec folder: the durable record of a folder or object-store ledger.

Each commit of such a ledger is one segment (rows of the segment schema: put, del, reset ops with their
sequence numbers); the DuckDB table a ledger queries is a cache rebuilt from them (`replica.py`).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import uuid
from collections.abc import Sequence
from typing import Any, Final, Protocol

import fsspec  # type: ignore[import-untyped]  # fsspec ships no type hints
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem  # type: ignore[import-untyped]

from .errors import LedgerError
from .keys import VERSIONS

SEGMENT_PREFIX: Final = "segment-"
SEGMENT_SUFFIX: Final = ".parquet"
TMP_PREFIX: Final = ".tmp-"
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
#: `bento_ledger` is the format version (older readers look at it); `bento_ledger_versions` says the rest
SEGMENT_SCHEMA = pa.schema(
    _SEGMENT_FIELDS,
    metadata={"bento_ledger": VERSIONS["format"], "bento_ledger_versions": json.dumps(VERSIONS, sort_keys=True)},
)


def segment_name(first_seq: int) -> str:
    """Names sort by their first sequence number, so listing them gives the order they were written in."""
    return f"{SEGMENT_PREFIX}{first_seq:020d}-{uuid.uuid4().hex}{SEGMENT_SUFFIX}"


def segment_format(metadata: dict[bytes, bytes] | None) -> int:
    """The format version a segment was written with (1 when it says nothing)."""
    text = (metadata or {}).get(b"bento_ledger", b"1")
    try:
        return int(text)
    except ValueError:
        raise LedgerError(f"a ledger segment has an unknown format version {text!r}") from None


class Segments(Protocol):
    """Where a ledger's segments live: an fsspec folder (`SegmentStore`) or a Postgres schema
    (`postgres_store.PostgresSegmentStore`). Publishing is all or nothing; a deleted segment's fetch raises
    FileNotFoundError."""

    def list(self) -> list[str]: ...
    def publish(self, local_file: str, name: str) -> str: ...
    def fetch(self, path: str, local_dir: str) -> str: ...
    def delete(self, paths: Sequence[str]) -> None: ...
    def close(self) -> None: ...


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

    def close(self) -> None:
        """Nothing to release: fsspec keeps its own connections."""


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
