"""The counts mode's answers: Bento's checks and answers, with writes kept as counts and hashes (tally.py).

Batch bodies are checked exactly as in writes.py (the same functions), so a client meets the same 400s, 422s and
`failed` counts; only what an accepted write leaves behind differs. Reads that would need records (one
subscriber, the search) answer 409 saying so, never an empty page a client could take for "nobody".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import limits
from .calls import Call, Handler, Response, error
from .tally import Tally, text_hashes
from .validation import normalize_email
from .writes import (
    IMPORT_COMMANDS,
    batch_rows,
    check_command,
    email_batch,
    parse_event_row,
    parse_subscriber_row,
)

#: the answer of a read that needs records, in the API and the admin routes alike
NO_RECORDS = ("this emulator runs with records=counts: it keeps counts and hashes, no subscriber, event or "
              "email records and no request log; GET /_emulator/summary reports them")


def no_records(call: Call | None = None) -> Response:
    return error(409, NO_RECORDS)


def batch_subscribers(tally: Tally, call: Call) -> Response:
    rows = batch_rows(call, "subscribers", limits.MAX_SUBSCRIBERS_PER_BATCH)
    if isinstance(rows, Response):
        return rows
    accepted: list[tuple[str, dict[str, Any]]] = []
    for row in rows:
        parsed = parse_subscriber_row(row)
        if parsed is not None and not call.plan.refuses(parsed[0]):
            accepted.append((parsed[0], row))

    def apply() -> None:
        tally.add_people(email for email, _ in accepted)
        tally.record(call.path, [{**row, "email": email} for email, row in accepted])
        for email, row in accepted:  # in order: a later row's command wins
            if row.get("command") in IMPORT_COMMANDS:
                tally.set_unsubscribed(email, row["command"] == "unsubscribe")

    call.submit(apply)
    return Response(200, {"results": len(accepted), "failed": len(rows) - len(accepted)})


def batch_events(tally: Tally, call: Call) -> Response:
    rows = batch_rows(call, "events", limits.MAX_EVENTS_PER_BATCH)
    if isinstance(rows, Response):
        return rows
    accepted: list[tuple[str, str, dict[str, Any] | None, dict[str, Any]]] = []
    for row in rows:
        parsed = parse_event_row(row)
        if parsed is not None and not call.plan.refuses(parsed[0]):
            email, type_, _, details, _ = parsed
            accepted.append((email, type_, details, row))

    def apply() -> None:
        tally.add_people(email for email, _, _, _ in accepted)
        tally.record(call.path, [{**row, "email": email} for email, _, _, row in accepted])
        markers = []  # (email, type, details.unique.key): a repeat is accepted, not stored
        for email, type_, details, _ in accepted:
            unique = details.get("unique") if isinstance(details, dict) else None
            if isinstance(unique, dict) and unique.get("key") is not None:
                markers.append(f"{email}\n{type_}\n{unique['key']}")
            if type_ in ("$subscribe", "$unsubscribe"):  # in order: the later one wins
                tally.set_unsubscribed(email, type_ == "$unsubscribe")
        tally.events_stored += len(accepted) - len(markers) + tally.event_keys.add(text_hashes(markers))

    call.submit(apply)
    return Response(200, {"results": len(accepted), "failed": len(rows) - len(accepted)})


def batch_emails(tally: Tally, call: Call) -> Response:
    rows = email_batch(call)
    if isinstance(rows, Response):
        return rows
    items = [{**row, "to": normalize_email(row["to"]) or ""} for row in rows]

    def apply() -> None:
        tally.add_people(item["to"] for item in items)  # Bento creates unknown recipients
        tally.record(call.path, items)

    call.submit(apply)
    return Response(200, {"results": len(rows)})


def _apply_command(tally: Tally, name: str, email: str, query: Any) -> bool:
    if name == "change_email":
        new = normalize_email(query) or ""
        if not tally.knows(email) or (new != email and tally.knows(new)):
            return False
        tally.forget(email)
        tally.add_people([new])
        return True
    tally.add_people([email])
    if name in ("subscribe", "unsubscribe"):
        tally.set_unsubscribed(email, name == "unsubscribe")
    return True


def fetch_commands(tally: Tally, call: Call) -> Response:
    body = call.body
    if isinstance(body, dict) and isinstance(body.get("command"), dict):
        cmds: list[Any] = [body["command"]]
    else:
        rows = batch_rows(call, "command", limits.MAX_COMMANDS_PER_CALL, "commands")
        if isinstance(rows, Response):
            return rows
        cmds = rows
    succeeded: list[int] = []

    def apply() -> None:
        applied: list[Mapping[str, Any]] = []
        for cmd in cmds:
            checked = check_command(cmd)
            if checked is not None and call.plan.refuses(checked[1]):
                continue
            ok = checked is not None and _apply_command(tally, *checked)
            if ok and checked is not None:
                tally.commands[checked[0]] += 1
                applied.append({**cmd, "email": checked[1]})
            succeeded.append(int(ok))
        tally.record(call.path, applied)

    call.submit(apply)
    if call.cfg.queues_writes:
        return Response(200, {"results": len(cmds), "failed": 0})
    ok = sum(succeeded)
    return Response(200, {"results": ok, "failed": len(cmds) - ok})


def stats_site(tally: Tally, call: Call) -> Response:
    counts = tally.counts()
    total, unsub = counts["subscribers"], counts["unsubscribed"]
    return Response(200, {"user_count": total, "subscriber_count": total - unsub, "unsubscriber_count": unsub})


def routes(tally: Tally) -> dict[tuple[str, str], Handler]:
    """The handlers that replace api.ROUTES' in the counts mode."""

    def bind(func: Callable[[Tally, Call], Response]) -> Handler:
        def handler(call: Call) -> Response:
            return func(tally, call)

        return handler

    return {
        ("POST", "/batch/subscribers"): bind(batch_subscribers),
        ("POST", "/batch/events"): bind(batch_events),
        ("POST", "/batch/emails"): bind(batch_emails),
        ("POST", "/fetch/commands"): bind(fetch_commands),
        ("GET", "/stats/site"): bind(stats_site),
        ("GET", "/fetch/subscribers"): no_records,
        ("POST", "/fetch/subscribers"): no_records,
        ("GET", "/fetch/search"): no_records,
        ("POST", "/fetch/search"): no_records,
    }
