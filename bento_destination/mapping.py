"""Row -> Bento payload, one function per operation, with the reason when a row cannot be sent.

The row contract is DESIGN.md "Reverse-ETL rows". Each mapper returns the payload for the
operation's endpoint plus any extra commands (an `unsubscribed` subscriber becomes an `unsubscribe`
command: imports never change subscription state), and the columns it dropped or ignored so the
run report can say so. A row that Bento would refuse raises `RowError` and is never sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .settings import COMMANDS, COMMANDS_NEEDING_QUERY
from .values import (
    RowError,
    check_email,
    check_text,
    encoded_size,
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
    names: list[str] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, Mapping | list | tuple | float | bool):
            raise RowError("invalid_tags", f"`{column}` holds {shorten(repr(item))}, which is not a tag name")
        for name in check_text(str(item), column).split(","):
            if name.strip() and name.strip() not in names:
                names.append(name.strip())
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


def _flat_object(row: Mapping[str, Any], name: str, options: MappingOptions, result: MappedRow) -> dict[str, Any]:
    """A flat object (event `fields`) from a dict/JSON column and `name__x` columns; keys lowercase_underscored."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        path = split_path(column)
        if not path or field_key(path[0]) != name:
            continue
        items = parse_json_object(value, column).items() if len(path) == 1 else [("_".join(path[1:]), value)]
        for raw_key, item in items:
            if item is None:
                continue
            key = field_key(raw_key)
            where = f"{column}.{raw_key}" if len(path) == 1 else column
            if not key:
                raise RowError("invalid_column_name", f"`{where}` cannot be a Bento field name")
            if looks_secret(key) and not options.allow_secret_columns:
                result.dropped.add(where)
                continue
            if isinstance(item, Mapping | list | tuple):
                raise RowError("nested_fields", f"`{where}` is nested; event `fields` must be flat (use `details`)")
            if key in out:
                raise RowError("conflicting_columns", f"`{where}` sets field `{key}` twice")
            out[key] = scalar(item, where)
    return out


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


def map_subscriber(row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """`/batch/subscribers` row: email, tags/remove_tags as comma strings, flat custom fields."""
    columns = _by_key(row)
    if "email" not in columns:
        raise RowError("missing_email", "`email` is missing or empty")
    email = check_email(columns["email"][1], columns["email"][0])
    result = MappedRow(payload=None)
    payload: dict[str, Any] = {"email": email}
    unsubscribe = False
    for key, (column, value) in columns.items():
        if key == "email":
            continue
        if key in ("tags", "remove_tags"):
            tags = _tag_string(value, column)
            if tags:
                payload[key] = tags
            continue
        if key == "unsubscribed":
            unsubscribe = to_bool(value, column)
            continue
        path = split_path(column)
        if path and field_key(path[0]) == "fields":
            entries = (
                list(parse_json_object(value, column).items())
                if len(path) == 1
                else [("_".join(path[1:]), value)]
            )
        else:
            entries = [(column, value)]
        for raw_name, item in entries:
            if item is None:
                continue
            name = field_key(raw_name)
            where = column if raw_name == column else f"{column}.{raw_name}"
            if not name:
                raise RowError("invalid_column_name", f"`{where}` cannot be a Bento field name")
            if looks_secret(name) and not options.allow_secret_columns:
                result.dropped.add(where)
                continue
            if name in payload or name in ("email", "tags", "remove_tags", "unsubscribed"):
                raise RowError("conflicting_columns", f"`{where}` sets field `{name}`, which another column also sets")
            payload[name] = scalar(item, where)
    if unsubscribe:
        result.commands.append({"command": "unsubscribe", "email": email})
    if len(payload) > 1 or not unsubscribe:
        result.payload = payload
    return result


EVENT_COLUMNS = ("email", "type", "date", "fields", "details", "unique_key")


def map_event(row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """`/batch/events` row: email and type required; flat `fields`; nested `details`; `unique_key`."""
    result = MappedRow(payload=None)
    email_col = type_col = date_col = unique_col = None
    others: dict[str, Any] = {}
    for column, value in row.items():
        key = field_key(column)
        head = field_key(split_path(column)[0]) if split_path(column) else key
        if key == "email":
            email_col = column
        elif key == "type":
            type_col = column
        elif key == "date":
            date_col = column
        elif key == "unique_key":
            unique_col = column
        elif head in ("fields", "details"):
            continue
        else:
            others[column] = value
    if email_col is None:
        raise RowError("missing_email", "`email` is missing or empty")
    email = check_email(row[email_col], email_col)
    if type_col is None or not str(row[type_col]).strip():
        raise RowError("missing_type", "`type` is missing or empty (e.g. `$purchase`, `signed_up`)")
    event_type = check_text(row[type_col], type_col).strip()
    payload: dict[str, Any] = {"type": event_type, "email": email}
    fields = _flat_object(row, "fields", options, result)
    details = _nested_object(row, "details", options, result)
    for column, value in others.items():
        if looks_secret(column) and not options.allow_secret_columns:
            result.dropped.add(column)
            continue
        _set_path(details, [column], json_value(value, column), column)
    if unique_col is not None:
        unique = details.setdefault("unique", {})
        if not isinstance(unique, dict):
            raise RowError("conflicting_columns", f"`{unique_col}` needs `details.unique` to be an object")
        unique["key"] = str(scalar(row[unique_col], unique_col))
    if date_col is not None:
        payload["date"] = iso_datetime(row[date_col], date_col)
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
    known = {"to", "from", "transactional", "personalizations", *EMAIL_TEXT}
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
    """Map one row; RowError if Bento would refuse it (including values JSON cannot carry)."""
    result = MAPPERS[operation](row, options)
    if result.payload is not None:
        encoded_size(result.payload)
    return result


def redact_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a row without secret-looking columns or keys, for the reject file."""
    return {
        column: _drop_secret_keys(value, column, set()) if isinstance(value, dict) else value
        for column, value in row.items()
        if not looks_secret(column)
    }
