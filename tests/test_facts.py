"""Bento's facts kept once (bento_api.facts; docs/bento-api.md): every part of the code reads the same ones.

The email rule gives one verdict whether the destination checks a row, the source's lookup path filters a
list or the ledger keys a person; one envelope check gives one error for paged and unpaged reads, shown
here over real HTTP with a loopback server that answers in the wrong shape.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import bento_api
from bento_api import BentoClient, BentoResponseError, Budgets, RetryPolicy, facts, resolve_settings
from bento_destination import REQUEST_MAXIMA
from bento_destination import settings as destination_settings
from bento_destination.clients import CHECK_PATH
from bento_destination.ledger import event_ledger_key
from bento_destination.values import RowError, check_email
from bento_source import BROADCAST_STATUSES
from bento_source.helpers import list_rows, normalize_emails


def test_batch_maxima_are_one_read_only_table_shared_by_client_and_destination() -> None:
    assert bento_api.BATCH_MAXIMA is facts.BATCH_MAXIMA
    assert dict(facts.BATCH_MAXIMA) == {"subscribers": 1000, "events": 1000, "emails": 60, "commands": 100,
                                        "broadcasts": 100}
    with pytest.raises(TypeError):
        facts.BATCH_MAXIMA["events"] = 100  # type: ignore[index]
    assert {op: facts.BATCH_MAXIMA[op] for op in ("subscribers", "events", "commands", "emails")} == REQUEST_MAXIMA
    assert destination_settings.ENDPOINTS == {
        "subscribers": ("/batch/subscribers", "subscribers"),
        "events": ("/batch/events", "events"),
        "commands": ("/fetch/commands", "command"),
        "emails": ("/batch/emails", "emails"),
    }


def test_the_source_destination_and_cli_name_bentos_facts_from_one_place() -> None:
    assert BROADCAST_STATUSES is facts.BROADCAST_STATUSES
    assert destination_settings.COMMANDS is facts.COMMANDS
    assert CHECK_PATH == facts.CREDENTIALS_CHECK_PATH == facts.TAGS_PATH


@pytest.mark.parametrize(
    ("path", "family"),
    [("/batch/events", "batch"), ("fetch/tags", "fetch"), ("/stats/site", "stats"),
     ("/experimental/validation", "experimental"), ("/fetch/commands", "fetch"), ("/other", "fetch")],
)
def test_family_of(path: str, family: str) -> None:
    assert facts.family_of(path) == family == bento_api.family_of(path)


# -- the email rule -------------------------------------------------------------------------------------------

LONG_LOCAL = "a" * 250


@pytest.mark.parametrize(
    ("raw", "valid"),
    [
        ("  Ann@Example.COM ", True),
        ("a.b+c@sub.example.io", True),
        ("no-at-sign", False),
        ("a@b", False),  # no dot in the domain
        ("a b@x.io", False),
        ("a,b@x.io", False),
        ("a;b@x.io", False),
        ("a@@x.io", False),
        (f"{LONG_LOCAL}@x.io", False),  # 255 characters
        (f"{LONG_LOCAL[:-1]}@x.io", True),  # 254
    ],
)
def test_one_email_rule_everywhere(raw: str, valid: bool) -> None:
    normalised = facts.normalise_email(raw)
    assert normalised == raw.strip().lower()
    assert facts.is_valid_email(normalised) is valid
    if valid:
        assert check_email(raw) == normalised
        assert normalize_emails([raw]) == [normalised]
    else:
        with pytest.raises(RowError) as refused:
            check_email(raw)
        assert refused.value.reason == "invalid_email"
        assert normalize_emails([raw]) == []
    # the ledger keys people by the same normalisation the mapping sends
    assert event_ledger_key(raw, "$t", "k") == event_ledger_key(normalised, "$t", "k")


# -- the response envelope ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "rows"),
    [({"data": [{"id": "1"}]}, [{"id": "1"}]), ({"data": []}, []), ({"data": None}, []),
     ({"data": [], "meta": {"page": 1}}, [])],
)
def test_data_list_accepts_lists(body: Any, rows: list[dict[str, Any]]) -> None:
    assert facts.data_list(body, "/fetch/tags") == rows


@pytest.mark.parametrize("body", [{}, {"data": {"id": "1"}}, {"data": "x"}, [], None, {"items": []}])
def test_data_list_refuses_other_shapes_with_one_error(body: Any) -> None:
    with pytest.raises(BentoResponseError, match=r'Bento /fetch/tags: expected \{"data": \[\.\.\.\]\}'):
        facts.data_list(body, "/fetch/tags")


def test_data_object() -> None:
    assert facts.data_object({"data": {"id": "1"}}) == {"id": "1"}
    assert facts.data_object({"data": None}) is None
    assert facts.data_object({}) is None
    assert facts.data_object({"data": {}}) is None
    assert facts.data_object({"data": [{"id": "1"}]}) is None
    assert facts.data_object("not json") is None


class _WrongShapes(BaseHTTPRequestHandler):
    """Answers every list endpoint with an object where Bento sends a list."""

    def do_GET(self) -> None:
        body = json.dumps({"data": {"id": "1", "type": "tags"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def wrong_shapes() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _WrongShapes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_paged_and_unpaged_reads_fail_alike_on_a_wrong_shape(wrong_shapes: str) -> None:
    settings = resolve_settings(site_uuid="site-0001", publishable_key="pk_test_key_000000000000",
                                secret_key="sk_test_key_000000000000", base_url=wrong_shapes, env={})
    budgets = Budgets(requests_per_minute=60_000.0)
    with BentoClient(settings, budgets, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(BentoResponseError) as unpaged:
            list_rows(client, facts.TAGS_PATH)
        with pytest.raises(BentoResponseError) as paged:
            next(client.iter_pages(facts.BROADCASTS_PATH))
    assert str(unpaged.value).startswith('Bento /fetch/tags: expected {"data": [...]}, got ')
    assert str(paged.value).startswith('Bento /fetch/broadcasts: expected {"data": [...]}, got ')
    assert unpaged.value.path == facts.TAGS_PATH and paged.value.path == facts.BROADCASTS_PATH
