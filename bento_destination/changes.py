"""Send only what changed: the sync ledger wired into the destination (GitHub issue 8).

The ledger itself (`ledger.py`) stores fingerprints, consent and tag ownership; this module decides, per
sink batch, which rows go to Bento and records what Bento acknowledged:

- **filter** (`BatchChanges.filter`, before sending): subscriber rows whose mapped payload (and derived
  commands) Bento already acknowledged are not sent; keyed events already acknowledged are not sent;
  events for people known to be unsubscribed are rejected (unless allowed); nothing ever resubscribes a
  person known to be unsubscribed; with tag ownership, `remove_tags` keeps only tags this connector added;
- **acknowledge** (`BatchChanges.acknowledge`, after sending): one ledger transaction per sink batch, for
  the rows Bento did not refuse, plus unsubscribes and tags added or removed. When Bento answers a request
  with `failed > 0`, the sender finds the failed subscriber rows exactly by re-sending halves (they are
  rejected as `refused_by_bento`); for events and commands every row of that request is rejected as
  `bento_failed`. Either way a rejected row is not acknowledged, so it is sent again next run.

Around it: the pre-pass over a whole load package (blast radius, counts) is `prepass.py`, the dry run
`dry_run.py`, resetting and forgetting `ledger_admin.py`; the ledger handles live on the run context
(`RunContext.ledgers`, run_ledgers.py), shared by dlt's parallel load jobs and closed when the run ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy
import pyarrow as pa

from .config import LEDGER_FILENAME as LEDGER_FILENAME  # where the default ledger lives (the CLI reads it)
from .config import LedgerOptions
from .keys import ensure_event_key
from .ledger import (
    LedgerTransaction,
    OlderFingerprints,
    SyncLedger,
    event_ledger_key,
    fingerprint,
    subscriber_fingerprint_v1,
)
from .ledger_admin import forget_unsubscribes as forget_unsubscribes  # imported from here by callers
from .ledger_admin import reset_ledger as reset_ledger
from .mapping import MappedRow
from .policy import (
    TAG_NOT_OWNED,
    UNSUBSCRIBE_EVENT,
    UNSUBSCRIBED_PERSON,
    WOULD_RESUBSCRIBE,
    command_consent,
    event_consent,
    may_remove_tag,
    owned_removals,
)
from .runcontext import close_ledgers as close_ledgers  # imported from here by callers
from .runcontext import current_run
from .send import BatchOutcome, Item
from .subscriber_fingerprint import subscriber_fingerprint_v2

REMOVE_TAG_EVENT = "$remove_tag"
TAG_ADDING_COMMANDS = frozenset({"add_tag", "add_tag_via_event"})
#: dlt's own tables and columns start with this; the sink never sees them (skip_dlt_columns_and_tables)
DLT_PREFIX = "_dlt"

#: reject reason added by the ledger (the consent and tag-ownership reasons are policy.py's)
BLAST_RADIUS = "blast_radius_exceeded"
#: the operations the ledger tracks (fingerprints, consent, tags); emails are never filtered
LEDGER_OPERATIONS = ("subscribers", "events", "commands")


# --------------------------------------------------------------------------- keys and fingerprints


def _tags(text: Any) -> list[str]:
    return [t.strip() for t in str(text or "").split(",") if t.strip()]


def subscriber_fingerprint(payload: dict[str, Any] | None, commands: list[dict[str, Any]]) -> str:
    """What a subscriber row asks of Bento: its upsert and its commands (an unsubscribe), as mapped (version 2).

    A ledger entry of an older version is compared with `subscriber_fingerprint_v1` instead (ledger/upgrade.py).
    """
    return subscriber_fingerprint_v2(payload, commands)


def classify_mapped(
    operation: str, mapped: MappedRow, event_keys: str, copy: int | None = None
) -> tuple[str, str] | None:
    """(ledger key, fingerprint) of a mapped row, or None for rows the ledger does not track.

    `copy`: an event's number among identical rows (keys.py); its derived key is numbered with it.
    """
    if operation == "subscribers":
        payload = mapped.payload
        email = payload["email"] if payload else (mapped.commands[0]["email"] if mapped.commands else None)
        if email is None:
            return None
        return str(email), subscriber_fingerprint(payload, mapped.commands)
    if operation == "events" and mapped.payload is not None:
        key, _ = ensure_event_key(mapped.payload, event_keys, copy)
        if key is None:
            return None
        return event_ledger_key(mapped.payload["email"], mapped.payload["type"], key), fingerprint(mapped.payload)
    return None


# --------------------------------------------------------------------------- per sink batch


@dataclass
class _RowPlan:
    row: dict[str, Any]
    items: list[Item] = field(default_factory=list)
    key: str | None = None
    fp: str | None = None
    remove_owned: list[str] = field(default_factory=list)


class BatchChanges:
    """Filter one sink batch against the ledger before sending; acknowledge what Bento took afterwards."""

    def __init__(self, ledger: SyncLedger, options: LedgerOptions, operation: str, outcome: BatchOutcome) -> None:
        self.ledger = ledger
        self.options = options
        self.operation = operation
        self.outcome = outcome
        self._plans: list[_RowPlan] = []
        #: id(row) -> (its plan's position, the plan): a request's acknowledgement finds its rows directly
        self._by_row: dict[int, tuple[int, _RowPlan]] = {}

    def _count(self, name: str, n: int = 1) -> None:
        if n:
            self.outcome.ledger[name] += n

    def filter(self, main: list[Item], derived: list[Item]) -> tuple[list[Item], list[Item]]:
        """The items to send; unchanged rows are counted, refused rows are rejected with their reason."""
        _release_arrow_memory()
        self._group(main, derived)
        if self.operation == "subscribers":
            self._filter_subscribers()
        elif self.operation == "events":
            self._filter_events()
        elif self.operation == "commands":
            self._filter_commands()
        kept = {id(item) for plan in self._plans for item in plan.items}
        return [i for i in main if id(i) in kept], [i for i in derived if id(i) in kept]

    def unchanged_subscribers(
        self, emails: Sequence[str], fingerprints: Sequence[str], older: OlderFingerprints
    ) -> list[int]:
        """Indexes of the given subscriber rows the ledger holds unchanged (not to be sent); counts as `filter`.

        The Arrow path of the sink decides from a mapped batch's emails and version 2 fingerprints, before any
        payload dict exists; `older(indexes)` gives the version 1 fingerprints of the rows whose entry an older
        release wrote (STALE), built only for those rows. Then `adopt` takes the items of the rows to send.
        """
        _release_arrow_memory()
        return self._unchanged("subscribers", list(zip(emails, fingerprints, strict=True)), older)

    def adopt(
        self, main: list[Item], derived: list[Item], pairs: Mapping[int, tuple[str, str]]
    ) -> tuple[list[Item], list[Item]]:
        """The items to send of subscriber rows `unchanged_subscribers` kept; `pairs`: id(row) -> (email, v2
        fingerprint), as compared. Tag ownership filters their `remove_tags` as `filter` does."""
        self._group(main, derived)
        for plan in self._plans:
            plan.key, plan.fp = pairs[id(plan.row)]
        self._own_removals()
        return main, derived

    def _group(self, main: list[Item], derived: list[Item]) -> None:
        """One plan per source row, holding its items (its upsert, then its commands)."""
        plans: dict[int, _RowPlan] = {}
        for item in main + derived:
            plans.setdefault(id(item.row), _RowPlan(item.row)).items.append(item)
        self._plans = list(plans.values())
        self._by_row = {row_id: (n, plan) for n, (row_id, plan) in enumerate(plans.items())}

    def _reject(self, plan: _RowPlan, reason: str, detail: str) -> None:
        self.outcome.reject(reason, detail, plan.row)
        plan.items = []

    def _partition(self, ns: str, plans: list[_RowPlan]) -> None:
        """Drop unchanged plans; count new / changed / unchanged."""
        tracked = [p for p in plans if p.key is not None]
        self._count("new", len(plans) - len(tracked))

        def older(indexes: numpy.ndarray[Any, numpy.dtype[numpy.int64]]) -> list[str]:
            return [subscriber_fingerprint_v1(*_intent(tracked[i])) for i in indexes.tolist()]

        # subscribers' entries of an older fingerprint version: compared with it, and re-stamped
        pairs = [(p.key or "", p.fp or "") for p in tracked]
        for index in self._unchanged(ns, pairs, older if ns == "subscribers" else None):
            tracked[index].items = []

    def _unchanged(self, ns: str, pairs: list[tuple[str, str]], older: OlderFingerprints | None) -> list[int]:
        """Indexes of the (key, fingerprint) pairs the ledger holds unchanged; counts new / changed / unchanged."""
        if not pairs:
            return []
        if self.options.full_resync:
            self._count("new", len(pairs))
            return []
        new, changed, unchanged = self.ledger.partition(ns, pairs, older=older)
        self._count("new", len(new))
        self._count("changed", len(changed))
        self._count("unchanged", len(unchanged))
        return unchanged

    def _filter_subscribers(self) -> None:
        for plan in self._plans:
            payload, commands = _intent(plan)
            email = payload["email"] if payload else commands[0]["email"]
            plan.key, plan.fp = str(email), subscriber_fingerprint(payload, commands)
        self._partition("subscribers", self._plans)
        self._own_removals()

    def _own_removals(self) -> None:
        """With tag ownership, a subscriber row removes only the tags this connector added."""
        if not self.options.tag_ownership:
            return
        removing = [p for p in self._plans if p.items and any("remove_tags" in i.payload for i in p.items)]
        if not removing:
            return
        owned = self.ledger.owned_tags([p.key or "" for p in removing])
        for plan in removing:
            for item in plan.items:
                wanted = _tags(item.payload.get("remove_tags"))
                if not wanted:
                    continue
                mine = owned.get(str(plan.key).lower(), set())
                plan.remove_owned = owned_removals(wanted, mine)
                self._count("tags_not_owned", len(wanted) - len(plan.remove_owned))
                item.payload = {k: v for k, v in item.payload.items() if k != "remove_tags"}
                if plan.remove_owned:
                    item.payload["remove_tags"] = ",".join(plan.remove_owned)

    def _filter_events(self) -> None:
        """Keys Bento already acknowledged first (unchanged: neither sent nor judged again, even for a person
        unsubscribed since), then consent for the rest."""
        for plan in self._plans:
            payload = plan.items[0].payload
            key, _ = ensure_event_key(payload, "none")  # the sink keyed it already (keys.key_events)
            if key is not None:
                plan.key, plan.fp = event_ledger_key(payload["email"], payload["type"], key), fingerprint(payload)
        keyed = [p for p in self._plans if p.key is not None]
        seen = set() if self.options.full_resync or not keyed else self.ledger.seen(
            "events", [p.key or "" for p in keyed])
        for plan in keyed:
            if plan.key in seen:
                self._count("unchanged")
                plan.items = []
        pending = [p for p in self._plans if p.items]
        unsubscribed = self.ledger.unsubscribed([p.items[0].payload["email"] for p in pending])
        for plan in pending:
            payload = plan.items[0].payload
            reason = event_consent(
                payload["type"], payload["email"] in unsubscribed, self.options.allow_events_for_unsubscribed
            )
            if reason == WOULD_RESUBSCRIBE:
                self._reject(plan, WOULD_RESUBSCRIBE, _resubscribe_detail(payload["email"]))
            elif reason == UNSUBSCRIBED_PERSON:
                self._reject(
                    plan,
                    UNSUBSCRIBED_PERSON,
                    f"{payload['email']} is known to be unsubscribed (sync ledger); events for unsubscribed people "
                    "are sent only with bento(allow_events_for_unsubscribed=True)",
                )
        self._count("new", sum(1 for p in self._plans if p.items))

    def _filter_commands(self) -> None:
        subscribing = [p for p in self._plans if p.items[0].payload["command"] == "subscribe"]
        unsubscribed = self.ledger.unsubscribed([p.items[0].payload["email"] for p in subscribing])
        for plan in subscribing:
            if command_consent("subscribe", plan.items[0].payload["email"] in unsubscribed):
                self._reject(plan, WOULD_RESUBSCRIBE, _resubscribe_detail(plan.items[0].payload["email"]))
        if not self.options.tag_ownership:
            return
        removing = [p for p in self._plans if p.items and p.items[0].payload["command"] == "remove_tag"]
        owned = self.ledger.owned_tags([p.items[0].payload["email"] for p in removing]) if removing else {}
        for plan in removing:
            payload = plan.items[0].payload
            if not may_remove_tag(str(payload["query"]), owned.get(payload["email"], set())):
                self._reject(
                    plan,
                    TAG_NOT_OWNED,
                    f"tag {payload['query']!r} was not added by this connector (tag_ownership=True): not removed",
                )

    def acknowledge(self) -> None:
        """Record, in one ledger transaction, what Bento acknowledged (call after sending the batch)."""
        refused = {id(record.row) for record in self.outcome.rejects}
        self.acknowledge_rows([p.row for p in self._plans], refused)

    def acknowledge_rows(self, rows: list[dict[str, Any]], refused: set[int]) -> None:
        """Record what Bento acknowledged for these rows of the filtered batch (one request's, as soon as it
        is answered), leaving out the rows in `refused` (ids of rows Bento refused); one ledger transaction."""
        changes = self._acknowledged(rows, refused)
        if changes is not None:
            self.ledger.record(changes)  # on the ledger's thread, as one commit

    def acknowledge_rows_later(self, rows: list[dict[str, Any]], refused: set[int]) -> Future[None]:
        """As `acknowledge_rows`, returning at once: the future is done once the rows are committed."""
        changes = self._acknowledged(rows, refused)
        if changes is None:
            done: Future[None] = Future()
            done.set_result(None)
            return done
        return self.ledger.record_later(changes)

    def _acknowledged(
        self, rows: list[dict[str, Any]], refused: set[int]
    ) -> Callable[[LedgerTransaction], None] | None:
        """The ledger changes Bento's answer for these rows implies (None: nothing to record)."""
        found = (self._by_row.get(row_id) for row_id in {id(row) for row in rows} - refused)
        acked = [plan for _, plan in sorted((e for e in found if e is not None), key=lambda e: e[0]) if plan.items]
        if not acked:
            return None
        fingerprints: list[tuple[str, str]] = []
        unsubscribes: list[str] = []
        tags_added: list[tuple[str, str]] = []
        tags_removed: list[tuple[str, str]] = []
        for plan in acked:
            if plan.key is not None and plan.fp is not None:
                fingerprints.append((plan.key, plan.fp))
            for item in plan.items:
                payload = item.payload
                command = payload.get("command")
                email = str(payload.get("email", ""))
                if command == "unsubscribe" or payload.get("type") == UNSUBSCRIBE_EVENT:
                    unsubscribes.append(email)
                if not self.options.tag_ownership:
                    continue
                if command is None and self.operation == "subscribers":
                    tags_added.extend((email, t) for t in _tags(payload.get("tags")))
                    tags_removed.extend((email, t) for t in _tags(payload.get("remove_tags")))
                elif command in TAG_ADDING_COMMANDS:
                    tags_added.append((email, str(payload["query"]).strip()))
                elif command == "remove_tag":
                    tags_removed.append((email, str(payload["query"]).strip()))
        operation = self.operation

        def changes(tx: LedgerTransaction) -> None:
            if fingerprints and operation in ("subscribers", "events"):
                tx.acknowledge(operation, fingerprints)
            if unsubscribes:
                tx.mark_unsubscribed(unsubscribes)
            if tags_added:
                tx.add_owned_tags(tags_added)
            if tags_removed:
                tx.remove_owned_tags(tags_removed)

        return changes


def _intent(plan: _RowPlan) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """A subscriber row's upsert and commands, as mapped (before tag-ownership filtering changes the payload)."""
    payload = next((i.payload for i in plan.items if i.payload.get("command") is None), None)
    return payload, [i.payload for i in plan.items if i.payload.get("command") is not None]


def _resubscribe_detail(email: str) -> str:
    return (
        f"{email} is known to be unsubscribed (sync ledger): a sync never resubscribes anyone. If the person asked "
        "to be resubscribed, do it in Bento, then forget the unsubscribe with "
        "bento_destination.changes.forget_unsubscribes(...)"
    )


def batch_changes(
    options: LedgerOptions, working_dir: str | Path, site: str, load_id: str, table: str, operation: str | None,
    outcome: BatchOutcome,
) -> BatchChanges | None:
    """The sink's hook: a BatchChanges for this window of rows, or None (ledger off, emails, unknown tables)."""
    if not options.sync_ledger or operation not in LEDGER_OPERATIONS:
        return None
    ledger = current_run(working_dir).ledgers.ledger(options.location(working_dir), site, load_id)
    return BatchChanges(ledger, options, operation, outcome)


def _release_arrow_memory() -> None:
    """Give memory Arrow freed back to the system (its allocator keeps freed pages for reuse otherwise)."""
    pa.default_memory_pool().release_unused()
