"""What the ledger stores per row: canonical JSON, fingerprints and event keys, and their versions.

Every stored fingerprint says which version wrote it: version 2 (subscribers, `subscriber_fingerprint.py`)
starts with `s2:`; version 1 (events, and subscribers before version 2) is bare hex digits. Event keys
(derived and explicit) are version 1 and unchanged since they were introduced, so keys already in users'
ledgers stay valid. A ledger records these versions in its metadata (`VERSIONS`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import hashlib
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final

from bento_api.facts import normalise_email
from bento_api.timestamps import InvalidTimestamp, format_utc_key

from ..subscriber_fingerprint import VERSION as SUBSCRIBER_FINGERPRINT_VERSION

#: the ledger's layout: 1 wrote only bare-hex fingerprints; 2 may hold either, each saying its version
FORMAT_VERSION: Final = 2
EVENT_FINGERPRINT_VERSION: Final = 1
EVENT_KEY_VERSION: Final = 1
#: what a ledger records about itself (DuckDB: table ledger_meta; segments: Parquet metadata)
VERSIONS: Final[dict[str, str]] = {
    "format": str(FORMAT_VERSION),
    "subscriber_fingerprints": str(SUBSCRIBER_FINGERPRINT_VERSION),
    "event_fingerprints": str(EVENT_FINGERPRINT_VERSION),
    "event_keys": str(EVENT_KEY_VERSION),
}
#: a versioned fingerprint: `s<version>:<hex>`; anything else is version 1
_VERSIONED = re.compile(r"^s([0-9]+):")
#: the same rule in SQL (DuckDB), for a column or expression `value`
VERSION_SQL: Final = "coalesce(TRY_CAST(nullif(regexp_extract({value}, '^s([0-9]+):', 1), '') AS INTEGER), 1)"


def fingerprint_version(fingerprint: str) -> int:
    """The version that wrote ``fingerprint``: the number after `s` of a `s<n>:` prefix, else 1."""
    match = _VERSIONED.match(fingerprint)
    return int(match.group(1)) if match else 1


def _json_default(value: Any) -> Any:
    """Encode the few non-JSON scalars a mapped payload may still hold, the way they are sent."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    raise TypeError(f"cannot fingerprint a value of type {type(value).__name__}; map it to JSON first")


def canonical_json(value: Any) -> str:
    """One text per value: sorted keys, no whitespace, UTF-8 kept, so equal payloads hash equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default)


def fingerprint(payload: Mapping[str, Any]) -> str:
    """Version 1: sha256 of the payload's canonical JSON, first 32 hex digits (128 bits), no prefix."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()[:32]


def subscriber_fingerprint_v1(payload: Mapping[str, Any] | None, commands: Sequence[Mapping[str, Any]]) -> str:
    """What releases before version 2 stored for a subscriber row: its upsert and its commands, as mapped.

    Kept to recognise those entries: a row equal to one is unchanged, and its entry is re-stamped.
    """
    return fingerprint({"p": payload, "c": commands})


def _normalise_date(date: Any) -> Any:
    """Same instant, same key: "...Z", "+00:00" and datetime objects all become one UTC ISO text.

    Numbers pass through as they are; text the timestamp rule does not accept is kept as written.
    """
    if date is None:
        return None
    if isinstance(date, int | float) and not isinstance(date, bool) and math.isfinite(date):
        return date
    if isinstance(date, dt.date):  # datetimes too
        return format_utc_key(date)
    if isinstance(date, str):
        try:
            return format_utc_key(date)
        except InvalidTimestamp:
            return date.strip()
    raise TypeError(f"cannot derive an event key from a date of type {type(date).__name__}")


def derive_event_key(email: str, type: str, date: Any = None, details: Mapping[str, Any] | str | None = None) -> str:
    """A unique key derived from an event's content: (email, type, date, details); version 1.

    For event tables without their own key. The trade-off: two genuinely identical events (same person,
    type, instant and details) then count once, in Bento and in the ledger. Without a date, every repeat
    of the same event counts once, ever. An existing ``details.unique`` is left out of the hash.
    """
    if isinstance(details, str):
        with contextlib.suppress(json.JSONDecodeError):
            details = json.loads(details) if details.strip() else None
    if isinstance(details, Mapping):
        details = {k: v for k, v in details.items() if k != "unique"} or None
    content = ["event-v1", normalise_email(email), type.strip(), _normalise_date(date), details]
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()[:32]


def event_ledger_key(email: str, type: str, unique_key: str) -> str:
    """The ledger key of a keyed event: Bento keeps one event per (email, type, key), so must we."""
    return canonical_json([normalise_email(email), type.strip(), unique_key])
