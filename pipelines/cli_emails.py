"""Emails on the command line: the dry run's email plan, and `bento-dlt emails uncertain | release`.

An email whose request got no answer may or may not have reached Bento; the sync ledger holds it as
*uncertain* and no run sends it again (bento_destination/email_ledger.py). Only a person can decide,
after checking Bento's logs: `bento-dlt emails uncertain` lists them, `bento-dlt emails release --run ID
--yes` marks that run's uncertain emails as not sent so the next sync sends them. Nothing releases them
on its own: a scheduled `sync --yes` never does.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bento_api import Budgets
from bento_destination import bento_dir
from bento_destination.changes import LEDGER_FILENAME
from bento_destination.email_identity import base_key
from bento_destination.email_ledger import (
    ALREADY_REFUSED,
    ALREADY_SENT,
    CLAIMED,
    SEND_UNCERTAIN,
    EmailRecord,
    email_verdicts,
    list_uncertain,
    number_email_keys,
    open_email_ledger,
    release_uncertain,
)
from bento_destination.mapping import MappingOptions, map_row
from bento_destination.rows import iter_rows
from bento_destination.values import RowError

from .cli_common import EXIT_OK, EXIT_USAGE, PROG, CliError, Console, Result, destination_config
from .cli_input import SyncInput

DEFAULT_PIPELINE: Final = "bento_sync_emails"
#: link shorteners: Bento may slow messages carrying them (docs/bento-api.md)
SHORTENERS: Final = re.compile(
    r"https?://(?:www\.)?(?:bit\.ly|tinyurl\.com|t\.co|goo\.gl|ow\.ly|is\.gd|buff\.ly|rebrand\.ly|cutt\.ly|"
    r"shorturl\.at|tiny\.cc|rb\.gy|t\.ly)/",
    re.IGNORECASE,
)
#: emoji (the common pictographic blocks); this many in a subject and body counts as emoji-heavy
EMOJI: Final = re.compile("[\U0001f300-\U0001faff\u2600-\u27bf]")
EMOJI_HEAVY: Final = 5


def looks_risky(payload: dict[str, Any]) -> bool:
    """Our estimate of a message Bento may send slower than its pace: a link shortener or many emoji."""
    text = f"{payload.get('subject', '')}\n{payload.get('html_body', '')}"
    return bool(SHORTENERS.search(text)) or len(EMOJI.findall(text)) >= EMOJI_HEAVY


@dataclass
class EmailPlan:
    """What a sync of an email table would send, and what it would not, per the sync ledger."""

    valid: int = 0
    would_send: int = 0
    already_sent: int = 0
    send_uncertain: int = 0
    refused_before: int = 0
    recipients: set[str] = field(default_factory=set)
    risky: int = 0
    ledger_read: bool = False

    def minutes(self, budgets: Budgets) -> float:
        return self.would_send / budgets.emails_per_minute

    def to_dict(self, budgets: Budgets) -> dict[str, Any]:
        return {
            "would_send": self.would_send,
            "recipients": len(self.recipients),
            "already_sent": self.already_sent,
            "send_uncertain": self.send_uncertain,
            "refused_before": self.refused_before,
            "emails_per_minute": budgets.emails_per_minute,
            "minutes_at_email_pace": round(self.minutes(budgets), 2),
            "risky_looking": self.risky,
            "ledger_read": self.ledger_read,
        }

    def format(self, budgets: Budgets) -> str:
        minutes = self.minutes(budgets)
        took = f"{minutes:.1f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"
        lines = [
            f"  emails: {self.would_send} would go out, to {len(self.recipients)} recipients; "
            f"{self.already_sent} already sent, {self.send_uncertain} uncertain (not sent again until released), "
            f"{self.refused_before} refused by Bento before (change the row to send it)"
            + ("" if self.ledger_read else " [no sync ledger yet: every email is new]"),
            f"  email pace: {budgets.emails_per_minute:g} emails/min, about {took} for what would go out",
        ]
        if self.risky:
            lines.append(
                f"  {self.risky} messages look risky (a link shortener or many emoji): Bento may send such messages "
                "slower than its pace, so the time above is a lower bound"
            )
        if self.send_uncertain:
            lines.append(f"  uncertain emails: {PROG} emails uncertain (then release the ones Bento did not send)")
        return "\n".join(lines)


def _keyed_rows(source: SyncInput, allow_secret_columns: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, payload) of every valid email row, keys numbered over the whole input as a sync numbers them."""
    options = MappingOptions(allow_secret_columns)
    keys: list[tuple[str, bool]] = []
    payloads: list[dict[str, Any]] = []
    for batch in source.batches():
        for row in iter_rows(batch):
            try:
                payload = map_row("emails", row, options).payload
            except RowError:
                continue  # the plan counts it as rejected
            if payload is not None:
                keys.append(base_key(row, payload))
                payloads.append(payload)
    yield from zip(number_email_keys(keys), payloads, strict=True)


def email_plan(
    source: SyncInput, site_uuid: str | None, args: argparse.Namespace, budgets: Budgets, url: str | None
) -> EmailPlan:
    """Count what a sync of `source` as emails would send; reads the ledger if it exists (never creates one)."""
    plan = EmailPlan()
    rows = list(_keyed_rows(source, args.allow_secret_columns))
    plan.valid = len(rows)
    verdicts = {key: CLAIMED for key, _ in rows}
    working_dir = bento_dir(args.pipeline_name or DEFAULT_PIPELINE, args.pipelines_dir).parent
    if site_uuid is not None and (url or (working_dir / LEDGER_FILENAME).is_file()):
        with open_email_ledger(site_uuid, ledger_url=url, working_dir=working_dir) as ledger:
            verdicts = email_verdicts(ledger, list(verdicts))
        plan.ledger_read = True
    going: set[str] = set()
    for key, payload in rows:
        verdict = verdicts[key]
        if verdict == CLAIMED and key in going:  # one explicit key on two rows: one email
            verdict = ALREADY_SENT
        if verdict == CLAIMED:
            going.add(key)
            plan.would_send += 1
            plan.recipients.add(str(payload.get("to", "")))
            plan.risky += looks_risky(payload)
        elif verdict == ALREADY_SENT:
            plan.already_sent += 1
        elif verdict == SEND_UNCERTAIN:
            plan.send_uncertain += 1
        elif verdict == ALREADY_REFUSED:
            plan.refused_before += 1
    return plan


# --------------------------------------------------------------------------- bento-dlt emails


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("uncertain", "release"),
                        help="uncertain: list emails that may or may not have reached Bento; release: mark those "
                             "of one run (or --key) as not sent, so the next sync sends them")
    parser.add_argument("--pipeline-name", help=f"the sync's pipeline (default {DEFAULT_PIPELINE})")
    parser.add_argument("--ledger-url", metavar="URL", help="the ledger the sync used, if not the default file")
    parser.add_argument("--site-uuid", help="the Bento site (default: [destination.bento] or BENTO_SITE_UUID)")
    parser.add_argument("--run", metavar="LOAD_ID", help="only this run's emails (the load id the listing shows)")
    parser.add_argument("--key", action="append", metavar="KEY", help="release only this email key (repeatable)")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="release without asking (only after checking Bento's logs that they were not sent)")


def _site_uuid(args: argparse.Namespace) -> str:
    config = destination_config(args, args.pipeline_name or DEFAULT_PIPELINE)
    site = config.site_uuid or os.environ.get("BENTO_SITE_UUID")
    if not site:
        raise CliError("the ledger is kept per Bento site: give --site-uuid (or set BENTO_SITE_UUID)", EXIT_USAGE)
    return str(site)


def _location(args: argparse.Namespace) -> tuple[str | None, Path]:
    working_dir = bento_dir(args.pipeline_name or DEFAULT_PIPELINE, args.pipelines_dir).parent
    url = destination_config(args, args.pipeline_name or DEFAULT_PIPELINE).ledger_url
    if not url and not (working_dir / LEDGER_FILENAME).is_file():
        raise CliError(f"no sync ledger at {working_dir / LEDGER_FILENAME}: no email sync ran with this pipeline "
                       "name and --pipelines-dir (or give --ledger-url)", EXIT_USAGE)
    return url, working_dir


def _line(record: EmailRecord) -> str:
    return f"  run {record.run}  {record.at}  to {record.to}  subject {record.subject!r}  key {record.key}"


def run(args: argparse.Namespace, console: Console) -> Result:
    site = _site_uuid(args)
    url, working_dir = _location(args)
    if args.action == "uncertain":
        found = list_uncertain(site, ledger_url=url, working_dir=working_dir, run=args.run)
        runs = sorted({r.run for r in found})
        lines = [f"{len(found)} uncertain emails (their request got no answer: they may or may not have reached "
                 "Bento; no sync sends them again)"]
        lines += [_line(r) for r in found]
        if found:
            lines.append("check each in Bento's logs; for a run whose emails were NOT delivered: "
                         f"{PROG} emails release --run {runs[0]} --yes")
        summary = {"command": "emails", "action": "uncertain", "count": len(found),
                   "emails": [r.as_dict() for r in found], "runs": runs, "exit_code": EXIT_OK, "ok": True}
        return Result(EXIT_OK, summary, "\n".join(lines))
    if not args.run and not args.key:
        raise CliError("release needs --run LOAD_ID or --key KEY: choose the emails you checked in Bento's logs",
                       EXIT_USAGE)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("Refusing to release without confirmation: stdin is not a terminal. Check Bento's logs, "
                           "then pass --yes (a released email that did reach Bento is sent twice)", EXIT_USAGE)
        chosen = list_uncertain(site, ledger_url=url, working_dir=working_dir, run=args.run)
        chosen = [r for r in chosen if not args.key or r.key in args.key]
        print("\n".join([f"About to release {len(chosen)} uncertain emails (the next sync sends them):"]
                        + [_line(r) for r in chosen]) + "\nRelease? [y/N] ", end="", file=console.err, flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise CliError("not released: confirmation declined", EXIT_USAGE)
    released = release_uncertain(site, run=args.run, keys=args.key, ledger_url=url, working_dir=working_dir)
    text = f"released {len(released)} emails: the next sync of their table sends them"
    summary = {"command": "emails", "action": "release", "count": len(released),
               "emails": [r.as_dict() for r in released], "exit_code": EXIT_OK, "ok": True}
    return Result(EXIT_OK, summary, "\n".join([text, *(_line(r) for r in released)]))
