"""Read dlt's normalized load files ourselves: the sink gets each file's path (`batch_size=0`).

dlt writes parquet (Arrow input: DataFrames, `sql_table`) or typed jsonl, gzip-compressed unless its
`data_writer.disable_compression` is set. Files are read in fixed windows of input rows, streaming, so
a window's first row number is the same on every read: the sink's resume state (file_progress.py) and
the pre-pass's decisions (row numbers to skip, event numbers) refer to rows by that number.
"""

from __future__ import annotations

import gzip
import itertools
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dlt.common.json import json as dlt_json
from dlt.common.storages.load_package import ParsedLoadJobFileName

#: dlt's own tables and columns start with this; the sink never sends them
DLT_PREFIX = "_dlt"
GZIP_MAGIC = b"\x1f\x8b"


def file_key(path: str) -> str:
    """`<table>.<file_id>`: the name of a load file that survives dlt's retries (which rename the file)."""
    parsed = ParsedLoadJobFileName.parse(Path(path).name)
    return f"{parsed.table_name}.{parsed.file_id}"


def sink_columns(columns: Sequence[str]) -> list[str]:
    """The columns the sink sees: the table schema's, without dlt's own (as dlt passed them with batches)."""
    return [c for c in columns if not c.startswith(DLT_PREFIX)]


def _open_text(path: str) -> Any:
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    return gzip.open(path, "rt", encoding="utf-8") if compressed else open(path, encoding="utf-8")


def _jsonl_rows(path: str, columns: Sequence[str] | None) -> Iterator[dict[str, Any]]:
    wanted = set(columns) if columns else None
    with _open_text(path) as lines:
        for line in lines:
            if not line.strip():
                continue
            records = dlt_json.typed_loads(line)
            for record in [records] if isinstance(records, dict) else records:
                if wanted is not None:
                    record = {k: v for k, v in record.items() if k in wanted}
                else:
                    record = {k: v for k, v in record.items() if not k.startswith(DLT_PREFIX)}
                yield record


def _parquet_windows(
    path: str, columns: Sequence[str] | None, sizes: Iterator[int], start: int
) -> Iterator[pa.Table]:
    with pq.ParquetFile(path) as reader:
        names = reader.schema_arrow.names
        selected = [c for c in (columns or names) if c in names and not c.startswith(DLT_PREFIX)]
        pending: list[pa.RecordBatch] = []
        held = 0
        want = next(sizes)
        for batch in reader.iter_batches(batch_size=want, columns=selected):
            if start >= batch.num_rows:
                start -= batch.num_rows
                continue
            if start:
                batch, start = batch.slice(start), 0
            pending.append(batch)
            held += batch.num_rows
            while held >= want:
                table = pa.Table.from_batches(pending)
                yield table.slice(0, want)
                rest = table.slice(want)
                pending, held, want = rest.to_batches(), rest.num_rows, next(sizes)
        if held:
            yield pa.Table.from_batches(pending)


def read_windows(
    path: str, columns: Sequence[str] | None, size: int | Iterable[int], start: int = 0
) -> Iterator[pa.Table | list[dict[str, Any]]]:
    """The file's rows from row `start` on, in windows of exactly `size` rows (or the sizes given in turn; the
    last may be shorter), only `columns` (None: all but dlt's own). Parquet windows stay Arrow tables;
    jsonl windows are lists of dicts."""
    sizes = itertools.repeat(size) if isinstance(size, int) else iter(size)
    if path.endswith(".parquet"):
        yield from _parquet_windows(path, columns, sizes, start)
        return
    window: list[dict[str, Any]] = []
    want = next(sizes)
    for index, row in enumerate(_jsonl_rows(path, columns)):
        if index < start:
            continue
        window.append(row)
        if len(window) == want:
            yield window
            window, want = [], next(sizes)
    if window:
        yield window


def count_rows(path: str) -> int:
    """Rows in a load file (parquet: from its footer; jsonl: read through)."""
    if path.endswith(".parquet"):
        return int(pq.ParquetFile(path).metadata.num_rows)
    return sum(1 for _ in _jsonl_rows(path, None))
