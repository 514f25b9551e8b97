"""What every mapper shares: the result of mapping a row, the options, nested objects and secret keys, and the
column-plan steps (what a mapper decides from column names alone, remembered per tuple of names)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..values import RowError, field_key, json_value, looks_secret, parse_json_object, split_path


@dataclass
class MappedRow:
    """What one source row becomes."""

    payload: dict[str, Any] | None
    commands: list[dict[str, Any]] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)  # secret-looking columns or keys, not sent
    reserved: set[str] = field(default_factory=set)  # columns Bento's import would interpret (settings), not sent
    ignored: set[str] = field(default_factory=set)  # columns with no meaning for the operation


@dataclass(frozen=True)
class MappingOptions:
    allow_secret_columns: bool = False


Mapper = Callable[[Mapping[str, Any], MappingOptions], MappedRow]


def by_key(row: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
    """Top-level columns by their normalised name; two columns with one name is an error."""
    out: dict[str, tuple[str, Any]] = {}
    for column, value in row.items():
        key = field_key(column)
        if key in out:
            raise RowError(
                "duplicate_column", f"columns `{out[key][0]}` and `{column}` both mean `{key}`; keep one of them"
            )
        out[key] = (column, value)
    return out


def set_path(target: dict[str, Any], path: list[str], value: Any, column: str) -> None:
    node = target
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RowError("conflicting_columns", f"`{column}` nests under `{part}`, which already holds a value")
        node = child
    if path[-1] in node:
        raise RowError("conflicting_columns", f"`{column}` sets `{'.'.join(path)}`, which another column also sets")
    node[path[-1]] = value


def drop_secret_keys(value: Any, prefix: str, dropped: set[str]) -> Any:
    """Remove secret-looking keys at any depth of a nested object (recording their paths)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            path = f"{prefix}.{key}"
            if looks_secret(key):
                dropped.add(path)
            else:
                out[key] = drop_secret_keys(item, path, dropped)
        return out
    if isinstance(value, list):
        return [drop_secret_keys(item, prefix, dropped) for item in value]
    return value


def nested_object(row: Mapping[str, Any], name: str, options: MappingOptions, result: MappedRow) -> dict[str, Any]:
    """A nested object (event `details`, email `personalizations`) from a dict/JSON column and `name__a__b` columns."""
    out: dict[str, Any] = {}
    for column, value in sorted(row.items(), key=lambda kv: len(split_path(kv[0]))):
        path = split_path(column)
        if not path or field_key(path[0]) != name:
            continue
        if len(path) == 1:
            for key, item in json_value(parse_json_object(value, column), column).items():
                set_path(out, [key], item, column)
        else:
            set_path(out, path[1:], json_value(value, column), column)
    if not options.allow_secret_columns:
        out = drop_secret_keys(out, name, result.dropped)
    return out


# --------------------------------------------------------------------------- column plans
#
# What a mapper decides from column names alone (normalised names, secret-looking names, which columns
# form `fields`/`details`, duplicate names) is decided once per tuple of column names and remembered: the
# rows of a batch share a few such tuples (one per pattern of nulls). Only the values are looked at per
# row, in the same order and with the same rules as before, so each row gets the same payload or error.

#: column tuples remembered per mapper (a table has one per pattern of nulls among its columns)
PLAN_CACHE_SIZE: Final = 1024

#: what a column is to a mapper (`Step.kind`)
FIELD, FIELDS_OBJECT, TAGS, UNSUBSCRIBED = range(4)


@dataclass(frozen=True, slots=True)
class Step:
    """One column of a row, as a mapper uses it."""

    kind: int
    column: str
    #: FIELD: the field name (may be "": not a valid name); TAGS: `tags` or `remove_tags`
    name: str = ""
    #: FIELD: where a value comes from, in messages and the dropped list
    where: str = ""
    #: FIELD: the field name looks like a secret
    secret: bool = False


def field_step(column: str, raw_name: str, where: str) -> Step:
    name = field_key(raw_name)
    return Step(FIELD, column, name, where, bool(name) and looks_secret(name))


def redact_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a row without secret-looking columns or keys, for the reject file."""
    return {
        column: drop_secret_keys(value, column, set()) if isinstance(value, dict) else value
        for column, value in row.items()
        if not looks_secret(column)
    }
