"""Bento's documented limits, as docs/bento-api.md states them, for the emulator.

The emulator keeps its own copy of these facts on purpose, instead of importing `bento_api.facts` and
`bento_api.limits`: it is an independent check of our client, so it must not read the client's table (a
wrong number there would then be wrong in both places and go unnoticed).
"""

from __future__ import annotations

import re
from typing import Final

API_PREFIX: Final = "/api/v1"
ADMIN_PREFIX: Final = "/_emulator"

# Batch maxima (rows per request); more is a 400 with nothing applied.
MAX_SUBSCRIBERS_PER_BATCH: Final = 1000
MAX_EVENTS_PER_BATCH: Final = 1000
MAX_EMAILS_PER_BATCH: Final = 60
MAX_COMMANDS_PER_CALL: Final = 100

# Page sizes: Bento documents 100 for search only; list pages are undocumented, so the emulator
# defaults to 25 to catch clients that stop on a "short" page.
SEARCH_PAGE_SIZE: Final = 100
DEFAULT_LIST_PAGE_SIZE: Final = 25

# Rate budget per endpoint family (docs/bento-api.md, "Rate limits": Bento's newest text).
FAMILIES: Final = ("fetch", "batch", "stats", "experimental")
REQUESTS_PER_MINUTE: Final = 60.0  # fetch, batch, experimental
STATS_REQUESTS_PER_HOUR: Final = 30.0
BUCKET_CAPACITY: Final = 2.0

# Email validity (docs/bento-api.md, "Email addresses"): trimmed, lower-cased, at most 254 characters, this pattern.
MAX_EMAIL_LENGTH: Final = 254
EMAIL_RE: Final = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")

BROADCAST_STATUSES: Final = ("sent", "draft", "sending", "scheduled", "paused", "canceled")
BROADCAST_STATUS_ALIASES: Final = {"cancelled": "canceled"}
DEFAULT_BROADCAST_STATUS: Final = "sent"

# User-Agents Bento's edge may block (library defaults), blocked in the bento_like mode only: Bento
# documents only a missing User-Agent as blocked (which both modes refuse, as an empty one).
BLOCKED_USER_AGENT_PREFIXES: Final = ("python-httpx/", "python-requests/", "dlt/", "python-urllib", "curl/")

AUTHOR_NOT_AUTHORIZED: Final = "Author not authorized to send on this account"
