"""What bento-dlt relies on about Bento's API, stated once: paths, families, maxima, page sizes, the email
rule and the response envelope.

The source, the destination, the ledger and the CLI read these names instead of keeping their own copies,
so that a fact corrected here is corrected everywhere. Each fact, where it comes from and the decision we
took where Bento's material disagrees is in docs/bento-api.md (section names are given below).
The emulator keeps its own copy in `bento_api/emulator/limits.py` on purpose: it checks this client
independently, so a wrong number here must not silently become right there too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from .errors import BentoResponseError

# -- endpoints (docs/bento-api.md, "Endpoints we use"); relative to the base URL, which ends in /api/v1 -----

TAGS_PATH: Final = "/fetch/tags"
FIELDS_PATH: Final = "/fetch/fields"
SEGMENTS_PATH: Final = "/fetch/segments"
BROADCASTS_PATH: Final = "/fetch/broadcasts"
SEQUENCES_PATH: Final = "/fetch/sequences"
WORKFLOWS_PATH: Final = "/fetch/workflows"
EMAIL_TEMPLATE_PATH: Final = "/fetch/emails/templates/{id}"
SEARCH_PATH: Final = "/fetch/search"
SUBSCRIBER_PATH: Final = "/fetch/subscribers"
SITE_STATS_PATH: Final = "/stats/site"
SEGMENT_STATS_PATH: Final = "/stats/segment"
SUBSCRIBERS_BATCH_PATH: Final = "/batch/subscribers"
EVENTS_BATCH_PATH: Final = "/batch/events"
EMAILS_BATCH_PATH: Final = "/batch/emails"
#: commands live under /fetch (so they share the fetch budget), although they write
COMMANDS_PATH: Final = "/fetch/commands"
#: the cheapest authenticated read: wrong keys, site_uuid or User-Agent fail here before any row is sent
CREDENTIALS_CHECK_PATH: Final = TAGS_PATH

#: endpoint families, each with its own rate budget (docs/bento-api.md, "Rate limits")
FAMILIES: Final = ("fetch", "batch", "stats", "experimental")


def family_of(path: str) -> str:
    """The rate family of an API path such as `/batch/events` or `fetch/tags` (unknown heads count as fetch)."""
    head = path.lstrip("/").split("/", 1)[0]
    return head if head in FAMILIES else "fetch"


# -- batch maxima and page sizes (docs/bento-api.md, "Batch writes" and "Pagination") ----------------------

#: rows per request, per operation: Bento refuses larger requests
BATCH_MAXIMA: Final[Mapping[str, int]] = MappingProxyType({
    "subscribers": 1000,
    "events": 1000,
    "emails": 60,
    "commands": 100,
    "broadcasts": 100,
})

#: `/fetch/search` is documented as 100 people a page; list endpoints document no page size at all
SEARCH_PAGE_SIZE: Final = 100


@dataclass(frozen=True)
class WriteEndpoint:
    """Where one write operation goes: its path, the body key wrapping the list of rows, and the maximum."""

    path: str
    wrapper: str
    maximum: int


#: the write operations the destination offers (docs/bento-api.md, "Batch writes" and "Commands")
WRITE_ENDPOINTS: Final[Mapping[str, WriteEndpoint]] = MappingProxyType({
    "subscribers": WriteEndpoint(SUBSCRIBERS_BATCH_PATH, "subscribers", BATCH_MAXIMA["subscribers"]),
    "events": WriteEndpoint(EVENTS_BATCH_PATH, "events", BATCH_MAXIMA["events"]),
    "commands": WriteEndpoint(COMMANDS_PATH, "command", BATCH_MAXIMA["commands"]),
    "emails": WriteEndpoint(EMAILS_BATCH_PATH, "emails", BATCH_MAXIMA["emails"]),
})

# -- values Bento documents (docs/bento-api.md, "Commands" and "Broadcasts") -------------------------------

#: `/fetch/broadcasts` answers only `sent` unless asked for one of these
BROADCAST_STATUSES: Final[tuple[str, ...]] = ("sent", "draft", "sending", "scheduled", "paused", "canceled")

#: commands of /fetch/commands that need a `query`, and all of them
COMMANDS_NEEDING_QUERY: Final = frozenset(
    {"add_tag", "add_tag_via_event", "remove_tag", "add_field", "remove_field", "change_email"}
)
COMMANDS: Final = COMMANDS_NEEDING_QUERY | {"subscribe", "unsubscribe"}

#: keys Bento's subscriber import may interpret beyond a row's fields (docs/bento-api.md, "Subscriber import"):
#: an old Bento page documents a per-row `command` ("subscribe" / "unsubscribe"). The destination never sends a
#: column that maps to one of them, so subscriptions change only through the paths that pass its consent checks
RESERVED_IMPORT_KEYS: Final = frozenset({"command"})

#: the 500 body Bento sends when an email's `from` is not an Author of the account (never retried)
AUTHOR_NOT_AUTHORIZED: Final = "Author not authorized to send on this account"

# -- the email rule (docs/bento-api.md, "Email addresses") -------------------------------------------------

MAX_EMAIL_LENGTH: Final = 254
EMAIL_PATTERN: Final = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")


def normalise_email(email: str) -> str:
    """An email as Bento keys people: trimmed and lower-cased. Ledger keys are built on it, so it never changes."""
    return email.strip().lower()


def is_valid_email(email: str) -> bool:
    """True if an already normalised email passes the rule: at most 254 characters, and the pattern."""
    return len(email) <= MAX_EMAIL_LENGTH and EMAIL_PATTERN.match(email) is not None


# -- the response envelope (docs/bento-api.md, "Response envelope") ----------------------------------------


def data_list(body: Any, path: str) -> list[dict[str, Any]]:
    """The list in a `{"data": [...]}` answer (`{"data": null}` is an empty list); any other shape is an error.

    One check for every list read (paged or not), so a changed answer fails the same way everywhere.
    """
    if isinstance(body, Mapping) and "data" in body:
        data = body["data"]
        if data is None:
            return []
        if isinstance(data, list):
            return data
    raise BentoResponseError(f"Bento {path}: expected {{\"data\": [...]}}, got {str(body)[:200]}", path=path)


def data_object(body: Any) -> Mapping[str, Any] | None:
    """The object in a `{"data": {...}}` answer; None when Bento found nothing (`{"data": null}`, `{}`)."""
    data = body.get("data") if isinstance(body, Mapping) else None
    return data if isinstance(data, Mapping) and data else None
