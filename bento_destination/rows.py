"""Turn what dlt hands the sink into plain row dicts, one sink batch at a time.

dlt passes either `list[dict]` (jsonl files) or a `pyarrow.RecordBatch` (parquet files, e.g. from a
DataFrame). Arrow is converted to Python only here, slice by slice, so a whole table is never held
as Python objects. Nulls are dropped (nulls are never sent) and dlt's variant columns are folded back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, Final

import pyarrow as pa

from .settings import SINK_BATCH_SIZE

#: dlt names a column that received a second type `<name>▶v_<type>` (direct naming) or
#: `<name>__v_<type>` (snake_case naming), e.g. `details▶v_text` when a JSON column also got a string
VARIANT_RE: Final = re.compile(
    r"^(?P<base>.+?)(?:▶|__)v_(?P<type>text|bigint|double|bool|timestamp|date|time|decimal|wei|binary|json|complex)$"
)


def variant_base(column: str) -> str | None:
    """The base column of a dlt variant column, or None if `column` is not one."""
    match = VARIANT_RE.match(column)
    return match.group("base") if match else None


@lru_cache(maxsize=1024)
def _has_variants(columns: tuple[str, ...]) -> bool:
    """Whether any of these columns is a variant column (decided once per tuple of column names)."""
    return any(variant_base(column) is not None for column in columns)


def clean_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Drop nulls and fold variant columns into their base column (a row holds one or the other)."""
    if not _has_variants(tuple(row)):
        return {column: value for column, value in row.items() if value is not None}
    out: dict[str, Any] = {}
    variants: list[tuple[str, Any]] = []
    for column, value in row.items():
        if value is None:
            continue
        base = variant_base(column)
        if base is None:
            out[column] = value
        else:
            variants.append((base, value))
    for base, value in variants:
        out.setdefault(base, value)
    return out


def iter_rows(items: Any, chunk: int = SINK_BATCH_SIZE) -> Iterator[dict[str, Any]]:
    """Yield clean row dicts from a list of dicts, a RecordBatch or a Table, converting `chunk` rows at a time."""
    if isinstance(items, str):
        raise TypeError("expected rows, not a file path (the sink reads load files with load_files.py)")
    if isinstance(items, (pa.RecordBatch, pa.Table)):
        plain = not _has_variants(tuple(items.schema.names))  # every row has the schema's columns
        for start in range(0, items.num_rows, chunk):
            for row in items.slice(start, chunk).to_pylist():
                yield {c: v for c, v in row.items() if v is not None} if plain else clean_row(row)
        return
    for row in items:
        if not isinstance(row, Mapping):
            raise TypeError(f"the bento sink expects rows as dicts, got {type(row).__name__}")
        yield clean_row(row)
