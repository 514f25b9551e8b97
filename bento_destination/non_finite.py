"""Rows holding NaN or ±infinity are rejected `non_finite_number` before dlt extracts them.

Why before: dlt's normalizer turns a non-finite float of a Python-object row (a dict, a database row read
through SQLAlchemy) into a missing value, so the sink would send the row without that field and count it
as sent. Arrow data keeps the value, but checking every input in the same place, before extract, gives the
same verdict whatever the input. A pandas DataFrame is converted to Arrow here as dlt converts it, so a NaN
in a float column stays what pandas means by it, a missing value (not sent, like any null), while ±inf is
rejected.

The check is a step on the dlt resource: it sees each item as dlt does (a dict, a list of dicts, an Arrow
table or record batch, a DataFrame), drops the rows holding a non-finite number and records them in the
load's reject file and report, like the sink's own rejects (the extract already has the load id).
`sync()` applies it to every input; for a plain `pipeline.run`, wrap the data with `reject_non_finite`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import dlt
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.storages.load_package import load_package_state
from dlt.extract import DltResource, DltSource
from dlt.extract.items import TableNameMeta

from .loadrun import load_run
from .operations import resolve_operation
from .rows import iter_rows
from .send import BatchOutcome
from .settings import DEFAULT_REJECT_THRESHOLD, REJECTS_DIRNAME

REASON = "non_finite_number"
Found = tuple[str, Any]  # (column path, the value)


def non_finite_value(value: Any, path: str) -> Found | None:
    """The first NaN or ±infinity in `value` (floats and Decimals, nested in dicts and lists), with its path."""
    kind = type(value)
    if kind is float:
        return None if math.isfinite(value) else (path, value)
    if value is None or kind is str or kind is int or kind is bool:
        return None
    if isinstance(value, Decimal):
        return None if value.is_finite() else (path, value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = non_finite_value(item, f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for item in value:
            found = non_finite_value(item, f"{path}[]")
            if found is not None:
                return found
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # numpy floats
        return None if math.isfinite(float(value)) else (path, value)
    return None


def non_finite_column(row: Mapping[str, Any]) -> Found | None:
    """(column path, value) of the first non-finite number of a row, or None."""
    for column, value in row.items():
        found = non_finite_value(value, str(column))
        if found is not None:
            return found
    return None


def _may_hold_floats(kind: pa.DataType) -> bool:
    if pa.types.is_floating(kind):
        return True
    if pa.types.is_dictionary(kind):
        return _may_hold_floats(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_may_hold_floats(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _may_hold_floats(kind.value_type)
    return False


def _array_mask(array: pa.Array) -> np.ndarray | None:
    """Per row of `array`: whether it holds a NaN or ±infinity (None: it cannot hold any)."""
    kind = array.type
    if isinstance(array, pa.DictionaryArray):
        return _array_mask(array.dictionary_decode())
    if pa.types.is_floating(kind):
        if pa.types.is_float16(kind):
            array = array.cast(pa.float32())
        hits = pc.or_(pc.is_nan(array), pc.is_inf(array)).fill_null(False)
        return np.asarray(hits.to_numpy(zero_copy_only=False), dtype=bool)
    if isinstance(array, pa.StructArray):
        masks = [m for i in range(array.type.num_fields) if (m := _array_mask(array.field(i))) is not None]
        if not masks:
            return None
        valid = np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        return np.logical_or.reduce(masks) & valid
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        child = _array_mask(pc.list_flatten(array))
        if child is None:
            return None
        parents = np.asarray(pc.list_parent_indices(array).to_numpy(zero_copy_only=False))
        return np.bincount(parents[child], minlength=len(array)) > 0
    return None


def arrow_mask(data: pa.Table | pa.RecordBatch) -> np.ndarray | None:
    """Per row: whether any column holds a NaN or ±infinity; None when no row does (the common case, cheap)."""
    masks: list[np.ndarray] = []
    for index, field in enumerate(data.schema):
        if not _may_hold_floats(field.type):
            continue
        column = data.column(index)
        chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
        parts = []
        for chunk in chunks:
            part = _array_mask(chunk)
            parts.append(np.zeros(len(chunk), dtype=bool) if part is None else part)
        masks.append(np.concatenate(parts) if parts else np.zeros(data.num_rows, dtype=bool))
    if not masks:
        return None
    mask = np.logical_or.reduce(masks)
    return mask if mask.any() else None


def _is_pandas_frame(item: Any) -> bool:
    return type(item).__name__ == "DataFrame" and type(item).__module__.startswith("pandas")


class NonFiniteRejects:
    """A dlt resource step: drops the rows holding a non-finite number and records them as rejected.

    `table_name` is the table of the resource's items (an item marked with `dlt.mark.with_table_name` goes to
    its own table); `table_operations`, `reject_threshold` and `redact` are the destination's, so the load's
    report says the same as the sink's.
    """

    def __init__(
        self,
        table_name: str,
        table_operations: Mapping[str, str] | None = None,
        reject_threshold: float = DEFAULT_REJECT_THRESHOLD,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        self.table_name = table_name
        self.table_operations = dict(table_operations or {})
        self.reject_threshold = float(reject_threshold)
        self.redact = redact or _unchanged

    def __call__(self, items: Any, meta: Any = None) -> Any:
        table = meta.table_name if isinstance(meta, TableNameMeta) else self.table_name
        if isinstance(items, Mapping):
            found = non_finite_column(items)
            if found is None:
                return items
            self._record(table, [(dict(items), found)])
            return None
        if isinstance(items, list):
            rejected = [(row, found) for row in items if isinstance(row, Mapping)
                        if (found := non_finite_column(row)) is not None]
            if not rejected:
                return items
            self._record(table, [(dict(row), found) for row, found in rejected])
            refused = {id(row) for row, _ in rejected}
            kept = [row for row in items if id(row) not in refused]
            return kept or None
        if _is_pandas_frame(items):
            from dlt.common.libs.pandas import pandas_to_arrow

            items = pandas_to_arrow(items)  # what dlt would do with the frame; NaN becomes null here
        if isinstance(items, pa.Table | pa.RecordBatch):
            return self._arrow(table, items)
        return items

    def _arrow(self, table: str, data: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch | None:
        mask = arrow_mask(data)
        if mask is None:
            return data
        rows = iter_rows(data.filter(pa.array(mask)))
        self._record(table, [(row, non_finite_column(row) or ("row", "NaN or infinity")) for row in rows])
        kept = data.filter(pa.array(~mask))
        return kept if kept.num_rows else None

    def _record(self, table: str, rejected: list[tuple[dict[str, Any], Found]]) -> None:
        """Into the report and reject file of the load being extracted, as the sink records its own rejects."""
        pipeline = dlt.current.pipeline()
        load_id = str(load_package_state()["load_id"])
        run = load_run(
            Path(pipeline.working_dir) / REJECTS_DIRNAME, load_id, pipeline.pipeline_name,
            self.reject_threshold, self.redact,
        )
        outcome = BatchOutcome(received=len(rejected), sink_batch=False)
        for row, (column, value) in rejected:
            outcome.reject(REASON, f"`{column}` is {value} (NaN or infinity cannot be sent)", row)
        run.merge(table, resolve_operation(table, self.table_operations), outcome)


def _unchanged(text: str) -> str:
    return text


def _resource_table(resource: DltResource) -> str:
    name = resource.table_name
    return name if isinstance(name, str) else resource.name


def reject_non_finite(
    data: Any,
    table_name: str | None = None,
    *,
    table_operations: Mapping[str, str] | None = None,
    reject_threshold: float | None = None,
    redact: Callable[[str], str] | None = None,
    section: str | None = None,
) -> Any:
    """`data` as dlt resources that reject rows holding NaN or ±infinity (`non_finite_number`) as they are extracted.

    Without it, dlt drops such a value from a dict row before the destination sees it, and the row is sent
    without that field: `pipeline.run(reject_non_finite(rows, "subscribers"))`. `data` is what
    `pipeline.run` takes (rows, a generator, a DataFrame, an Arrow table, a resource, a source, or a list of
    resources); plain data needs `table_name`. Pass the destination's `table_operations` and
    `reject_threshold` if you set them. Resources and sources get the step in place and are returned.
    """
    def step(table: str) -> NonFiniteRejects:
        threshold = DEFAULT_REJECT_THRESHOLD if reject_threshold is None else reject_threshold
        return NonFiniteRejects(table, table_operations, threshold, redact)

    if isinstance(data, DltSource):
        for resource in data.selected_resources.values():
            resource.add_step(step(_resource_table(resource)))
        return data
    if isinstance(data, DltResource):
        return data.add_step(step(table_name or _resource_table(data)))
    if isinstance(data, Sequence) and data and isinstance(data[0], DltResource | DltSource):
        return [reject_non_finite(item, table_name, table_operations=table_operations,
                                  reject_threshold=reject_threshold, redact=redact) for item in data]
    name = table_name or getattr(data, "__name__", None)  # a generator function names its own table, as in dlt
    if not name:
        raise ValueError(f"reject_non_finite needs a table_name for {type(data).__name__} data")
    resource = DltResource.from_data(data, name=name, section=section or name)  # dlt passes the pipeline name
    return resource.add_step(step(name))
