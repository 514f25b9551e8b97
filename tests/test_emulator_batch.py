"""Write endpoints over real HTTP: /batch/subscribers, /batch/events, /batch/emails, /fetch/commands."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bento_api.emulator import BentoEmulator

UA = "bento-dlt-tests/1.0"

#: the default mode's behaviour (writes applied at once, real `failed` counts); test_emulator_modes.py: bento_like
pytestmark = pytest.mark.emulator_mode("default")
SEEDED = 250  # EmulatorConfig().subscribers


def client(emu: BentoEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
                        params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA}, timeout=10)


def post(emu: BentoEmulator, path: str, body: Any) -> httpx.Response:
    with client(emu) as c:
        return c.post(path, json=body)


def lookup(emu: BentoEmulator, email: str) -> Any:
    with client(emu) as c:
        return c.get("/fetch/subscribers", params={"email": email}).json()["data"]


# ------------------------------------------------------------------ /batch/subscribers
def test_subscriber_import_creates_and_merges(emulator: BentoEmulator) -> None:
    r = post(emulator, "/batch/subscribers", {"subscribers": [
        {"email": "  New@Example.com ", "first_name": "Ada", "plan": "pro", "seats": 3, "tags": "vip, beta-x"}]})
    assert r.status_code == 200
    assert r.json() == {"results": 1, "failed": 0}
    sub = emulator.store.subscribers["new@example.com"]
    assert sub.fields == {"first_name": "Ada", "plan": "pro", "seats": 3}
    assert sorted(emulator.store.tag_names(sub)) == ["beta-x", "vip"]
    first_updated = sub.updated_at
    r = post(emulator, "/batch/subscribers", {"subscribers": [
        {"email": "new@example.com", "plan": None, "city": "Oslo", "remove_tags": "vip"}]})
    assert r.json() == {"results": 1, "failed": 0}
    assert sub.fields == {"first_name": "Ada", "plan": None, "seats": 3, "city": "Oslo"}
    assert emulator.store.tag_names(sub) == ["beta-x"]
    assert sub.updated_at > first_updated
    assert len(emulator.store.subscribers) == SEEDED + 1
    data = lookup(emulator, "new@example.com")
    assert data["attributes"]["fields"]["city"] == "Oslo"
    tag_ids = {t.name: str(t.id) for t in emulator.store.tags.values()}
    assert data["attributes"]["cached_tag_ids"] == [tag_ids["beta-x"]]


def test_subscriber_import_creates_unknown_tags_and_field_definitions(emulator: BentoEmulator) -> None:
    post(emulator, "/batch/subscribers", {"subscribers": [{"email": "f@example.com", "favourite_colour": "red",
                                                            "tags": "brand-new-tag"}]})
    with client(emulator) as c:
        tags = [t["attributes"]["name"] for t in c.get("/fetch/tags").json()["data"]]
        fields = {f["attributes"]["key"]: f["attributes"]["name"] for f in c.get("/fetch/fields").json()["data"]}
    assert "brand-new-tag" in tags
    assert fields["favourite_colour"] == "Favourite Colour"


def test_subscriber_import_never_changes_unsubscribed_at(emulator: BentoEmulator) -> None:
    emulator.store.unsubscribe("gone@example.com")
    before = emulator.store.subscribers["gone@example.com"].unsubscribed_at
    assert before is not None
    post(emulator, "/batch/subscribers", {"subscribers": [{"email": "gone@example.com", "plan": "x",
                                                            "unsubscribed_at": None}]})
    assert emulator.store.subscribers["gone@example.com"].unsubscribed_at == before


def test_three_bad_emails_fail_and_are_not_stored(emulator: BentoEmulator) -> None:
    rows = [{"email": "good1@example.com"}, {"email": "not-an-email"}, {"email": "a@b"},
            {"email": "x" * 250 + "@example.com"}, {"email": "good2@example.com"}]
    r = post(emulator, "/batch/subscribers", {"subscribers": rows})
    assert r.status_code == 200
    assert r.json() == {"results": 2, "failed": 3}
    assert len(emulator.store.subscribers) == SEEDED + 2
    assert {"not-an-email", "a@b"}.isdisjoint(emulator.store.subscribers)


@pytest.mark.parametrize("row", [
    {"email": "n@example.com", "address": {"city": "Oslo"}},
    {"email": "n@example.com", "fields": {"plan": "pro"}},
    {"email": "n@example.com", "scores": [1, 2]},
    {"email": "n@example.com", "tags": ["a", "b"]},
    {"email": "n@example.com", "remove_tags": 5},
    {"email": None},
    {"first_name": "no email"},
    "n@example.com",
])
def test_invalid_subscriber_rows_count_as_failed(emulator: BentoEmulator, row: Any) -> None:
    r = post(emulator, "/batch/subscribers", {"subscribers": [row]})
    assert r.json() == {"results": 0, "failed": 1}
    assert "n@example.com" not in emulator.store.subscribers


def test_1001_subscribers_answer_400_and_store_nothing(emulator: BentoEmulator) -> None:
    rows = [{"email": f"bulk{i}@example.com"} for i in range(1001)]
    r = post(emulator, "/batch/subscribers", {"subscribers": rows})
    assert r.status_code == 400
    assert "1000" in r.json()["error"]
    assert len(emulator.store.subscribers) == SEEDED
    r = post(emulator, "/batch/subscribers", {"subscribers": rows[:1000]})
    assert r.json() == {"results": 1000, "failed": 0}


@pytest.mark.parametrize("body", [{}, {"subscribers": []}, {"subscribers": {"email": "a@example.com"}},
                                  {"people": [{"email": "a@example.com"}]}, [{"email": "a@example.com"}]])
def test_missing_wrapper_or_empty_list_answers_400(emulator: BentoEmulator, body: Any) -> None:
    r = post(emulator, "/batch/subscribers", body)
    assert r.status_code == 400
    assert isinstance(r.json()["error"], str)
    assert len(emulator.store.subscribers) == SEEDED


# ------------------------------------------------------------------ /batch/events
def test_events_create_people_merge_fields_and_store(emulator: BentoEmulator) -> None:
    r = post(emulator, "/batch/events", {"events": [
        {"email": "ev@example.com", "type": "$signed_up", "fields": {"plan": "trial"},
         "details": {"source": {"utm": {"campaign": "x"}}}, "date": "2025-01-02T03:04:05Z"},
        {"email": "ev@example.com", "type": "$login"}]})
    assert r.json() == {"results": 2, "failed": 0}
    assert emulator.store.subscribers["ev@example.com"].fields == {"plan": "trial"}
    events = [(e.email, e.type, e.date) for e in emulator.store.events]
    assert events == [("ev@example.com", "$signed_up", "2025-01-02T03:04:05Z"), ("ev@example.com", "$login", None)]
    assert emulator.store.events[0].details == {"source": {"utm": {"campaign": "x"}}}


@pytest.mark.parametrize("row", [
    {"email": "bad", "type": "$x"},
    {"email": "e@example.com"},
    {"email": "e@example.com", "type": ""},
    {"email": "e@example.com", "type": 5},
    {"email": "e@example.com", "type": "$x", "fields": {"nested": {"no": 1}}},
    {"email": "e@example.com", "type": "$x", "fields": "plan=pro"},
    {"email": "e@example.com", "type": "$x", "details": "text"},
    {"email": "e@example.com", "type": "$x", "date": "yesterday"},
])
def test_invalid_events_count_as_failed(emulator: BentoEmulator, row: dict[str, Any]) -> None:
    r = post(emulator, "/batch/events", {"events": [row, {"email": "ok@example.com", "type": "$ok"}]})
    assert r.json() == {"results": 1, "failed": 1}
    assert [e.email for e in emulator.store.events] == ["ok@example.com"]


def test_unique_events_are_kept_once_per_email_type_and_key(emulator: BentoEmulator) -> None:
    purchase = {"email": "buyer@example.com", "type": "$purchase",
                "details": {"unique": {"key": "order-1"}, "value": {"currency": "USD", "amount": 100}}}
    other_key = {**purchase, "details": {"unique": {"key": "order-2"}}}
    other_type = {**purchase, "type": "$refund"}
    r = post(emulator, "/batch/events", {"events": [purchase, purchase, other_key, other_type]})
    assert r.json() == {"results": 4, "failed": 0}
    r = post(emulator, "/batch/events", {"events": [purchase]})
    assert r.json() == {"results": 1, "failed": 0}
    stored = [(e.type, e.details["unique"]["key"]) for e in emulator.store.events if e.details]
    assert stored == [("$purchase", "order-1"), ("$purchase", "order-2"), ("$refund", "order-1")]


def test_builtin_events_change_the_person(emulator: BentoEmulator) -> None:
    post(emulator, "/batch/events", {"events": [
        {"email": "b@example.com", "type": "$tag", "details": {"tag": "fan"}},
        {"email": "b@example.com", "type": "$unsubscribe"}]})
    sub = emulator.store.subscribers["b@example.com"]
    assert emulator.store.tag_names(sub) == ["fan"] and sub.unsubscribed_at is not None
    post(emulator, "/batch/events", {"events": [
        {"email": "b@example.com", "type": "$remove_tag", "details": {"tag": "fan"}},
        {"email": "b@example.com", "type": "$subscribe"}]})
    assert emulator.store.tag_names(sub) == [] and sub.unsubscribed_at is None


def test_1001_events_answer_400(emulator: BentoEmulator) -> None:
    r = post(emulator, "/batch/events", {"events": [{"email": f"e{i}@example.com", "type": "$x"} for i in range(1001)]})
    assert r.status_code == 400
    assert emulator.store.events == []


# ------------------------------------------------------------------ /batch/emails
def email(i: int = 0, **over: Any) -> dict[str, Any]:
    return {"to": f"rcpt{i}@example.com", "from": "author@example.com", "subject": "Hi", "html_body": "<p>Hi</p>",
            **over}


def test_emails_are_stored_and_counted(emulator: BentoEmulator) -> None:
    r = post(emulator, "/batch/emails", {"emails": [email(0), email(1, transactional=True)]})
    assert r.status_code == 200
    assert r.json() == {"results": 2}
    sent = emulator.store.emails_sent
    assert [(m.to, m.transactional) for m in sent] == [("rcpt0@example.com", False), ("rcpt1@example.com", True)]
    assert "rcpt1@example.com" in emulator.store.subscribers


def test_61_emails_answer_400(emulator: BentoEmulator) -> None:
    r = post(emulator, "/batch/emails", {"emails": [email(i) for i in range(61)]})
    assert r.status_code == 400
    assert "60" in r.json()["error"]
    assert emulator.store.emails_sent == []
    assert post(emulator, "/batch/emails", {"emails": [email(i) for i in range(60)]}).json() == {"results": 60}


def test_unknown_author_answers_500_with_bentos_message(emulator: BentoEmulator) -> None:
    r = post(emulator, "/batch/emails", {"emails": [email(0), email(1, **{"from": "stranger@example.com"})]})
    assert r.status_code == 500
    assert r.json() == {"error": "Author not authorized to send on this account"}
    assert emulator.store.emails_sent == []


@pytest.mark.parametrize("missing", ["to", "from", "subject", "html_body"])
def test_email_missing_required_key_answers_400(emulator: BentoEmulator, missing: str) -> None:
    row = email()
    del row[missing]
    r = post(emulator, "/batch/emails", {"emails": [row]})
    assert r.status_code == 400
    assert r.json()["errors"][0]["field"] == f"emails[0].{missing}"


# ------------------------------------------------------------------ /fetch/commands
def test_every_command(emulator: BentoEmulator) -> None:
    cmds = [
        {"command": "add_tag", "email": "c@example.com", "query": "t1"},
        {"command": "add_tag_via_event", "email": "c@example.com", "query": "t2"},
        {"command": "remove_tag", "email": "c@example.com", "query": "t1"},
        {"command": "add_field", "email": "c@example.com", "query": {"key": "plan", "value": "gold"}},
        {"command": "add_field", "email": "c@example.com", "query": {"key": "tmp", "value": 1}},
        {"command": "remove_field", "email": "c@example.com", "query": "tmp"},
        {"command": "unsubscribe", "email": "c@example.com"},
    ]
    assert post(emulator, "/fetch/commands", {"command": cmds}).json() == {"results": 7, "failed": 0}
    sub = emulator.store.subscribers["c@example.com"]
    assert emulator.store.tag_names(sub) == ["t2"]
    assert sub.fields == {"plan": "gold"}
    assert sub.unsubscribed_at is not None
    assert post(emulator, "/fetch/commands", {"command": [{"command": "subscribe", "email": "c@example.com"}]}
                ).json() == {"results": 1, "failed": 0}
    assert sub.unsubscribed_at is None
    r = post(emulator, "/fetch/commands", {"command": {"command": "change_email", "email": "c@example.com",
                                                       "query": "C2@example.com"}})
    assert r.json() == {"results": 1, "failed": 0}
    assert "c@example.com" not in emulator.store.subscribers
    assert emulator.store.subscribers["c2@example.com"] is sub


def test_unsubscribe_command_creates_missing_person(emulator: BentoEmulator) -> None:
    post(emulator, "/fetch/commands", {"command": [{"command": "unsubscribe", "email": "never@example.com"}]})
    assert emulator.store.subscribers["never@example.com"].unsubscribed_at is not None


def test_unknown_command_or_bad_email_counts_failed(emulator: BentoEmulator) -> None:
    r = post(emulator, "/fetch/commands", {"command": [
        {"command": "explode", "email": "c@example.com"},
        {"command": "add_tag", "email": "nope", "query": "t"},
        {"command": "add_tag", "email": "c@example.com"},
        {"command": "change_email", "email": "unknown@example.com", "query": "new@example.com"},
        {"command": "add_tag", "email": "c@example.com", "query": "ok"}]})
    assert r.json() == {"results": 1, "failed": 4}


def test_101_commands_answer_400(emulator: BentoEmulator) -> None:
    cmds = [{"command": "add_tag", "email": f"c{i}@example.com", "query": "t"} for i in range(101)]
    r = post(emulator, "/fetch/commands", {"command": cmds})
    assert r.status_code == 400
    assert len(emulator.store.subscribers) == SEEDED
    assert post(emulator, "/fetch/commands", {"command": cmds[:100]}).json() == {"results": 100, "failed": 0}


def test_create_subscriber_tag_and_field(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        r = c.post("/fetch/subscribers", json={"subscriber": {"email": "one@example.com"}})
        assert r.status_code == 201 and r.json()["data"]["attributes"]["email"] == "one@example.com"
        r = c.post("/fetch/tags", json={"tag": {"name": "created"}})
        assert r.status_code == 201 and r.json()["data"]["attributes"]["name"] == "created"
        assert r.json()["data"]["type"] == "tags"
        r = c.post("/fetch/fields", json={"field": {"key": "loyaltyPoints"}})
        assert r.status_code == 201
        assert r.json()["data"]["attributes"] == {**r.json()["data"]["attributes"], "key": "loyaltyPoints",
                                                  "name": "Loyalty Points"}
        assert c.post("/fetch/tags", json={"tag": {}}).status_code == 400
        assert c.post("/fetch/fields", json={"name": "x"}).status_code == 400
