"""`bento-dlt sync`: one table, query or file into Bento as subscribers, events, commands or emails.

Order of work, so that nothing is sent by mistake: read the input (exit 2 if it cannot be read), prove
the credentials with one GET (exit 1), plan or confirm, then send through the `bento` destination.
`--dry-run` stops after the plan. A real (non-loopback) account needs `--yes` or a typed confirmation.
After the load, the destination's report decides between exit 0 and 3 (rejects past the threshold).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bento_api import BentoConfigError, BentoSettings, Budgets
from bento_destination import (
    DEFAULT_REJECT_THRESHOLD,
    BentoRejectsExceeded,
    LoadReport,
    bento,
    bento_dir,
    list_rejects,
    load_ids,
    read_report,
)
from bento_destination.clients import prove_credentials
from bento_destination.config import BentoDestinationConfig
from bento_destination.report import two_shares
from bento_destination.results import results_target
from bento_destination.rows import iter_rows
from bento_destination.runcontext import RunCancel, active_run
from bento_destination.runlock import FOREVER

from .cli_common import (
    EXIT_OK,
    EXIT_REJECTS,
    EXIT_USAGE,
    PROG,
    CliError,
    Console,
    Result,
    destination_config,
    is_local,
    mask,
    reject_example,
    share,
)
from .cli_emails import email_plan
from .cli_input import SyncInput, engine_source, open_input, require_columns
from .cli_plan import build_plan
from .cli_progress import ReportProgress, budget_waits_shown
from .cli_signals import SignalGuard

OPERATIONS = ("subscribers", "events", "commands", "emails")
#: rejected rows printed after a sync (all of them stay listed by `bento-dlt rejects`)
REJECTS_SHOWN = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from", dest="source", required=True, metavar="INPUT",
                        help="a DuckDB file, a CSV or Parquet file (seen as the table `input` by --query), "
                             "or a SQLAlchemy URL (postgresql://..., sqlite:///file.db)")
    parser.add_argument("--encoding", metavar="NAME",
                        help="encoding of a CSV input: utf-8 (default), latin-1 or utf-16")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--table", help="table to send (schema.table allowed); default: the file's only table")
    what.add_argument("--query", metavar="SQL", help="SELECT whose rows are sent")
    parser.add_argument("--as", dest="operation", required=True, choices=OPERATIONS,
                        help="what each row becomes in Bento (see the row contract in README.md)")
    parser.add_argument("--allow-email-sends", action="store_true",
                        help="needed with --as emails: each row is an email sent to a person (never twice; "
                             "see `bento-dlt emails`)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate every row and print the plan; send nothing")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="do not ask before sending to a real Bento account (needed when not on a terminal)")
    parser.add_argument("--reject-threshold", type=share, default=DEFAULT_REJECT_THRESHOLD, metavar="SHARE",
                        help=f"exit 3 if more than this share of rows is rejected (default {DEFAULT_REJECT_THRESHOLD})")
    ledger = parser.add_argument_group("sync ledger (what Bento already acknowledged; docs/ledger.md)")
    ledger.add_argument("--full-resync", action="store_true",
                        help="send every row, ignoring what the ledger says Bento already has (still recorded)")
    ledger.add_argument("--no-ledger", action="store_true", help="neither read nor write the ledger")
    ledger.add_argument("--ledger-url", metavar="URL",
                        help="ledger location: a .duckdb file, a folder or s3://, gs://... (default: a DuckDB "
                             "file in the pipeline's folder)")
    ledger.add_argument("--derive-event-keys", action="store_true",
                        help="deprecated, does nothing: events get derived keys by default (see --no-event-keys)")
    ledger.add_argument("--allow-events-for-unsubscribed", action="store_true",
                        help="send events for people the ledger knows are unsubscribed")
    ledger.add_argument("--max-blast-radius", type=share, metavar="SHARE",
                        help="stop before sending if a run would unsubscribe or untag more than this share of "
                             "the known audience (default 0.1)")
    ledger.add_argument("--force", action="store_true", help="send even past the blast-radius guard")
    ledger.add_argument("--tag-ownership", action="store_true",
                        help="remove_tags removes only tags this connector added")
    parser.add_argument("--no-event-keys", action="store_true",
                        help="send events without unique_key with no key (at least once: a rerun sends them "
                             "again); by default they get a key derived from their content, identical rows "
                             "numbered, so a rerun sends none of them twice")
    parser.add_argument("--allow-secret-columns", action="store_true",
                        help="send columns that look like secrets (password, token, api_key, secret)")
    parser.add_argument("--pipeline-name", help="dlt pipeline name (default bento_sync_<operation>)")
    results = parser.add_argument_group("sync results (each run's outcome in tables you can query; "
                                        "docs/destination.md)")
    where = results.add_mutually_exclusive_group()
    where.add_argument("--results-url", metavar="URL",
                       help="write them to a DuckDB file (a path or duckdb:///path) or another database "
                            "(postgresql://..., via a dlt pipeline <pipeline>_results); default "
                            "<pipelines-dir>/<pipeline>/bento_results.duckdb")
    where.add_argument("--no-results", action="store_true", help="write no results tables (the rejects files stay)")
    results.add_argument("--results-dataset", metavar="NAME",
                         help="schema (dataset) for --results-url of a database (default bento_sync_results)")
    parser.add_argument("--show-rows", action="store_true",
                        help="with --json: put the rejected rows' contents in reject_examples (by default only "
                             "reason, detail with email addresses masked, and counts: scheduler logs keep them)")
    parser.add_argument("--wait", nargs="?", const=FOREVER, type=seconds, metavar="SECONDS",
                        help="if another run of this pipeline (or of its ledger) is going on, wait for it up to "
                             "SECONDS (no value: as long as it runs); without --wait, stop at once with exit 75")


@dataclass
class SyncSettings:
    """Everything `push` needs besides the rows (the demo builds one too)."""

    operation: str
    settings: BentoSettings
    budgets: Budgets
    pipeline_name: str
    pipelines_dir: str | None = None
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD
    allow_secret_columns: bool = False
    allow_email_sends: bool = False
    #: sync-ledger keywords the user set (see LEDGER_FLAGS); None = the destination's default
    ledger: dict[str, Any] = field(default_factory=dict)
    #: seconds to wait for another run holding the lock (None: exit 75 at once)
    wait: float | None = None
    #: sync results: True the local DuckDB file, False none, else a URL or path (bento_destination/results.py)
    results: Any = True
    results_dataset: str | None = None

    #: rejected rows' contents in the JSON summary (`--show-rows`)
    show_rows: bool = False


#: sync-ledger keywords of `bento(...)` and the flags that set them (absent from a destination without a ledger)
LEDGER_FLAGS: dict[str, str] = {
    "sync_ledger": "--no-ledger",
    "ledger_url": "--ledger-url",
    "full_resync": "--full-resync",
    "allow_events_for_unsubscribed": "--allow-events-for-unsubscribed",
    "max_blast_radius": "--max-blast-radius",
    "force": "--force",
    "tag_ownership": "--tag-ownership",
    "event_keys": "--no-event-keys",
}


def ledger_options(chosen: dict[str, Any], note: Callable[[str], None]) -> dict[str, Any]:
    """The ledger keywords the user set, if this build's destination has them (it keeps a sync ledger)."""
    supported = inspect.signature(bento).parameters
    out: dict[str, Any] = {}
    for keyword, value in chosen.items():
        if value is None:
            continue
        if keyword in supported:
            out[keyword] = value
        elif keyword == "full_resync":
            note("note: this destination keeps no sync ledger, so every row is sent on every run; "
                 "--full-resync changes nothing")
        else:
            raise CliError(f"{LEDGER_FLAGS[keyword]} needs a destination with the sync ledger; this one has none",
                           EXIT_USAGE)
    return out


def _engine_or_batches(
    source: SyncInput, cfg: SyncSettings, options: dict[str, Any], working_dir: Path, note: Callable[[str], None]
) -> Any:
    """The rows `sync()` extracts: the engine's new and changed rows where it can take the input (a DuckDB
    or Postgres table of subscribers, the ledger on), else every row of the input."""
    from bento_destination.config import LedgerOptions
    from bento_destination.engine import engine_rows

    known = {field.name for field in dataclasses.fields(LedgerOptions)}
    ledger = LedgerOptions(**{key: value for key, value in options.items() if key in known and value is not None})
    rows = engine_rows(
        engine_source(source), operation=cfg.operation, table_name=source.table_name,
        ledger_location=ledger.location(working_dir), site=cfg.settings.site_uuid, sync_ledger=ledger.sync_ledger,
        full_resync=ledger.full_resync, allow_secret_columns=cfg.allow_secret_columns, note=note,
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
    data = _engine_or_batches(source, cfg, options, working_dir, console.note)
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
    reports = [r for lid in load_ids(working_dir) if lid not in known
               if (r := read_report(working_dir, lid)) is not None]
    problems = [problem for report in reports for problem in report.problems()]
    rejects = [r for report in reports for r in list_rejects(working_dir, report.load_id)]
    summary: dict[str, Any] = {
        "pipeline_name": cfg.pipeline_name,
        "pipelines_dir": str(working_dir.parent.resolve()),
        "table": source.table_name,
        "operation": cfg.operation,
        "input": source.label,
        "rows": total,
        "elapsed_seconds": round(elapsed, 2),
        "loads": [report.to_dict() for report in reports],
        "totals": _sum_totals(reports),
        "reject_examples": [reject_example(record, cfg.show_rows) for record in rejects[:REJECTS_SHOWN]],
        "rejected_by_reason": _reasons(reports),
        "problems": problems,
    }
    results_to = results_target(cfg.results, working_dir, cfg.results_dataset)
    summary["results"] = None if results_to is None else results_to.describe()  # where bento_sync_runs is
    if problems:  # what `--quiet` prints as its one line (exit 3)
        summary["error"] = "; ".join(problems)
    lines = [note for note in notes if not note.startswith("Bento load ")]
    lines += [report.format() for report in reports] or [f"{source.label}: no rows to send"]
    for record in rejects[:REJECTS_SHOWN]:
        lines.append(f"  rejected ({record['reason']}): {record['detail']}")
    if len(rejects) > REJECTS_SHOWN:
        lines.append(f"  ... {len(rejects) - REJECTS_SHOWN} more")
    if rejects:
        where = f" --pipelines-dir {summary['pipelines_dir']}" if cfg.pipelines_dir else ""
        lines.append(f"  list them all: {PROG} rejects --pipeline-name {cfg.pipeline_name}{where}")
    uncertain = sum(t.rejected_by_reason.get("email_send_uncertain", 0) for r in reports for t in r.tables.values())
    if uncertain:
        where = f" --pipelines-dir {summary['pipelines_dir']}" if cfg.pipelines_dir else ""
        lines.append(f"  {uncertain} emails may or may not have reached Bento and are not sent again: "
                     f"{PROG} emails uncertain --pipeline-name {cfg.pipeline_name}{where}")
    return (EXIT_REJECTS if problems else EXIT_OK), summary, "\n".join(lines)


def _run_progress(working_dir: Path) -> tuple[int, int]:
    """(rows sent, rows not sent yet) of the run going on in this pipeline folder."""
    run = active_run(working_dir)
    return (run.sent, run.not_sent) if run is not None else (0, 0)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _reasons(reports: list[LoadReport]) -> dict[str, int]:
    out: dict[str, int] = {}
    for report in reports:
        for table in report.tables.values():
            for reason, count in table.rejected_by_reason.items():
                out[reason] = out.get(reason, 0) + count
    return out


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
    source = open_input(args.source, args.table, args.query, args.encoding)
    try:
        return _run(args, console, source)
    finally:
        source.close()


def _run(args: argparse.Namespace, console: Console, source: SyncInput) -> Result:
    operation: str = args.operation
    pipeline_name = args.pipeline_name or f"bento_sync_{operation}"
    # the destination's config as the load will resolve it (flags > dlt config > BENTO_*): the same values
    config = destination_config(args, pipeline_name)
    budgets = config.budgets()
    if args.derive_event_keys:
        console.note("note: --derive-event-keys is deprecated and does nothing: events get derived keys by default")
    event_keys = "none" if args.no_event_keys else "derived"
    if operation == "emails":
        refuse_unsafe_emails(args)
    require_columns(source, operation)  # exit 2 naming the columns found, before any request
    if args.dry_run:
        plan = build_plan(source, operation, allow_secret_columns=args.allow_secret_columns, event_keys=event_keys)
        plan.show_rows = args.show_rows
        settings, credentials, note = _dry_run_credentials(config, console)
        emails = counts = None
        if operation == "emails":  # only emails the ledger does not hold would go out, in these requests
            emails = email_plan(source, settings.site_uuid if settings else None, args, budgets, config.ledger_url)
            plan.skip(plan.valid - emails.would_send, "already sent, uncertain or refused before (sync ledger)")
        if settings is not None and not args.no_ledger and not args.full_resync and operation != "emails":
            counts = ledger_preview(source, operation, settings, args, config.ledger_url)
            if counts is not None:  # the headline counts only what would go out
                plan.skip(counts["unchanged"], "unchanged since Bento last acknowledged them (sync ledger)")
        summary: dict[str, Any] = {"command": "sync", "dry_run": True, **plan.to_dict(budgets, args.reject_threshold)}
        summary["credentials"] = credentials
        text = plan.format(budgets, args.reject_threshold)
        text += f"\n  credentials: {note}"
        if emails is not None:
            summary["emails"] = emails.to_dict(budgets)
            text += "\n" + emails.format(budgets)
        if counts is not None:
            summary["ledger"] = counts
            text += (f"\n  sync ledger: {counts['unchanged']} rows unchanged since Bento last acknowledged them "
                     f"(not sent), {counts['new']} new, {counts['changed']} changed")
        if plan.rejected_share > args.reject_threshold:
            shown, threshold = two_shares(plan.rejected_share, args.reject_threshold)
            summary["error"] = f"a real sync would exit 3: {shown} of the rows rejected, past the threshold {threshold}"
        code = EXIT_REJECTS if plan.rejected_share > args.reject_threshold else EXIT_OK
        summary.update(exit_code=code, ok=code == EXIT_OK)
        return Result(code, summary, text)

    results = False if args.no_results else (args.results_url or True)
    try:  # a results URL naming no dlt destination is a usage error, found before anything is sent
        results_target(results, ".", args.results_dataset)
    except ValueError as error:
        raise CliError(str(error), EXIT_USAGE) from None
    total = source.count()
    settings = config.settings()
    console.secrets += list(settings.secrets)
    ask = not is_local(settings.base_url) and not args.yes
    message = (
        f"About to send {total} rows of {source.label} as {operation} to the Bento site "
        f"{mask(settings.site_uuid)} at {settings.base_url}."
        + (" Each event starts the automations listening for its type." if operation == "events" else "")
        + (" Each row is an email to a person." if operation == "emails" else "")
    )
    if ask and not sys.stdin.isatty():  # refuse before any request: a scheduler must say --yes
        raise CliError(f"{message}\nRefusing to send without confirmation: stdin is not a terminal. "
                       "Pass --yes to send from a script or scheduler.", EXIT_USAGE)
    if ask:  # wrong keys fail before a person is asked (sync() checks them again for scripts)
        prove_credentials(config)
        if not confirm(message, sys.stdin, console.err):
            raise CliError("not sent: confirmation declined", EXIT_USAGE)
    cfg = SyncSettings(
        operation=operation,
        settings=settings,
        budgets=budgets,
        pipeline_name=pipeline_name,
        pipelines_dir=args.pipelines_dir,
        reject_threshold=args.reject_threshold,
        allow_secret_columns=args.allow_secret_columns,
        allow_email_sends=operation == "emails",
        wait=args.wait,
        results=results,
        results_dataset=args.results_dataset,
        show_rows=args.show_rows,
        ledger={
            "sync_ledger": False if args.no_ledger else None,
            "ledger_url": args.ledger_url,
            "full_resync": args.full_resync or None,
            "event_keys": "none" if args.no_event_keys else None,
            "allow_events_for_unsubscribed": args.allow_events_for_unsubscribed or None,
            "max_blast_radius": args.max_blast_radius,
            "force": args.force or None,
            "tag_ownership": args.tag_ownership or None,
        },
    )
    code, summary, text = push(source, cfg, console, total)
    summary.update(command="sync", dry_run=False, exit_code=code, ok=code == EXIT_OK)
    return Result(code, summary, text)


def refuse_unsafe_emails(args: argparse.Namespace) -> None:
    """`--as emails` needs `--allow-email-sends`, and the sync ledger (it is what keeps a rerun from resending)."""
    if not args.allow_email_sends:
        raise CliError("--as emails sends an email to a person for every row: add --allow-email-sends to confirm "
                       "this is what you want (try --dry-run first)", EXIT_USAGE)
    if args.no_ledger:
        raise CliError("--as emails needs the sync ledger: it records every email sent so that no rerun sends it "
                       "twice; drop --no-ledger", EXIT_USAGE)


def _keywords(settings: BentoSettings) -> dict[str, Any]:
    return {"site_uuid": settings.site_uuid, "publishable_key": settings.publishable_key,
            "secret_key": settings.secret_key, "base_url": settings.base_url}


def _dry_run_credentials(
    config: BentoDestinationConfig, console: Console
) -> tuple[BentoSettings | None, str, str]:
    """A dry run checks the credentials with one GET when they are set; without them it still validates."""
    try:
        settings = config.settings()
    except BentoConfigError as error:
        return None, "not_checked", f"not checked ({error})"
    console.secrets += list(settings.secrets)
    prove_credentials(config)
    return settings, "ok", f"accepted by {settings.base_url} (site {mask(settings.site_uuid)}); one GET, no rows"


def ledger_preview(
    source: SyncInput, operation: str, settings: BentoSettings, args: argparse.Namespace, ledger_url: str | None
) -> dict[str, int] | None:
    """New / changed / unchanged rows according to the sync ledger, if there is one yet (reads the input again)."""
    try:
        from bento_destination.changes import LEDGER_FILENAME, classify_rows
    except ImportError:  # a destination without the ledger
        return None
    working_dir = bento_dir(args.pipeline_name or f"bento_sync_{operation}", args.pipelines_dir).parent
    if not ledger_url and not (working_dir / LEDGER_FILENAME).is_file():
        return None  # no sync ran yet: every valid row is new (and a dry run creates no ledger)
    rows = (row for batch in source.batches() for row in iter_rows(batch))
    counts = classify_rows(rows, operation, site_uuid=settings.site_uuid, ledger_url=ledger_url,
                           working_dir=working_dir, allow_secret_columns=args.allow_secret_columns,
                           event_keys="none" if args.no_event_keys else "derived")
    return counts.as_dict()
