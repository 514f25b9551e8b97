"""`bento-dlt sync --dry-run`: every row validated and the plan printed (what the ledger would skip, which emails
would go out, whether the credentials work); nothing is sent."""

from __future__ import annotations

import argparse
from typing import Any

from bento_api import BentoConfigError, BentoSettings, Budgets
from bento_destination import bento_dir
from bento_destination.clients import prove_credentials
from bento_destination.config import BentoDestinationConfig
from bento_destination.report import two_shares
from bento_destination.rows import iter_rows

from .cli_common import EXIT_OK, EXIT_REJECTS, Console, Result, mask
from .cli_emails import email_plan
from .cli_input import SyncInput
from .cli_plan import build_plan


def dry_run(
    source: SyncInput, args: argparse.Namespace, console: Console, config: BentoDestinationConfig, budgets: Budgets,
    event_keys: str,
) -> Result:
    """The plan of a sync, as text and JSON; exit 3 when a real sync would (rejects past the threshold)."""
    operation: str = args.operation
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
        from bento_destination.changes import LEDGER_FILENAME
        from bento_destination.dry_run import classify_rows
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
