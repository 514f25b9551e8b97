"""Row -> Bento payload, one function per operation, with the reason when a row cannot be sent.

The row contract is docs/destination.md, "What each table becomes". Each mapper returns the payload for the
operation's endpoint plus any extra commands (an `unsubscribed` subscriber becomes an `unsubscribe`
command: imports never change subscription state), and the columns it dropped or ignored so the
run report can say so. A row that Bento would refuse raises `RowError` and is never sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from bento_api.facts import RESERVED_IMPORT_KEYS

from .settings import COMMANDS, COMMANDS_NEEDING_QUERY
from .values import (
    RowError,
    check_email,
    check_row_size,
    check_text,
    field_key,
    iso_datetime,
    json_value,
    looks_secret,
    parse_json_object,
    scalar,
    shorten,
    split_path,
    to_bool,
)


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


def _by_key(row: Mapping[str, Any]) -> dict[str, tuple[str, Any]]:
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


def _tag_string(value: Any, column: str) -> str | None:
    """Tags as Bento wants them: one comma string; accepts a list, a comma string or a JSON list string."""
    items: list[Any]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = parse_json_list(text)
            except ValueError:
                parsed = None
            items = parsed if parsed is not None else text.split(",")
        else:
            items = text.split(",")
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise RowError("invalid_tags", f"`{column}` must be a list of tag names or a comma-separated string")
    names: dict[str, None] = {}  # in first-seen order, each once
    for item in items:
        if item is None:
            continue
        if type(item) is not str and isinstance(item, Mapping | list | tuple | float | bool):
            raise RowError("invalid_tags", f"`{column}` holds {shorten(repr(item))}, which is not a tag name")
        for name in check_text(str(item), column).split(","):
            name = name.strip()
            if name:
                names[name] = None
    return ",".join(names) or None


def parse_json_list(text: str) -> list[Any] | None:
    parsed = json.loads(text)
    return parsed if isinstance(parsed, list) else None


def _set_path(target: dict[str, Any], path: list[str], value: Any, column: str) -> None:
    node = target
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RowError("conflicting_columns", f"`{column}` nests under `{part}`, which already holds a value")
        node = child
    if path[-1] in node:
        raise RowError("conflicting_columns", f"`{column}` sets `{'.'.join(path)}`, which another column also sets")
    node[path[-1]] = value


def _drop_secret_keys(value: Any, prefix: str, dropped: set[str]) -> Any:
    """Remove secret-looking keys at any depth of a nested object (recording their paths)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            path = f"{prefix}.{key}"
            if looks_secret(key):
                dropped.add(path)
            else:
                out[key] = _drop_secret_keys(item, path, dropped)
        return out
    if isinstance(value, list):
        return [_drop_secret_keys(item, prefix, dropped) for item in value]
    return value


def _nested_object(row: Mapping[str, Any], name: str, options: MappingOptions, result: MappedRow) -> dict[str, Any]:
    """A nested object (event `details`, email `personalizations`) from a dict/JSON column and `name__a__b` columns."""
    out: dict[str, Any] = {}
    for column, value in sorted(row.items(), key=lambda kv: len(split_path(kv[0]))):
        path = split_path(column)
        if not path or field_key(path[0]) != name:
            continue
        if len(path) == 1:
            for key, item in json_value(parse_json_object(value, column), column).items():
                _set_path(out, [key], item, column)
        else:
            _set_path(out, path[1:], json_value(value, column), column)
    if not options.allow_secret_columns:
        out = _drop_secret_keys(out, name, result.dropped)
    return out


# --------------------------------------------------------------------------- column plans
#
# What a mapper decides from column names alone (normalised names, secret-looking names, which columns
# form `fields`/`details`, duplicate names) is decided once per tuple of column names and remembered: the
# rows of a batch share a few such tuples (one per pattern of nulls). Only the values are looked at per
# row, in the same order and with the same rules as before, so each row gets the same payload or error.

#: column tuples remembered per mapper (a table has one per pattern of nulls among its columns)
PLAN_CACHE_SIZE: Final = 1024

_FIELD, _FIELDS_OBJECT, _TAGS, _UNSUBSCRIBED = range(4)
_SUBSCRIBER_RESERVED: Final = frozenset({"email", "tags", "remove_tags", "unsubscribed"})


@dataclass(frozen=True, slots=True)
class _Step:
    """One column of a row, as a mapper uses it."""

    kind: int
    column: str
    #: _FIELD: the field name (may be "": not a valid name); _TAGS: `tags` or `remove_tags`
    name: str = ""
    #: _FIELD: where a value comes from, in messages and the dropped list
    where: str = ""
    #: _FIELD: the field name looks like a secret
    secret: bool = False


def _field_step(column: str, raw_name: str, where: str) -> _Step:
    name = field_key(raw_name)
    return _Step(_FIELD, column, name, where, bool(name) and looks_secret(name))


@dataclass(frozen=True, slots=True)
class _SubscriberPlan:
    #: (reason, detail) raised before any value is read: duplicate names, no email column
    error: tuple[str, str] | None
    email: str = ""
    steps: tuple[_Step, ...] = ()


def _duplicate(columns: tuple[str, ...]) -> tuple[str, str] | None:
    """The first two columns with one normalised name, as `_by_key` reports them."""
    seen: dict[str, str] = {}
    for column in columns:
        key = field_key(column)
        if key in seen:
            return "duplicate_column", f"columns `{seen[key]}` and `{column}` both mean `{key}`; keep one of them"
        seen[key] = column
    return None


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def _subscriber_plan(columns: tuple[str, ...]) -> _SubscriberPlan:
    duplicate = _duplicate(columns)
    if duplicate is not None:
        return _SubscriberPlan(duplicate)
    keys = {field_key(column): column for column in columns}
    if "email" not in keys:
        return _SubscriberPlan(("missing_email", "`email` is missing or empty"))
    steps: list[_Step] = []
    for key, column in keys.items():
        if key == "email":
            continue
        if key in ("tags", "remove_tags"):
            steps.append(_Step(_TAGS, column, key))
        elif key == "unsubscribed":
            steps.append(_Step(_UNSUBSCRIBED, column))
        else:
            path = split_path(column)
            if path and field_key(path[0]) == "fields":
                if len(path) == 1:
                    steps.append(_Step(_FIELDS_OBJECT, column))
                else:
                    raw_name = "_".join(path[1:])
                    steps.append(_field_step(column, raw_name, f"{column}.{raw_name}"))
            else:
                steps.append(_field_step(column, column, column))
    return _SubscriberPlan(None, keys["email"], tuple(steps))


def _put_field(
    payload: dict[str, Any], name: str, where: str, secret: bool, item: Any, options: MappingOptions,
    result: MappedRow,
) -> None:
    """One custom field of a subscriber (its value is not None); a reserved name is never sent, secrets or not."""
    if not name:
        raise RowError("invalid_column_name", f"`{where}` cannot be a Bento field name")
    if name in RESERVED_IMPORT_KEYS:
        result.reserved.add(where)
        return
    if secret and not options.allow_secret_columns:
        result.dropped.add(where)
        return
    if name in payload or name in _SUBSCRIBER_RESERVED:
        raise RowError("conflicting_columns", f"`{where}` sets field `{name}`, which another column also sets")
    payload[name] = scalar(item, where)


def map_subscriber(row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """`/batch/subscribers` row: email, tags/remove_tags as comma strings, flat custom fields."""
    plan = _subscriber_plan(tuple(row))
    if plan.error is not None:
        raise RowError(*plan.error)
    email = check_email(row[plan.email], plan.email)
    result = MappedRow(payload=None)
    payload: dict[str, Any] = {"email": email}
    unsubscribe = False
    for step in plan.steps:
        column = step.column
        value = row[column]
        kind = step.kind
        if kind == _FIELD:
            if value is not None:
                _put_field(payload, step.name, step.where, step.secret, value, options, result)
        elif kind == _TAGS:
            tags = _tag_string(value, column)
            if tags:
                payload[step.name] = tags
        elif kind == _UNSUBSCRIBED:
            unsubscribe = to_bool(value, column)
        else:
            for raw_name, item in parse_json_object(value, column).items():
                if item is None:
                    continue
                name = field_key(raw_name)
                where = column if raw_name == column else f"{column}.{raw_name}"
                _put_field(payload, name, where, bool(name) and looks_secret(name), item, options, result)
    if unsubscribe:
        result.commands.append({"command": "unsubscribe", "email": email})
    if len(payload) > 1 or not unsubscribe:
        result.payload = payload
    return result


@dataclass(frozen=True, slots=True)
class _EventPlan:
    email: str | None
    type: str | None
    date: str | None
    unique: str | None
    #: `fields` columns in row order: _FIELDS_OBJECT (a dict/JSON column) or _FIELD (`fields__x`)
    fields: tuple[_Step, ...]
    #: `details` columns in `_nested_object`'s order: (column, path below `details`; () for the object column)
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
            fields.append(_Step(_FIELDS_OBJECT, column))
        else:
            fields.append(_field_step(column, "_".join(path[1:]), column))
    details = sorted(_group(columns, "details"), key=lambda entry: len(entry[1]))  # stable, like _nested_object
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
        if step.kind == _FIELD:
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
    # `details`: what _nested_object(row, "details", ...) builds
    details: dict[str, Any] = {}
    keys_unknown = plan.details_keys_unknown
    for column, path in plan.details:
        value = row[column]
        if not path:
            for key, item in json_value(parse_json_object(value, column), column).items():
                _set_path(details, [key], item, column)
        else:
            item = json_value(value, column)
            keys_unknown = keys_unknown or isinstance(item, dict | list)
            _set_path(details, list(path), item, column)
    if details and keys_unknown and not options.allow_secret_columns:
        # otherwise every key is a path part known not to look like a secret: nothing to drop
        details = _drop_secret_keys(details, "details", result.dropped)
    for column, secret in plan.others:
        if secret and not options.allow_secret_columns:
            result.dropped.add(column)
            continue
        _set_path(details, [column], json_value(row[column], column), column)
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


def map_command(row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """`/fetch/commands` row: `command`, `email`, and `query` where the command needs one."""
    result = MappedRow(payload=None)
    columns = _by_key(row)
    if "command" not in columns:
        raise RowError("missing_command", "`command` is missing or empty")
    command = check_text(columns["command"][1], columns["command"][0]).strip().lower()
    if command not in COMMANDS:
        raise RowError("unknown_command", f"`command` {shorten(command)!r} is not one of {', '.join(sorted(COMMANDS))}")
    if "email" not in columns:
        raise RowError("missing_email", "`email` is missing or empty")
    payload: dict[str, Any] = {"command": command, "email": check_email(columns["email"][1], columns["email"][0])}
    if command in COMMANDS_NEEDING_QUERY:
        if command == "add_field":
            query = _nested_object(row, "query", MappingOptions(allow_secret_columns=True), result)
            if set(query) != {"key", "value"} or isinstance(query["value"], dict | list):
                raise RowError("invalid_query", "`add_field` needs `query` = {\"key\": ..., \"value\": <flat value>}")
            payload["query"] = {"key": field_key(str(query["key"])), "value": query["value"]}
        else:
            if "query" not in columns:
                raise RowError("missing_query", f"`{command}` needs a `query`")
            column, value = columns["query"]
            if command == "change_email":
                payload["query"] = check_email(value, column)
            else:
                text = str(scalar(value, column)).strip()
                if not text:
                    raise RowError("missing_query", f"`{command}` needs a `query`")
                payload["query"] = text
    for key, (column, _) in columns.items():
        if key not in ("command", "email", "query") and (split_path(column) or [""])[0] != "query":
            result.ignored.add(column)
    result.payload = payload
    return result


EMAIL_TEXT = ("subject", "html_body")


def map_email(row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """`/batch/emails` row: to, from (an Author), subject, html_body; optional transactional, personalizations."""
    result = MappedRow(payload=None)
    columns = _by_key(row)
    payload: dict[str, Any] = {}
    for key in ("to", "from"):
        if key not in columns:
            raise RowError(f"missing_{key}", f"`{key}` is missing or empty")
        payload[key] = check_email(columns[key][1], columns[key][0])
    for key in EMAIL_TEXT:
        if key in columns:
            text = check_text(columns[key][1], columns[key][0])
            if text.strip():
                payload[key] = text
    if "subject" not in payload:
        raise RowError("missing_subject", "`subject` is missing or empty")
    if "html_body" not in payload:
        raise RowError("missing_body", "`html_body` is missing or empty")
    if "transactional" in columns:
        payload["transactional"] = to_bool(columns["transactional"][1], columns["transactional"][0])
    personalizations = _nested_object(row, "personalizations", options, result)
    if personalizations:
        payload["personalizations"] = personalizations
    # unique_key / idempotency_key name the email for the sync ledger (email_identity.py); not sent
    known = {"to", "from", "transactional", "personalizations", "unique_key", "idempotency_key", *EMAIL_TEXT}
    for key, (column, _) in columns.items():
        if key not in known and field_key((split_path(column) or [""])[0]) != "personalizations":
            result.ignored.add(column)
    result.payload = payload
    return result


MAPPERS: dict[str, Mapper] = {
    "subscribers": map_subscriber,
    "events": map_event,
    "commands": map_command,
    "emails": map_email,
}


def map_row(operation: str, row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """Map one row; RowError if Bento would refuse it (including values JSON cannot carry, or too large a row)."""
    result = MAPPERS[operation](row, options)
    if result.payload is not None:
        check_row_size(result.payload)
    return result


def redact_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a row without secret-looking columns or keys, for the reject file."""
    return {
        column: _drop_secret_keys(value, column, set()) if isinstance(value, dict) else value
        for column, value in row.items()
        if not looks_secret(column)
    }
