"""Progress lines on stderr, the same for `sync` and `extract`: `progress: ...`, every few seconds, and a last
line when the work ends (100% for a sync that finished).

A sync's time left comes from the rate budget (rows left -> requests left -> minutes at requests/min, or
emails at emails/min), not from the rows per second seen so far: the first batches wait for the pre-pass
and the credentials check, so an observed rate overstates the time left many times over. Long waits for
the budget ("waiting for the stats budget: next request in 1m52s") are shown as notes too.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dlt.common.runtime.collector import Collector

from bento_api import Budgets
from bento_api.pacing import format_wait
from bento_api.pacing import logger as pacing_logger
from bento_destination import LoadReport, load_ids, read_report
from bento_destination.settings import REQUEST_MAXIMA

from .cli_common import Console

#: seconds between progress lines
PROGRESS_PERIOD = 2.0
#: a line that says the same as the previous one is repeated only this often (seconds): a sign of life
REPEAT_PERIOD = 30.0
#: dlt's counters of the normalize and load steps that the lines show
STEP_COUNTERS = ("Files", "Items", "Jobs")


def seconds_left(rows_left: int, operation: str, budgets: Budgets) -> float:
    """Time the rows left take at the budget: emails at the emails pace, other rows by full requests."""
    if rows_left <= 0:
        return 0.0
    if operation == "emails":
        return rows_left * 60.0 / budgets.emails_per_minute
    requests = math.ceil(rows_left / REQUEST_MAXIMA.get(operation, 1))
    return requests * 60.0 / budgets.requests_per_minute


def sync_line(report: LoadReport, total: int, operation: str, budgets: Budgets) -> str:
    """`progress: 2000 of 3004 rows done (67%): sent 2000, rejected 4; about 1s left at 60 requests/min`."""
    totals = report.totals()
    done, sent, rejected = int(totals["received"]), int(totals["sent"]), int(totals["rejected"])
    shown_total = max(total, done)
    share = f" ({min(done / shown_total, 1.0):.0%})" if shown_total else ""
    line = f"progress: {done} of {shown_total} rows done{share}: sent {sent}, rejected {rejected}"
    if done < shown_total:
        pace = (f"{budgets.emails_per_minute:g} emails/min" if operation == "emails"
                else f"{budgets.requests_per_minute:g} requests/min")
        line += f"; about {format_wait(seconds_left(shown_total - done, operation, budgets))} left at {pace}"
    return line


class ReportProgress:
    """Prints a sync's rows done of total, from the destination's report, while the load runs and once at its end.

    The sink rewrites `<working_dir>/bento_rejects/<load_id>.report.json` after every batch, so a thread
    reading it sees real progress without any hook into the sink.
    """

    def __init__(
        self, working_dir: Path, known: set[str], total: int, note: Callable[[str], None], operation: str,
        budgets: Budgets, period: float = PROGRESS_PERIOD,
    ) -> None:
        self._working_dir = working_dir
        self._known = known
        self._total = total
        self._note = note
        self._operation = operation
        self._budgets = budgets
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bento-sync-progress", daemon=True)
        self._said = ""
        self._said_at = 0.0

    def __enter__(self) -> ReportProgress:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        report = self._newest()
        if report is not None and exc_type is None:  # the last line: where the load ended (100% when all done)
            self._say(sync_line(report, self._total, self._operation, self._budgets), repeat=False)

    def _say(self, line: str, repeat: bool = True) -> None:
        now = time.monotonic()
        if line != self._said or (repeat and now - self._said_at >= REPEAT_PERIOD):
            self._note(line)
            self._said, self._said_at = line, now

    def _newest(self) -> LoadReport | None:
        fresh = [lid for lid in load_ids(self._working_dir) if lid not in self._known]
        return read_report(self._working_dir, fresh[-1]) if fresh else None

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            report = self._newest()
            if report is not None:
                self._say(sync_line(report, self._total, self._operation, self._budgets))


class ExtractProgress(Collector):
    """dlt's collector for `extract`, printing `progress:` lines like a sync instead of dlt's multi-line block.

    dlt counts extracted rows per table (`update(table, inc)`) and files and jobs in the later steps; the
    lines say the rows read so far, then one line per finished step.
    """

    def __init__(self, note: Callable[[str], None], period: float = PROGRESS_PERIOD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.step = ""
        self._note = note
        self._period = period
        self._clock = clock
        self._rows: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self._totals: dict[str, int] = {}
        self._last = 0.0
        self._started = 0.0
        self._last_done = ""
        self._failed = False

    def update(self, name: str, inc: int = 1, total: int | None = None, inc_total: int | None = None,
               message: str | None = None, label: str | None = None) -> None:
        if label:
            return
        if total is not None:
            self._totals[name] = total
        if self._step_name() == "extract" and name != "Resources" and not name.startswith("_dlt"):
            self._rows[name] = self._rows.get(name, 0) + inc
        elif name in STEP_COUNTERS:  # files normalized, load jobs; not the per-table rows counted again
            self._counters[name] = self._counters.get(name, 0) + inc
        now = self._clock()
        if now - self._last >= self._period:
            self._last = now
            self._note(self._line(done=False))

    def _line(self, done: bool) -> str:
        step = self._step_name()
        took = f" in {self._clock() - self._started:.1f}s" if done else ""
        if step == "extract":
            rows = sum(self._rows.values())
            tables = ", ".join(f"{name} {count}" for name, count in sorted(self._rows.items()))
            return f"progress: extract{' done' if done else ''}{took}: {rows} rows read" + (
                f" ({tables})" if tables else "")
        counted = ", ".join(
            f"{count}{f' of {self._totals[name]}' if count <= self._totals.get(name, -1) else ''} {name.lower()}"
            for name, count in sorted(self._counters.items())
        )
        return f"progress: {step}{' done' if done else ''}{took}" + (f": {counted}" if counted else "")

    def _step_name(self) -> str:
        """`Extract bento` -> `extract`, `Load bento in 1700000000.1` -> `load` (dlt's step titles)."""
        return self.step.split()[0].lower() if self.step else "run"

    def _start(self, step: str) -> None:
        self._counters, self._totals = {}, {}
        self._started = self._last = self._clock()

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: Any) -> None:
        self._failed = exc_type is not None  # a step that raised is not "done": the error says what happened
        super().__exit__(exc_type, exc_val, exc_tb)  # type: ignore[arg-type]

    def _stop(self) -> None:
        if self._failed:
            return
        line = self._line(done=True)
        what = line.split(":", 2)[-1] + self._step_name()
        if what != self._last_done:  # dlt extracts the pipeline state in a second, empty extract step
            self._note(line)
        self._last_done = what


class _ConsoleNotes(logging.Handler):
    """Log records as the console's notes: stderr, plain text, silenced by --quiet."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.note(record.getMessage())


@contextlib.contextmanager
def budget_waits_shown(console: Console) -> Iterator[None]:
    """The client's announcements of long budget waits ("waiting for the stats budget: next request in
    1m52s") go to stderr as notes while the run lasts, so a paced run never sits silent (not with --quiet)."""
    handler = _ConsoleNotes(console)
    level, propagate = pacing_logger.level, pacing_logger.propagate
    pacing_logger.addHandler(handler)
    pacing_logger.setLevel(logging.ERROR if console.quiet else logging.INFO)
    pacing_logger.propagate = False
    try:
        yield
    finally:
        pacing_logger.removeHandler(handler)
        pacing_logger.setLevel(level)
        pacing_logger.propagate = propagate


def collector_for(console: Console, enabled: bool = True) -> Any:
    """The collector `extract` hands dlt: our progress lines, or none with --quiet."""
    from dlt.common.runtime.collector import NULL_COLLECTOR

    return NULL_COLLECTOR if console.quiet or not enabled else ExtractProgress(console.note)
