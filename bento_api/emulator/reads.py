"""Bento's read endpoints and the few small creates beside them: one subscriber, the search, tags, fields,
segments, broadcasts, sequences, workflows, templates, stats and the experimental email validation."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

from . import limits, views
from .calls import Call, Response, error, field_errors
from .store import Subscriber
from .timeutil import parse_iso
from .validation import normalize_email


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
