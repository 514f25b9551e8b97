"""Events with their own keys, for the engine: the plan of an event table's columns and the key's SQL.

Bento keeps one event per (person, type, `details.unique.key`), and the sync ledger remembers each key it
acknowledged (`ledger.event_ledger_key`: the canonical JSON of the normalised email, the trimmed type and
the key). An event table with a `unique_key` column therefore needs no fingerprint: a row whose key the
ledger holds is not sent again, whatever else it carries. The SQL computes that key for each row; rows it
cannot prove (an email or a type that may not be what Python makes of it, text JSON would escape, no key)
come back to the Python path, which validates and decides them. Tables without a `unique_key` column get
keys derived from their content (`keys.py`: the canonical JSON of nested details): those stay in Python.

A row is only ever left out when its key is in the ledger, so the engine also declines a table whose
columns alone could make Python reject a row it would skip (a text `date`, a JSON `details` or `fields`
column, nested `details__...` columns): then a changed row could be counted unchanged, not rejected. Plain
columns (text, integers, booleans) go into `details` under their own names, as the Python path puts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from ..mapping.events import _event_plan
from ..values import field_key
from .columns import INTEGER, KINDS, TEXT, EngineDeclined, by_dlt_name
from .sql import EMAIL_RE, MAX_EMAIL_LENGTH, PRINTABLE_OR_SPACE_RE, PRINTABLE_RE, Dialect, quote

#: the kind of timestamp columns (DuckDB TIMESTAMP WITH TIME ZONE, TIMESTAMP, DATE; Postgres timestamptz,
#: timestamp, date): a `date` of this kind always maps (`values.iso_datetime`)
TIMESTAMP: Final = "timestamp"
#: printable ASCII without the two characters JSON escapes (`"` and `\\`): such text is its own JSON string
JSON_PLAIN_RE: Final = r'^[ !#-\[\]-~]*$'


@dataclass(frozen=True, slots=True)
class EventColumns:
    """An event table the engine can key: its email, type and `unique_key` columns (input names)."""

    email: str
    type: str
    unique: str
    unique_kind: str  # TEXT or INTEGER

    namespace = "events"


def plan_events(columns: Sequence[tuple[str, str]]) -> EventColumns:
    """The plan for (column name, kind) pairs of an event table; EngineDeclined when Python must decide."""
    by_dlt = by_dlt_name(columns)
    plan = _event_plan(tuple(by_dlt))
    if plan.unique is None:
        raise EngineDeclined("the events have no `unique_key` column: their keys are derived in Python")
    if plan.email is None or plan.type is None:
        raise EngineDeclined("an event table needs `email` and `type` columns")
    for role, name in (("email", plan.email), ("type", plan.type)):
        if by_dlt[name][1] != TEXT:
            raise EngineDeclined(f"the {role} column `{by_dlt[name][0]}` is not text")
    unique_column, unique_kind = by_dlt[plan.unique]
    if unique_kind not in (TEXT, INTEGER):
        raise EngineDeclined(f"`{unique_column}` is a {unique_kind} (the engine keys text and integers)")
    for name, (column, kind) in by_dlt.items():
        allowed = (*KINDS, TIMESTAMP) if name == plan.date else KINDS
        if kind not in allowed:
            raise EngineDeclined(f"`{column}` is a {kind}, which the engine does not prove the mapping of")
    if plan.date is not None and by_dlt[plan.date][1] != TIMESTAMP:
        raise EngineDeclined(f"`{by_dlt[plan.date][0]}` is not a timestamp (text dates may not parse)")
    _check_shapes(list(by_dlt))
    return EventColumns(by_dlt[plan.email][0], by_dlt[plan.type][0], unique_column, unique_kind)


def _check_shapes(names: list[str]) -> None:
    """Decline columns that could make map_event reject a row: a `fields` or `details` object column (its
    keys are only known row by row), a plain column named `unique` (it would be `details.unique`)."""
    if any(field_key(n) in ("fields", "details") for n in names):
        raise EngineDeclined("a `fields` or `details` object column (its keys are only known row by row)")
    if any(field_key(n) == "unique" for n in names):
        raise EngineDeclined("a column named `unique` would set `details.unique`, where the key goes")


def event_key_sql(plan: EventColumns, d: Dialect) -> str:
    """`ledger.event_ledger_key` of a provable row: `["<email>","<type>","<key>"]`."""
    email = f"lower({d.trim(quote(plan.email))})"
    type_ = d.trim(quote(plan.type))
    unique = quote(plan.unique) if plan.unique_kind == TEXT else d.as_text(quote(plan.unique))
    return f"""('["' || {email} || '","' || {type_} || '","' || {unique} || '"]')"""


def event_provable_sql(plan: EventColumns, d: Dialect) -> str:
    """TRUE when the SQL's key is the one Python computes for the row, and the row maps."""
    email, type_, unique = quote(plan.email), quote(plan.type), quote(plan.unique)
    trimmed = d.trim(email)
    checks = [
        f"{email} IS NOT NULL",
        d.matches(trimmed, PRINTABLE_RE),
        d.matches(trimmed, JSON_PLAIN_RE),
        d.matches(trimmed, EMAIL_RE),
        f"length({trimmed}) <= {MAX_EMAIL_LENGTH}",
        f"{type_} IS NOT NULL",
        d.matches(type_, PRINTABLE_OR_SPACE_RE),
        d.matches(type_, JSON_PLAIN_RE),
        f"{d.trim(type_)} <> ''",
        f"{unique} IS NOT NULL",
    ]
    if plan.unique_kind == TEXT:
        checks += [d.matches(unique, JSON_PLAIN_RE), f"{unique} <> ''"]
    return "(" + " AND ".join(f"coalesce({c}, FALSE)" for c in checks) + ")"

