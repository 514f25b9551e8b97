"""`bento-dlt sync`: one table, query or file into Bento as subscribers, events or commands.

Order of work, so that nothing is sent by mistake: read the input (exit 2 if it cannot be read), prove
the credentials with one GET (exit 1), plan or confirm, then send through the `bento` destination.
`--dry-run` stops after the plan. A real (non-loopback) account needs `--yes` or a typed confirmation.
After the load, the destination's report decides between exit 0 and 3 (rejects past the threshold).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bento_api import BentoConfigError, BentoSettings, Budgets
from bento_destination import (
    DEFAULT_REJECT_THRESHOLD,
    BentoRejectsExceeded,
    LoadReport,
    bento,
    check_credentials,
    check_run,
    list_rejects,
    load_ids,
    read_report,
)

from .cli_common import (
    EXIT_OK,
    EXIT_REJECTS,
    EXIT_USAGE,
    PROG,
    CliError,
    Console,
    Result,
    is_local,
    mask,
    resolve_cli_budgets,
    resolve_credentials,
    share,
)
from .cli_input import SyncInput, open_input
from .cli_plan import build_plan

OPERATIONS = ("subscribers", "events", "commands")
#: rejected rows printed after a sync (all of them stay listed by `bento-dlt rejects`)
REJECTS_SHOWN = 10
PROGRESS_PERIOD = 2.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="INPUT",
                        help="a DuckDB file, a CSV or Parquet file (seen as the table `input` by --query), "
                             "or a SQLAlchemy URL (postgresql://..., sqlite:///file.db)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--table", help="table to send (schema.table allowed); default: the file's only table")
    what.add_argument("--query", metavar="SQL", help="SELECT whose rows are sent")
    parser.add_argument("--as", dest="operation", required=True, choices=OPERATIONS,
                        help="what each row becomes in Bento (see the row contract in README.md)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate every row and print the plan; send nothing")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="do not ask before sending to a real Bento account (needed when not on a terminal)")
    parser.add_argument("--reject-threshold", type=share, default=DEFAULT_REJECT_THRESHOLD, metavar="SHARE",
                        help=f"exit 3 if more than this share of rows is rejected (default {DEFAULT_REJECT_THRESHOLD})")
    parser.add_argument("--full-resync", action="store_true",
                        help="send every row, ignoring what the sync ledger says Bento already has")
    parser.add_argument("--allow-secret-columns", action="store_true",
                        help="send columns that look like secrets (password, token, api_key, secret)")
    parser.add_argument("--pipeline-name", help="dlt pipeline name (default bento_sync_<operation>)")


@dataclass
class SyncSettings:
    """Everything `push` needs besides the rows (the demo builds one too)."""

    operation: str
    settings: BentoSettings
    budgets: Budgets
    pipeline_name: str
    pipelines_dir: str | None = None
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD
    full_resync: bool = False
    allow_secret_columns: bool = False


class ReportProgress:
    """Prints rows done of total, rate and time left, read from the destination's report after each batch.

    The sink rewrites `<working_dir>/bento_rejects/<load_id>.report.json` after every batch, so a thread
    reading it sees real progress without any hook into the sink.
    """

    def __init__(
        self, working_dir: Path, total: int, note: Callable[[str], None], period: float = PROGRESS_PERIOD
    ) -> None:
        self._working_dir = working_dir
        self._known = set(load_ids(working_dir))
        self._total = total
        self._note = note
        self._period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bento-sync-progress", daemon=True)
        self._started = time.monotonic()

    def __enter__(self) -> ReportProgress:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            fresh = [lid for lid in load_ids(self._working_dir) if lid not in self._known]
            if not fresh:
                continue
            report = read_report(self._working_dir, fresh[-1])
            if report is not None:
                self._note(progress_line(report, self._total, time.monotonic() - self._started))


def progress_line(report: LoadReport, total: int, elapsed: float) -> str:
    totals = report.totals()
    done, sent, rejected = int(totals["received"]), int(totals["sent"]), int(totals["rejected"])
    rate = done / elapsed if elapsed > 0 else 0.0
    left = f", about {(total - done) / rate:.0f}s left" if rate > 0 and total > done else ""
    share_done = f" ({done / total:.0%})" if total else ""
    return (
        f"progress: {done} of {total} rows done{share_done}: sent {sent}, rejected {rejected}; "
        f"{rate:.0f} rows/s{left}"
    )


def destination_options(full_resync: bool, note: Callable[[str], None]) -> dict[str, Any]:
    """`full_resync=` for a destination that keeps a sync ledger; without one every row is sent anyway."""
    if "full_resync" in inspect.signature(bento).parameters:
        return {"full_resync": full_resync}
    if full_resync:
        note("note: this destination keeps no sync ledger yet, so every row is sent on every run; "
             "--full-resync changes nothing")
    return {}


def push(
    source: SyncInput, cfg: SyncSettings, console: Console, total: int | None = None
) -> tuple[int, dict[str, Any], str]:
    """Send the input through the destination; returns (exit code, JSON summary, text). Loads pending packages first."""
    import dlt

    destination = bento(
        **_keywords(cfg.settings),
        requests_per_minute=cfg.budgets.requests_per_minute,
        table_operations={source.table_name: cfg.operation},
        reject_threshold=cfg.reject_threshold,
        allow_secret_columns=cfg.allow_secret_columns,
        **destination_options(cfg.full_resync, console.note),
    )
    pipeline = dlt.pipeline(
        pipeline_name=cfg.pipeline_name, pipelines_dir=cfg.pipelines_dir, destination=destination  # type: ignore[arg-type]
    )
    reports: list[LoadReport] = []
    problems: list[str] = []
    if pipeline.has_pending_data:
        console.note(f"{cfg.pipeline_name}: loading a pending package left by an earlier run first")
        pending_info = pipeline.run()
        reports += _checked(pipeline, pending_info, problems)
    total = source.count() if total is None else total
    started = time.monotonic()
    with ReportProgress(Path(pipeline.working_dir), total, console.note):
        info = pipeline.run(source.batches(), table_name=source.table_name)
    reports += _checked(pipeline, info, problems)
    elapsed = time.monotonic() - started
    rejects = [r for report in reports for r in list_rejects(pipeline, report.load_id)]
    summary: dict[str, Any] = {
        "pipeline_name": cfg.pipeline_name,
        "pipelines_dir": str(Path(pipeline.pipelines_dir).resolve()),
        "table": source.table_name,
        "operation": cfg.operation,
        "input": source.label,
        "rows": total,
        "elapsed_seconds": round(elapsed, 2),
        "loads": [report.to_dict() for report in reports],
        "totals": _sum_totals(reports),
        "reject_examples": rejects[:REJECTS_SHOWN],
        "problems": problems,
    }
    lines = [report.format() for report in reports] or [f"{source.label}: no rows to send"]
    for record in rejects[:REJECTS_SHOWN]:
        lines.append(f"  rejected ({record['reason']}): {record['detail']}")
    if len(rejects) > REJECTS_SHOWN:
        lines.append(f"  ... {len(rejects) - REJECTS_SHOWN} more")
    if rejects:
        where = f" --pipelines-dir {summary['pipelines_dir']}" if cfg.pipelines_dir else ""
        lines.append(f"  list them all: {PROG} rejects --pipeline-name {cfg.pipeline_name}{where}")
    return (EXIT_REJECTS if problems else EXIT_OK), summary, "\n".join(lines)


def _checked(pipeline: Any, info: Any, problems: list[str]) -> list[LoadReport]:
    try:
        return check_run(pipeline, info)
    except BentoRejectsExceeded as error:
        problems.extend(p for r in error.reports for p in r.problems())
        return error.reports


def _sum_totals(reports: list[LoadReport]) -> dict[str, float]:
    out: dict[str, float] = {}
    for report in reports:
        for key, value in report.totals().items():
            out[key] = out.get(key, 0) + value
    return out


def confirm(message: str, stdin: TextIO, err: TextIO) -> bool:
    """Ask on the terminal; only `y` or `yes` sends."""
    print(f"{message}\nSend? [y/N] ", end="", file=err, flush=True)
    return stdin.readline().strip().lower() in ("y", "yes")


def run(args: argparse.Namespace, console: Console) -> Result:
    source = open_input(args.source, args.table, args.query)
    try:
        return _run(args, console, source)
    finally:
        source.close()


def _run(args: argparse.Namespace, console: Console, source: SyncInput) -> Result:
    operation: str = args.operation
    budgets = resolve_cli_budgets(args)
    if args.dry_run:
        plan = build_plan(source, operation, allow_secret_columns=args.allow_secret_columns)
        summary: dict[str, Any] = {"command": "sync", "dry_run": True, **plan.to_dict(budgets, args.reject_threshold)}
        text = plan.format(budgets, args.reject_threshold)
        summary["credentials"], note = _dry_run_credentials(args, console)
        text += f"\n  credentials: {note}"
        code = EXIT_REJECTS if plan.rejected_share > args.reject_threshold else EXIT_OK
        summary.update(exit_code=code, ok=code == EXIT_OK)
        return Result(code, summary, text)

    total = source.count()
    settings = resolve_credentials(args, "destination")
    console.secrets += list(settings.secrets)
    ask = not is_local(settings.base_url) and not args.yes
    message = (
        f"About to send {total} rows of {source.label} as {operation} to the Bento site "
        f"{mask(settings.site_uuid)} at {settings.base_url}."
        + (" Each event starts the automations listening for its type." if operation == "events" else "")
    )
    if ask and not sys.stdin.isatty():  # refuse before any request: a scheduler must say --yes
        raise CliError(f"{message}\nRefusing to send without confirmation: stdin is not a terminal. "
                       "Pass --yes to send from a script or scheduler.", EXIT_USAGE)
    check_credentials(**_keywords(settings), requests_per_minute=budgets.requests_per_minute)
    if ask and not confirm(message, sys.stdin, console.err):
        raise CliError("not sent: confirmation declined", EXIT_USAGE)
    cfg = SyncSettings(
        operation=operation,
        settings=settings,
        budgets=budgets,
        pipeline_name=args.pipeline_name or f"bento_sync_{operation}",
        pipelines_dir=args.pipelines_dir,
        reject_threshold=args.reject_threshold,
        full_resync=args.full_resync,
        allow_secret_columns=args.allow_secret_columns,
    )
    code, summary, text = push(source, cfg, console, total)
    summary.update(command="sync", dry_run=False, exit_code=code, ok=code == EXIT_OK)
    return Result(code, summary, text)


def _keywords(settings: BentoSettings) -> dict[str, Any]:
    return {"site_uuid": settings.site_uuid, "publishable_key": settings.publishable_key,
            "secret_key": settings.secret_key, "base_url": settings.base_url}


def _dry_run_credentials(args: argparse.Namespace, console: Console) -> tuple[str, str]:
    """A dry run checks the credentials with one GET when they are set; without them it still validates."""
    try:
        settings = resolve_credentials(args, "destination")
    except BentoConfigError as error:
        return "not_checked", f"not checked ({error})"
    console.secrets += list(settings.secrets)
    check_credentials(**_keywords(settings), requests_per_minute=resolve_cli_budgets(args).requests_per_minute)
    return "ok", f"accepted by {settings.base_url} (site {mask(settings.site_uuid)}); one GET was sent, no rows"
