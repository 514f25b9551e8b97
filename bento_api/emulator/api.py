"""Bento's /api/v1 routes: which handler answers a method and path, independent of HTTP plumbing.

The handlers live by what they do: writes.py (batches and commands) and reads.py (everything else); each takes a
Call and returns a Response (calls.py). Also here: the rate-limit family of a path and the rows of a body, for
the request log.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import limits
from .calls import Call, Handler, Response
from .reads import (
    create_field,
    create_subscriber,
    create_tag,
    experimental_validation,
    get_segment,
    get_subscriber,
    get_template,
    list_broadcasts,
    list_fields,
    list_segments,
    list_sequences,
    list_tags,
    list_workflows,
    search,
    stats_segment,
    stats_site,
)
from .writes import batch_emails, batch_events, batch_subscribers, fetch_commands

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
