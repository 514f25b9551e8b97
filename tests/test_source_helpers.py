"""bento_source's pure pieces: flattening, timestamps, email normalisation, hints; creating it calls nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig
from bento_api.timestamps import format_bento, parse_utc
from bento_source import SUBSCRIBERS_OVERLAP, apply_parquet_hints, bento_source
from bento_source.helpers import (
    flatten,
    normalize_emails,
    subscriber_row,
    template_refs,
)
from bento_source.settings import ALL_RESOURCES


def test_flatten_moves_attributes_up_and_renames_attribute_id() -> None:
    item = {
        "id": 6001,
        "type": "sequences",
        "attributes": {
            "id": "sequence_abc",
            "name": "Onboarding",
            "type": "drip",
            "created_at": "2024-08-06T05:44:04.444Z",
            "email_templates": [{"id": 1, "subject": "Hi", "stats": None}],
            "stats": None,
        },
    }
    row = flatten(item)
    assert row["id"] == "6001"  # ids are text: Bento sends strings, and some are prefixed
    assert row["prefix_id"] == "sequence_abc"
    assert row["type"] == "sequences" and row["attributes_type"] == "drip"
    assert row["created_at"] == datetime(2024, 8, 6, 5, 44, 4, 444000, tzinfo=UTC)
    assert "stats" not in row  # null objects are left out (a missing key loads as null)
    assert row["email_templates"] == [{"id": 1, "subject": "Hi"}]
    assert "attributes" not in row


def test_flatten_keeps_both_ids_when_prefix_id_differs() -> None:
    row = flatten({"id": "1", "attributes": {"id": "a", "prefix_id": "b"}})
    assert row["prefix_id"] == "b" and row["attributes_id"] == "a"


def test_timestamps_round_trip_in_bentos_format() -> None:
    parsed = parse_utc("2024-01-02T03:04:05.678Z")
    assert parsed == datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert parsed is not None and format_bento(parsed - SUBSCRIBERS_OVERLAP) == "2024-01-02T02:59:05.678Z"
    assert parse_utc("2024-01-02T03:04:05") == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_utc("not a date") is None and parse_utc(None) is None
    assert format_bento(datetime(2024, 1, 1, 1, tzinfo=UTC) + timedelta(hours=1)) == "2024-01-01T02:00:00.000Z"


def test_subscriber_row_resolves_known_tag_ids_to_names() -> None:
    item = {"id": "10", "attributes": {"email": "a@b.co", "cached_tag_ids": ["1", "2", "9"], "fields": None}}
    row = subscriber_row(item, {"1": "customer", "2": "vip"})
    assert row["tags"] == ["customer", "vip"]  # an id created after the tag list was read stays unnamed
    assert row["cached_tag_ids"] == ["1", "2", "9"]
    assert "tags" not in subscriber_row(item, None)


def test_template_refs_name_their_parent() -> None:
    page = [{"id": "7001", "attributes": {"email_templates": [{"id": 4001}, {"id": 4002}]}},
            {"id": "7002", "attributes": {"email_templates": None}}]
    assert template_refs("workflows", page) == [("4001", "workflow", "7001"), ("4002", "workflow", "7001")]


def test_normalize_emails_trims_lowercases_dedupes_and_drops_non_emails() -> None:
    assert normalize_emails([" A@x.io", "a@x.io", "b@x.io", "nope", "c d@x.io"]) == ["a@x.io", "b@x.io"]


def test_apply_parquet_hints_sets_file_friendly_dispositions() -> None:
    source = apply_parquet_hints(bento_source(site_uuid="s", publishable_key="p", secret_key="k"))
    dispositions = {name: res.write_disposition for name, res in source.resources.items()}
    assert set(ALL_RESOURCES) <= set(dispositions)
    assert dispositions["tags"] == dispositions["email_templates"] == "replace"
    assert dispositions["subscribers"] == dispositions["site_stats"] == dispositions["segment_stats"] == "append"
    assert bento_source(site_uuid="s", publishable_key="p", secret_key="k").resources["tags"].write_disposition \
        == "merge"


def test_creating_the_source_calls_nothing() -> None:
    """Schedulers import and call source functions often: no request, and no error even without keys."""
    cfg = EmulatorConfig(requests_per_minute=600_000.0)
    with BentoEmulator(cfg) as emu:
        source = bento_source(**emu.credentials)
        selected = source.with_resources("tags", "subscribers")
        assert sorted(selected.selected_resources) == ["subscribers", "tags"]
        assert set(ALL_RESOURCES) <= set(source.resources)
        assert "automations" not in source.resources  # the internal walk feeding three tables stays hidden
        assert emu.request_log == []
    bento_source()  # no keys anywhere: still fine until it runs


def test_invalid_initial_updated_at_is_refused_when_created() -> None:
    with pytest.raises(ValueError, match="subscribers_initial_updated_at"):
        bento_source(site_uuid="s", publishable_key="p", secret_key="k", subscribers_initial_updated_at="yesterday")
