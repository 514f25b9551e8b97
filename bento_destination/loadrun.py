"""The per-load tally in this process: merges each finished sink batch into the report and the reject file.

dlt calls the sink once per batch from several threads and never says when a load ends, so the report
is rewritten after every batch (it is small) and rejects are appended as they are found. A resumed load
(a pending package loaded by a later process) continues the report already on disk.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bento_api import RequestStats

from .mapping import redact_row
from .rejects import RejectWriter
from .report import ALWAYS_FATAL, LoadReport, TableReport, read_report, two_shares
from .runcontext import current_run
from .send import BatchOutcome
from .sent_rows import SentWriter
from .values import safe_for_file

MAX_ERRORS_KEPT = 20
logger = logging.getLogger("bento_destination")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class LoadRun:
    """Report and rejects of one load (thread-safe)."""

    def __init__(
        self, folder: Path, load_id: str, pipeline_name: str, threshold: float, redact: Callable[[str], str]
    ) -> None:
        self.folder = folder
        self.load_id = load_id
        self._lock = threading.Lock()
        self._redact = redact
        self._writer = RejectWriter(folder, load_id, redact)
        self._sent = SentWriter(folder, load_id)
        existing = read_report(folder.parent, load_id)
        self.report = existing or LoadReport(load_id=load_id, pipeline_name=pipeline_name, reject_threshold=threshold)
        self.report.reject_threshold = threshold
        if not self.report.started_at:
            self.report.started_at = _now()
        self._elapsed_before = self.report.elapsed_seconds
        self._session_start = time.monotonic()
        self._warned: set[str] = set()
        #: per table, the rows this load holds at most (its files plus what a pre-pass counted before them)
        self._load_rows: dict[str, int] = {}
        if existing is None:
            with self._lock:
                self._save()  # from the first batch on, progress readers see a load that has started

    def expect(self, table: str, count_files: Callable[[], int | None]) -> None:
        """Learn, once per table, how many rows the load holds, so that the warning below uses the share of
        the whole load: the first batches may be all rejects (4 of 4) in a load that rejects 0.1%.

        `count_files` counts the table's rows in the package's files; rows a pre-pass already counted (the
        ledger's unchanged rows, duplicates, NaN) are no longer in them. A resumed load counts rows of
        earlier sessions twice: the share is then understated, so the warning may come late, never wrongly.
        """
        with self._lock:
            if table in self._load_rows:
                return
            before = self.report.tables[table].received if table in self.report.tables else 0
        in_files = count_files()
        if in_files is None:
            return  # unknown: no warning rather than a wrong one (check_run still judges the load)
        with self._lock:
            self._load_rows.setdefault(table, before + in_files)

    def _load_share(self, table: TableReport) -> float | None:
        """Rejected rows over the rows of the whole load (a lower bound of the final share); None if unknown."""
        rows = self._load_rows.get(table.table)
        if rows is None:
            return None
        rows = max(rows, table.received)
        return table.rejected / rows if rows else 0.0

    def _table(self, table: str, operation: str | None) -> TableReport:
        report = self.report.tables.get(table)
        if report is None:
            report = self.report.tables[table] = TableReport(table=table, operation=operation)
        elif report.operation is None:  # first seen before extract, without the destination's table_operations
            report.operation = operation
        return report

    def _add_stats(self, report: TableReport, stats: RequestStats, started: float | None = None) -> None:
        if started is not None:
            report.busy_seconds = round(report.busy_seconds + time.monotonic() - started, 3)
        counts = stats.as_dict()
        report.requests += int(counts["requests"])
        report.retries += int(counts["retries"])
        report.rate_limited += int(counts["rate_limited"])
        report.server_errors += int(counts["server_errors"])
        report.waited_seconds = round(report.waited_seconds + counts["waited_seconds"], 3)

    def _save(self) -> None:
        self.report.elapsed_seconds = round(self._elapsed_before + time.monotonic() - self._session_start, 3)
        self.report.updated_at = _now()
        self.report.save(self.folder)

    def merge(self, table: str, operation: str | None, outcome: BatchOutcome) -> None:
        """Add a finished sink batch: counts, request stats, and its rejected rows (secrets removed)."""
        records = [
            {
                "load_id": self.load_id,
                "table": table,
                "operation": operation,
                "reason": r.reason,
                "detail": r.detail,
                "row": safe_for_file(redact_row(r.row)),
                **({"batch": r.batch} if r.batch else {}),
            }
            for r in outcome.rejects
        ]
        with self._lock:
            self._writer.write(records)
            if outcome.sent_rows:
                self._sent.write(table, operation, outcome.sent_rows)
            t = self._table(table, operation)
            t.batches += int(outcome.sink_batch)
            t.received += outcome.received
            t.sent += outcome.sent
            t.commands_sent += outcome.commands_sent
            t.already_sent += outcome.already_sent
            for name, count in outcome.ledger.items():  # sync ledger: new, changed, unchanged, ...
                setattr(t, name, getattr(t, name) + count)
            t.failed_by_bento += outcome.failed_by_bento
            t.rows_in_partly_failed_batches += outcome.rows_in_partly_failed_batches
            for reason, count in outcome.rejected_by_reason.items():
                t.rejected_by_reason[reason] = t.rejected_by_reason.get(reason, 0) + count
            t.rejected = sum(t.rejected_by_reason.values())
            t.dropped_secret_columns = sorted(set(t.dropped_secret_columns) | outcome.dropped)
            t.reserved_columns = sorted(set(t.reserved_columns) | outcome.reserved)
            t.ignored_columns = sorted(set(t.ignored_columns) | outcome.ignored)
            self._add_stats(t, outcome.stats, outcome.started)
            self._save()
            warning = self._warning(t)
        logger.info(
            "bento %s: batch of %d rows: %d sent, %d rejected (load %s)",
            table, outcome.received, outcome.sent, outcome.rejected, self.load_id,
        )
        if warning and outcome.sink_batch and table not in self._warned:
            # a plain pipeline.run() does not call check_run: say it here, once per table and load
            self._warned.add(table)
            logger.warning("bento load %s: %s; check_run raises on this", self.load_id, warning)

    def _warning(self, t: TableReport) -> str | None:
        """The table's problem, once it holds for the whole load whatever the remaining batches do."""
        problems = [p for p in self.report.problems() if f"`{t.table}`" in p]
        if not problems:
            return None
        if ALWAYS_FATAL & t.rejected_by_reason.keys():
            return problems[0]
        share = self._load_share(t)
        if share is None or share <= self.report.reject_threshold:
            return None  # past the threshold in the batches so far, not (yet) over the whole load
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(t.rejected_by_reason.items()))
        rows = max(self._load_rows[t.table], t.received)
        shown, threshold = two_shares(share, self.report.reject_threshold)
        return (f"table `{t.table}`: {t.rejected} of the load's {rows} rows rejected ({shown} at least, "
                f"threshold {threshold}; {reasons})")

    def record_error(self, table: str, operation: str | None, message: str, stats: RequestStats) -> None:
        """A batch that raised: its requests happened, its rows will be counted when dlt retries it."""
        with self._lock:
            t = self._table(table, operation)
            self._add_stats(t, stats)
            if len(self.report.errors) < MAX_ERRORS_KEPT:
                self.report.errors.append(self._redact(f"{table}: {message}"))
            self._save()

    def credentials_checked(self) -> None:
        with self._lock:
            self.report.credential_checks += 1
            self._save()


def load_run(
    folder: Path, load_id: str, pipeline_name: str, threshold: float, redact: Callable[[str], str]
) -> LoadRun:
    """The run's LoadRun for this load (created on the first batch, or by rejects found before extract).

    Kept in the run context of the pipeline's folder (`folder` is its rejects folder). The threshold is the
    latest caller's: the sink's own setting wins over one given at extract time.
    """
    run: LoadRun = current_run(folder.parent).remember(
        ("load_run", str(folder), load_id), lambda: LoadRun(folder, load_id, pipeline_name, threshold, redact)
    )
    run.report.reject_threshold = threshold
    return run
