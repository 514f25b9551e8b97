"""The engine as an input of `sync()`: the rows to send, and how many the engine found unchanged.

`engine_rows` decides whether the engine can take an input (a table of a DuckDB file or of Postgres, the
subscribers operation or events with a `unique_key` column (events.py), the ledger on and not a full
resync, a column plan the SQL can prove) and returns
an `EngineRows`, or None for the Python path. `EngineRows` is what `sync()` extracts: the new and changed
rows only, which then go the normal way (the pre-pass checks consent and the blast radius on them before
anything is sent); the ledger is opened when the first batch is asked for, inside the run's lock, and
closed after the last, before the pre-pass opens it. `settle` puts the unchanged count in the load's plan,
so the run's report says `unchanged` as it does when the pre-pass drops rows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..ledger import SyncLedger
from .columns import EngineDeclined, plan_subscribers
from .duckdb_diff import DuckDBDiff, duckdb_columns
from .events import plan_events
from .expressions import TablePlan
from .postgres_diff import PostgresDiff, postgres_columns


@dataclass(frozen=True)
class EngineSource:
    """An input the engine may read: `kind` "duckdb" (a file path) or "postgres" (a SQLAlchemy URL), a table."""

    kind: str
    location: str
    table: str


class _Counts(Protocol):
    """A load's plan (`prepass.PackagePlan`): its unchanged rows per table."""

    unchanged: Counter[str]


class EngineRows:
    """The rows the engine found new or changed, as batches; `unchanged` once they have all been read."""

    def __init__(self, source: EngineSource, plan: TablePlan, table_name: str, ledger_location: str,
                 site: str, allow_secret_columns: bool, note: Callable[[str], None] = print) -> None:
        self.source = source
        self.plan = plan
        self.table_name = table_name
        self._location = ledger_location
        self._site = site
        self._allow_secret = allow_secret_columns
        self._note = note
        self.unchanged = 0
        self.sent = 0
        self._settled = False

    def __iter__(self) -> Iterator[Any]:
        ledger = SyncLedger.open(self._location, site=self._site)
        diff: DuckDBDiff | PostgresDiff | None = None
        try:
            if self.source.kind == "duckdb":
                diff = DuckDBDiff(ledger, self._site, self.source.location, self.source.table, self._allow_secret)
            else:
                diff = PostgresDiff(ledger, self._site, self.source.location, self.source.table, self._allow_secret)
            yield from diff.batches(self.plan)
            self.unchanged, self.sent = diff.unchanged, diff.sent
            self._note(f"{self.table_name}: {self.unchanged} unchanged rows found in {self.source.kind} and not read; "
                       f"{self.sent} new or changed rows go on")
        finally:
            if isinstance(diff, PostgresDiff):
                diff.close()
            ledger.close()

    def settle(self, counts: _Counts) -> None:
        """Count the engine's unchanged rows in a load's plan (`PackagePlan.unchanged`), once."""
        if not self._settled and self.unchanged:
            counts.unchanged[self.table_name] += self.unchanged
        self._settled = True


def plan_for(source: EngineSource, operation: str, allow_secret_columns: bool) -> TablePlan:
    """The column plan of the source's table; EngineDeclined if the engine cannot take it."""
    if source.kind == "duckdb":
        columns = duckdb_columns(source.location, source.table)
    else:
        columns = postgres_columns(source.location, source.table)
    if operation == "events":
        return plan_events(columns)
    return plan_subscribers(columns, allow_secret_columns)


def engine_rows(
    source: EngineSource | None,
    *,
    operation: str,
    table_name: str,
    ledger_location: str,
    site: str,
    sync_ledger: bool = True,
    full_resync: bool = False,
    allow_secret_columns: bool = False,
    note: Callable[[str], None] = print,
) -> EngineRows | None:
    """The engine's rows for this input, or None when the Python path must read it (saying why in `note`)."""
    if source is None or operation not in ("subscribers", "events") or not sync_ledger or full_resync:
        return None
    try:
        plan = plan_for(source, operation, allow_secret_columns)
    except EngineDeclined as declined:
        note(f"note: the changed rows are found in Python, not in {source.kind}: {declined}")
        return None
    return EngineRows(source, plan, table_name, ledger_location, site, allow_secret_columns, note)
