"""`/batch/events` rows: email and type required, flat `fields`, nested `details`, `unique_key`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ..values import (
    RowError,
    check_email,
    check_text,
    field_key,
    iso_datetime,
    json_value,
    looks_secret,
    parse_json_object,
    scalar,
    split_path,
)
from .common import (
    FIELD,
    FIELDS_OBJECT,
    PLAN_CACHE_SIZE,
    MappedRow,
    MappingOptions,
    Step,
    drop_secret_keys,
    field_step,
    set_path,
)


@dataclass(frozen=True, slots=True)
class _EventPlan:
    email: str | None
    type: str | None
    date: str | None
    unique: str | None
    #: `fields` columns in row order: FIELDS_OBJECT (a dict/JSON column) or FIELD (`fields__x`)
    fields: tuple[Step, ...]
    #: `details` columns in `nested_object`'s order: (column, path below `details`; () for the object column)
    details: tuple[tuple[str, tuple[str, ...]], ...]
    #: any other column (into `details` under its own name), with whether its name looks like a secret
    others: tuple[tuple[str, bool], ...]
    #: a `details` object column, or a `details__...` path part that looks like a secret: then `details`
    #: is always searched for secret keys; otherwise only when a value is itself an object or a list
    details_keys_unknown: bool


def _group(columns: tuple[str, ...], name: str) -> list[tuple[str, list[str]]]:
    """The columns forming object `name` (`name` itself and `name__...`), with their paths, in row order."""
    out = []
    for column in columns:
        path = split_path(column)
        if path and field_key(path[0]) == name:
            out.append((column, path))
    return out


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def _event_plan(columns: tuple[str, ...]) -> _EventPlan:
    email = type_ = date = unique = None
    others: list[tuple[str, bool]] = []
    for column in columns:
        key = field_key(column)
        path = split_path(column)
        head = field_key(path[0]) if path else key
        if key == "email":
            email = column
        elif key == "type":
            type_ = column
        elif key == "date":
            date = column
        elif key == "unique_key":
            unique = column
        elif head not in ("fields", "details"):
            others.append((column, looks_secret(column)))
    fields = []
    for column, path in _group(columns, "fields"):
        if len(path) == 1:
            fields.append(Step(FIELDS_OBJECT, column))
        else:
            fields.append(field_step(column, "_".join(path[1:]), column))
    details = sorted(_group(columns, "details"), key=lambda entry: len(entry[1]))  # stable, like nested_object
    keys_unknown = any(len(path) == 1 or any(looks_secret(part) for part in path[1:]) for _, path in details)
    return _EventPlan(
        email, type_, date, unique, tuple(fields), tuple((c, tuple(p[1:])) for c, p in details), tuple(others),
        keys_unknown,
    )


def _event_field(
    out: dict[str, Any], key: str, where: str, secret: bool, item: Any, options: MappingOptions, result: MappedRow
) -> None:
    """One entry of an event's flat `fields` (its value is not None); keys are lowercase_underscored."""
    if not key:
        raise RowError("invalid_column_name", f"`{where}` cannot be a Bento field name")
    if secret and not options.allow_secret_columns:
        result.dropped.add(where)
        return
    if isinstance(item, Mapping | list | tuple):
        raise RowError("nested_fields", f"`{where}` is nested; event `fields` must be flat (use `details`)")
    if key in out:
        raise RowError("conflicting_columns", f"`{where}` sets field `{key}` twice")
    out[key] = scalar(item, where)


def map_event(row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """`/batch/events` row: email and type required; flat `fields`; nested `details`; `unique_key`."""
    plan = _event_plan(tuple(row))
    result = MappedRow(payload=None)
    if plan.email is None:
        raise RowError("missing_email", "`email` is missing or empty")
    email = check_email(row[plan.email], plan.email)
    type_col = plan.type
    if type_col is None or not str(row[type_col]).strip():
        raise RowError("missing_type", "`type` is missing or empty (e.g. `$purchase`, `signed_up`)")
    event_type = check_text(row[type_col], type_col).strip()
    payload: dict[str, Any] = {"type": event_type, "email": email}
    # `fields`: flat, from a dict/JSON `fields` column and `fields__x` columns
    fields: dict[str, Any] = {}
    for step in plan.fields:
        column = step.column
        value = row[column]
        if step.kind == FIELD:
            if value is not None:
                _event_field(fields, step.name, step.where, step.secret, value, options, result)
            continue
        for raw_key, item in parse_json_object(value, column).items():
            if item is None:
                continue
            key = field_key(raw_key)
            _event_field(
                fields, key, f"{column}.{raw_key}", bool(key) and looks_secret(key), item, options, result
            )
    # `details`: what nested_object(row, "details", ...) builds
    details: dict[str, Any] = {}
    keys_unknown = plan.details_keys_unknown
    for column, path in plan.details:
        value = row[column]
        if not path:
            for key, item in json_value(parse_json_object(value, column), column).items():
                set_path(details, [key], item, column)
        else:
            item = json_value(value, column)
            keys_unknown = keys_unknown or isinstance(item, dict | list)
            set_path(details, list(path), item, column)
    if details and keys_unknown and not options.allow_secret_columns:
        # otherwise every key is a path part known not to look like a secret: nothing to drop
        details = drop_secret_keys(details, "details", result.dropped)
    for column, secret in plan.others:
        if secret and not options.allow_secret_columns:
            result.dropped.add(column)
            continue
        set_path(details, [column], json_value(row[column], column), column)
    if plan.unique is not None:
        unique_col = plan.unique
        unique = details.setdefault("unique", {})
        if not isinstance(unique, dict):
            raise RowError("conflicting_columns", f"`{unique_col}` needs `details.unique` to be an object")
        unique["key"] = str(scalar(row[unique_col], unique_col))
    if plan.date is not None:
        payload["date"] = iso_datetime(row[plan.date], plan.date)
    if fields:
        payload["fields"] = fields
    if details:
        payload["details"] = details
    result.payload = payload
    return result
