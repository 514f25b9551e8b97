"""One Arrow column of a subscriber batch as what is sent: payload values, their fingerprint text, rows to redo.

Every function here answers, for each row, either the exact value `map_subscriber` would put in the payload
(with its version 2 fingerprint text, `subscriber_fingerprint.value_text`) or "redo this row": a row whose value
is odd (an error, a nested value, text outside ASCII where Python's and Arrow's string rules may differ) is
marked in `redo`, and the batch mapper maps it again with `map_row`. Marking too many rows costs time, never
correctness; so a rule is vectorized only where Arrow gives the same text as Python, and everything else goes
through the Python rule itself, value by value (`python_values`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.compute

from bento_api.facts import MAX_EMAIL_LENGTH

from ..subscriber_fingerprint import value_text
from ..values import RowError, check_email, scalar

Mask = np.ndarray[Any, np.dtype[np.bool_]]
#: pyarrow.compute, untyped: pyarrow-stubs types each kernel per concrete array class, while the columns here
#: have types known only at run time (a batch's schema), so every call would need its own cast
pc: Any = pyarrow.compute

#: what Python's `str.strip()` removes from ASCII text (`str.isspace`), and what `\s` matches in `re`
ASCII_SPACE: Final = " \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"
_NOT_SPACE_AT: Final = r"[^@ \t\n\x0b\x0c\r\x1c-\x1f,;]+"
#: `bento_api.facts.EMAIL_PATTERN` for ASCII text, in RE2's syntax (RE2's `\s` lacks \x0b and \x1c-\x1f)
ASCII_EMAIL_PATTERN: Final = rf"^{_NOT_SPACE_AT}@{_NOT_SPACE_AT}\.{_NOT_SPACE_AT}$"
#: timestamp zones whose Python values print `+00:00` (others go through the Python rule)
_UTC_ZONES: Final = frozenset({"UTC", "Etc/UTC", "+00:00"})
_PER_SECOND: Final = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}
_ISO_DAY_START: Final = "T00:00:00+00:00"


@dataclass
class ColumnValues:
    """A column as sent: `values[i]` for the payload, `text[i]` for the fingerprint (null where nothing is sent)."""

    values: pa.Array | list[Any]
    text: pa.Array
    #: rows whose value must be mapped again by `map_row` (errors, odd values)
    redo: Mask

    def take(self, indices: list[int]) -> list[Any]:
        """Payload values of the given rows, as Python objects."""
        if isinstance(self.values, list):
            return [self.values[i] for i in indices]
        return self.values.take(pa.array(indices, pa.int64())).to_pylist()


def mask(array: pa.Array | pa.ChunkedArray) -> Mask:
    """A boolean Arrow array (nulls false) as a numpy mask; an all-null array of null type is all false."""
    if array.type == pa.null():
        return np.zeros(len(array), dtype=np.bool_)
    filled = pc.fill_null(array, False)
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.bool_)


def present(array: pa.Array) -> Mask:
    return mask(array.is_valid())


def plain(array: pa.Array) -> pa.Array:
    """Dictionary-encoded columns (pandas categoricals) decoded: their rows hold the dictionary's values."""
    return array.dictionary_decode() if isinstance(array, pa.DictionaryArray) else array


def _memo_key(value: Any) -> Hashable | None:
    """A key equal only for values the rules treat alike (same types throughout); None: do not remember it."""
    if isinstance(value, list):  # a list of tag names: remembered when it holds only text and nulls
        return (list, *value) if all(item is None or type(item) is str for item in value) else None
    return (type(value), value) if isinstance(value, Hashable) else None


def python_values(array: pa.Array, convert: Callable[[Any], Any], memo: bool = False) -> ColumnValues:
    """The Python rule `convert` on every non-null value (RowError: redo the row); None from it: nothing sent.

    With `memo`, each distinct value is converted once (tag and flag columns repeat a few values).
    """
    size = len(array)
    values: list[Any] = [None] * size
    texts: list[str | None] = [None] * size
    redo = np.zeros(size, np.bool_)
    seen: dict[Hashable, tuple[Any, str | None] | None] = {}
    for i, value in enumerate(array.to_pylist()):
        if value is None:
            continue
        key = _memo_key(value) if memo else None
        if key is not None and key in seen:
            known = seen[key]
        else:
            try:
                out = convert(value)
                known = (out, None if out is None else value_text(out))
            except RowError:
                known = None
            if key is not None:
                seen[key] = known
        if known is None:
            redo[i] = True
        else:
            values[i], texts[i] = known
    return ColumnValues(values, pa.array(texts, pa.string()), redo)


def _float_values(array: pa.Array) -> ColumnValues:
    """Finite floats as they are (float32 widened, as Python reads them); the text is Python's `repr`."""
    doubles = pc.cast(array, pa.float64())
    redo = present(doubles) & ~mask(pc.is_finite(doubles))
    finite = pc.if_else(pa.array(redo), pa.scalar(None, pa.float64()), doubles)
    texts = pa.array([None if v is None else repr(v) for v in finite.to_pylist()], pa.string())
    return ColumnValues(finite, texts, redo)


def _iso_seconds(seconds: pa.Array) -> pa.Array:
    """`YYYY-MM-DDTHH:MM:SS` of int64 seconds since the epoch (UTC, no zone)."""
    spaced = pc.cast(pc.cast(seconds, pa.timestamp("s")), pa.string())  # `YYYY-MM-DD HH:MM:SS`, faster than strftime
    return pc.replace_substring(spaced, " ", "T", max_replacements=1)


def _in_python_range(years: pa.Array) -> Mask:
    """Rows whose year Python's datetime can hold (others are redone, and fail as they always did)."""
    return mask(pc.and_(pc.greater_equal(years, 1), pc.less_equal(years, 9999)))


def _timestamp_values(array: pa.Array, where: str) -> ColumnValues:
    """`iso_datetime` of naive or UTC timestamps: the text `datetime.isoformat` gives, with `+00:00`."""
    unit, zone = array.type.unit, array.type.tz
    ticks = pc.cast(array, pa.int64())
    per_second = _PER_SECOND[unit]
    if zone is not None and zone not in _UTC_ZONES:
        return python_values(array, lambda value: scalar(value, where))
    if unit == "ns" and pc.any(pc.not_equal(pc.subtract(ticks, pc.multiply(pc.divide(ticks, 1000), 1000)), 0)).as_py():
        return python_values(array, lambda value: scalar(value, where))  # pandas prints nanoseconds its own way
    remainder = _positive_remainder(ticks, per_second)
    seconds = pc.divide(pc.subtract(ticks, remainder), per_second)
    micros = pc.divide(remainder, 1000) if unit == "ns" else pc.multiply(remainder, 1_000_000 // per_second)
    digits = pc.utf8_lpad(pc.cast(micros, pa.string()), 6, "0")
    fraction = pc.if_else(pc.equal(micros, 0), "", pc.binary_join_element_wise(".", digits, ""))
    text = pc.binary_join_element_wise(_iso_seconds(seconds), fraction, "+00:00", "")
    redo = present(array) & ~_in_python_range(pc.year(pc.cast(seconds, pa.timestamp("s"))))
    text = pc.if_else(pa.array(redo), pa.scalar(None, pa.string()), text)
    return ColumnValues(text, text, redo)


def _positive_remainder(ticks: pa.Array, divisor: int) -> pa.Array:
    """`ticks mod divisor` in [0, divisor), also for instants before 1970."""
    remainder = pc.subtract(ticks, pc.multiply(pc.divide(ticks, divisor), divisor))
    return pc.if_else(pc.less(remainder, 0), pc.add(remainder, divisor), remainder)


def _date_values(array: pa.Array) -> ColumnValues:
    """`iso_datetime` of dates: midnight UTC."""
    days = pc.cast(array, pa.date32())
    redo = present(days) & ~_in_python_range(pc.year(days))
    text = pc.binary_join_element_wise(pc.cast(days, pa.string()), _ISO_DAY_START, "")
    text = pc.if_else(pa.array(redo), pa.scalar(None, pa.string()), text)
    return ColumnValues(text, text, redo)


def field_values(array: pa.Array, where: str) -> ColumnValues:
    """A custom field column (`scalar` of each value): text, integers, booleans, floats, dates, timestamps."""
    array = plain(array)
    kind = array.type
    nothing = np.zeros(len(array), np.bool_)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        text = pc.cast(array, pa.string())
        return ColumnValues(text, text, nothing)
    if pa.types.is_integer(kind):
        return ColumnValues(array, pc.cast(array, pa.string()), nothing)
    if pa.types.is_boolean(kind):
        return ColumnValues(array, pc.if_else(array, "true", "false"), nothing)
    if pa.types.is_float32(kind) or pa.types.is_float64(kind):
        return _float_values(array)
    if pa.types.is_date(kind):
        return _date_values(array)
    if pa.types.is_timestamp(kind):
        return _timestamp_values(array, where)
    if pa.types.is_null(kind):
        return ColumnValues(array, pa.nulls(len(array), pa.string()), nothing)
    return python_values(array, lambda value: scalar(value, where))


def email_values(array: pa.Array, column: str) -> ColumnValues:
    """`check_email` of each value: trimmed and lower-cased, valid, at most 254 characters; anything else redone."""
    array = plain(array)
    kind = array.type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
        return ColumnValues(pa.nulls(len(array), pa.string()), pa.nulls(len(array), pa.string()), present(array))
    text = pc.cast(array, pa.string())
    ascii_rows = mask(pc.string_is_ascii(text))
    email = pc.ascii_lower(pc.utf8_trim(text, characters=ASCII_SPACE))
    valid = mask(pc.and_(
        pc.less_equal(pc.binary_length(email), MAX_EMAIL_LENGTH),
        pc.match_substring_regex(email, ASCII_EMAIL_PATTERN),
    ))
    redo = present(text) & ~(ascii_rows & valid)
    other = np.flatnonzero(redo & ~ascii_rows)
    values = pc.if_else(pa.array(redo), pa.scalar(None, pa.string()), email).to_pylist()
    for i in other:  # text outside ASCII: Python's own rule (its Unicode case and space tables)
        try:
            values[i] = check_email(text[int(i)].as_py(), column)
            redo[i] = False
        except RowError:
            pass
    result = pa.array(values, pa.string())
    return ColumnValues(result, result, redo)


def with_memo(array: pa.Array, convert: Callable[[Any], Any]) -> ColumnValues:
    """`convert` (a Python rule) once per distinct value: tag and flag columns repeat a few values.

    Text and lists of text are grouped by Arrow (`dictionary_encode` of a key equal only for equal values);
    other columns, and lists holding nulls or NUL characters, are remembered value by value in Python.
    """
    array = plain(array)
    key = _distinct_key(array)
    if key is None:
        return python_values(array, convert, memo=True)
    codes = pc.fill_null(pc.dictionary_encode(key).indices, -1).to_numpy(zero_copy_only=False)
    if (present(array) & (codes < 0)).any():  # a value without a key: a list holding a null
        return python_values(array, convert, memo=True)
    rows = np.flatnonzero(codes >= 0)
    if not len(rows):
        return python_values(array, convert)  # nothing but nulls
    _, first = np.unique(codes[rows], return_index=True)  # one row of each distinct value, in code order
    outs: list[Any] = []
    texts: list[str | None] = []
    failed: list[bool] = []
    for row in rows[first].tolist():
        try:
            out = convert(array[row].as_py())
        except RowError:
            out = None
            failed.append(True)
        else:
            failed.append(False)
        outs.append(out)
        texts.append(None if out is None else value_text(out))
    take = pa.array(codes, pa.int32(), mask=codes < 0)
    redo = mask(pa.array(failed, pa.bool_()).take(take))
    return ColumnValues(pa.array(outs).take(take), pa.array(texts, pa.string()).take(take), redo)


def _distinct_key(array: pa.Array) -> pa.Array | None:
    """Text equal exactly for equal values (text, or lists of text), null for a null; None if there is none."""
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind)
    if not is_list or not (pa.types.is_string(kind.value_type) or pa.types.is_large_string(kind.value_type)):
        return None
    if pc.any(pc.match_substring(pc.list_flatten(array), "\x00")).as_py():
        return None  # NUL separates the items below: a list whose items hold it goes value by value
    count = pc.cast(pc.list_value_length(array), pa.string())
    return pc.binary_join_element_wise(count, pc.binary_join(array, "\x00"), ":")


def as_flag(values: ColumnValues) -> Mask:
    """A column of converted booleans (`to_bool`) as a mask, false where nothing was given."""
    if isinstance(values.values, list):
        return np.array([value is True for value in values.values], np.bool_)
    return mask(values.values)


def bool_values(array: pa.Array) -> ColumnValues | None:
    """A boolean column as flags at Arrow speed; None for other types (they go through `to_bool`)."""
    if not pa.types.is_boolean(array.type):
        return None
    return ColumnValues(array, pc.if_else(array, "true", "false"), np.zeros(len(array), np.bool_))


__all__ = ["ColumnValues", "Mask", "as_flag", "bool_values", "email_values", "field_values", "mask", "present",
           "python_values", "with_memo"]
