"""Subscribers sharing an email within one input keep one row, decided over the whole input before sending.

Subscribers are upserted by email, so two rows of one input with one email (by the project's rule: trimmed,
case-insensitive) would both be sent and Bento would keep whichever it applied last: a different one on
every run, since a SELECT without ORDER BY, or parallel load files, has no order. `sync()` therefore reads
the whole normalized load package before it loads it (`prepare_duplicates`), and the dry run its input:
of the rows sharing an email one is kept, chosen by `winner_rank`, which looks only at the rows' content;
the others are rejected as `duplicate_email`, naming the kept row, and listed (by file and row number) in
`<load_id>.skip.json` beside the load's report, so the sink skips them; dlt's files are left as they are.

A plain `pipeline.run` has no such pre-pass: it sends every row (Bento keeps the last it applies).
Identical events are the other rule that needs the whole input; the sync ledger's pre-pass numbers them
(prepass.prepare_package, keys.py).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

import numpy
import pyarrow as pa

from .ledger import canonical_json, fingerprint
from .load_files import file_key
from .loadrun import LoadRun
from .mapping import MappedRow, MappingOptions, map_row
from .prepass import _package_jobs, _read_batches, _without_dlt_columns
from .rows import iter_rows, variant_base
from .send import BatchOutcome
from .settings import REJECTS_DIRNAME
from .values import RowError, check_email, field_key

DUPLICATE_EMAIL: Final = "duplicate_email"


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


def email_hash(email: str) -> int:
    """A 32-bit hash of an email, never 0 (0 stands for "no email"). 32 bits, not 64: ten million rows take
    40 MB, not 80, and a collision only costs a look at the rows (about 12,000 pairs among 10,000,000)."""
    return (hash(email) & 0xFFFFFFFF) or 1


class EmailCounts:
    """Pass one over an input: how often each email occurs, as 32-bit hashes (`email_hash`).

    Holds one array of hashes per `add` (the same array `add` returns, so a caller keeping them per file holds
    them once): 40 MB at 10,000,000 rows. The repeated ones are found a sixteenth of the hash range at a
    time (by the top four bits), each part gathered from every array and sorted on its own, so finding them
    adds about 5 MB, not a second copy of everything: sorting one concatenation of all hashes put a
    ten-million-row first sync's pre-pass 80 MB above its extract (BENCHMARKS.md, ten million rows).
    """

    #: the hash range is sorted in 2**PART_BITS parts, one at a time (by the hashes' top bits)
    PART_BITS: Final = 4

    def __init__(self) -> None:
        self._chunks: list[numpy.ndarray[Any, numpy.dtype[numpy.uint32]]] = []
        self._repeated: set[int] | None = None

    def add(self, emails: Iterable[str | None]) -> numpy.ndarray[Any, numpy.dtype[numpy.uint32]]:
        """Hashes of these rows' emails (0 for none); kept to find the repeated ones."""
        hashes = numpy.fromiter((email_hash(e) if e is not None else 0 for e in emails), numpy.uint32)
        self._chunks.append(hashes)
        return hashes

    def repeated(self) -> set[int]:
        """Hashes that occur more than once (computed once, after every `add`)."""
        if self._repeated is None:
            shift = numpy.uint32(32 - self.PART_BITS)
            found: set[int] = set()
            for part in range(1 << self.PART_BITS):
                mine = [chunk[(chunk >> shift) == part] for chunk in self._chunks]
                gathered = numpy.concatenate(mine) if mine else numpy.zeros(0, numpy.uint32)
                del mine
                gathered.sort()
                again = gathered[1:][gathered[1:] == gathered[:-1]]
                found.update(int(h) for h in numpy.unique(again).tolist() if h)
            self._chunks = []
            self._repeated = found
        return self._repeated

    def may_repeat(self, email: str | None) -> bool:
        return email is not None and email_hash(email) in self.repeated()


# --------------------------------------------------------------------------- the pre-pass over a load package


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
        if isinstance(batch, pa.RecordBatch | pa.Table):
            batch = batch.select(list(_email_columns(tuple(batch.schema.names))))
        for row in iter_rows(_without_dlt_columns(batch)):
            yield email_of(row)


def _duplicate_emails(
    paths: list[str], options: MappingOptions
) -> tuple[dict[str, set[int]], list[tuple[Candidate, Candidate, int]], list[dict[str, Any]]]:
    """Losers per file, (loser, kept, count) triples and the losers' rows, over every file of one table.

    Pass one hashes every row's email; pass two maps only the rows whose hash occurs more than once.
    """
    counts = EmailCounts()
    per_file: dict[str, numpy.ndarray[Any, numpy.dtype[numpy.uint32]]] = {}
    for path in paths:
        per_file[path] = counts.add(_emails_of(path))
    repeated = counts.repeated()
    if not repeated:
        return {}, [], []
    wanted = numpy.fromiter(repeated, numpy.uint32)
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
    for loser, _, _ in verdicts:
        path, index = loser.where
        losers[path].add(index)
    return losers, verdicts, [rows[loser.where] for loser, _, _ in verdicts]


SKIP_SUFFIX: Final = ".skip.json"


def _skip_path(folder: Path, load_id: str) -> Path:
    return folder / f"{load_id}{SKIP_SUFFIX}"


def write_skips(folder: Path, load_id: str, skips: dict[str, list[int]]) -> None:
    """Record the rows the sink must skip (file key -> row numbers); written whole or not at all."""
    folder.mkdir(parents=True, exist_ok=True)
    path = _skip_path(folder, load_id)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(skips, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_skips(folder: Path, load_id: str, key: str) -> frozenset[int]:
    """The row numbers of one load file (`<table>.<file_id>`) the pre-pass rejected already."""
    path = _skip_path(folder, load_id)
    if not path.exists():
        return frozenset()
    rows: list[int] = json.loads(path.read_text(encoding="utf-8")).get(key, [])
    return frozenset(rows)


def prepare_duplicates(
    pipeline: Any, load_id: str, resolve: Callable[[str], str | None], allow_secret_columns: bool = False,
    folder: Path | None = None,
) -> dict[str, BatchOutcome]:
    """Keep one row per email in each subscriber table of a normalized package; the others are rejected.

    Call between normalize and load. Returns, per table with duplicates, the rejected rows as a BatchOutcome
    for the load's report; the rows to skip go to `folder` (the pipeline's rejects folder) for the sink.
    """
    options = MappingOptions(allow_secret_columns)
    tables: dict[str, list[str]] = defaultdict(list)
    for table, path, _ in _package_jobs(pipeline, load_id):
        if resolve(table) == "subscribers":
            tables[table].append(path)
    out: dict[str, BatchOutcome] = {}
    skips: dict[str, list[int]] = {}
    for table, paths in sorted(tables.items()):
        losers, verdicts, rows = _duplicate_emails(sorted(paths), options)
        if not verdicts:
            continue
        outcome = out[table] = BatchOutcome(received=len(verdicts))
        for (loser, kept, count), row in zip(verdicts, rows, strict=True):
            outcome.reject(DUPLICATE_EMAIL, duplicate_detail(loser, kept, count), row)
        for path, indices in losers.items():
            skips[file_key(path)] = sorted(indices)
    if skips:
        write_skips(folder or Path(pipeline.working_dir) / REJECTS_DIRNAME, load_id, skips)
    return out


def record_duplicates(outcomes: dict[str, BatchOutcome], run: LoadRun, resolve: Callable[[str], str | None]) -> None:
    """Count the pre-pass's duplicate_email rejects in the load's report and rejects file."""
    for table, outcome in sorted(outcomes.items()):
        run.merge(table, resolve(table), outcome)
