"""What a subscriber table's columns become, decided from their names and types alone (no row is read).

The engine computes each row's fingerprint in SQL, so it must know, before reading a row, which column is
the email, which columns become which fields, and which are not sent, exactly as `mapping.map_subscriber`
decides for the rows the Python path sees. Names are taken as dlt hands them to the sink (its snake_case
naming) and then as mapping reads them (`field_key`). Any column the SQL cannot turn into the text
`subscriber_fingerprint.value_text` gives (nested values, lists, JSON, floats, dates, anything unproven)
makes the plan decline: the caller then sends the input through the Python path, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from dlt.common.normalizers.naming.snake_case import NamingConvention

from bento_api.facts import RESERVED_IMPORT_KEYS

from ..mapping.common import FIELD, TAGS, UNSUBSCRIBED
from ..mapping.subscribers import subscriber_plan

#: kinds of values the SQL renders exactly as `value_text` does
TEXT, INTEGER, BOOLEAN = "text", "integer", "boolean"
KINDS: Final = (TEXT, INTEGER, BOOLEAN)
#: field names the subscriber mapping keeps for itself; a custom field with one of them is a row error
_RESERVED_FIELDS: Final = frozenset({"email", "tags", "remove_tags", "unsubscribed"})
#: dlt's own columns (the sink never sees them): a user column named so would be dropped
_DLT_PREFIX: Final = "_dlt"


class EngineDeclined(Exception):
    """The engine cannot prove it computes these rows' fingerprints as Python does; use the Python path."""


@dataclass(frozen=True, slots=True)
class SentColumn:
    """One input column that becomes a field of the upsert (`tags`/`remove_tags` included)."""

    column: str  # the input's own column name
    name: str  # the field name in the payload
    kind: str  # TEXT, INTEGER or BOOLEAN; tags columns are TEXT


@dataclass(frozen=True, slots=True)
class SubscriberColumns:
    """The column plan of a subscriber table: the SQL builds the fingerprint text from it."""

    email: str
    #: fields in the fingerprint text's order (ascending field name), tags columns among them
    fields: tuple[SentColumn, ...]
    #: the `unsubscribed` column and its kind, if the table has one
    unsubscribed: SentColumn | None
    #: columns the mapping does not send (secret-looking, reserved import keys): they do not count
    not_sent: tuple[str, ...]

    @property
    def tag_columns(self) -> tuple[SentColumn, ...]:
        return tuple(c for c in self.fields if c.name in ("tags", "remove_tags"))


def dlt_name(column: str) -> str:
    """The name dlt gives the column in the load files the sink reads (its default snake_case naming)."""
    return str(NamingConvention().normalize_identifier(column))


def by_dlt_name(columns: Sequence[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """(input name, kind) by the name dlt gives each column; EngineDeclined for names the engine cannot map
    one to one (shared, nested `__` paths, dlt's own prefix, two names dlt makes one)."""
    names = [name for name, _ in columns]
    if len(set(names)) != len(names):
        raise EngineDeclined("two input columns share a name")
    by_dlt: dict[str, tuple[str, str]] = {}
    for column, kind in columns:
        if "__" in column:
            raise EngineDeclined(f"column `{column}` is a nested path (dlt names those its own way)")
        name = dlt_name(column)
        if name in by_dlt or name.startswith(_DLT_PREFIX):
            raise EngineDeclined(f"column `{column}` collides with another column once dlt names it")
        by_dlt[name] = (column, kind)
    return by_dlt


def plan_subscribers(
    columns: Sequence[tuple[str, str]], allow_secret_columns: bool = False
) -> SubscriberColumns:
    """The plan for (column name, kind) pairs, kind one of KINDS or anything else (unsupported).

    Raises EngineDeclined when a column, or the table as a whole, needs the Python path.
    """
    by_dlt = by_dlt_name(columns)
    plan = subscriber_plan(tuple(by_dlt))
    if plan.error is not None:
        raise EngineDeclined(plan.error[1])
    email_column, email_kind = by_dlt[plan.email]
    if email_kind != TEXT:
        raise EngineDeclined(f"the email column `{email_column}` is not text")
    fields: list[SentColumn] = []
    unsubscribed: SentColumn | None = None
    not_sent: list[str] = []
    for step in plan.steps:
        column, kind = by_dlt[step.column]
        if step.kind == TAGS:
            if kind != TEXT:
                raise EngineDeclined(f"`{column}` holds {kind} tags (only comma-separated text is proven)")
            fields.append(SentColumn(column, step.name, TEXT))
        elif step.kind == UNSUBSCRIBED:
            if kind not in KINDS:
                raise EngineDeclined(f"`{column}` is a {kind} (unsubscribed must be boolean, integer or text)")
            unsubscribed = SentColumn(column, "unsubscribed", kind)
        elif step.kind == FIELD:
            if not step.name:
                raise EngineDeclined(f"`{column}` cannot be a Bento field name")
            if step.name in RESERVED_IMPORT_KEYS or (step.secret and not allow_secret_columns):
                not_sent.append(column)
                continue
            if step.name in _RESERVED_FIELDS:
                raise EngineDeclined(f"`{column}` sets field `{step.name}`, which the mapping keeps for itself")
            if kind not in KINDS:
                raise EngineDeclined(f"`{column}` is a {kind}, which the engine does not render")
            fields.append(SentColumn(column, step.name, kind))
        else:  # a `fields` object column
            raise EngineDeclined(f"`{column}` is an object of fields")
    names_sent = [f.name for f in fields]
    if len(set(names_sent)) != len(names_sent):
        raise EngineDeclined("two columns set one field")
    fields.sort(key=lambda f: f.name)
    return SubscriberColumns(email_column, tuple(fields), unsubscribed, tuple(not_sent))

