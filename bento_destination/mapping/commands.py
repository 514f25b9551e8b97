"""`/fetch/commands` rows: `command`, `email`, and `query` where the command needs one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..settings import COMMANDS, COMMANDS_NEEDING_QUERY
from ..values import RowError, check_email, check_text, field_key, scalar, shorten, split_path
from .common import MappedRow, MappingOptions, by_key, nested_object


def map_command(row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """`/fetch/commands` row: `command`, `email`, and `query` where the command needs one."""
    result = MappedRow(payload=None)
    columns = by_key(row)
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
            query = nested_object(row, "query", MappingOptions(allow_secret_columns=True), result)
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
