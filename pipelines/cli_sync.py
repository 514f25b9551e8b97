"""`bento-dlt sync`: one table, query or file into Bento as subscribers, events, commands or emails.

Order of work, so that nothing is sent by mistake: read the input (exit 2 if it cannot be read), prove
the credentials with one GET (exit 1), plan or confirm, then send through the `bento` destination.
`--dry-run` stops after the plan. A real (non-loopback) account needs `--yes` or a typed confirmation.
After the load, the destination's report decides between exit 0 and 3 (rejects past the threshold).
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from bento_destination import DEFAULT_REJECT_THRESHOLD
from bento_destination.clients import prove_credentials
from bento_destination.results import results_target
from bento_destination.runlock import FOREVER

from .arrow_without_pandas import arrow_without_pandas
from .cli_common import EXIT_OK, EXIT_USAGE, CliError, Console, Result, destination_config, is_local, mask, share
from .cli_input import SyncInput, open_input, require_columns
from .cli_sync_dry import dry_run
from .cli_sync_push import push
from .cli_sync_settings import SyncSettings

OPERATIONS = ("subscribers", "events", "commands", "emails")


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
                        help="ledger location: a .duckdb file, a folder, s3://, gs://..., or "
                             "postgresql://...?schema=NAME (needs CREATE rights) (default: a DuckDB file in the "
                             "pipeline's folder)")
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


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def confirm(message: str, stdin: TextIO, err: TextIO) -> bool:
    """Ask on the terminal; only `y` or `yes` sends."""
    print(f"{message}\nSend? [y/N] ", end="", file=err, flush=True)
    return stdin.readline().strip().lower() in ("y", "yes")


def run(args: argparse.Namespace, console: Console) -> Result:
    arrow_without_pandas()  # about 34 MB less RSS: the sync's inputs are never pandas objects
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
        return dry_run(source, args, console, config, budgets, event_keys)

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
