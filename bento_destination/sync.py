"""One reverse-ETL run done safely: credentials first, pending packages first, then new data, then the verdict.

The two runnable pipelines and the CLI's `sync` share this. Order matters with dlt 1.31: config is
resolved only at load time (so wrong keys would surface after extract), and `pipeline.run` with a
pending package loads only that package and ignores the new data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dlt

from bento_api import BentoError, BentoSettings
from bento_api.limits import DEFAULT_MAX_IN_FLIGHT

from .changes import DLT_PREFIX, LEDGER_OPERATIONS
from .clients import prove_credentials
from .config import BentoDestinationConfig, resolve_destination_config
from .duplicates import prepare_duplicates, record_duplicates
from .engine import EngineRows
from .file_progress import rows_not_done
from .ledger import LedgerBusyError
from .load_files import count_rows, file_key
from .loadrun import LoadRun, load_run
from .non_finite import reject_non_finite
from .operations import resolve_operation
from .prepass import prepare_package
from .rejects import bento_dir
from .report import BentoRejectsExceeded, LoadReport, check_run, reports_for
from .results import record_results, results_target
from .runcontext import BentoRunCancelled, BentoRunStopped, RunCancel, RunContext, bento_run
from .runlock import BentoBusyError
from .send import BatchOutcome
from .settings import REJECTS_DIRNAME, SINK_BATCH_SIZE
from .sink import bento

FILE_MAX_ITEMS_ENV = "DATA_WRITER__FILE_MAX_ITEMS"
#: rows per load file when the total is not known in advance (a stream of batches)
DEFAULT_FILE_MAX_ITEMS = 10_000
#: batches per load file at most when the total is known, so the pre-pass's per-file join stays modest
MAX_FILE_BATCHES = 100
#: dlt's write buffer (BufferedDataWriter's buffer_max_items): above it, files rotate only at its multiples
DLT_WRITE_BUFFER_ROWS = 5_000

#: exit codes (README, "The command line"): 0 done, 1 failed, 2 usage or unreadable input, 3 rejected past the
#: threshold, 75 busy (another run holds the lock; sysexits' EX_TEMPFAIL); a signal exits 128 + its number (130, 143)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTS, EXIT_BUSY = 0, 1, 2, 3, 75


def sync(
    data: Any,
    *,
    pipeline_name: str,
    pipelines_dir: str | os.PathLike[str] | None = None,
    table_name: str | None = None,
    file_max_items: int | None = None,
    out: Callable[[str], None] = print,
    wait: float | None = None,
    cancel: RunCancel | None = None,
    results: Any = True,
    results_dataset: str | None = None,
    **destination_kwargs: Any,
) -> list[LoadReport]:
    """Load `data` into Bento with `bento(**destination_kwargs)`; print each load's report; raise if rejected.

    One run at a time: the pipeline's folder is locked from extract to load (and the ledger per
    operation); if another run holds it, this one waits `wait` seconds (None: not at all) and then
    raises BentoBusyError before sending anything. `cancel.cancel()` from another thread, or a signal dlt
    intercepts while it loads, stops the run between two requests: BentoRunCancelled is raised, the
    package stays pending and the next run resumes it. No signal handler is installed here.

    Raises a BentoError for wrong credentials (before anything is extracted), BentoRunStopped when a
    request failed on all its attempts (the run stops; the next resumes), dlt's PipelineStepFailed when
    a load fails otherwise, and BentoRejectsExceeded when rows were rejected past the threshold (the loads
    themselves finished, so no package is left pending).

    `results`: where the run's outcome goes after the load (results.py): True the DuckDB file
    `<working_dir>/bento_results.duckdb`, False nothing, a path, a URL or a dlt destination (dataset
    `results_dataset`). Writing them never fails the run.
    """
    # the destination's config as its load will resolve it (config.py): bad values fail before anything is extracted
    config = resolve_destination_config(pipeline_name, **destination_kwargs)
    options = config.ledger_options()
    working_dir = bento_dir(pipeline_name, pipelines_dir).parent
    results_to = results_target(results, working_dir, results_dataset)
    if results_to is not None:
        destination_kwargs["record_sent_rows"] = True
    started_at = dt.datetime.now(dt.UTC)
    with bento_run(working_dir, wait=wait, cancel=cancel) as run:
        settings = prove_credentials(config, run)  # the run keeps the proof: the load pays no second GET
        pipeline_options: dict[str, Any] = {"pipelines_dir": str(pipelines_dir)} if pipelines_dir is not None else {}
        pipeline = dlt.pipeline(
            pipeline_name=pipeline_name,
            destination=bento(**{k: v for k, v in destination_kwargs.items() if v is not None}),
            **pipeline_options,
        )
        if options.sync_ledger:  # lock the ledger before extracting when the operations are known (and after
            # dlt.pipeline, which wipes a new pipeline's folder, where the default ledger and its lock live)
            for operation in _operations(table_name, config.table_operations):
                run.hold_ledger(options.location(working_dir), settings.site_uuid, operation)
        infos = []
        failure: BaseException | None = None
        try:
            if pipeline.has_pending_data:
                out(f"{pipeline_name}: loading the package left pending by an earlier run first")
                run.plan(pending_rows(pipeline))
                infos.append(pipeline.load())
            _stop_if_cancelled(pipeline, run)
            with file_rotation(file_max_items):
                infos.append(load_new_data(pipeline, data, table_name, settings, config, out, run))
            _stop_if_cancelled(pipeline, run)
        except Exception as error:
            stopped = run_stopped_error(pipeline, run, error)
            failure = error if stopped is None else stopped
            if stopped is None or stopped is error:
                raise
            raise stopped from None
        finally:
            run.ledgers.close()
            if results_to is not None:  # after the load step, still holding the pipeline's lock
                record_results(results_to, pipeline_name, Path(pipeline.working_dir) / REJECTS_DIRNAME,
                               run_id=uuid.uuid4().hex, started_at=started_at, error=failure, out=out)
    reports = [report for info in infos for report in reports_for(pipeline, info)]
    for report in reports:
        out(report.format())
    for info in infos:
        check_run(pipeline, info)
    return reports


def _operations(table_name: str | None, table_operations: dict[str, str] | None) -> list[str]:
    """The operations a run will send that keep state in the ledger (emails too), where known before extracting."""
    named = set((table_operations or {}).values())
    if table_name:
        named.add(resolve_operation(table_name, table_operations) or "")
    return sorted(op for op in named if op in (*LEDGER_OPERATIONS, "emails"))


def _signal_in(error: BaseException) -> int | None:
    """The signal of a SignalReceivedException dlt raised when its step ended on a signal (flag cleared by then)."""
    from dlt.common.exceptions import SignalReceivedException

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, SignalReceivedException):
            return int(seen.signal_code)
        nested = getattr(seen, "exception", None)
        seen = nested if isinstance(nested, BaseException) else (seen.__cause__ or seen.__context__)
    return None


def pending_rows(pipeline: Any) -> int:
    """Rows of the pipeline's pending load packages not sent yet (the sink's progress per file subtracted).

    dlt moves a job's file while it loads (and renames it when it retries the job): a file gone between the
    listing and the count is counted from a new listing, a few times at most.
    """
    for attempt in range(3):
        try:
            return _pending_rows(pipeline)
        except FileNotFoundError:
            if attempt == 2:
                raise
    return 0


def _pending_rows(pipeline: Any) -> int:
    total = 0
    for load_id in pipeline.list_normalized_load_packages():
        offsets = pipeline.get_load_package_state(load_id).get("destination_state", {}) or {}
        info = pipeline.get_load_package_info(load_id)
        for state in ("new_jobs", "started_jobs", "failed_jobs"):
            for job in info.jobs.get(state, []):
                file = job.job_file_info
                if file.table_name.startswith(DLT_PREFIX):
                    continue
                path = str(job.file_path)
                total += rows_not_done(offsets, file_key(path), count_rows(path))
    return total


def run_stopped_error(pipeline: Any, run: RunContext, error: BaseException | None = None) -> BentoError | None:
    """The one-line error for a run that was cancelled or stopped by its breaker, else None."""
    signal_number = run.signal_number or (None if error is None else _signal_in(error))
    if not (run.cancelled or signal_number is not None or run.breaker is not None):
        return None
    not_sent = pending_rows(pipeline)
    resume = (
        f"{not_sent} rows not sent yet: the load package stays pending and the next run resumes it"
        if not_sent else "nothing left pending"
    )
    if run.breaker is not None and signal_number is None and not run.cancelled:
        return BentoRunStopped(f"stopped: {run.breaker}; {run.sent} rows sent in this run, {resume}",
                               sent=run.sent, not_sent=not_sent)
    name = signal.Signals(signal_number).name if signal_number else "a cancel"
    return BentoRunCancelled(f"stopped by {name}: {run.sent} rows sent in this run, {resume}",
                             signal_number=signal_number, sent=run.sent, not_sent=not_sent)


def _stop_if_cancelled(pipeline: Any, run: RunContext) -> None:
    stopped = run_stopped_error(pipeline, run)
    if stopped is not None:
        raise stopped


def load_new_data(
    pipeline: Any,
    data: Any,
    table_name: str | None,
    settings: BentoSettings,
    config: BentoDestinationConfig,
    out: Callable[[str], None] = print,
    run: RunContext | None = None,
) -> Any:
    """`pipeline.run(data)` in its steps, with the sync ledger's pre-pass between normalize and load.

    First one subscriber row per email (duplicates.prepare_duplicates: the others are rejected and skipped
    by the sink). Then the pre-pass of prepass.prepare_package checks the blast radius of the whole package
    before anything is sent and counts the rows the ledger says Bento already has (the sink leaves them
    out). If the guard stops the run, the package is dropped (nothing was sent) so it cannot load on a
    later run; BlastRadiusExceeded is raised. dlt's files are never rewritten.
    """
    engine = data if isinstance(data, EngineRows) else None  # its unchanged rows count in the report
    data = reject_non_finite(  # dlt would drop NaN from dict rows: reject those rows before extract
        data, table_name, table_operations=config.table_operations,
        reject_threshold=config.reject_threshold, redact=settings.redact, section=pipeline.pipeline_name,
    )
    pipeline.extract(data, **({"table_name": table_name} if table_name else {}))
    _drop_if_cancelled(pipeline, run)
    pipeline.normalize()
    _drop_if_cancelled(pipeline, run)
    options = config.ledger_options()
    table_operations = config.table_operations

    def operation_of(table: str) -> str | None:
        return resolve_operation(table, table_operations)

    for load_id in pipeline.list_normalized_load_packages():
        duplicates = prepare_duplicates(pipeline, load_id, operation_of, config.allow_secret_columns)
        try:
            plan = prepare_package(
                pipeline, load_id, settings, options, table_operations, config.allow_secret_columns,
            )
        except BentoError:
            pipeline.abort_packages()
            raise
        record_duplicates(duplicates, _report_run(pipeline, load_id, settings, config), operation_of)
        if engine is not None:
            engine.settle(plan)
            _record_engine_unchanged(pipeline, load_id, engine, settings, config)
        if sum(plan.unchanged.values()):
            out(f"{pipeline.pipeline_name}: {sum(plan.unchanged.values())} unchanged rows not sent (sync ledger)")
    _drop_if_cancelled(pipeline, run)
    if run is not None:
        run.plan(pending_rows(pipeline))
    return pipeline.load()


def _drop_if_cancelled(pipeline: Any, run: RunContext | None) -> None:
    """Before the load step: a cancelled run drops its new package (nothing of it was sent) and stops."""
    if run is None or not run.cancelled:
        return
    pipeline.abort_packages()  # only this run's: pending packages were loaded before extracting
    _stop_if_cancelled(pipeline, run)


def _record_engine_unchanged(
    pipeline: Any, load_id: str, engine: EngineRows, settings: BentoSettings, config: BentoDestinationConfig
) -> None:
    """Count in the load's report the rows the engine found unchanged: they were never extracted, so the sink
    never sees them (it counts the unchanged rows of what it reads itself)."""
    if not engine.unchanged:
        return
    outcome = BatchOutcome(received=engine.unchanged)
    outcome.ledger["unchanged"] += engine.unchanged
    run = _report_run(pipeline, load_id, settings, config)
    run.merge(engine.table_name, resolve_operation(engine.table_name, config.table_operations), outcome)


def _report_run(pipeline: Any, load_id: str, settings: BentoSettings, config: BentoDestinationConfig) -> LoadRun:
    """The load's report and rejects, for what a pre-pass decided before the sink saw the rows."""
    return load_run(Path(pipeline.working_dir) / REJECTS_DIRNAME, load_id, pipeline.pipeline_name,
                    float(config.reject_threshold), settings.redact)


def balanced_file_rows(total_rows: int | None, jobs: int = DEFAULT_MAX_IN_FLIGHT) -> int:
    """Rows per load file so that the files keep every parallel load job busy until the end.

    dlt runs one job per file, `jobs` at a time. With 10 equal files and 8 jobs, the last 2 files load
    alone at the end, one request at a time each, while the budget allows more: 100,000 rows at 600/min
    took 12.5 s instead of 10.9 s. So when the total is known, the files come in whole waves of at most
    `jobs` files of whole batches (100,000 rows: 7 files, six of 15,000 and one of 10,000); when it is
    not, DEFAULT_FILE_MAX_ITEMS. Above dlt's write buffer a file rotates only at a multiple of it, so the
    size is rounded up to one: the count of files is then what dlt really writes. Since a load job sends its
    file's requests side by side, dlt runs fewer jobs than this (settings.MAX_LOAD_JOBS) and a job alone at
    the end still fills the budget; the files keep this size, which keeps each pre-pass join small.
    """
    if total_rows is None:
        return DEFAULT_FILE_MAX_ITEMS
    batches = max(1, math.ceil(total_rows / SINK_BATCH_SIZE))
    waves = math.ceil(batches / (jobs * MAX_FILE_BATCHES))
    rows = math.ceil(batches / (jobs * waves)) * SINK_BATCH_SIZE
    if rows > DLT_WRITE_BUFFER_ROWS:
        rows = math.ceil(rows / DLT_WRITE_BUFFER_ROWS) * DLT_WRITE_BUFFER_ROWS
    return rows


@contextlib.contextmanager
def file_rotation(file_max_items: int | None) -> Iterator[None]:
    """Start a new load file every `file_max_items` rows while extracting, then restore the setting.

    Several files per table let dlt send them as parallel load jobs, each with its own resume offsets.
    dlt reads `DATA_WRITER__FILE_MAX_ITEMS` for both jsonl and Arrow streams (a single Arrow item is
    never split, so DataFrames are fed in slices, see pipelines/dataframe_to_bento.py).
    """
    if file_max_items is None:
        yield
        return
    previous = os.environ.get(FILE_MAX_ITEMS_ENV)
    os.environ[FILE_MAX_ITEMS_ENV] = str(int(file_max_items))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FILE_MAX_ITEMS_ENV, None)
        else:
            os.environ[FILE_MAX_ITEMS_ENV] = previous


def exit_code(error: BaseException) -> int:
    """The command-line exit code for an error raised by `sync` or by reading the input."""
    if isinstance(error, BentoRejectsExceeded):
        return EXIT_REJECTS
    if isinstance(error, BentoBusyError | LedgerBusyError):
        return EXIT_BUSY
    if isinstance(error, BentoRunCancelled):
        return 128 + (error.signal_number or signal.SIGINT)
    if isinstance(error, BentoError):
        return EXIT_FAILED  # credentials, Bento unreachable, server
    if isinstance(error, OSError | ValueError):
        return EXIT_USAGE  # a missing or unreadable input file (pyarrow's ArrowInvalid is a ValueError)
    return EXIT_FAILED


def explain(error: BaseException) -> str:
    """The innermost Bento error's message (it says what to check), else the error itself."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, BentoError | BentoRejectsExceeded):
            return str(seen)
        nested = getattr(seen, "exception", None)
        seen = nested if isinstance(nested, BaseException) else (seen.__cause__ or seen.__context__)
    return str(error)
