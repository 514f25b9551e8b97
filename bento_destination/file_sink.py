"""One load file through the sink: read in windows, map, filter by the ledger, plan, send pipelined.

dlt hands the sink a whole file (`batch_size=0`). For each window of input rows (file_progress.py) the
rows are mapped (`map_rows`), keyed (events), filtered by the sync ledger (changes.BatchChanges), and packed
into requests. A fresh subscribers window read as Arrow is mapped as a whole (arrow_mapping) and filtered on
its emails and fingerprints before any payload dict exists; only the rows to send become dicts. The window's plan is
committed to the load package state before its first request. Requests then go out side by side
(request_pipeline.py); each, once Bento answers, hands its rows to the ledger's group commit and goes on to
the next request; once they are committed it is marked done in the package state and merged into the load's
report, on its own.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any, overload

import numpy
import pyarrow as pa

from bento_api import BentoClient, RequestGate

from .arrow_mapping import map_subscriber_batch
from .changes import BatchChanges
from .file_progress import FileProgress, WindowPlan, ranges, window_sizes
from .keys import COPY_COLUMN, key_events
from .ledger import subscriber_fingerprint_v1
from .load_files import read_windows
from .loadrun import LoadRun
from .mapping import MappedRow, MappingOptions, map_row
from .request_pipeline import RequestPipeline, request_pool, request_slots
from .rows import clean_row, iter_rows
from .runcontext import RunContext
from .send import BatchOutcome, EncodedBody, Item, Sender, add_mapped, pack
from .settings import ENDPOINTS, REQUEST_MAXIMA
from .values import RowError


def map_rows(operation: str, rows: list[dict[str, Any]], options: MappingOptions) -> list[MappedRow | RowError]:
    """Map a window's rows in one call (the place for a vectorized mapper): a MappedRow or the row's error."""
    out: list[MappedRow | RowError] = []
    for row in rows:
        try:
            out.append(map_row(operation, row, options))
        except RowError as error:
            out.append(error)
    return out


@dataclass
class FileLoad:
    """What the sink needs to load one file of one table."""

    path: str
    key: str  # `<table>.<file_id>`
    table: str
    operation: str
    columns: list[str]
    client: BentoClient
    run: LoadRun
    context: RunContext
    progress: FileProgress
    options: MappingOptions
    #: a BatchChanges for a window's rows (None: ledger off), given the outcome its filter counts into
    changes_for: Callable[[BatchOutcome], BatchChanges | None]
    gates: Callable[[str], RequestGate]
    #: the error hook of a failed request (the sink records it and trips the breaker if its budget is spent)
    on_error: Callable[[BaseException, BatchOutcome], None]
    event_keys: str = "none"
    #: the n-th identical event (n >= 2) by input row number (keys.py); rows not here are the first
    copies: dict[int, int] = field(default_factory=dict)
    #: rows the pre-pass rejected already (duplicates.py): neither sent nor counted again
    skip: frozenset[int] = frozenset()
    record_sent_rows: bool = False
    in_flight: int = 8


class WindowRows(Sequence[dict[str, Any]]):
    """A window's rows as dicts, converted from Arrow only if asked for (the Arrow path maps without them)."""

    def __init__(self, window: pa.Table | list[dict[str, Any]]) -> None:
        self.window = window

    @cached_property
    def rows(self) -> list[dict[str, Any]]:
        return list(iter_rows(self.window))  # nulls dropped, variant columns folded (jsonl rows too)

    def __len__(self) -> int:
        return self.window.num_rows if isinstance(self.window, pa.Table) else len(self.window)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self.rows[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)


def windows(load: FileLoad) -> Iterator[tuple[int, int, WindowRows]]:
    """(window number, its first row number, its rows) from the legacy offset on."""
    start = load.progress.legacy_offset
    first = start
    for number, window in enumerate(read_windows(load.path, load.columns, window_sizes(load.progress.schedule), start)):
        rows = WindowRows(window)
        yield number, first, rows
        first += len(rows)


def load_file(load: FileLoad, each_window: Callable[[int, int, Sequence[dict[str, Any]]], bool] | None = None) -> None:
    """Send the file's rows not acknowledged yet; `each_window` handles a window itself (refusals, emails)
    when it returns True. Raises the first failure after the requests in flight finished."""
    pool = load.context.remember(("request_pool", str(load.in_flight)), lambda: request_pool(load.in_flight))
    slots = load.context.remember(("request_slots", str(load.in_flight)), lambda: request_slots(load.in_flight))
    pipeline = RequestPipeline(load.in_flight, pool, slots)
    try:
        for number, first, rows in windows(load):
            if pipeline.failed:
                break
            state = load.progress.window(number)
            if state == 1:
                continue
            load.context.check()
            if each_window is not None and each_window(number, first, rows):
                load.progress.finish(number)
                continue
            plan = state if isinstance(state, WindowPlan) else None
            if plan is None and load.operation == "subscribers" and isinstance(rows.window, pa.Table):
                _Window(load, number, first, [{} for _ in range(len(rows))], None, rows.window).send(pipeline)
            else:  # a resumed window is re-planned item by item, as it was planned
                _Window(load, number, first, rows.rows, plan).send(pipeline)
    finally:
        pipeline.finish()


class _Window:
    """One window of a file: its mapped rows, its plan, and the bookkeeping of its requests."""

    def __init__(
        self, load: FileLoad, number: int, first: int, rows: list[dict[str, Any]], plan: WindowPlan | None,
        source: pa.Table | None = None,
    ) -> None:
        self.load = load
        self.number = number
        self.first = first
        #: the rows as dicts; with `source` (a subscribers window read as Arrow), one empty dict per row that
        #: stands for it (its identity) and is filled with the source row only if a reject needs it
        self.rows = rows
        self.source = source
        self._offsets: dict[int, int] | None = None
        self.plan = plan
        self.lock = threading.Lock()
        self.pending: dict[int, int] = {}  # id(row) -> requests of this window still to answer for it
        self.refused: set[int] = set()
        self.changes: BatchChanges | None = None
        self.bodies: dict[str, EncodedBody] = {}

    def _items(self, outcome: BatchOutcome) -> tuple[list[Item], list[Item]]:
        """Map the window's rows (the planned ones on a resume); events get their numbered keys."""
        load = self.load
        chosen: list[tuple[int, dict[str, Any]]] = []
        for offset, row in enumerate(self.rows):
            index = self.first + offset
            if index in load.skip or (self.plan is not None and not self.plan.kept[offset]):
                continue
            chosen.append((offset, row))
        copies: list[int] = []
        main: list[Item] = []
        derived: list[Item] = []
        numbers = [row.pop(COPY_COLUMN, None) or load.copies.get(self.first + offset, 1) for offset, row in chosen]
        results = map_rows(load.operation, [row for _, row in chosen], load.options)
        for (_, row), mapped, copy in zip(chosen, results, numbers, strict=True):
            outcome.received += 1
            if isinstance(mapped, RowError):
                outcome.reject(mapped.reason, mapped.detail, row)
                continue
            if add_mapped(outcome, row, mapped, main, derived):
                copies.append(int(copy))
        if load.operation == "events":
            outcome.ledger["derived_keys"] += key_events([i.payload for i in main], copies, load.event_keys)
            outcome.ledger["identical_rows"] += sum(1 for c in copies if c > 1)
        return main, derived

    def _arrow_items(self, outcome: BatchOutcome, source: pa.Table) -> tuple[list[Item], list[Item]]:
        """A fresh subscribers window mapped as a whole (arrow_mapping), filtered by the ledger on its emails and
        fingerprints; only the rows to send become payload dicts. Counts as `_items` and the filter would."""
        load = self.load
        chosen = [offset for offset in range(len(self.rows)) if self.first + offset not in load.skip]
        if len(chosen) < len(self.rows):
            source = source.take(pa.array(chosen, pa.int64()))
        mapped = map_subscriber_batch(source, load.options)
        outcome.received += len(chosen)
        failed = sorted(mapped.errors)
        for index, row in zip(failed, mapped.rows(failed), strict=True):
            outcome.reject(*mapped.errors[index], row)
        dropped, reserved, ignored = mapped.notes()
        outcome.dropped |= dropped
        outcome.reserved |= reserved
        outcome.ignored |= ignored
        sendable = mapped.sendable()
        emails = [str(mapped.emails[i]) for i in sendable]
        fingerprints = [str(mapped.fingerprints[i]) for i in sendable]
        self.changes = load.changes_for(outcome)
        keep = list(range(len(sendable)))
        if self.changes is not None:

            def older(indexes: numpy.ndarray[Any, numpy.dtype[numpy.int64]]) -> list[str]:
                payloads, commands = mapped.payloads([sendable[j] for j in indexes.tolist()])
                return [subscriber_fingerprint_v1(p, c) for p, c in zip(payloads, commands, strict=True)]

            unchanged = set(self.changes.unchanged_subscribers(emails, fingerprints, older))
            keep = [j for j in keep if j not in unchanged]
        payloads, commands = mapped.payloads([sendable[j] for j in keep])
        main: list[Item] = []
        derived: list[Item] = []
        pairs: dict[int, tuple[str, str]] = {}
        for j, payload, row_commands in zip(keep, payloads, commands, strict=True):
            row = self.rows[chosen[sendable[j]]]
            pairs[id(row)] = (emails[j], fingerprints[j])
            if payload is not None:
                main.append(Item(payload, row))
            if row_commands:
                derived.extend(Item(command, row, counts_row=payload is None) for command in row_commands)
        if self.changes is not None:
            main, derived = self.changes.adopt(main, derived, pairs)
        return main, derived

    def _fill_rejected(self, outcome: BatchOutcome) -> None:
        """Give rejected rows of an Arrow window their source row (for the reject file), in place."""
        if self.source is None or not outcome.rejects:
            return
        with self.lock:
            if self._offsets is None:
                self._offsets = {id(row): offset for offset, row in enumerate(self.rows)}
            empty = [r.row for r in outcome.rejects if not r.row and id(r.row) in self._offsets]
            offsets = [self._offsets[id(row)] for row in empty]
            if offsets:
                taken = self.source.take(pa.array(offsets, pa.int64())).to_pylist()
                for row, source_row in zip(empty, taken, strict=True):
                    row.update(clean_row(source_row))

    def send(self, pipeline: RequestPipeline) -> None:
        load = self.load
        outcome = BatchOutcome(sink_batch=True)
        resumed = self.plan is not None
        counts = outcome if not resumed else BatchOutcome()  # a resume counts nothing twice
        if self.source is not None:  # a fresh window (resumed ones take the per-row path)
            main, derived = self._arrow_items(outcome, self.source)
            rank: dict[int, int] = {}
        else:
            main, derived = self._items(outcome)
            rank = {id(item): n for n, item in enumerate(main)} | {id(item): n for n, item in enumerate(derived)}
            self.changes = load.changes_for(counts)
            if self.changes is not None:
                main, derived = self.changes.filter(main, derived)
        if resumed:  # the rows were counted when the window was planned; only new refusals count now
            outcome.received = 0
            outcome.rejects.extend(counts.rejects)
            outcome.rejected_by_reason.update(counts.rejected_by_reason)
        if self.plan is None:
            rank = {id(item): n for n, item in enumerate(main)} | {id(item): n for n, item in enumerate(derived)}
            kept_rows = {id(item.row) for item in main + derived}
            kept = numpy.zeros(len(self.rows), numpy.bool_)
            for offset, row in enumerate(self.rows):
                kept[offset] = id(row) in kept_rows
            packed = list(pack(ENDPOINTS[load.operation][1], main, REQUEST_MAXIMA[load.operation]))
            commands = list(pack(ENDPOINTS["commands"][1], derived, REQUEST_MAXIMA["commands"]))
            self.plan = WindowPlan(kept, [len(chunk) for chunk, _ in packed], [len(chunk) for chunk, _ in commands])
            # bodies encoded while packing go out as they are (a resume encodes its requests again)
            self.bodies = {f"m{k}": body for k, (_, body) in enumerate(packed)}
            self.bodies |= {f"d{k}": body for k, (_, body) in enumerate(commands)}
            load.progress.plan(self.number, self.plan)
        going = {id(item.row) for item in main + derived}
        outcome.received = max(0, outcome.received - len(going))  # the others count when their request is done
        load.run.merge(load.table, load.operation, outcome)
        load.context.add_batch(outcome.received, 0)
        requests = self._requests("m", main, self.plan.main, rank)
        requests += self._requests("d", derived, self.plan.derived, rank)
        for _, items in requests:
            for row_id in {id(item.row) for item in items}:
                self.pending[row_id] = self.pending.get(row_id, 0) + 1
        mains: list[Future[None]] = []
        for name, items in requests:
            if name.startswith("m"):
                future = pipeline.submit(partial(self._send, pipeline, name, items, []))
                if future is None:
                    return
                mains.append(future)
            elif pipeline.submit(partial(self._send, pipeline, name, items, mains)) is None:
                return

    def _requests(
        self, kind: str, items: list[Item], sizes: list[int], rank: dict[int, int]
    ) -> list[tuple[str, list[Item]]]:
        """The plan's requests of one kind not done yet, with their items still to send."""
        assert self.plan is not None
        ends = [end for _, end in ranges(sizes)]
        grouped: list[list[Item]] = [[] for _ in ends]
        for item in items:  # one pass: request k holds the planned items ranked in [end of k-1, end of k)
            k = bisect_right(ends, rank[id(item)])
            if k < len(grouped):
                grouped[k].append(item)
        out: list[tuple[str, list[Item]]] = []
        for k, chosen in enumerate(grouped):
            name = f"{kind}{k}"
            if name in self.plan.done:
                continue
            if chosen:
                out.append((name, chosen))
            else:  # every row of it was acknowledged meanwhile (the ledger says so): nothing to send
                self.load.progress.request_done(self.number, name)
        return out

    def _send(self, pipeline: RequestPipeline, name: str, items: list[Item], before: list[Future[None]]) -> None:
        for future in before:  # a row's commands go after its own request (an upsert, then its unsubscribe)
            future.result()
        load = self.load
        outcome = BatchOutcome(sink_batch=False, sent_rows=[] if load.record_sent_rows else None)
        sender = Sender(load.client, outcome, None, load.gates)
        operation = "commands" if name.startswith("d") else load.operation
        try:
            sender.send_request(operation, items, f"{load.key}:{self.number}:{name}", name.startswith("d"),
                                self.bodies.pop(name, None))
        except BaseException as error:
            self._fill_rejected(outcome)
            load.on_error(error, outcome)
            raise
        self._fill_rejected(outcome)
        with self.lock:
            self.refused |= {id(record.row) for record in outcome.rejects}
            finished = []
            for row_id in {id(item.row) for item in items}:
                self.pending[row_id] -= 1
                if not self.pending[row_id]:
                    finished.append(row_id)
            refused = set(self.refused)

        number = self.number  # not `self`: a window waiting for its commits would hold all its rows meanwhile

        def settle() -> None:  # only once the request's rows are in the ledger: a crash loses no acknowledgement
            load.progress.request_done(number, name)
            outcome.received = len(finished)  # rows whose every request is answered
            load.run.merge(load.table, load.operation, outcome)
            load.context.add_batch(outcome.received, outcome.sent)

        if self.changes is not None and finished:
            by_id = {id(item.row): item.row for item in items}
            # committed on the ledger's thread, grouped with other requests' rows; this thread sends the next
            pipeline.after(self.changes.acknowledge_rows_later([by_id[row_id] for row_id in finished], refused), settle)
        else:
            settle()
