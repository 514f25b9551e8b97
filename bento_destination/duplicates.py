"""Rows that repeat within one input, decided over the whole input before the first request.

dlt hands the sink one batch at a time, from several load files in parallel, in no particular order (a
SELECT without ORDER BY, or parallel files, has none). Two rules need the whole input, so `sync()` applies
them to the normalized load package before it loads it (`prepare_repeats`), and the dry run applies them
to the input it reads:

- **identical events** get distinct keys: the n-th event with a given derived key gets `key#n` (keys.py).
  The number is written into the load files (column `keys.COPY_COLUMN`), so a resumed load sends the same
  keys; the table is marked (hint `REPEATS_HINT`) so the sink knows its derived keys were counted here;
- **subscribers sharing an email** (by the project's email rule: trimmed, case-insensitive) keep one row,
  chosen by `winner_rank`, which looks only at the rows' content, never at their order; the others are
  removed from the load files and rejected as `duplicate_email`, naming the kept row.

A plain `pipeline.run` has no such pre-pass: identical events are then numbered within each sink batch
(1,000 rows) only, and subscribers sharing an email are all sent (Bento keeps whichever it applies last).
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy
import pyarrow as pa
import pyarrow.parquet as pq

from .changes import _file_rows, _package_jobs, _read_batches, _rewrite, _without_dlt_columns
from .keys import COPY_COLUMN, IdenticalRows, base_event_key, explicit_event_key
from .ledger import canonical_json, fingerprint
from .loadrun import LoadRun
from .mapping import MappedRow, MappingOptions, map_row
from .rows import iter_rows, variant_base
from .send import BatchOutcome
from .settings import SINK_BATCH_SIZE
from .values import RowError, check_email, field_key

DUPLICATE_EMAIL: Final = "duplicate_email"
#: table hint in the load package's schema: the pre-pass numbered this event table and counted its keys
REPEATS_HINT: Final = "x-bento-repeats"


# --------------------------------------------------------------------------- subscribers sharing an email


@lru_cache(maxsize=1024)
def _email_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for c in columns if field_key(variant_base(c) or c) == "email")


def email_of(row: Mapping[str, Any]) -> str | None:
    """The row's email by the project's rule (check_email), or None if it has none the sink would send."""
    columns = _email_columns(tuple(row))
    if len(columns) != 1:
        return None  # missing, or two columns meaning `email`: the sink rejects the row with its reason
    try:
        return check_email(row[columns[0]], columns[0])
    except RowError:
        return None


def _canonical(value: Any) -> str:
    try:
        return canonical_json(value)
    except (TypeError, ValueError):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


@dataclass(frozen=True)
class Candidate:
    """A valid subscriber row whose email another row of the input shares."""

    email: str
    #: the email as the row wrote it, to name the kept row
    original: str
    unsubscribes: bool
    values: int
    content: str
    raw: str
    #: where the row is (file and row number, or position): used only to drop it, never to choose
    where: Any

    @property
    def label(self) -> str:
        """How a reject names this row: its email as written and a digest of its content (stable across runs)."""
        return f"`{self.original}` (row {fingerprint({'row': self.raw})[:10]})"


def candidate(row: Mapping[str, Any], mapped: MappedRow, where: Any) -> Candidate:
    payload = mapped.payload or {}
    email = str(payload.get("email") or mapped.commands[0]["email"])
    column = _email_columns(tuple(row))[0]
    return Candidate(
        email=email,
        original=str(row[column]),
        unsubscribes=bool(mapped.commands),
        values=max(0, len(payload) - 1) + len(mapped.commands),
        content=_canonical({"p": mapped.payload, "c": mapped.commands}),
        raw=_canonical(dict(sorted(row.items()))),
        where=where,
    )


def winner_rank(row: Candidate) -> tuple[bool, int, str, str]:
    """Of the rows sharing an email, the greatest wins: a row that unsubscribes (consent is never lost to a
    duplicate), then the row with the most values (fields, tags), then the greatest mapped content as
    sorted JSON, then the greatest original row as sorted JSON. Only content counts, never row order."""
    return (row.unsubscribes, row.values, row.content, row.raw)


def choose(candidates: Iterable[Candidate]) -> list[tuple[Candidate, Candidate, int]]:
    """(rejected row, kept row, rows sharing the email) for every email more than one valid row holds."""
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for row in candidates:
        groups[row.email].append(row)
    out: list[tuple[Candidate, Candidate, int]] = []
    for rows in groups.values():
        if len(rows) < 2:
            continue
        kept = max(rows, key=winner_rank)  # rows equal in rank are identical: which one is kept does not matter
        out.extend((row, kept, len(rows)) for row in rows if row is not kept)
    return out


def duplicate_detail(rejected: Candidate, kept: Candidate, count: int) -> str:
    return (
        f"{count} rows of this input have the email {rejected.email!r} (emails match trimmed and "
        f"case-insensitive); kept {kept.label}, not this row {rejected.label}. The kept row is the one that "
        "unsubscribes, else the one with the most values, else the greatest content (see docs/destination.md)"
    )


class EmailCounts:
    """Pass one over an input: how often each email occurs, as 64-bit hashes (a collision only costs a look)."""

    def __init__(self) -> None:
        self._chunks: list[numpy.ndarray[Any, numpy.dtype[numpy.int64]]] = []
        self._repeated: set[int] | None = None

    def add(self, emails: Iterable[str | None]) -> numpy.ndarray[Any, numpy.dtype[numpy.int64]]:
        """Hashes of these rows' emails (0 for none); kept to find the repeated ones."""
        hashes = numpy.fromiter((hash(e) if e is not None else 0 for e in emails), numpy.int64)
        self._chunks.append(hashes[hashes != 0])
        return hashes

    def repeated(self) -> set[int]:
        """Hashes that occur more than once (computed once, after every `add`)."""
        if self._repeated is None:
            everything = numpy.concatenate(self._chunks) if self._chunks else numpy.zeros(0, numpy.int64)
            values, counts = numpy.unique(everything, return_counts=True)
            self._repeated = set(values[counts > 1].tolist())
            self._chunks = []
        return self._repeated

    def may_repeat(self, email: str | None) -> bool:
        return email is not None and hash(email) in self.repeated()


# --------------------------------------------------------------------------- the pre-pass over a load package


@dataclass
class RepeatsPlan:
    """What the pre-pass found in one load package, per table."""

    #: events whose key was derived, and of them the rows numbered `#n` (n >= 2)
    derived_keys: Counter[str] = field(default_factory=Counter)
    identical_rows: Counter[str] = field(default_factory=Counter)
    #: subscriber rows rejected as duplicate_email, with their outcome (rows and reasons) per table
    duplicates: dict[str, BatchOutcome] = field(default_factory=dict)


def _rows_of(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, row as the sink sees it) of a load file."""
    index = 0
    for batch in _read_batches(path):
        for row in iter_rows(_without_dlt_columns(batch)):
            yield index, row
            index += 1


def _emails_of(path: str) -> Iterator[str | None]:
    """Each row's email (None if it has none the sink would send); Arrow files read only their email columns."""
    for batch in _read_batches(path):
        if isinstance(batch, pa.RecordBatch):
            batch = batch.select(list(_email_columns(tuple(batch.schema.names))))
        for row in iter_rows(_without_dlt_columns(batch)):
            yield email_of(row)


def _number_events(paths: list[str], options: MappingOptions) -> tuple[dict[str, dict[int, int]], int]:
    """Occurrence numbers >= 2 per file ({row: n}) over every file of one event table; and the derived keys."""
    counter = IdenticalRows()
    copies: dict[str, dict[int, int]] = {}
    derived = 0
    for path in paths:
        found: dict[int, int] = {}
        rows: list[int] = []
        bases: list[str] = []
        for index, row in _rows_of(path):
            row.pop(COPY_COLUMN, None)
            try:
                mapped = map_row("events", row, options)
            except RowError:
                continue
            payload = mapped.payload
            if payload is None or explicit_event_key(payload) is not None:
                continue
            derived += 1
            rows.append(index)
            bases.append(base_event_key(payload))
            if len(bases) >= SINK_BATCH_SIZE:
                _keep_numbers(counter, rows, bases, found)
        _keep_numbers(counter, rows, bases, found)
        if found:
            copies[path] = found
    return copies, derived


def _keep_numbers(counter: IdenticalRows, rows: list[int], bases: list[str], found: dict[int, int]) -> None:
    """Number a chunk of base keys; keep the rows numbered 2 or more; empty the chunk."""
    for index, n in zip(rows, counter.occurrences(bases).tolist(), strict=True):
        if n > 1:
            found[index] = n
    rows.clear()
    bases.clear()


def _duplicate_emails(
    paths: list[str], options: MappingOptions
) -> tuple[dict[str, set[int]], list[tuple[Candidate, Candidate, int]], dict[int, dict[str, Any]]]:
    """Losers per file, (loser, kept, count) triples and the losers' rows, over every file of one table."""
    counts = EmailCounts()
    per_file: dict[str, numpy.ndarray[Any, numpy.dtype[numpy.int64]]] = {}
    for path in paths:
        per_file[path] = counts.add(_emails_of(path))
    repeated = counts.repeated()
    if not repeated:
        return {}, [], {}
    wanted = numpy.fromiter(repeated, numpy.int64)
    candidates: list[Candidate] = []
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for path, hashes in per_file.items():
        look = set(numpy.flatnonzero(numpy.isin(hashes, wanted)).tolist())
        if not look:
            continue
        for index, row in _rows_of(path):
            if index not in look:
                continue
            try:
                mapped = map_row("subscribers", row, options)
            except RowError:
                continue  # the sink rejects it with its own reason
            candidates.append(candidate(row, mapped, (path, index)))
            rows[(path, index)] = row
    verdicts = choose(candidates)
    losers: dict[str, set[int]] = defaultdict(set)
    rejected_rows: dict[int, dict[str, Any]] = {}
    for n, (loser, _, _) in enumerate(verdicts):
        path, index = loser.where
        losers[path].add(index)
        rejected_rows[n] = rows[loser.where]
    return losers, verdicts, rejected_rows


def _add_copy_column(path: str, copies: dict[int, int]) -> None:
    """Rewrite a load file with the numbers of its identical rows in COPY_COLUMN (beside it, then moved over it)."""
    from dlt.common import json as dlt_json

    tmp = f"{path}.bento-repeats"
    start = 0
    try:
        if path.endswith(".parquet"):
            with pq.ParquetFile(path) as reader:
                schema = reader.schema_arrow
                if COPY_COLUMN in schema.names:
                    schema = schema.remove(schema.get_field_index(COPY_COLUMN))
                with pq.ParquetWriter(tmp, schema.append(pa.field(COPY_COLUMN, pa.int64()))) as writer:
                    for batch in reader.iter_batches(batch_size=SINK_BATCH_SIZE * 10):
                        if COPY_COLUMN in batch.schema.names:
                            batch = batch.drop_columns([COPY_COLUMN])
                        numbers = [copies.get(start + i) for i in range(batch.num_rows)]
                        start += batch.num_rows
                        writer.write_batch(batch.append_column(COPY_COLUMN, pa.array(numbers, pa.int64())))
        else:
            with open(tmp, "wb") as f:
                for batch in _read_batches(path):
                    out = []
                    for row in batch:
                        row = {k: v for k, v in row.items() if k != COPY_COLUMN}
                        if start in copies:
                            row[COPY_COLUMN] = copies[start]
                        start += 1
                        out.append(row)
                    if out:
                        dlt_json.typed_dump(out, f)
                        f.write(b"\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def record_repeats(plan: RepeatsPlan, run: LoadRun, table_operations: dict[str, str] | None) -> None:
    """Count in the load's report the derived keys and the duplicate_email rejects the pre-pass decided."""
    from .sink import resolve_operation

    for table in sorted(set(plan.derived_keys) | set(plan.duplicates)):
        outcome = plan.duplicates.get(table) or BatchOutcome()
        if plan.derived_keys[table]:
            outcome.ledger["derived_keys"] += plan.derived_keys[table]
        if plan.identical_rows[table]:
            outcome.ledger["identical_rows"] += plan.identical_rows[table]
        if outcome.received or outcome.ledger:
            run.merge(table, resolve_operation(table, table_operations), outcome)


def _save_schema(pipeline: Any, load_id: str, schema: Any) -> None:
    """Write the package's schema back (the loader reads it from the package when the load starts)."""
    from dlt.common import json as dlt_json

    info = pipeline.get_load_package_info(load_id)
    path = Path(info.package_path) / "schema.json"
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(dlt_json.dumps(schema.to_dict()), encoding="utf-8")
    os.replace(tmp, path)


def prepare_repeats(
    pipeline: Any,
    load_id: str,
    resolve: Callable[[str], str | None],
    event_keys: str,
    allow_secret_columns: bool = False,
) -> RepeatsPlan:
    """Number identical events and keep one subscriber row per email over a whole normalized package.

    Call between normalize and load (before the sync ledger's pre-pass, which then sees the numbered keys
    and no duplicate emails). `resolve` gives a table's operation. Reads each event and subscriber file;
    rewrites only files with identical events (and every file of their table, so each holds the column)
    or with duplicate emails.
    """
    plan = RepeatsPlan()
    options = MappingOptions(allow_secret_columns)
    tables: dict[str, list[str]] = defaultdict(list)
    operations: dict[str, str] = {}
    for table, path, _ in _package_jobs(pipeline, load_id):
        operation = resolve(table)
        if operation == "subscribers" or (operation == "events" and event_keys == "derived"):
            tables[table].append(path)
            operations[table] = operation
    if not tables:
        return plan
    schema = pipeline.get_load_package_info(load_id).schema
    numbered = False
    for table, paths in sorted(tables.items()):
        paths.sort()
        if operations[table] == "events":
            copies, derived = _number_events(paths, options)
            plan.derived_keys[table] = derived
            plan.identical_rows[table] = sum(len(found) for found in copies.values())
            columns = schema.tables[table]["columns"]
            if copies:
                for path in paths:
                    _add_copy_column(path, copies.get(path, {}))
                columns[COPY_COLUMN] = {"name": COPY_COLUMN, "data_type": "bigint", "nullable": True}
            schema.tables[table][REPEATS_HINT] = True
            numbered = True
            continue
        losers, verdicts, rows = _duplicate_emails(paths, options)
        if not verdicts:
            continue
        outcome = plan.duplicates[table] = BatchOutcome(received=len(verdicts))
        for n, (loser, kept, count) in enumerate(verdicts):
            outcome.reject(DUPLICATE_EMAIL, duplicate_detail(loser, kept, count), rows[n])
        for path, indices in losers.items():
            keep = numpy.ones(_file_rows(path), numpy.bool_)
            keep[sorted(indices)] = False
            _rewrite(path, keep)
    if numbered:
        _save_schema(pipeline, load_id, schema)
    return plan
