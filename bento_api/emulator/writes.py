"""Bento's write endpoints: batch imports of subscribers, events and emails, and commands.

Batch bodies are validated as a whole first (wrapper, 1..max rows) so that an over-limit batch applies nothing;
then each row is checked and counted as failed or handed to `call.submit`, which applies it at once (default
mode) or queues it, as Bento does (bento_like mode, writequeue.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from . import limits
from .calls import Call, Response, error, field_errors
from .store import SentEmail, Store, Subscriber
from .timeutil import parse_iso
from .validation import is_flat, is_flat_dict, normalize_email, split_tags


# ---------------------------------------------------------------- batch helpers
def batch_rows(call: Call, wrapper: str, maximum: int, label: str | None = None) -> list[Any] | Response:
    """The list under `wrapper`, or a 400 saying why (missing, not a list, empty, over the maximum).

    Which status Bento gives an over-limit batch is unknown: the default mode answers 400, bento_like 422.
    """
    body = call.body
    label = label or wrapper
    if not isinstance(body, dict) or wrapper not in body:
        return error(400, f"Missing '{wrapper}': send {{\"{wrapper}\": [...]}} with 1 to {maximum} {label}")
    rows = body[wrapper]
    if not isinstance(rows, list):
        return error(400, f"'{wrapper}' must be a list of 1 to {maximum} {label}")
    if not rows:
        return error(400, f"'{wrapper}' is empty: send 1 to {maximum} {label}")
    if len(rows) > maximum:
        return error(422 if call.cfg.bento_like else 400,
                     f"Too many {label}: {len(rows)} in one request, at most {maximum}; nothing was applied")
    return rows


_SUBSCRIBER_SPECIAL = frozenset({"email", "tags", "remove_tags", "command"})
#: the per-row `command` an old Bento page documents for imports (docs/bento-api.md, "Subscriber import"); the
#: emulator honours it, the pessimistic reading, so a client that leaks a `command` column is caught
IMPORT_COMMANDS = frozenset({"subscribe", "unsubscribe"})


def parse_subscriber_row(row: Any) -> tuple[str, dict[str, Any], list[str], list[str]] | None:
    """(email, custom fields, tags to add, tags to remove), or None if Bento would refuse the row."""
    if not isinstance(row, dict):
        return None
    email = normalize_email(row.get("email"))
    if email is None:
        return None
    add: list[str] = []
    remove: list[str] = []
    for key, target in (("tags", add), ("remove_tags", remove)):
        if key in row and row[key] is not None:
            names = split_tags(row[key])
            if names is None:
                return None
            target.extend(names)
    fields = {k: v for k, v in row.items() if k not in _SUBSCRIBER_SPECIAL}
    if not all(isinstance(k, str) and k and is_flat(v) for k, v in fields.items()):
        return None
    return email, fields, add, remove


def batch_subscribers(call: Call) -> Response:
    rows = batch_rows(call, "subscribers", limits.MAX_SUBSCRIBERS_PER_BATCH)
    if isinstance(rows, Response):
        return rows
    accepted = []
    for row in rows:
        parsed = parse_subscriber_row(row)
        if parsed is not None and not call.plan.refuses(parsed[0]):
            accepted.append((*parsed, row.get("command")))
    store = call.store

    def apply() -> None:
        now = store.now()
        for email, fields, add, remove, command in accepted:
            sub, _ = store.get_or_create(email)
            store.apply_fields(sub, fields)
            store.add_tags(sub, add)
            store.remove_tags(sub, remove)
            store.bump(sub, now)
            if command in IMPORT_COMMANDS:
                sub.unsubscribed_at = None if command == "subscribe" else (sub.unsubscribed_at or now)

    call.submit(apply)
    return Response(200, {"results": len(accepted), "failed": len(rows) - len(accepted)})


def parse_event_row(row: Any) -> tuple[str, str, dict[str, Any] | None, dict[str, Any] | None, str | None] | None:
    if not isinstance(row, dict):
        return None
    email = normalize_email(row.get("email"))
    type_ = row.get("type")
    if email is None or not isinstance(type_, str) or not type_.strip():
        return None
    fields = row.get("fields")
    if fields is not None and not is_flat_dict(fields):
        return None
    details = row.get("details")
    if details is not None and not isinstance(details, dict):
        return None
    date = row.get("date")
    if date is not None:
        try:
            parse_iso(date)
        except (ValueError, TypeError):
            return None
    return email, type_.strip(), fields, details, date


def _event_effects(store: Store, sub: Subscriber, type_: str, details: dict[str, Any] | None,
                   now: datetime) -> None:
    """The built-in $ events that change the person (reference §3)."""
    tag_name = details.get("tag") if isinstance(details, dict) else None
    if type_ == "$unsubscribe" and sub.unsubscribed_at is None:
        sub.unsubscribed_at = now
    elif type_ == "$subscribe":
        sub.unsubscribed_at = None
    elif type_ == "$tag" and isinstance(tag_name, str) and tag_name.strip():
        store.add_tags(sub, [tag_name.strip()])
    elif type_ == "$remove_tag" and isinstance(tag_name, str):
        store.remove_tags(sub, [tag_name.strip()])


def batch_events(call: Call) -> Response:
    rows = batch_rows(call, "events", limits.MAX_EVENTS_PER_BATCH)
    if isinstance(rows, Response):
        return rows
    accepted = []
    for row in rows:
        parsed = parse_event_row(row)
        if parsed is not None and not call.plan.refuses(parsed[0]):
            accepted.append(parsed)
    store = call.store

    def apply() -> None:
        now = store.now()
        for email, type_, fields, details, date in accepted:
            sub, _ = store.get_or_create(email)
            if fields:
                store.apply_fields(sub, fields)
            _event_effects(store, sub, type_, details, now)
            store.bump(sub, now)
            store.add_event(email, type_, fields, details, date, now)  # a repeated unique key is accepted, not stored

    call.submit(apply)
    return Response(200, {"results": len(accepted), "failed": len(rows) - len(accepted)})


def email_batch(call: Call) -> list[Any] | Response:
    """The rows of a `/batch/emails` body, or the error Bento answers it with (both emulator modes)."""
    rows = batch_rows(call, "emails", limits.MAX_EMAILS_PER_BATCH)
    if isinstance(rows, Response):
        return rows
    return check_email_rows(call, rows) or rows


def batch_emails(call: Call) -> Response:
    rows = email_batch(call)
    if isinstance(rows, Response):
        return rows
    store = call.store

    def apply() -> None:
        for row in rows:
            to = normalize_email(row["to"]) or ""
            store.get_or_create(to)  # Bento creates unknown recipients
            pers = row.get("personalizations")
            store.emails_sent.append(SentEmail(
                to, row["from"].strip().lower(), row["subject"], row["html_body"],
                bool(row.get("transactional", False)), pers if isinstance(pers, dict) else None, store.now()))

    call.submit(apply)
    return Response(200, {"results": len(rows)})


def check_email_rows(call: Call, rows: list[Any]) -> Response | None:
    """The error Bento gives a batch of emails (missing keys, a `from` that is no author, a bad `to`), or None."""
    problems: list[tuple[str, str]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            problems.append((f"emails[{i}]", "must be an object"))
            continue
        for key in ("to", "from", "subject", "html_body"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                problems.append((f"emails[{i}].{key}", "is required"))
    if problems:
        return field_errors(400, *problems)
    for row in rows:
        if row["from"].strip().lower() not in call.cfg.authors:
            return error(500, limits.AUTHOR_NOT_AUTHORIZED)  # Bento answers this with a 500
    bad_to = [(f"emails[{i}].to", "is invalid") for i, r in enumerate(rows) if normalize_email(r["to"]) is None]
    if bad_to:
        return field_errors(422, *bad_to)
    return None


# ---------------------------------------------------------------- commands
def check_command(cmd: Any) -> tuple[str, str, Any] | None:
    """(name, normalised email, query) of a well-formed command, or None if Bento would count it as failed
    whatever the data (unknown command, bad email, a query of the wrong shape)."""
    if not isinstance(cmd, dict):
        return None
    name, email, query = cmd.get("command"), normalize_email(cmd.get("email")), cmd.get("query")
    if email is None or not isinstance(name, str):
        return None
    if name in ("add_tag", "add_tag_via_event", "remove_tag"):
        well_formed = isinstance(query, str) and bool(query.strip())
    elif name == "add_field":
        well_formed = (isinstance(query, dict) and isinstance(query.get("key"), str) and bool(query["key"])
                       and is_flat(query.get("value")))
    elif name == "remove_field":
        well_formed = isinstance(query, str) and bool(query)
    elif name == "change_email":
        well_formed = normalize_email(query) is not None
    else:
        well_formed = name in ("subscribe", "unsubscribe")
    return (name, email, query) if well_formed else None


def _run_command(store: Store, cmd: Any) -> bool:
    """Apply one command; False if Bento would count it as failed."""
    checked = check_command(cmd)
    if checked is None:
        return False
    name, email, query = checked
    if name in ("add_tag", "add_tag_via_event", "remove_tag"):
        sub, _ = store.get_or_create(email)
        if name == "remove_tag":
            store.remove_tags(sub, [query.strip()])
        else:
            store.add_tags(sub, [query.strip()])
        store.bump(sub)
        return True
    if name == "add_field":
        sub, _ = store.get_or_create(email)
        store.apply_fields(sub, {query["key"]: query.get("value")})
        store.bump(sub)
        return True
    if name == "remove_field":
        sub, _ = store.get_or_create(email)
        sub.fields.pop(query, None)
        store.bump(sub)
        return True
    if name == "subscribe":
        store.subscribe(email)
        return True
    if name == "unsubscribe":
        store.unsubscribe(email)
        return True
    new = normalize_email(query)  # change_email, the one command left
    return new is not None and store.change_email(email, new)


def fetch_commands(call: Call) -> Response:
    body = call.body
    if isinstance(body, dict) and isinstance(body.get("command"), dict):
        cmds: list[Any] = [body["command"]]  # the Node and PHP SDKs send one object
    else:
        rows = batch_rows(call, "command", limits.MAX_COMMANDS_PER_CALL, "commands")
        if isinstance(rows, Response):
            return rows
        cmds = rows
    store, plan = call.store, call.plan
    succeeded: list[int] = []

    def apply() -> None:
        for cmd in cmds:
            email = normalize_email(cmd.get("email")) if isinstance(cmd, dict) else None
            if email is not None and plan.refuses(email):
                continue
            succeeded.append(int(_run_command(store, cmd)))

    call.submit(apply)
    if call.cfg.queues_writes:
        # Bento answers with a count of queued commands: one that later fails does so silently.
        return Response(200, {"results": len(cmds), "failed": 0})
    ok = sum(succeeded)
    return Response(200, {"results": ok, "failed": len(cmds) - ok})
