"""Row contract of the destination (docs/destination.md, "What each table becomes"): mapping and validation, no HTTP."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pyarrow as pa
import pytest

from bento_destination.mapping import MappingOptions, map_row, redact_row
from bento_destination.rows import clean_row, iter_rows, variant_base
from bento_destination.sink import resolve_operation
from bento_destination.values import RowError, check_email, field_key, looks_secret

OPTS = MappingOptions()


def reason(operation: str, row: dict[str, object]) -> str:
    with pytest.raises(RowError) as caught:
        map_row(operation, row, OPTS)
    return caught.value.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [(" Ann@Example.COM ", "ann@example.com"), ("a.b+c@sub.example.io", "a.b+c@sub.example.io")],
)
def test_email_is_trimmed_and_lowercased(value: str, expected: str) -> None:
    assert check_email(value) == expected


@pytest.mark.parametrize(
    "value", ["", "   ", "no-at-sign", "a@b", "a b@example.com", "a,b@example.com", "a;b@x.io", "x" * 250 + "@e.io", 5]
)
def test_invalid_emails_are_refused(value: object) -> None:
    with pytest.raises(RowError):
        check_email(value)


def test_field_names_are_lowercase_underscored() -> None:
    assert field_key("First Name") == "first_name"
    assert field_key("firstName") == "first_name"
    assert field_key("UTM-Source") == "utm_source"


@pytest.mark.parametrize("name", [
    "password", "user_password", "apiKey", "API_KEY", "AccessToken", "client_secret", "Authorization",
    "credentials", "db_credential", "pwd", "passcode", "stripe_key", "sessionKey", "refresh_token", "auth-token",
    "apikey", "accesstoken", "clientsecret", "password_hash", "Bearer",
])
def test_secret_looking_names(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize("name", [
    "email", "unique_key", "idempotency_key", "first_name", "plan", "tags", "tokenized_at", "secretariat",
    "keynote_speaker", "key", "monkey", "passport_country", "author", "keys_count",
])
def test_ordinary_names_are_not_secret(name: str) -> None:
    assert not looks_secret(name)


@pytest.mark.parametrize("row", [
    {"email": "a@x.io", "Command": "subscribe", "plan": "pro"},
    {"email": "a@x.io", "fields__command": "unsubscribe", "plan": "pro"},
    {"email": "a@x.io", "fields": {"command": "subscribe", "plan": "pro"}},
])
def test_a_column_bento_would_read_as_an_instruction_is_never_sent(row: dict[str, object]) -> None:
    # even with secrets allowed: the reserved keys are about what Bento does with them, not about secrecy
    mapped = map_row("subscribers", row, MappingOptions(allow_secret_columns=True))
    assert mapped.payload == {"email": "a@x.io", "plan": "pro"}
    assert len(mapped.reserved) == 1 and "ommand" in next(iter(mapped.reserved))
    assert mapped.commands == []


def test_subscriber_row_maps_to_flat_payload() -> None:
    mapped = map_row(
        "subscribers",
        {"Email": " Ann@X.io ", "tags": ["vip", " beta ", "vip"], "remove_tags": "old, stale", "First Name": "Ann",
         "score": Decimal("3"), "signed_up": dt.datetime(2024, 5, 1, 12, 0), "active": True},
        OPTS,
    )
    assert mapped.payload == {
        "email": "ann@x.io", "tags": "vip,beta", "remove_tags": "old,stale", "first_name": "Ann", "score": 3,
        "signed_up": "2024-05-01T12:00:00+00:00", "active": True,
    }
    assert mapped.commands == []


def test_tags_as_comma_string_and_json_list_string() -> None:
    assert map_row("subscribers", {"email": "a@x.io", "tags": "a, b,,c "}, OPTS).payload == {
        "email": "a@x.io", "tags": "a,b,c"}
    assert map_row("subscribers", {"email": "a@x.io", "tags": '["a","b"]'}, OPTS).payload == {
        "email": "a@x.io", "tags": "a,b"}


def test_unsubscribed_becomes_a_command_and_never_a_resubscribe() -> None:
    only = map_row("subscribers", {"email": "a@x.io", "unsubscribed": True}, OPTS)
    assert only.payload is None
    assert only.commands == [{"command": "unsubscribe", "email": "a@x.io"}]
    with_fields = map_row("subscribers", {"email": "a@x.io", "unsubscribed": "yes", "plan": "pro"}, OPTS)
    assert with_fields.payload == {"email": "a@x.io", "plan": "pro"}
    assert with_fields.commands == [{"command": "unsubscribe", "email": "a@x.io"}]
    kept = map_row("subscribers", {"email": "a@x.io", "unsubscribed": False}, OPTS)
    assert kept.payload == {"email": "a@x.io"} and kept.commands == []


def test_secret_columns_are_dropped_unless_allowed() -> None:
    row = {"email": "a@x.io", "password": "hunter2", "api_token": "t", "plan": "pro"}
    mapped = map_row("subscribers", row, OPTS)
    assert mapped.payload == {"email": "a@x.io", "plan": "pro"}
    assert mapped.dropped == {"password", "api_token"}
    allowed = map_row("subscribers", row, MappingOptions(allow_secret_columns=True))
    assert allowed.payload is not None and allowed.payload["password"] == "hunter2"
    assert redact_row(row) == {"email": "a@x.io", "plan": "pro"}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"plan": "pro"}, "missing_email"),
        ({"email": "bad"}, "invalid_email"),
        ({"email": "a@x.io", "score": math.nan}, "non_finite_number"),
        ({"email": "a@x.io", "score": math.inf}, "non_finite_number"),
        ({"email": "a@x.io", "score": Decimal("NaN")}, "non_finite_number"),
        ({"email": "a@x.io", "address": {"city": "Oslo"}}, "nested_value"),
        ({"email": "a@x.io", "photo": b"\x00\x01"}, "unencodable"),
        ({"email": "a@x.io", "name": "bad \ud800 text"}, "unencodable"),
        ({"email": "a@x.io", "plan": "a", "Plan": "b"}, "duplicate_column"),
        ({"email": "a@x.io", "tags": [{"a": 1}]}, "invalid_tags"),
        ({"email": "a@x.io", "unsubscribed": "maybe"}, "invalid_value"),
    ],
)
def test_subscriber_rows_bento_would_refuse(row: dict[str, object], expected: str) -> None:
    assert reason("subscribers", row) == expected


def test_event_details_from_dict_json_and_flattened_columns() -> None:
    mapped = map_row(
        "events",
        {"email": "a@x.io", "type": "$purchase", "date": dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
         "details": '{"value": {"amount": 100}}', "details__cart__items": 2, "fields": {"First Name": "Ann"},
         "fields__plan": "pro", "unique_key": "order-1", "channel": "web"},
        OPTS,
    )
    assert mapped.payload == {
        "type": "$purchase", "email": "a@x.io", "date": "2024-01-02T03:04:05+00:00",
        "fields": {"first_name": "Ann", "plan": "pro"},
        "details": {"value": {"amount": 100}, "cart": {"items": 2}, "channel": "web", "unique": {"key": "order-1"}},
    }


def test_event_date_strings_must_be_iso() -> None:
    ok = map_row("events", {"email": "a@x.io", "type": "t", "date": "2024-01-02T03:04:05Z"}, OPTS)
    assert ok.payload is not None and ok.payload["date"] == "2024-01-02T03:04:05+00:00"
    assert reason("events", {"email": "a@x.io", "type": "t", "date": "yesterday"}) == "invalid_date"


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"email": "a@x.io"}, "missing_type"),
        ({"email": "a@x.io", "type": "  "}, "missing_type"),
        ({"type": "t"}, "missing_email"),
        ({"email": "a@x.io", "type": "t", "fields": {"a": {"b": 1}}}, "nested_fields"),
        ({"email": "a@x.io", "type": "t", "details": "not json"}, "invalid_json"),
        ({"email": "a@x.io", "type": "t", "details": "[1, 2]"}, "invalid_value"),
        ({"email": "a@x.io", "type": "t", "details": {"v": math.inf}}, "non_finite_number"),
    ],
)
def test_event_rows_bento_would_refuse(row: dict[str, object], expected: str) -> None:
    assert reason("events", row) == expected


def test_dlt_variant_column_is_folded_into_its_base() -> None:
    assert variant_base("details▶v_text") == "details"
    assert variant_base("details__v_text") == "details"
    assert variant_base("details__cart") is None
    row = clean_row({"email": "a@x.io", "type": "t", "details": None, "details__v_text": '{"a": 1}'})
    assert row == {"email": "a@x.io", "type": "t", "details": '{"a": 1}'}
    payload = map_row("events", row, OPTS).payload
    assert payload is not None and payload["details"] == {"a": 1}


def test_secret_keys_inside_details_are_dropped() -> None:
    mapped = map_row("events", {"email": "a@x.io", "type": "t", "details": {"session_token": "x", "ok": 1}}, OPTS)
    assert mapped.payload is not None and mapped.payload["details"] == {"ok": 1}
    assert mapped.dropped == {"details.session_token"}


def test_commands() -> None:
    assert map_row("commands", {"command": "ADD_TAG", "email": "a@x.io", "query": "vip"}, OPTS).payload == {
        "command": "add_tag", "email": "a@x.io", "query": "vip"}
    assert map_row("commands", {"command": "add_field", "email": "a@x.io", "query__key": "Plan",
                                "query__value": "pro"}, OPTS).payload == {
        "command": "add_field", "email": "a@x.io", "query": {"key": "plan", "value": "pro"}}
    assert map_row("commands", {"command": "unsubscribe", "email": "a@x.io"}, OPTS).payload == {
        "command": "unsubscribe", "email": "a@x.io"}
    assert reason("commands", {"command": "explode", "email": "a@x.io"}) == "unknown_command"
    assert reason("commands", {"command": "add_tag", "email": "a@x.io"}) == "missing_query"
    assert reason("commands", {"command": "change_email", "email": "a@x.io", "query": "nope"}) == "invalid_email"


def test_emails() -> None:
    mapped = map_row("emails", {"to": "A@x.io", "from": "author@example.com", "subject": "Hi", "html_body": "<p>x</p>",
                                "transactional": "false", "personalizations": '{"name": "Ann"}', "campaign": "c1"},
                     OPTS)
    assert mapped.payload == {"to": "a@x.io", "from": "author@example.com", "subject": "Hi", "html_body": "<p>x</p>",
                              "transactional": False, "personalizations": {"name": "Ann"}}
    assert mapped.ignored == {"campaign"}
    assert reason("emails", {"to": "a@x.io", "from": "author@example.com", "subject": "Hi"}) == "missing_body"


def test_arrow_batches_become_clean_rows_slice_by_slice() -> None:
    batch = pa.record_batch({"email": ["a@x.io", None, "c@x.io"], "tags": [["x"], None, []]})
    assert list(iter_rows(batch, chunk=2)) == [{"email": "a@x.io", "tags": ["x"]}, {}, {"email": "c@x.io", "tags": []}]
    with pytest.raises(TypeError):
        list(iter_rows("/some/file.parquet"))


def test_table_operations() -> None:
    assert resolve_operation("subscribers", None) == "subscribers"
    assert resolve_operation("crm_contacts", {"crm_contacts": "subscribers"}) == "subscribers"
    assert resolve_operation("crm_contacts", None) is None
    with pytest.raises(Exception, match="unknown operations"):
        resolve_operation("x", {"x": "people"})
