"""The pre-pass over a load package: the blast-radius guard over the whole package, and what it holds.

dlt calls the sink per load file, so "check before anything is sent" needs the whole package first:
`sync()` runs `prepare_package` between normalize and load; a plain `pipeline.run` gets the same verdict
from the sink's first file (`blast_radius_verdict`, remembered on the run context). With the file reader
(load_files.py, event_numbers.py) and sync.py, this is the only code that knows dlt's load packages.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy
import pyarrow as pa
import pyarrow.compute as pc

from bento_api import BentoSettings

from .changes import (
    DLT_PREFIX,
    LEDGER_OPERATIONS,
    REMOVE_TAG_EVENT,
    _release_arrow_memory,
    _tags,
    classify_mapped,
)
from .config import LedgerOptions
from .keys import COPY_COLUMN, IdenticalRows, base_event_key, explicit_event_key, numbered, set_event_key
from .ledger import (
    CHANGED,
    NEW,
    BlastRadiusExceeded,
    SyncLedger,
    check_blast_radius,
    settle_stale,
    subscriber_fingerprint_v1,
)
from .load_files import count_rows, file_key, read_windows
from .mapping import MappedRow, MappingOptions, map_row
from .operations import resolve_operation
from .policy import UNSUBSCRIBE_EVENT, not_sent, removal_people
from .rows import iter_rows, variant_base
from .runcontext import current_run
from .settings import SINK_BATCH_SIZE
from .subscriber_fingerprint import VERSION as SUBSCRIBER_FINGERPRINT_VERSION
from .values import RowError, field_key


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
    info = _package_info(pipeline, load_id)
    tables = getattr(info.schema, "tables", {}) if info.schema is not None else {}
    out = []
    for job in (job for state in states for job in info.jobs.get(state, [])):
        table = job.job_file_info.table_name
        if not table.startswith(DLT_PREFIX):
            columns = frozenset((tables.get(table) or {}).get("columns", {}) or ())
            out.append((table, str(job.file_path), columns))
    return sorted(out, key=lambda job: (job[0], file_key(job[1])))  # event numbers count in file-id order


def _package_info(pipeline: Any, load_id: str, tries: int = 5) -> Any:
    """dlt's listing of a load package. Jobs move between folders while the load runs (the pre-pass inside
    a plain run reads it beside running jobs), and dlt looks at each file it listed: one that moved away
    meanwhile fails the listing, which is then read again."""
    for _ in range(tries - 1):
        try:
            return pipeline.get_load_package_info(load_id)
        except FileNotFoundError:
            continue
    return pipeline.get_load_package_info(load_id)


def package_rows(pipeline: Any, load_id: str, table_name: str) -> int | None:
    """Rows of `table_name` in the load package's files, whatever state their jobs are in; None if unknown.

    Jobs move between folders while the load runs, so a file may move away between the listing and the
    count: the listing is read again then, a few times at most.
    """
    for _ in range(3):
        try:
            info = pipeline.get_load_package_info(load_id)
            return sum(
                count_rows(str(job.file_path))
                for jobs in info.jobs.values() for job in jobs if job.job_file_info.table_name == table_name
            )
        except FileNotFoundError:
            continue
    return None


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
    plan = PackagePlan(load_id)
    if not options.sync_ledger:
        return plan
    ledger = current_run(pipeline.working_dir).ledgers.ledger(
        options.location(pipeline.working_dir), settings.site_uuid, load_id
    )
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
