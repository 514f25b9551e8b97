"""The SQL of a row's ledger key, provability and fingerprint, for either kind of table the engine takes.

Subscribers are compared by fingerprint (`sql.py`); events with their own keys by key alone (`events.py`):
Bento keeps one event per key, so an event whose key the ledger holds is never sent again.
"""

from __future__ import annotations

from .columns import SubscriberColumns
from .events import EventColumns, event_key_sql, event_provable_sql
from .sql import Dialect, fingerprint_sql, key_sql, provable_sql

#: what the engine diffs: a subscriber table, or an event table with a `unique_key` column
TablePlan = SubscriberColumns | EventColumns


def namespace(plan: TablePlan) -> str:
    """The ledger namespace the rows are compared in."""
    return "events" if isinstance(plan, EventColumns) else "subscribers"


def row_key_sql(plan: TablePlan, d: Dialect) -> str:
    return event_key_sql(plan, d) if isinstance(plan, EventColumns) else key_sql(plan, d)


def row_provable_sql(plan: TablePlan, d: Dialect) -> str:
    return event_provable_sql(plan, d) if isinstance(plan, EventColumns) else provable_sql(plan, d)


def row_fingerprint_sql(plan: TablePlan, d: Dialect) -> str:
    """The fingerprint compared with the ledger's; events have none (their key decides): the empty text."""
    return "''" if isinstance(plan, EventColumns) else fingerprint_sql(plan, d)


def unchanged_sql(plan: TablePlan, ok: str, copies: str, stored: str, stored_key: str, fp: str) -> str:
    """SQL: the row is left out. Subscribers: provable, alone with its email in the input, and its fingerprint
    is the stored one. Events: provable and its key is stored."""
    if isinstance(plan, EventColumns):
        return f"coalesce({ok} AND {stored_key} IS NOT NULL, FALSE)"
    return f"coalesce({ok} AND {copies} = 1 AND {stored} = {fp}, FALSE)"
