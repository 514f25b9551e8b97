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
  `bento_failed`. Either way a rejected row is not acknowledged, so it is sent again next run;
- **pre-pass** (`prepare_package`, called by `sync()` between normalize and load): the blast-radius guard
  over the whole load package (dlt calls the sink per batch, so "before anything is sent" needs the
  package), and compaction: unchanged rows are removed from the package's files, so the changed rows
  reach the sink in full batches (1,000 a request) instead of a few per sink batch.

One `SyncLedger` per (location, site) per process, shared by dlt's parallel load jobs (it is thread-safe),
reopened when a new load starts (a folder ledger then sees other processes' segments) and closed by
`close_ledgers()` at the end of `sync()` (and at exit).
"""

from __future__ import annotations

import atexit
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy
import pyarrow as pa
import pyarrow.compute as pc

from bento_api import BentoConfigError, BentoSettings

from .config import LEDGER_FILENAME as LEDGER_FILENAME  # where the default ledger lives (the CLI reads it)
from .config import LedgerOptions, resolve_destination_config
from .keys import (
    COPY_COLUMN,
    DEFAULT_EVENT_KEYS,
    IdenticalRows,
    base_event_key,
    check_event_keys,
    ensure_event_key,
    explicit_event_key,
    numbered,
    set_event_key,
)
from .ledger import (
    CHANGED,
    NEW,
    UNCHANGED,
    BlastRadiusExceeded,
    LedgerTransaction,
    OlderFingerprints,
    SyncLedger,
    check_blast_radius,
    event_ledger_key,
    fingerprint,
    settle_stale,
    subscriber_fingerprint_v1,
)
from .load_files import count_rows, file_key, read_windows
from .mapping import MappedRow, MappingOptions, map_row
from .policy import (
    TAG_NOT_OWNED,
    UNSUBSCRIBE_EVENT,
    UNSUBSCRIBED_PERSON,
    WOULD_RESUBSCRIBE,
    command_consent,
    event_consent,
    may_remove_tag,
    not_sent,
    owned_removals,
    removal_people,
)
from .rows import iter_rows, variant_base
from .runcontext import current_run
from .send import BatchOutcome, Item
from .settings import SINK_BATCH_SIZE
from .subscriber_fingerprint import VERSION as SUBSCRIBER_FINGERPRINT_VERSION
from .subscriber_fingerprint import subscriber_fingerprint_v2
from .values import RowError, field_key

REMOVE_TAG_EVENT = "$remove_tag"
TAG_ADDING_COMMANDS = frozenset({"add_tag", "add_tag_via_event"})
#: dlt's own tables and columns start with this; the sink never sees them (skip_dlt_columns_and_tables)
DLT_PREFIX = "_dlt"

#: reject reason added by the ledger (the consent and tag-ownership reasons are policy.py's)
BLAST_RADIUS = "blast_radius_exceeded"
#: what the pre-pass told the sink about a subscribers table (see BatchChanges.prepared)
Prepared = Literal["all_new", "classified"]
#: the operations the ledger tracks (fingerprints, consent, tags); emails are never filtered
LEDGER_OPERATIONS = ("subscribers", "events", "commands")

# --------------------------------------------------------------------------- one ledger per (location, site)

_LOCK = threading.Lock()
_OPEN: dict[tuple[str, str], tuple[SyncLedger, str]] = {}


def ledger_for(location: str, site: str, load_id: str) -> SyncLedger:
    """The process's ledger for (location, site); reopened when a new load starts (fresh view of a folder)."""
    key = (location, site)
    with _LOCK:
        entry = _OPEN.get(key)
        if entry is not None and entry[1] == load_id:
            return entry[0]
        if entry is not None:
            entry[0].close()
        ledger = SyncLedger.open(location, site=site)
        _OPEN[key] = (ledger, load_id)
        return ledger


@atexit.register
def close_ledgers() -> None:
    """Close every open ledger (end of `sync()`, tests, exit); what was committed is already durable."""
    with _LOCK:
        ledgers = [ledger for ledger, _ in _OPEN.values()]
        _OPEN.clear()
    for ledger in ledgers:
        ledger.close()


def _close_location(location: str, site: str) -> None:
    with _LOCK:
        entry = _OPEN.pop((location, site), None)
    if entry is not None:
        entry[0].close()


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

    def __init__(
        self, ledger: SyncLedger, options: LedgerOptions, operation: str, outcome: BatchOutcome,
        prepared: Prepared | None = None,
    ) -> None:
        self.ledger = ledger
        self.options = options
        self.operation = operation
        self.outcome = outcome
        #: None: no pre-pass ran in this process; "all_new": it ran, and the ledger held nothing to compare
        #: with; "classified": it compared every row and already counted new and changed
        self.prepared: Prepared | None = prepared
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
        if self.options.full_resync or self.prepared == "all_new":
            self._count("new", len(pairs))
            return []
        if self.prepared == "classified":
            return []  # the pre-pass dropped the unchanged rows and counted the rest; re-sending is an upsert
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
        for plan in self._plans:
            payload = plan.items[0].payload
            key, _ = ensure_event_key(payload, "none")  # the sink keyed it already (keys.key_events)
            if key is not None:
                plan.key, plan.fp = event_ledger_key(payload["email"], payload["type"], key), fingerprint(payload)
        unsubscribed = self.ledger.unsubscribed([p.items[0].payload["email"] for p in self._plans])
        for plan in self._plans:
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
        live = [p for p in self._plans if p.items]
        if self.options.full_resync:
            self._count("new", len(live))
            return
        keyed = [p for p in live if p.key is not None]
        seen = self.ledger.seen("events", [p.key or "" for p in keyed]) if keyed else set()
        self._count("new", len(live) - len(keyed))
        for plan in keyed:
            if plan.key in seen:
                self._count("unchanged")
                plan.items = []
            else:
                self._count("new")

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
        found = (self._by_row.get(row_id) for row_id in {id(row) for row in rows} - refused)
        acked = [plan for _, plan in sorted((e for e in found if e is not None), key=lambda e: e[0]) if plan.items]
        if not acked:
            return
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

        self.ledger.record(changes)  # on the ledger's thread, as one commit


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
    ledger = ledger_for(options.location(working_dir), site, load_id)
    return BatchChanges(ledger, options, operation, outcome)


# --------------------------------------------------------------------------- classify without sending


@dataclass
class ChangeCounts:
    """How the rows of a table compare with the ledger (the dry run and the run report show these)."""

    new: int = 0
    changed: int = 0
    unchanged: int = 0
    invalid: int = 0
    untracked: int = 0  # events without a key (always sent), commands, emails

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("new", "changed", "unchanged", "invalid", "untracked")}


def classify_rows(
    rows: Iterable[Mapping[str, Any]],
    operation: str,
    *,
    site_uuid: str,
    ledger_url: str | None = None,
    working_dir: str | Path | None = None,
    derive_event_keys: bool | None = None,
    allow_secret_columns: bool = False,
    event_keys: str = DEFAULT_EVENT_KEYS,
) -> ChangeCounts:
    """Classify rows against the ledger as new, changed or unchanged without sending anything (dry run).

    `working_dir` is the pipeline's working folder (where the default ledger file lives) when no
    `ledger_url` is given (keyword, else the destination's config `ledger_url`). Streams: rows are read, mapped
    and joined against the ledger 1000 at a time, so any number of rows takes the memory of one chunk.
    Identical events are numbered as a sync numbers them (keys.py); `derive_event_keys` is deprecated.
    """
    options = LedgerOptions(ledger_url=ledger_url, event_keys=check_event_keys(event_keys))
    identical = IdenticalRows()
    location = _location_or_fail(options, working_dir)
    counts = ChangeCounts()
    mapping = MappingOptions(allow_secret_columns)
    with SyncLedger.open(location, site=site_uuid) as ledger:
        for chunk in _chunks(iter_rows(rows)):
            keys: list[str] = []
            fps: list[str] = []
            rows_mapped: list[MappedRow] = []
            events: list[MappedRow] = []
            for row in chunk:
                try:
                    mapped = map_row(operation, row, mapping)
                except RowError:
                    counts.invalid += 1
                    continue
                if operation == "events" and options.event_keys == "derived":
                    events.append(mapped)  # keyed below, once the chunk's identical rows are numbered
                    continue
                pair = classify_mapped(operation, mapped, options.event_keys)
                if pair is None:
                    counts.untracked += 1
                else:
                    keys.append(pair[0])
                    fps.append(pair[1])
                    rows_mapped.append(mapped)
            for key, fp in _numbered_pairs(events, identical):
                keys.append(key)
                fps.append(fp)
            if not keys:
                continue
            klass = ledger.classify(operation, pa.table({"key": pa.array(keys, pa.string()), "fp": fps}))
            if operation == "subscribers":  # entries of an older version: compared with it; a dry run writes nothing
                settle_stale(ledger, operation, keys, fps, klass, _v1_fingerprints(rows_mapped), restamp=False)
            counts.new += int((klass == NEW).sum())
            counts.changed += int((klass == CHANGED).sum())
            counts.unchanged += int((klass == UNCHANGED).sum())
    return counts


def _v1_fingerprints(rows: list[MappedRow]) -> OlderFingerprints:
    """The version 1 fingerprints of the chosen mapped subscriber rows (to compare with entries of that version)."""
    return lambda indexes: [subscriber_fingerprint_v1(rows[i].payload, rows[i].commands) for i in indexes]


def _numbered_pairs(events: list[MappedRow], identical: IdenticalRows) -> list[tuple[str, str]]:
    """(ledger key, fingerprint) of mapped events, derived keys numbered over every chunk so far."""
    loose = [m for m in events if m.payload is not None and explicit_event_key(m.payload) is None]
    occurrences = identical.occurrences([base_event_key(m.payload or {}) for m in loose])
    numbers = dict(zip(map(id, loose), occurrences.tolist(), strict=True))
    pairs = []
    for mapped in events:
        copy = numbers.get(id(mapped))
        pair = classify_mapped("events", mapped, DEFAULT_EVENT_KEYS, copy)
        assert pair is not None  # every mapped event has a key in the "derived" mode
        pairs.append(pair)
    return pairs


def _chunks(rows: Iterator[dict[str, Any]], size: int = SINK_BATCH_SIZE) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _location_or_fail(options: LedgerOptions, working_dir: str | Path | None) -> str:
    """The ledger's location: `ledger_url` given here, else the destination's config (config.py), else the file."""
    ledger_url = options.ledger_url or resolve_destination_config().ledger_url
    if working_dir is None and not ledger_url:
        raise BentoConfigError("give ledger_url or the pipeline's working folder (where bento_ledger.duckdb lives)")
    return ledger_url or options.location(working_dir or ".")


def reset_ledger(
    site_uuid: str,
    *,
    ledger_url: str | None = None,
    working_dir: str | Path | None = None,
    operation: str | None = None,
    consent: bool = False,
    tags: bool = False,
) -> str:
    """Forget the fingerprints of `operation` (None: all), so the next run sends everything; returns the location.

    Consent memory (unsubscribes) and tag ownership are kept unless `consent` / `tags` say otherwise.
    """
    location = _location_or_fail(LedgerOptions(ledger_url=ledger_url), working_dir)
    _close_location(location, site_uuid)
    with SyncLedger.open(location, site=site_uuid) as ledger:
        ledger.reset(operation, consent=consent, tags=tags)
    return location


def forget_unsubscribes(
    emails: Iterable[str], site_uuid: str, *, ledger_url: str | None = None, working_dir: str | Path | None = None
) -> None:
    """Forget that these people are unsubscribed: only after they asked to be resubscribed (done in Bento)."""
    location = _location_or_fail(LedgerOptions(ledger_url=ledger_url), working_dir)
    _close_location(location, site_uuid)
    with SyncLedger.open(location, site=site_uuid) as ledger:
        ledger.clear_unsubscribed(list(emails))


# --------------------------------------------------------------------------- the pre-pass over a load package


@dataclass
class PackagePlan:
    """What the pre-pass found in one normalized load package."""

    load_id: str
    rows: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    #: subscriber tables compared row by row with the ledger: their new and changed rows
    new: Counter[str] = field(default_factory=Counter)
    changed: Counter[str] = field(default_factory=Counter)
    classified: set[str] = field(default_factory=set)
    would_unsubscribe: set[str] = field(default_factory=set)
    would_remove_tags: set[str] = field(default_factory=set)
    known_audience: int = 0
    people_in_run: int = 0
    #: event tables numbered here (keys.py): keys derived, and of them identical rows numbered `#n`
    derived_keys: Counter[str] = field(default_factory=Counter)
    identical_rows: Counter[str] = field(default_factory=Counter)


@dataclass
class _Job:
    """One load file of the package, as the pre-pass reads it."""

    table: str
    operation: str
    path: str
    columns: frozenset[str]


@dataclass
class _FileScan:
    """What the pre-pass keeps of one load file: its size, the rows to drop, the removals it asks for."""

    rows: int = 0
    new: int = 0
    changed: int = 0
    unchanged: numpy.ndarray[Any, numpy.dtype[numpy.int64]] = field(
        default_factory=lambda: numpy.zeros(0, numpy.int64)
    )
    removals: list[tuple[int, str, bool, list[str]]] = field(default_factory=list)
    #: 64-bit hashes of the mapped rows' emails (counting people without holding their emails)
    people: list[pa.Array] = field(default_factory=list)
    #: events numbered here (keys.py): how many got a derived key, and {row: n} for the n-th identical (n >= 2)
    derived: int = 0
    copies: dict[int, int] = field(default_factory=dict)


def _package_jobs(
    pipeline: Any, load_id: str, states: tuple[str, ...] = ("new_jobs",)
) -> list[tuple[str, str, frozenset[str]]]:
    """(table, file path, the table's column names) of the package's jobs in `states` (dlt tables skipped)."""
    info = pipeline.get_load_package_info(load_id)
    tables = getattr(info.schema, "tables", {}) if info.schema is not None else {}
    out = []
    for job in (job for state in states for job in info.jobs.get(state, [])):
        table = job.job_file_info.table_name
        if not table.startswith(DLT_PREFIX):
            columns = frozenset((tables.get(table) or {}).get("columns", {}) or ())
            out.append((table, str(job.file_path), columns))
    return sorted(out, key=lambda job: (job[0], file_key(job[1])))  # event numbers count in file-id order


def _read_batches(path: str) -> Iterator[Any]:
    """A load file in chunks of SINK_BATCH_SIZE rows, without dlt's columns (load_files.py)."""
    yield from read_windows(path, None, SINK_BATCH_SIZE)


def _without_dlt_columns(batch: Any) -> Any:
    """The batch as the sink sees it: dlt's own columns (`_dlt_id`, `_dlt_load_id`) are not passed to it."""
    if isinstance(batch, pa.RecordBatch | pa.Table):
        return batch.select([name for name in batch.schema.names if not name.startswith(DLT_PREFIX)])
    return [{k: v for k, v in row.items() if not k.startswith(DLT_PREFIX)} for row in batch]


def _removals(operation: str, mapped: MappedRow) -> tuple[bool, list[str]]:
    """(unsubscribes?, tags removed) asked by one mapped row."""
    payload = mapped.payload or {}
    if operation == "subscribers":
        return bool(mapped.commands), _tags(payload.get("remove_tags"))
    if operation == "events":
        kind = payload.get("type")
        return kind == UNSUBSCRIBE_EVENT, (["*"] if kind == REMOVE_TAG_EVENT else [])
    if operation == "commands":
        command = payload.get("command")
        return command == "unsubscribe", ([str(payload.get("query"))] if command == "remove_tag" else [])
    return False, []


#: subscriber columns (as field names) that can unsubscribe someone or remove tags
_SUBSCRIBER_REMOVING = frozenset({"unsubscribed", "remove_tags"})


def _may_remove(operation: str, columns: frozenset[str]) -> bool:
    """Could rows with these columns unsubscribe someone or remove tags? (False only when surely not.)

    Subscribers do it only through an `unsubscribed` or `remove_tags` column (any spelling that maps to
    those names, or a dlt variant of one); events and commands through their values, so always maybe.
    """
    if operation != "subscribers" or not columns:
        return True
    names = {field_key(variant_base(c) or c) for c in columns if not c.startswith(DLT_PREFIX)}
    return bool(names & _SUBSCRIBER_REMOVING)


def _file_rows(path: str) -> int:
    return count_rows(path)


def _scan_file(
    ledger: SyncLedger | None, job: _Job, mapping: MappingOptions, options: LedgerOptions, fingerprints: bool,
    identical: IdenticalRows | None = None,
) -> _FileScan:
    """Map one load file a sink batch at a time; classify its rows against the ledger in one join.

    Keys and fingerprints go to Arrow per batch (no list of a file's pairs as Python tuples); what is
    kept per row is at most its removal (rare) and a 64-bit hash of its email. With `identical` (the
    table's count of derived event keys so far), events without their own key are numbered here, in
    the same pass: the n-th identical row's key is `key#n` (keys.py), recorded in `copies`.
    """
    operation = job.operation
    scan = _FileScan()
    keys: list[pa.Array] = []
    fps: list[pa.Array] = []
    olds: list[pa.Array] = []  # subscribers' version 1 fingerprints, while the ledger holds such entries
    pair_rows: list[numpy.ndarray[Any, numpy.dtype[numpy.int64]]] = []
    migrating = (
        fingerprints and ledger is not None and operation == "subscribers"
        and ledger.holds_older_fingerprints(operation, SUBSCRIBER_FINGERPRINT_VERSION)
    )
    for batch in _read_batches(job.path):
        batch_keys: list[str] = []
        batch_fps: list[str] = []
        batch_olds: list[str] = []
        batch_rows: list[int] = []
        hashes: list[int] = []
        loose: list[tuple[int, MappedRow]] = []  # events keyed below, once the batch's identical rows are numbered
        for row in iter_rows(_without_dlt_columns(batch)):
            index = scan.rows
            scan.rows += 1
            copy = row.pop(COPY_COLUMN, None)  # numbered by an earlier pre-pass (a package loaded again)
            try:
                mapped = map_row(operation, row, mapping)
            except RowError:
                continue  # the sink rejects it, with its reason
            unsubscribes, removed = _removals(operation, mapped)
            email = str((mapped.payload or {}).get("email") or (mapped.commands[0]["email"] if mapped.commands else ""))
            hashes.append(hash(email))
            if unsubscribes or removed:
                scan.removals.append((index, email, unsubscribes, removed))
            if identical is not None and mapped.payload is not None and explicit_event_key(mapped.payload) is None:
                loose.append((index, mapped))
                continue
            if fingerprints:
                pair = classify_mapped(operation, mapped, options.event_keys, copy)
                if pair is not None:
                    batch_keys.append(pair[0])
                    batch_fps.append(pair[1])
                    batch_rows.append(index)
                    if migrating:
                        batch_olds.append(subscriber_fingerprint_v1(mapped.payload, mapped.commands))
        if identical is not None and loose:
            bases = [base_event_key(mapped.payload or {}) for _, mapped in loose]
            scan.derived += len(loose)
            for (index, mapped), base, n in zip(loose, bases, identical.occurrences(bases).tolist(), strict=True):
                if n > 1:
                    scan.copies[index] = n
                if fingerprints:
                    set_event_key(mapped.payload or {}, numbered(base, n))
                    pair = classify_mapped(operation, mapped, "none")  # reads the key just set
                    if pair is not None:
                        batch_keys.append(pair[0])
                        batch_fps.append(pair[1])
                        batch_rows.append(index)
        scan.people.append(pa.array(hashes, pa.int64()))
        if batch_keys:
            keys.append(pa.array(batch_keys, pa.string()))
            fps.append(pa.array(batch_fps, pa.string()))
            olds.append(pa.array(batch_olds, pa.string()))
            pair_rows.append(numpy.asarray(batch_rows, numpy.int64))
    if keys and ledger is not None:
        pairs = pa.table({"key": pa.concat_arrays(keys), "fp": pa.concat_arrays(fps)})
        del keys, fps
        klass = ledger.classify(operation, pairs)
        if migrating:  # rows whose entry is version 1: unchanged if equal to it (and re-stamped), else changed
            old = pa.concat_arrays(olds)
            settle_stale(ledger, operation, pairs.column("key").combine_chunks(), pairs.column("fp").combine_chunks(),
                         klass, lambda indexes: [str(v) for v in old.take(indexes).to_pylist()])
        scan.new, scan.changed = int((klass == NEW).sum()), int((klass == CHANGED).sum())
        scan.unchanged = numpy.concatenate(pair_rows)[not_sent(operation, klass)]
    return scan


def _release_arrow_memory() -> None:
    """Give memory Arrow freed back to the system (its allocator keeps freed pages for reuse otherwise)."""
    pa.default_memory_pool().release_unused()


def prepare_package(
    pipeline: Any,
    load_id: str,
    settings: BentoSettings,
    options: LedgerOptions,
    table_operations: dict[str, str] | None = None,
    allow_secret_columns: bool = False,
    *,
    in_load: bool = False,
) -> PackagePlan:
    """Before anything of a package is sent: check the blast radius of the whole package, count what it holds.

    `in_load`: called by the sink while dlt loads the package (a plain `pipeline.run`): over the jobs not
    completed yet. Raises BlastRadiusExceeded before anything is sent (the caller drops the package, or the
    sink rejects its rows). Decides only: dlt's files and schema are never rewritten. The sink compares
    every row with the ledger itself and numbers identical events the same way (event_numbers.py); the
    unchanged rows counted here are only what `sync()` says before loading.

    Streams: one load file at a time, one chunk of it as Python rows at a time. A file is not mapped at
    all when nothing in it can be unchanged (the ledger holds no fingerprint of its operation, or
    `full_resync`) and its columns cannot remove anything (a first sync of plain subscribers).
    """
    from .sink import resolve_operation

    plan = PackagePlan(load_id)
    if not options.sync_ledger:
        return plan
    ledger = ledger_for(options.location(pipeline.working_dir), settings.site_uuid, load_id)
    mapping = MappingOptions(allow_secret_columns)
    tracked: dict[str, bool] = {}
    people: list[pa.Array] = []
    unmapped: list[_Job] = []
    identical: dict[str, IdenticalRows] = {}
    states = ("new_jobs", "started_jobs") if in_load else ("new_jobs",)
    for table, path, columns in _package_jobs(pipeline, load_id, states):
        operation = resolve_operation(table, table_operations)
        if operation not in LEDGER_OPERATIONS:
            continue
        job = _Job(table, operation, path, columns)
        if operation not in tracked:
            tracked[operation] = (
                operation in ("subscribers", "events")
                and not options.full_resync
                and ledger.known_audience(operation) > 0
            )
        if not _may_remove(operation, columns) and (in_load or not tracked[operation]):
            if not in_load:  # the guard alone needs no row counts, and nothing in this file can remove
                plan.rows[table] += _file_rows(path)
            unmapped.append(job)
            continue
        counter = None
        if options.event_keys == "derived" and operation == "events" and not in_load:
            counter = identical.setdefault(table, IdenticalRows())
        scan = _scan_file(ledger, job, mapping, options, tracked[operation], counter)
        plan.rows[table] += scan.rows
        if operation == "subscribers" and tracked[operation]:
            plan.classified.add(table)
            plan.new[table] += scan.new
            plan.changed[table] += scan.changed
        people.extend(scan.people)
        if len(scan.unchanged) and not in_load:
            plan.unchanged[table] += len(scan.unchanged)
        if scan.removals:
            _count_removals(ledger, options, scan.removals, set(scan.unchanged.tolist()), plan)
        del scan
        _release_arrow_memory()
    plan.known_audience = ledger.known_audience("subscribers")
    if plan.would_unsubscribe or plan.would_remove_tags:
        for job in unmapped:  # rare: removals in one table, a first sync of another
            people.extend(_scan_file(ledger, job, mapping, options, False).people)
        everyone = pa.chunked_array(people, pa.int64())
        plan.people_in_run = int(pc.count_distinct(everyone).as_py())
        check_blast_radius(
            len(plan.would_unsubscribe),
            len(plan.would_remove_tags),
            max(plan.known_audience, plan.people_in_run),
            float(options.max_blast_radius),
            options.force,
        )
    del people
    _release_arrow_memory()
    if not in_load:  # the sink need not scan the package again for its verdict
        current_run(pipeline.working_dir).remember(("verdict", load_id), lambda: None)
    return plan


def blast_radius_verdict(
    pipeline: Any,
    load_id: str,
    settings: BentoSettings,
    options: LedgerOptions,
    table_operations: dict[str, str] | None = None,
    allow_secret_columns: bool = False,
) -> str | None:
    """The blast-radius guard for a load: None to go on, else why nothing may be sent.

    The sink asks on every file; the first call of a load scans the whole package (the jobs not yet
    completed) while the other load jobs wait for it, so no request goes out before the verdict (a
    `sync()` pre-pass gave it already). Rows of a stopped load are rejected (the package completes,
    nothing stays pending); rerun with force=True.
    """
    if options.force or not options.sync_ledger:
        return None

    def verdict() -> str | None:
        try:
            prepare_package(pipeline, load_id, settings, options, table_operations, allow_secret_columns, in_load=True)
        except BlastRadiusExceeded as error:
            return str(error)
        return None

    result: str | None = current_run(pipeline.working_dir).remember(("verdict", load_id), verdict)
    return result


def _count_removals(
    ledger: SyncLedger, options: LedgerOptions, removals: list[tuple[int, str, bool, list[str]]],
    unchanged: set[int], plan: PackagePlan,
) -> None:
    """People this package would unsubscribe (not known already) or strip tags from (owned ones, if owning)."""
    live = [r for r in removals if r[0] not in unchanged]
    if not live:
        return
    known = ledger.unsubscribed([email for _, email, unsub, _ in live if unsub])
    owned = ledger.owned_tags([email for _, email, _, tags in live if tags]) if options.tag_ownership else None
    unsubscribing, untagging = removal_people([(email, unsub, tags) for _, email, unsub, tags in live], known, owned)
    plan.would_unsubscribe |= unsubscribing
    plan.would_remove_tags |= untagging

