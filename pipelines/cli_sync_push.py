"""The send of `bento-dlt sync` (and of the demo): which rows go (the engine's changed rows where it can take the
input, else every row), through the shared `sync()` routine, with progress, signals and the ledger keywords."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bento_api import BentoSettings
from bento_destination import BentoRejectsExceeded, bento_dir, load_ids
from bento_destination.runcontext import RunCancel, active_run

from .cli_common import Console
from .cli_input import SyncInput, engine_source
from .cli_progress import ReportProgress, budget_waits_shown
from .cli_signals import SignalGuard
from .cli_sync_settings import SyncSettings, ledger_options
from .cli_sync_summary import sync_outcome


def _engine_or_batches(
    source: SyncInput, cfg: SyncSettings, options: dict[str, Any], note: Callable[[str], None]
) -> Any:
    """The rows `sync()` extracts: the engine's new and changed rows where it can take the input (a DuckDB
    or Postgres table of subscribers, or of events with their own keys, the ledger on), else every row."""
    from bento_destination.engine import diffed_rows

    table = engine_source(source)
    rows = None if table is None else diffed_rows(
        table, operation=cfg.operation, pipeline_name=cfg.pipeline_name, pipelines_dir=cfg.pipelines_dir,
        table_name=source.table_name, note=note, **_keywords(cfg.settings),
        allow_secret_columns=cfg.allow_secret_columns, **options,
    )
    return source.batches() if rows is None else rows


def push(
    source: SyncInput, cfg: SyncSettings, console: Console, total: int | None = None
) -> tuple[int, dict[str, Any], str]:
    """Send the input with the shared `bento_destination.sync.sync` routine (credentials first, pending packages
    first, the sync ledger's pre-pass); returns (exit code, JSON summary, text)."""
    from bento_destination.sync import balanced_file_rows, sync

    options = ledger_options(cfg.ledger, console.note)
    working_dir = bento_dir(cfg.pipeline_name, cfg.pipelines_dir).parent
    known = set(load_ids(working_dir))
    total = source.count() if total is None else total
    notes: list[str] = []
    started = time.monotonic()
    cancel = RunCancel()
    guard = SignalGuard(console, cancel, lambda: _run_progress(working_dir))
    # BentoRejectsExceeded: the loads finished; their reports below say what was rejected
    progress = ReportProgress(working_dir, known, total, console.note, cfg.operation, cfg.budgets)
    data = _engine_or_batches(source, cfg, options, console.note)
    with guard, budget_waits_shown(console), progress, contextlib.suppress(BentoRejectsExceeded):
        sync(
            data,
            pipeline_name=cfg.pipeline_name,
            pipelines_dir=cfg.pipelines_dir,
            table_name=source.table_name,
            file_max_items=balanced_file_rows(total),
            out=notes.append,
            **_keywords(cfg.settings),
            requests_per_minute=cfg.budgets.requests_per_minute,
            **({"allow_email_sends": True, "emails_per_minute": cfg.budgets.emails_per_minute}
               if cfg.allow_email_sends else {}),
            table_operations={source.table_name: cfg.operation},
            reject_threshold=cfg.reject_threshold,
            allow_secret_columns=cfg.allow_secret_columns,
            wait=cfg.wait,
            cancel=cancel,
            results=cfg.results,
            results_dataset=cfg.results_dataset,
            **options,
        )
    elapsed = time.monotonic() - started
    return sync_outcome(source, cfg, working_dir, known, total, elapsed, notes)


def _run_progress(working_dir: Path) -> tuple[int, int]:
    """(rows sent, rows not sent yet) of the run going on in this pipeline folder."""
    run = active_run(working_dir)
    return (run.sent, run.not_sent) if run is not None else (0, 0)


def _keywords(settings: BentoSettings) -> dict[str, Any]:
    return {"site_uuid": settings.site_uuid, "publishable_key": settings.publishable_key,
            "secret_key": settings.secret_key, "base_url": settings.base_url}
