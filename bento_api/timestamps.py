"""The one timestamp rule of bento-dlt (docs/bento-api.md, "Timestamps"), on pendulum's ISO 8601 parser.

Accepted: ISO 8601 / RFC 3339 text, extended or basic form, `T`, `t` or a space between date and time,
any number of fraction digits (kept to microseconds, cut, not rounded), an offset (`Z`, `+hh:mm`, `+hhmm`,
`+hh`) or none; a date alone (calendar, week or ordinal form); and Python `datetime` / `date` values.
Time zone: text without an offset and naive datetimes are UTC; a date alone is midnight UTC.
Written out in three forms, each for a reason (see the format functions).

We call `pendulum.parsing.parse_iso8601` (pendulum's compiled parser) rather than `pendulum.parse`, which
is about 60 times slower (measured in docs/bento-api.md): the source parses every `*_at` value of every row.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from pendulum.parsing import parse_iso8601

UTC: Final = dt.UTC


class InvalidTimestamp(ValueError):
    """A value the timestamp rule does not accept."""


def _as_stdlib_zone(value: dt.datetime) -> dt.datetime:
    """The same instant with a `datetime.timezone` (pendulum's fixed zones print odd names such as `+2:0`)."""
    offset = value.utcoffset()
    if offset is None:
        return value.replace(tzinfo=UTC)
    return value.replace(tzinfo=UTC if not offset else dt.timezone(offset))


def _midnight_utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def _parse_text(value: str) -> dt.datetime:
    """An aware datetime for ISO 8601 text (its zone may be one of pendulum's); InvalidTimestamp if not accepted."""
    text = value.strip()
    # RFC 3339 allows lower-case `t` and `z`; the parser wants them upper-case (no other letter is valid)
    try:
        parsed = parse_iso8601(text.upper())
    except (ValueError, TypeError, OverflowError):
        raise InvalidTimestamp(f"{text[:80]!r} is not an ISO 8601 date or timestamp") from None
    if isinstance(parsed, dt.datetime):
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    if isinstance(parsed, dt.date):
        return _midnight_utc(parsed)
    # a time alone or a duration (`P1D`) is ISO 8601 too, but not an instant
    raise InvalidTimestamp(f"{text[:80]!r} is not a date or timestamp")


def parse_timestamp(value: Any) -> dt.datetime:
    """An aware datetime for `value`, keeping the offset it was written with; InvalidTimestamp if not accepted.

    A datetime is returned as given (a naive one taken as UTC), so that a value's own text form survives.
    """
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, dt.date):
        return _midnight_utc(value)
    if not isinstance(value, str):
        raise InvalidTimestamp(f"expected ISO 8601 text, a datetime or a date, got {type(value).__name__}")
    return _as_stdlib_zone(_parse_text(value))


def parse_utc(value: Any) -> dt.datetime | None:
    """The instant of `value` in UTC, or None if the rule does not accept it (Bento's answers, user options).

    Text goes straight from the parser to UTC: the source calls this for every `*_at` value of every row.
    """
    try:
        parsed = _parse_text(value) if isinstance(value, str) else parse_timestamp(value)
    except InvalidTimestamp:
        return None
    return parsed.astimezone(UTC)


def format_bento(value: dt.datetime) -> str:
    """UTC, milliseconds, `Z` (`2024-08-06T05:44:04.444Z`): how Bento writes times, used for its search filters.

    The source also keeps these strings in its state, so the form must not change.
    """
    utc = parse_timestamp(value).astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def format_as_given(value: Any) -> str:
    """ISO 8601 keeping the offset the value came with, microseconds only when non-zero (Python's isoformat).

    What the destination sends: the instant is unchanged, and the text is the one already fingerprinted
    in users' ledgers, so a rerun after an upgrade does not see every dated row as changed.
    """
    return parse_timestamp(value).isoformat()


def format_utc_key(value: Any) -> str:
    """UTC with `Z`, microseconds only when non-zero: equal instants give equal text, for derived ledger keys."""
    return parse_timestamp(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
