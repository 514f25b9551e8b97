"""`bento-dlt rejects`, `report` and `doctor`: look at what past syncs did, and check an account before the first.

`rejects` and `report` read the files the destination writes per load under
`<pipelines_dir>/<pipeline>/bento_rejects/`; without `--pipeline-name` they look at every pipeline there.
`doctor` proves the credentials, the site_uuid and the User-Agent with one GET, checks that subscriber
search (Enterprise) answers, and prints the limits in force. It never prints a key.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from bento_api import (
    BATCH_MAXIMA,
    DEFAULT_USER_AGENT,
    BentoClient,
    BentoConfigError,
    BentoError,
    BentoSettings,
    Budgets,
    RetryPolicy,
)
from bento_api.facts import CREDENTIALS_CHECK_PATH, SEARCH_PATH, data_list
from bento_api.limits import ENV_EMAILS_PER_MINUTE, ENV_REQUESTS_PER_MINUTE, ENV_STATS_REQUESTS_PER_HOUR
from bento_destination import LoadReport, list_rejects, list_reports, load_ids
from bento_destination.settings import REJECTS_DIRNAME

from .cli_common import (
    CREDENTIAL_KEYS,
    EXIT_FAILED,
    EXIT_OK,
    Console,
    Result,
    credential_origin,
    mask,
    resolve_cli_budgets,
    resolve_credentials,
)

ROW_CHARS = 160
#: doctor answers quickly: one retry, not the minutes a scheduled run may wait out
DOCTOR_RETRY = RetryPolicy(max_attempts=2, max_total_seconds=15.0)


def add_rejects_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pipeline", nargs="?", help=argparse.SUPPRESS)  # `bento-dlt rejects NAME` also works
    parser.add_argument("--pipeline-name", help="pipeline to read (default: the newest load of any pipeline)")
    parser.add_argument("--load-id", help="one load (default: the newest load that left a report)")
    parser.add_argument("--table", help="only rows of this table")
    parser.add_argument("--limit", type=int, default=50, help="rows printed (default 50; --json prints all)")


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pipeline-name", help="only this pipeline (default: every pipeline with Bento loads)")
    parser.add_argument("--last", type=int, default=5, metavar="N", help="how many recent loads (default 5)")


def _pipelines_dir(args: argparse.Namespace) -> Path:
    if args.pipelines_dir:
        return Path(args.pipelines_dir)
    from dlt.common.pipeline import get_dlt_pipelines_dir

    return Path(get_dlt_pipelines_dir())


def _pipeline_names(args: argparse.Namespace) -> list[str]:
    """The named pipeline, or every pipeline in the pipelines dir that has Bento loads."""
    name = args.pipeline_name or getattr(args, "pipeline", None)
    if name:
        return [name]
    root = _pipelines_dir(args)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / REJECTS_DIRNAME).is_dir())


def _newest_load(args: argparse.Namespace) -> tuple[str, str] | None:
    """(pipeline, load_id) of the newest load across the pipelines in scope (load ids are timestamps)."""
    root = _pipelines_dir(args)
    found = [(lid, name) for name in _pipeline_names(args) for lid in load_ids(root / name)]
    if not found:
        return None
    lid, name = max(found, key=lambda pair: float(pair[0]) if pair[0].replace(".", "", 1).isdigit() else 0.0)
    return name, lid


def run_rejects(args: argparse.Namespace, console: Console) -> Result:
    root = _pipelines_dir(args)
    if args.load_id and (args.pipeline_name or args.pipeline):
        name, load_id = args.pipeline_name or args.pipeline, args.load_id
    else:
        newest = _newest_load(args)
        if newest is None:  # nothing to list is no failure: exit 0, as `report` does
            scope = args.pipeline_name or args.pipeline or "any pipeline"
            summary = {"command": "rejects", "pipeline_name": args.pipeline_name or args.pipeline, "load_id": None,
                       "count": 0, "rejects": [], "exit_code": EXIT_OK, "ok": True}
            return Result(EXIT_OK, summary, f"no Bento loads found for {scope} under {root} (pass --pipelines-dir "
                                            "if the runs used another one)")
        name, load_id = newest[0], args.load_id or newest[1]
    rows = list_rejects(root / name, load_id, table=args.table)
    summary = {"command": "rejects", "pipeline_name": name, "load_id": load_id, "count": len(rows), "rejects": rows,
               "exit_code": EXIT_OK, "ok": True}
    scope = f" (table {args.table})" if args.table else ""
    lines = [f"{len(rows)} rejected rows in load {load_id} of {name}{scope}"]
    for record in rows[: max(args.limit, 0)]:
        row = json.dumps(record.get("row"), default=str, sort_keys=True)
        row = row if len(row) <= ROW_CHARS else row[: ROW_CHARS - 1] + "…"
        lines.append(f"  {record.get('table')} [{record.get('reason')}] {record.get('detail')}\n    row: {row}")
    if len(rows) > args.limit:
        lines.append(f"  ... {len(rows) - args.limit} more (--limit, or --json for all)")
    return Result(EXIT_OK, summary, "\n".join(lines))


def run_report(args: argparse.Namespace, console: Console) -> Result:
    root = _pipelines_dir(args)
    reports: list[LoadReport] = [r for name in _pipeline_names(args) for r in list_reports(root / name)]
    reports.sort(key=lambda r: r.load_id)
    recent = reports[-max(args.last, 1):]
    summary = {"command": "report", "pipelines_dir": str(root.resolve()), "reports": [r.to_dict() for r in recent],
               "exit_code": EXIT_OK, "ok": True}
    if not recent:
        text = f"no Bento loads under {root} (pass --pipelines-dir if the runs used another one)"
    else:
        text = "\n".join(r.format() for r in recent)
    return Result(EXIT_OK, summary, text)


# -- doctor ------------------------------------------------------------------------------------------


def _origin(flag: float | None, env_name: str) -> str:
    if flag is not None:
        return "flag"
    return env_name if os.environ.get(env_name) else "default"


def _limits(args: argparse.Namespace, budgets: Budgets) -> dict[str, Any]:
    return {
        "requests_per_minute": budgets.requests_per_minute,
        "requests_per_minute_from": _origin(args.requests_per_minute, ENV_REQUESTS_PER_MINUTE),
        "stats_requests_per_hour": budgets.stats_requests_per_hour,
        "stats_requests_per_hour_from": _origin(args.stats_requests_per_hour, ENV_STATS_REQUESTS_PER_HOUR),
        "emails_per_minute": budgets.emails_per_minute,
        "emails_per_minute_from": _origin(getattr(args, "emails_per_minute", None), ENV_EMAILS_PER_MINUTE),
        "max_in_flight": budgets.max_in_flight,
        "batch_maxima": dict(BATCH_MAXIMA),
    }


def _check_side(settings: BentoSettings, budgets: Budgets, user_agent: str) -> tuple[bool, list[dict[str, Any]]]:
    """One GET for credentials and User-Agent, one search page for Enterprise; returns (ok, checks)."""
    from bento_source.helpers import SearchUnavailableError, iter_search_pages

    checks: list[dict[str, Any]] = []
    credentials_check = f"credentials, site_uuid and User-Agent (GET {CREDENTIALS_CHECK_PATH})"
    search_check = f"subscriber search (GET {SEARCH_PATH}, Enterprise)"
    with BentoClient(settings, budgets, user_agent=user_agent, retry=DOCTOR_RETRY) as client:
        started = time.monotonic()
        try:
            count = len(data_list(client.get(CREDENTIALS_CHECK_PATH), CREDENTIALS_CHECK_PATH))
        except BentoError as error:
            checks.append({"check": credentials_check, "ok": False, "detail": error.message})
            return False, checks
        checks.append({"check": credentials_check, "ok": True,
                       "detail": f"accepted in {time.monotonic() - started:.2f}s ({count} tags)"})
        try:
            next(iter(iter_search_pages(client, {})), None)
            checks.append({"check": search_check, "ok": True,
                           "detail": "available: the subscribers resource can read everyone"})
        except SearchUnavailableError as error:
            checks.append({"check": search_check, "ok": None,
                           "detail": f"not available: {error.message}"})
        except BentoError as error:
            checks.append({"check": search_check, "ok": False,
                           "detail": error.message})
    return True, checks


def run_doctor(args: argparse.Namespace, console: Console) -> Result:
    budgets = resolve_cli_budgets(args)
    user_agent = args.user_agent or DEFAULT_USER_AGENT
    sides: dict[str, Any] = {}
    resolved: dict[str, BentoSettings] = {}
    for side in ("source", "destination"):
        origins = {key: credential_origin(args, side, key) for key in CREDENTIAL_KEYS}
        entry: dict[str, Any] = {"origins": origins}
        try:
            settings = resolve_credentials(args, side)
        except BentoConfigError as error:
            entry.update(ok=None, error=str(error))
        else:
            console.secrets += list(settings.secrets)
            resolved[side] = settings
            entry.update(base_url=settings.base_url, site_uuid=mask(settings.site_uuid))
        sides[side] = entry
    checked: dict[BentoSettings, tuple[bool, list[dict[str, Any]]]] = {}
    for side, settings in resolved.items():
        if settings not in checked:
            checked[settings] = _check_side(settings, budgets, user_agent)
        side_ok, checks = checked[settings]
        sides[side].update(ok=side_ok, checks=checks)
    # a side without credentials is only a warning (extract-only setups need no destination), none at all fails
    ok = bool(resolved) and all(sides[side]["ok"] for side in resolved)
    code = EXIT_OK if ok else EXIT_FAILED
    summary = {"command": "doctor", "user_agent": user_agent, "sides": sides, "limits": _limits(args, budgets),
               "exit_code": code, "ok": ok}
    return Result(code, summary, _format_doctor(summary))


def _format_doctor(summary: dict[str, Any]) -> str:
    marks = {True: "ok  ", False: "FAIL", None: "warn"}
    lines = [f"User-Agent: {summary['user_agent']}"]
    for side, entry in summary["sides"].items():
        section = "sources" if side == "source" else "destination"
        lines.append(f"{side} ([{section}.bento]):")
        for key, origin in entry["origins"].items():
            shown = entry.get(key) if key in ("base_url", "site_uuid") and entry.get(key) else None
            lines.append(f"  {key:<16} {origin}" + (f" -> {shown}" if shown else ""))
        if entry.get("error"):
            lines.append(f"  warn {entry['error']}")
        for check in entry.get("checks", []):
            lines.append(f"  {marks[check['ok']]} {check['check']}: {check['detail']}")
    limits = summary["limits"]
    lines.append(
        f"limits: {limits['requests_per_minute']:g} requests/min for fetch, batch and experimental each "
        f"({limits['requests_per_minute_from']}); stats {limits['stats_requests_per_hour']:,.0f}/hour "
        f"({limits['stats_requests_per_hour_from']}); emails {limits['emails_per_minute']:g}/min "
        f"({limits['emails_per_minute_from']}); at most {limits['max_in_flight']} requests in flight"
    )
    lines.append("batch maxima: " + ", ".join(f"{op} {n}" for op, n in limits["batch_maxima"].items()))
    lines.append("all checks passed" if summary["ok"] else "some checks failed (exit 1)")
    return "\n".join(lines)


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user-agent", help=f"User-Agent to test (default {DEFAULT_USER_AGENT})")
