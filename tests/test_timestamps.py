"""The one timestamp rule (bento_api.timestamps; docs/bento-api.md, "Timestamps").

It replaced three parsers: the source's cursor parser and formatter, the destination's `iso_datetime` and the
ledger's date normalisation for derived event keys. The destination's text is part of the fingerprints and
keys stored in users' sync ledgers, so it must stay byte-identical: the property tests below compare the new
rule with the three old implementations (kept here verbatim as oracles) on generated ISO 8601 values, and
pinned fingerprints computed by the code before the change guard the stored values end to end.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

import pandas as pd
import pendulum
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bento_api.timestamps import (
    InvalidTimestamp,
    format_as_given,
    format_bento,
    format_utc_key,
    parse_timestamp,
    parse_utc,
)
from bento_destination.changes import classify_mapped
from bento_destination.ledger import canonical_json, derive_event_key, subscriber_fingerprint_v1
from bento_destination.mapping import MappingOptions, map_row
from bento_destination.values import RowError, iso_datetime

UTC = dt.UTC

# -- the three implementations the rule replaced (verbatim, as oracles) ---------------------------------------


def old_source_parse(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def old_source_format(value: dt.datetime) -> str:
    value = value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def old_iso_datetime(value: Any) -> str | None:
    """The destination's old `iso_datetime`, None where it raised RowError."""
    if isinstance(value, str):
        text = value.strip()
        try:
            value = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        except ValueError:
            return None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.isoformat()
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).isoformat()
    return None


def old_ledger_date(date: Any) -> Any:
    if date is None:
        return None
    if isinstance(date, str):
        text = date.strip()
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            return text
        date = parsed
    if isinstance(date, dt.datetime):
        aware = date if date.tzinfo is not None else date.replace(tzinfo=dt.UTC)
        return aware.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(date, dt.date):
        return date.isoformat()
    return date


def old_event_key(email: str, type_: str, date: Any) -> str:
    content = ["event-v1", email.strip().lower(), type_.strip(), old_ledger_date(date), None]
    return hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()[:32]


# -- generated ISO 8601 values --------------------------------------------------------------------------------

ZONES = st.one_of(
    st.none(),
    st.just(UTC),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: dt.timezone(dt.timedelta(minutes=m))),
)
DATETIMES = st.builds(
    lambda naive, zone: naive.replace(tzinfo=zone),
    st.datetimes(min_value=dt.datetime(1900, 1, 2), max_value=dt.datetime(2200, 12, 30)),
    ZONES,
)


@st.composite
def iso_texts(draw: st.DrawFn) -> str:
    """One instant written the ways warehouses, users and Bento write them."""
    value = draw(DATETIMES)
    if draw(st.booleans()) and draw(st.booleans()):
        return value.date().isoformat()
    spec = draw(st.sampled_from(["auto", "minutes", "seconds", "milliseconds", "microseconds"]))
    text = value.isoformat(sep=draw(st.sampled_from(["T", " "])), timespec=spec)
    if text.endswith("+00:00") and draw(st.booleans()):
        text = text[:-6] + "Z"
    if draw(st.booleans()):
        text = f"  {text} "
    return text


@settings(max_examples=400, deadline=None)
@given(iso_texts())
def test_destination_text_is_byte_identical_wherever_the_old_parser_accepted(text: str) -> None:
    """The payload's date (part of stored fingerprints) and the derived event key do not change."""
    old = old_iso_datetime(text)
    if old is None:
        return
    assert iso_datetime(text, "date") == old
    assert format_as_given(text) == old
    # the destination derives keys from the text it sends, and from raw text in users' own calls
    assert derive_event_key("a@x.io", "$t", old) == old_event_key("a@x.io", "$t", old)
    assert derive_event_key("a@x.io", "$t", text) == old_event_key("a@x.io", "$t", text)


@settings(max_examples=400, deadline=None)
@given(iso_texts())
def test_source_cursor_agrees_with_the_old_parser_and_bentos_form(text: str) -> None:
    old = old_source_parse(text)
    new = parse_utc(text)
    assert new is not None  # the rule accepts every form generated here
    assert new.tzinfo is UTC
    if old is not None:
        assert new == old
        assert format_bento(new) == old_source_format(old)


@settings(max_examples=300, deadline=None)
@given(DATETIMES)
def test_datetime_values_give_the_old_outputs(value: dt.datetime) -> None:
    assert iso_datetime(value, "date") == old_iso_datetime(value)
    assert format_bento(value) == old_source_format(value)
    assert derive_event_key("a@x.io", "$t", value) == old_event_key("a@x.io", "$t", value)
    assert format_utc_key(value) == old_ledger_date(value)


def test_stored_fingerprints_and_event_keys_do_not_change() -> None:
    """Computed by the code before the rule existed: a changed value would resend every dated row once."""
    rows: list[tuple[str, dict[str, Any], tuple[str, str]]] = [
        ("events", {"email": " Ann@Example.com ", "type": "$purchase", "date": "2024-05-01T12:00:00.250+02:00",
                    "details": {"value": 10}},
         ('["ann@example.com","$purchase","c8e0243116d885c68615ea674652c19b"]', "115c4e186f0e6927ee4bcc3cd4dff631")),
        ("events", {"email": "bob@example.com", "type": "$login", "date": "2024-05-01"},
         ('["bob@example.com","$login","c74e748add1103132b5d68954d38cb6d"]', "bf271a0d8fe3b3b04b2b43e3784f71ac")),
        ("subscribers", {"email": "dee@example.com", "signed_up": dt.datetime(2024, 3, 4, 5, 6, 7, 890000),
                         "day": dt.date(2024, 3, 4)},
         ("dee@example.com", "s2:2bafb2bc5fb41742f30d4ce71b681b4d")),
    ]
    for operation, row, expected in rows:
        assert classify_mapped(operation, map_row(operation, row, MappingOptions()), True) == expected
    # subscribers are fingerprinted with version 2 now; the version 1 value the ledgers of earlier releases hold
    # must stay what it was, since an upgraded ledger is compared with it (tests/test_ledger_upgrade.py)
    mapped = map_row("subscribers", rows[2][1], MappingOptions())
    assert subscriber_fingerprint_v1(mapped.payload, mapped.commands) == "57f31229d4756e9e96d0b4b7387a7f54"


# -- the rule itself --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-08-06T05:44:04.444Z", dt.datetime(2024, 8, 6, 5, 44, 4, 444000, tzinfo=UTC)),
        ("2024-08-06t05:44:04.444z", dt.datetime(2024, 8, 6, 5, 44, 4, 444000, tzinfo=UTC)),  # RFC 3339 lower case
        ("2024-08-06 07:44:04+02:00", dt.datetime(2024, 8, 6, 5, 44, 4, tzinfo=UTC)),
        ("2024-08-06T07:44:04+0200", dt.datetime(2024, 8, 6, 5, 44, 4, tzinfo=UTC)),  # basic-form offset
        ("20240806T054404Z", dt.datetime(2024, 8, 6, 5, 44, 4, tzinfo=UTC)),  # basic form
        ("2024-08-06T05:44:04", dt.datetime(2024, 8, 6, 5, 44, 4, tzinfo=UTC)),  # naive: UTC
        ("2024-08-06", dt.datetime(2024, 8, 6, tzinfo=UTC)),  # a date: midnight UTC
        ("2024-W32-2", dt.datetime(2024, 8, 6, tzinfo=UTC)),  # week date
        ("2024-219", dt.datetime(2024, 8, 6, tzinfo=UTC)),  # ordinal date
        ("2024-08-06T05:44:04.1234569Z", dt.datetime(2024, 8, 6, 5, 44, 4, 123456, tzinfo=UTC)),  # cut, not rounded
    ],
)
def test_accepted_forms(text: str, expected: dt.datetime) -> None:
    assert parse_utc(text) == expected


@pytest.mark.parametrize(
    "value", ["", "  ", "not a date", "05:44:04", "P1D", "2024-02-30", "2024-08-06T24:00:00", "2024-08-06x05:44:04",
              "2024-08-06T05:44:04+02:00:30", "1/2/2024", None, 1722923044, 3.5, b"2024-08-06"],
)
def test_refused_values(value: Any) -> None:
    assert parse_utc(value) is None
    with pytest.raises(InvalidTimestamp):
        parse_timestamp(value)
    with pytest.raises(RowError) as refused:
        iso_datetime(value, "date")
    assert refused.value.reason == "invalid_date"


def test_a_timestamp_keeps_its_offset_until_written_in_utc() -> None:
    parsed = parse_timestamp("2024-05-01T12:00:00+02:00")
    assert parsed.utcoffset() == dt.timedelta(hours=2)
    assert format_as_given(parsed) == "2024-05-01T12:00:00+02:00"
    assert format_utc_key(parsed) == "2024-05-01T10:00:00Z"
    assert format_bento(parsed) == "2024-05-01T10:00:00.000Z"


def test_values_from_dlt_and_pandas_keep_their_own_text() -> None:
    """dlt hands cursors over as pendulum DateTimes; Arrow columns may arrive as pandas Timestamps."""
    cursor = pendulum.datetime(2024, 1, 2, 3, 4, 5, 678901, tz="Europe/Berlin")
    assert format_bento(cursor) == old_source_format(cursor) == "2024-01-02T02:04:05.678Z"
    nanos = pd.Timestamp("2024-01-01 00:00:00.123456789")
    assert iso_datetime(nanos, "date") == old_iso_datetime(nanos) == "2024-01-01T00:00:00.123456789+00:00"


def test_a_date_object_in_a_derived_key_is_midnight_utc_like_its_text() -> None:
    """The one change of behaviour: a `date` object now keys like "YYYY-MM-DD" text (the destination always
    passes text, so no stored key changes)."""
    assert derive_event_key("a@x.io", "$t", dt.date(2024, 5, 1)) == derive_event_key("a@x.io", "$t", "2024-05-01")
    assert derive_event_key("a@x.io", "$t", "not a date") == old_event_key("a@x.io", "$t", "not a date")
    assert derive_event_key("a@x.io", "$t", 1714521600) == old_event_key("a@x.io", "$t", 1714521600)
