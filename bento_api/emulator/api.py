"""Bento's /api/v1 endpoints: request checks and effects on the store, independent of HTTP plumbing.

Each handler takes a Call (already authenticated, rate-limited and parsed) and returns a Response.
Batch bodies are validated as a whole first (wrapper, 1..max rows) so that an over-limit batch
applies nothing; then each row is checked and counted as failed or handed to `call.submit`, which
applies it at once (default mode) or queues it, as Bento does (bento_like mode, writequeue.py).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import limits, views
from .config import EmulatorConfig
from .faults import FaultPlan
from .store import SentEmail, Store, Subscriber
from .timeutil import parse_iso
from .validation import is_flat, is_flat_dict, normalize_email, split_tags
from .writequeue import Apply

JSON_TYPE = "application/json; charset=utf-8"


@dataclass
class Response:
    """An answer: a JSON payload, or raw bytes with their own content type."""

    status: int
    payload: Any = None
    raw: bytes | None = None
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """One authenticated API request, its parsed body and what the faults decided for it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    store: Store
    cfg: EmulatorConfig
    #: applies a write now or queues it (bento_like); handlers never change the store for a write otherwise
    submit: Callable[[Apply], None]
    plan: FaultPlan = field(default_factory=FaultPlan)


Handler = Callable[[Call], Response]


def error(status: int, message: str) -> Response:
    return Response(status, {"error": message})


def field_errors(status: int, *pairs: tuple[str, str]) -> Response:
    """The other error shape Bento documents: {"errors": [{"field", "message"}]}."""
    return Response(status, {"errors": [{"field": f, "message": m} for f, m in pairs]})


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


def batch_emails(call: Call) -> Response:
    rows = batch_rows(call, "emails", limits.MAX_EMAILS_PER_BATCH)
    if isinstance(rows, Response):
        return rows
    refused = check_email_rows(call, rows)
    if refused is not None:
        return refused
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


# ---------------------------------------------------------------- subscribers and search
def get_subscriber(call: Call) -> Response:
    store = call.store
    with store.lock:
        sub: Subscriber | None = None
        if call.query.get("email"):
            email = call.query["email"].strip().lower()
            sub = store.subscribers.get(email)
        elif call.query.get("uuid"):
            sub = store.by_uuid(call.query["uuid"].strip())
        return Response(200, {"data": views.visitor(sub) if sub is not None else None})


def create_subscriber(call: Call) -> Response:
    body = call.body
    if not isinstance(body, dict) or not isinstance(body.get("subscriber"), dict):
        return error(400, "Missing 'subscriber': send {\"subscriber\": {\"email\": ...}}")
    email = normalize_email(body["subscriber"].get("email"))
    if email is None:
        return field_errors(422, ("email", "is invalid"))
    with call.store.lock:
        sub, _ = call.store.get_or_create(email)
        return Response(201, {"data": views.visitor(sub)})


_SEARCH_FILTERS = ("created_at", "updated_at", "unsubscribed_at")


def search(call: Call) -> Response:
    if not call.cfg.enterprise:
        return error(403, "Forbidden: subscriber search (/fetch/search) is only available on Enterprise plans; "
                          "contact Bento support for access, or look people up with /fetch/subscribers?email=")
    body = call.body if call.body is not None else {}
    if not isinstance(body, dict):
        return error(400, "The search body must be a JSON object")
    page = _page_number(body.get("page", call.query.get("page")))
    if page is None:
        return error(400, "page must be a positive integer")
    bounds: list[tuple[str, str, Any]] = []
    for name in _SEARCH_FILTERS:
        spec = body.get(name)
        if spec is None:
            continue
        if not isinstance(spec, dict):
            return error(400, f"'{name}' must be an object with 'gt' and/or 'lt' (ISO 8601)")
        for op in ("gt", "lt"):
            if spec.get(op) is not None:
                try:
                    bounds.append((name, op, parse_iso(spec[op])))
                except (ValueError, TypeError):
                    return error(400, f"'{name}.{op}' is not an ISO 8601 date: {spec[op]!r}")
    email = body.get("email", call.query.get("email"))
    size = call.cfg.search_page_size
    with call.store.lock:
        hits = []
        for sub in call.store.subscribers_by_id():
            if isinstance(email, str) and sub.email != email.strip().lower():
                continue
            if all(_passes(getattr(sub, name), op, bound) for name, op, bound in bounds):
                hits.append(sub)
        data = [views.visitor(s) for s in hits[(page - 1) * size: page * size]]
    return Response(200, {"data": data, "meta": {"page": page}})


def _passes(value: Any, op: str, bound: Any) -> bool:
    if value is None:
        return False
    return bool(value > bound) if op == "gt" else bool(value < bound)


# ---------------------------------------------------------------- lists
def _page_number(raw: Any) -> int | None:
    """1-based page; missing means 1, values below 1 are taken as 1 (as Rails paginators do)."""
    if raw is None or raw == "":
        return 1
    if isinstance(raw, bool):
        return None
    try:
        n = int(raw)
    except (TypeError, ValueError):
        return None
    return max(1, n)


def _paged(call: Call, items: list[Any], render: Callable[[Any], dict[str, Any]]) -> Response:
    page = _page_number(call.query.get("page"))
    if page is None:
        return error(400, "page must be a positive integer")
    size = call.cfg.page_size
    with call.store.lock:
        return Response(200, {"data": [render(x) for x in items[(page - 1) * size: page * size]]})


def list_tags(call: Call) -> Response:
    with call.store.lock:
        return Response(200, {"data": [views.tag(t) for t in sorted(call.store.tags.values(), key=lambda t: t.id)]})


def create_tag(call: Call) -> Response:
    body = call.body
    spec = body.get("tag") if isinstance(body, dict) else None
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str) or not name.strip():
        return error(400, "Missing 'tag': send {\"tag\": {\"name\": ...}}")
    with call.store.lock:
        return Response(201, {"data": views.tag(call.store.tag_for_name(name.strip()))})


def list_fields(call: Call) -> Response:
    with call.store.lock:
        items = sorted(call.store.fields.values(), key=lambda f: f.id)
        return Response(200, {"data": [views.field_def(f) for f in items]})


_FIELD_KEY = re.compile(r"^[A-Za-z0-9_\- ]+$")


def create_field(call: Call) -> Response:
    body = call.body
    spec = body.get("field") if isinstance(body, dict) else None
    key = spec.get("key") if isinstance(spec, dict) else None
    if not isinstance(key, str) or not key.strip():
        return error(400, "Missing 'field': send {\"field\": {\"key\": ...}}")
    if not _FIELD_KEY.match(key.strip()):
        return field_errors(422, ("key", "is invalid"))
    with call.store.lock:
        return Response(201, {"data": views.field_def(call.store.field_for_key(key.strip()))})


def list_segments(call: Call) -> Response:
    with call.store.lock:
        items = sorted(call.store.segments.values(), key=lambda s: (s.name, s.id))
        return Response(200, {"data": [views.segment(s) for s in items]})


def get_segment(call: Call, arg: str) -> Response:
    with call.store.lock:
        seg = call.store.segments.get(int(arg))
        if seg is None:
            return error(404, "Segment not found")
        return Response(200, {"data": views.segment(seg)})


def list_broadcasts(call: Call) -> Response:
    raw = (call.query.get("status") or "").strip().lower()
    status = limits.BROADCAST_STATUS_ALIASES.get(raw, raw)
    if status not in limits.BROADCAST_STATUSES:
        status = limits.DEFAULT_BROADCAST_STATUS  # omitted or unsupported falls back to sent
    items = [b for b in call.store.broadcasts if b.status == status]
    return _paged(call, items, lambda b: views.broadcast(b, call.store))


def list_sequences(call: Call) -> Response:
    return _paged(call, call.store.sequences, lambda s: views.sequence(s, call.store))


def list_workflows(call: Call) -> Response:
    return _paged(call, call.store.workflows, lambda w: views.workflow(w, call.store))


def get_template(call: Call, arg: str) -> Response:
    with call.store.lock:
        t = call.store.templates.get(int(arg))
        if t is None:
            return error(404, "Email template not found")
        return Response(200, {"data": views.email_template(t)})


# ---------------------------------------------------------------- stats and experimental
def stats_site(call: Call) -> Response:
    with call.store.lock:
        total = len(call.store.subscribers)
        unsub = sum(1 for s in call.store.subscribers.values() if s.unsubscribed_at is not None)
    return Response(200, {"user_count": total, "subscriber_count": total - unsub, "unsubscriber_count": unsub})


def stats_segment(call: Call) -> Response:
    raw = (call.query.get("segment_id") or "").strip()
    if not raw:
        return error(400, "Missing segment_id")
    try:
        seg_id = int(raw)
    except ValueError:
        return error(404, "Segment not found")
    if seg_id not in call.store.segments:
        return error(404, "Segment not found")
    total = len(call.store.subscribers)
    rng = random.Random(f"{call.cfg.seed}:segment:{seg_id}")  # deterministic per segment
    users = rng.randint(0, total)
    unsub = rng.randint(0, users // 5)
    return Response(200, {"user_count": users, "subscriber_count": users - unsub, "unsubscriber_count": unsub})


def experimental_validation(call: Call) -> Response:
    body = call.body if isinstance(call.body, dict) else {}
    email = body.get("email", call.query.get("email"))
    if not isinstance(email, str) or not email.strip():
        return error(400, "Missing email")
    return Response(200, {"valid": normalize_email(email) is not None})


# ---------------------------------------------------------------- routing
ROUTES: dict[tuple[str, str], Handler] = {
    ("POST", "/batch/subscribers"): batch_subscribers,
    ("POST", "/batch/events"): batch_events,
    ("POST", "/batch/emails"): batch_emails,
    ("POST", "/fetch/commands"): fetch_commands,
    ("GET", "/fetch/subscribers"): get_subscriber,
    ("POST", "/fetch/subscribers"): create_subscriber,
    ("GET", "/fetch/search"): search,
    ("POST", "/fetch/search"): search,
    ("GET", "/fetch/tags"): list_tags,
    ("POST", "/fetch/tags"): create_tag,
    ("GET", "/fetch/fields"): list_fields,
    ("POST", "/fetch/fields"): create_field,
    ("GET", "/fetch/segments"): list_segments,
    ("GET", "/fetch/broadcasts"): list_broadcasts,
    ("GET", "/fetch/sequences"): list_sequences,
    ("GET", "/fetch/workflows"): list_workflows,
    ("GET", "/stats/site"): stats_site,
    ("GET", "/stats/segment"): stats_segment,
    ("POST", "/experimental/validation"): experimental_validation,
}

_PATTERNS: list[tuple[str, re.Pattern[str], Callable[[Call, str], Response]]] = [
    ("GET", re.compile(r"^/fetch/emails/templates/(\d{1,18})$"), get_template),
    ("GET", re.compile(r"^/fetch/segments/(\d{1,18})$"), get_segment),
]


def resolve(method: str, path: str) -> Handler | None:
    """The handler for this method and path (relative to /api/v1), or None (answered 404)."""
    handler = ROUTES.get((method, path))
    if handler is not None:
        return handler
    for m, pattern, func in _PATTERNS:
        match = pattern.match(path)
        if m == method and match is not None:
            return _bind(func, match.group(1))
    return None


def _bind(func: Callable[[Call, str], Response], arg: str) -> Handler:
    """A handler with its path parameter filled in."""

    def bound(call: Call) -> Response:
        return func(call, arg)

    return bound


def family_of(path: str) -> str:
    """Rate-limit family: the first path segment (fetch, batch, stats, experimental) or ''."""
    first = path.split("/", 2)[1] if path.startswith("/") else ""
    return first if first in limits.FAMILIES else ""


def body_rows(path: str, body: Any) -> tuple[int, list[str]]:
    """(rows, emails) of a batch or command body, for the request log."""
    key = {"/batch/subscribers": "subscribers", "/batch/events": "events", "/batch/emails": "emails",
           "/fetch/commands": "command"}.get(path)
    if key is None or not isinstance(body, dict):
        return 0, []
    rows = body.get(key)
    if isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list):
        return 0, []
    email_key = "to" if key == "emails" else "email"
    emails = [r[email_key].strip().lower() for r in rows if isinstance(r, dict) and isinstance(r.get(email_key), str)]
    return len(rows), emails
