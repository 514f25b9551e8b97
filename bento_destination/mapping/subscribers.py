"""`/batch/subscribers` rows: email, tags and remove_tags as comma strings, flat custom fields, and an
`unsubscribed` column that becomes an `unsubscribe` command (imports never change subscription state)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from bento_api.facts import RESERVED_IMPORT_KEYS

from ..values import (
    RowError,
    check_email,
    check_text,
    field_key,
    looks_secret,
    parse_json_object,
    scalar,
    shorten,
    split_path,
    to_bool,
)
from .common import (
    FIELD,
    FIELDS_OBJECT,
    PLAN_CACHE_SIZE,
    TAGS,
    UNSUBSCRIBED,
    MappedRow,
    MappingOptions,
    Step,
    field_step,
)

SUBSCRIBER_RESERVED: Final = frozenset({"email", "tags", "remove_tags", "unsubscribed"})


def tag_string(value: Any, column: str) -> str | None:
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


@dataclass(frozen=True, slots=True)
class SubscriberPlan:
    #: (reason, detail) raised before any value is read: duplicate names, no email column
    error: tuple[str, str] | None
    email: str = ""
    steps: tuple[Step, ...] = ()


def _duplicate(columns: tuple[str, ...]) -> tuple[str, str] | None:
    """The first two columns with one normalised name, as `by_key` reports them."""
    seen: dict[str, str] = {}
    for column in columns:
        key = field_key(column)
        if key in seen:
            return "duplicate_column", f"columns `{seen[key]}` and `{column}` both mean `{key}`; keep one of them"
        seen[key] = column
    return None


@lru_cache(maxsize=PLAN_CACHE_SIZE)
def subscriber_plan(columns: tuple[str, ...]) -> SubscriberPlan:
    duplicate = _duplicate(columns)
    if duplicate is not None:
        return SubscriberPlan(duplicate)
    keys = {field_key(column): column for column in columns}
    if "email" not in keys:
        return SubscriberPlan(("missing_email", "`email` is missing or empty"))
    steps: list[Step] = []
    for key, column in keys.items():
        if key == "email":
            continue
        if key in ("tags", "remove_tags"):
            steps.append(Step(TAGS, column, key))
        elif key == "unsubscribed":
            steps.append(Step(UNSUBSCRIBED, column))
        else:
            path = split_path(column)
            if path and field_key(path[0]) == "fields":
                if len(path) == 1:
                    steps.append(Step(FIELDS_OBJECT, column))
                else:
                    raw_name = "_".join(path[1:])
                    steps.append(field_step(column, raw_name, f"{column}.{raw_name}"))
            else:
                steps.append(field_step(column, column, column))
    return SubscriberPlan(None, keys["email"], tuple(steps))


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
    if name in payload or name in SUBSCRIBER_RESERVED:
        raise RowError("conflicting_columns", f"`{where}` sets field `{name}`, which another column also sets")
    payload[name] = scalar(item, where)


def map_subscriber(row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """`/batch/subscribers` row: email, tags/remove_tags as comma strings, flat custom fields."""
    plan = subscriber_plan(tuple(row))
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
        if kind == FIELD:
            if value is not None:
                _put_field(payload, step.name, step.where, step.secret, value, options, result)
        elif kind == TAGS:
            tags = tag_string(value, column)
            if tags:
                payload[step.name] = tags
        elif kind == UNSUBSCRIBED:
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
