"""Read endpoints over real HTTP: lookups, lists, pages, search, templates, stats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig

UA = "bento-dlt-tests/1.0"
STATUSES = ("sent", "draft", "sending", "scheduled", "paused", "canceled")


def client(emu: BentoEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
                        params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA}, timeout=10)


def walk(c: httpx.Client, path: str, **params: Any) -> tuple[list[dict[str, Any]], list[int]]:
    """Every item of a paged list, and the size of each page fetched (ending with the empty one)."""
    items: list[dict[str, Any]] = []
    sizes: list[int] = []
    for page in range(1, 100):
        r = c.get(path, params={**params, "page": page})
        assert r.status_code == 200
        data = r.json()["data"]
        sizes.append(len(data))
        if not data:
            return items, sizes
        items.extend(data)
    raise AssertionError("no empty page")


# ------------------------------------------------------------------ subscribers
def test_subscriber_lookup_by_email_and_uuid(emulator: BentoEmulator) -> None:
    sub = emulator.store.subscribers_by_id()[0]
    with client(emulator) as c:
        by_email = c.get("/fetch/subscribers", params={"email": sub.email.upper()}).json()
        by_uuid = c.get("/fetch/subscribers", params={"uuid": sub.uuid}).json()
    assert by_email == by_uuid
    data = by_email["data"]
    assert data["id"] == str(sub.id) and data["type"] == "visitors"
    assert set(data["attributes"]) == {"uuid", "email", "fields", "cached_tag_ids", "unsubscribed_at",
                                       "navigation_url", "created_at", "updated_at"}
    assert data["attributes"]["email"] == sub.email
    assert all(isinstance(t, str) for t in data["attributes"]["cached_tag_ids"])


@pytest.mark.parametrize("params", [{"email": "nobody@example.com"}, {"uuid": "0000"}, {}])
def test_unknown_subscriber_is_data_null(emulator: BentoEmulator, params: dict[str, str]) -> None:
    with client(emulator) as c:
        r = c.get("/fetch/subscribers", params=params)
    assert r.status_code == 200
    assert r.json() == {"data": None}


def test_subscriber_without_fields_has_fields_null(emulator: BentoEmulator) -> None:
    bare = next(s for s in emulator.store.subscribers_by_id() if not s.fields)
    with client(emulator) as c:
        data = c.get("/fetch/subscribers", params={"email": bare.email}).json()["data"]
    assert data["attributes"]["fields"] is None


# ------------------------------------------------------------------ unpaged lists
def test_tags_fields_segments_shapes(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        tags = c.get("/fetch/tags", params={"page": 2}).json()["data"]  # unpaginated: page is ignored
        fields = c.get("/fetch/fields").json()["data"]
        segments = c.get("/fetch/segments").json()["data"]
    assert len(tags) == 12 and len(fields) == 8 and len(segments) == 5
    assert {t["type"] for t in tags} == {"tags"}
    assert set(tags[0]["attributes"]) == {"name", "created_at", "discarded_at", "site_id"}
    assert {f["type"] for f in fields} == {"visitors-fields"}
    assert set(fields[0]["attributes"]) == {"name", "key", "whitelisted", "created_at"}
    assert {s["type"] for s in segments} == {"segments"}
    assert set(segments[0]["attributes"]) == {"name", "description", "visitor_event_query", "created_at",
                                              "updated_at"}
    names = [s["attributes"]["name"] for s in segments]
    assert names == sorted(names)
    assert all(isinstance(x["id"], str) for x in tags + fields + segments)


# ------------------------------------------------------------------ paged lists
def test_broadcast_pages_end_with_exactly_one_empty_page(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        sent, sizes = walk(c, "/fetch/broadcasts")
    assert sizes == [25, 5, 0]  # 30 sent of 60 seeded, pages of 25
    assert len({b["id"] for b in sent}) == 30
    assert all("status" not in b["attributes"] for b in sent)
    attrs = sent[0]["attributes"]
    assert set(attrs) == {"name", "share_url", "template", "created_at", "sent_final_batch_at", "send_at", "stats"}
    assert set(attrs["template"]) == {"subject", "to", "html"} and "open_rate" in attrs["stats"]


def test_broadcasts_by_status_cover_everything(emulator: BentoEmulator) -> None:
    seen: dict[str, set[str]] = {}
    with client(emulator) as c:
        for status in STATUSES:
            items, _ = walk(c, "/fetch/broadcasts", status=status)
            assert items, status
            seen[status] = {b["id"] for b in items}
            assert all("(" + status + ")" in b["attributes"]["name"] for b in items)
        drafts, _ = walk(c, "/fetch/broadcasts", status="draft")
        assert all(set(b["attributes"]["template"]) == {"template_id"} for b in drafts)
        assert {b["id"] for b in walk(c, "/fetch/broadcasts", status="cancelled")[0]} == seen["canceled"]
        assert {b["id"] for b in walk(c, "/fetch/broadcasts", status="archived")[0]} == seen["sent"]
    assert sum(len(s) for s in seen.values()) == 60


def test_page_past_the_end_and_bad_page(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        assert c.get("/fetch/broadcasts", params={"page": 99}).json() == {"data": []}
        assert c.get("/fetch/broadcasts", params={"page": "x"}).status_code == 400


def test_page_size_is_configurable() -> None:
    with BentoEmulator(EmulatorConfig(page_size=7, broadcasts=20, rate_limits_enabled=False)) as emu, client(emu) as c:
        _, sizes = walk(c, "/fetch/broadcasts")
    assert sizes == [7, 3, 0]


def test_sequences_and_workflows() -> None:
    with BentoEmulator(EmulatorConfig(page_size=5, rate_limits_enabled=False)) as emu, client(emu) as c:
        seqs, seq_sizes = walk(c, "/fetch/sequences")
        flows, flow_sizes = walk(c, "/fetch/workflows")
    assert seq_sizes == [5, 3, 0] and flow_sizes == [5, 1, 0]
    s = seqs[0]
    assert s["type"] == "sequences" and s["attributes"]["id"].startswith("sequence_")
    assert s["attributes"]["id"] != s["id"]
    tmpl = s["attributes"]["email_templates"][0]
    assert isinstance(tmpl["id"], int) and "subject" in tmpl
    assert tmpl["stats"] is None or isinstance(tmpl["stats"], dict)
    assert {f["attributes"]["status"] for f in flows} == {"live", "draft"}
    assert flows[0]["type"] == "workflows"


def test_email_template_and_404(emulator: BentoEmulator) -> None:
    tid = emulator.store.sequences[0].template_ids[0]
    with client(emulator) as c:
        r = c.get(f"/fetch/emails/templates/{tid}")
        missing = c.get("/fetch/emails/templates/999999")
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["id"] == str(tid) and data["type"] == "email_template"
    assert set(data["attributes"]) == {"name", "subject", "html", "created_at", "stats"}
    assert missing.status_code == 404


# ------------------------------------------------------------------ search
def test_search_pages_of_100_ordered_by_id_get_and_post(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        pages = []
        for page in range(1, 5):
            r = c.request("GET", "/fetch/search", json={"page": page})
            assert r.status_code == 200 and r.json()["meta"] == {"page": page}
            pages.append(r.json()["data"])
        post = c.post("/fetch/search", json={"page": 2}).json()
    assert [len(p) for p in pages] == [100, 100, 50, 0]
    ids = [int(v["id"]) for p in pages for v in p]
    assert ids == sorted(ids) and len(set(ids)) == 250
    assert post["data"] == pages[1]
    assert pages[0][0]["type"] == "visitors"


def test_search_filters_are_exclusive(emulator: BentoEmulator) -> None:
    subs = emulator.store.subscribers_by_id()
    pivot = sorted(s.updated_at for s in subs)[100]
    iso = pivot.strftime("%Y-%m-%dT%H:%M:%S.") + f"{pivot.microsecond // 1000:03d}Z"
    expected_gt = {str(s.id) for s in subs if s.updated_at > pivot}
    expected_lt = {str(s.id) for s in subs if s.updated_at < pivot}
    with client(emulator) as c:
        gt = c.post("/fetch/search", json={"updated_at": {"gt": iso}, "page": 1}).json()["data"]
        gt += c.post("/fetch/search", json={"updated_at": {"gt": iso}, "page": 2}).json()["data"]
        lt = c.post("/fetch/search", json={"updated_at": {"lt": iso}}).json()["data"]
        lt += c.post("/fetch/search", json={"updated_at": {"lt": iso}, "page": 2}).json()["data"]
        both = c.post("/fetch/search", json={"updated_at": {"gt": iso, "lt": iso}}).json()["data"]
        created = c.post("/fetch/search", json={"created_at": {"gt": "2100-01-01"}}).json()["data"]
        bad = c.post("/fetch/search", json={"updated_at": {"gt": "last tuesday"}})
    assert {v["id"] for v in gt} == expected_gt
    assert {v["id"] for v in lt} == expected_lt
    assert both == [] and created == []
    assert bad.status_code == 400


def test_touch_subscriber_makes_it_visible_to_an_incremental_search(emulator: BentoEmulator) -> None:
    cursor = datetime.now(UTC) - timedelta(seconds=1)
    victim = emulator.store.subscribers_by_id()[42]
    emulator.store.touch_subscriber(victim.email, plan="changed")
    with client(emulator) as c:
        data = c.post("/fetch/search", json={"updated_at": {"gt": cursor.isoformat()}}).json()["data"]
    assert [v["attributes"]["email"] for v in data] == [victim.email]
    assert data[0]["attributes"]["fields"]["plan"] == "changed"


def test_search_is_403_without_enterprise() -> None:
    with BentoEmulator(EmulatorConfig(enterprise=False)) as emu, client(emu) as c:
        r = c.post("/fetch/search", json={"page": 1})
        get = c.request("GET", "/fetch/search", json={"page": 1})
    assert r.status_code == 403 and get.status_code == 403
    assert "Enterprise" in r.json()["error"]


# ------------------------------------------------------------------ stats
def test_site_stats_follow_the_store(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        before = c.get("/stats/site").json()
        emulator.store.unsubscribe("stats@example.com")
        after = c.get("/stats/site").json()
    assert set(before) == {"user_count", "subscriber_count", "unsubscriber_count"}
    assert before["user_count"] == 250
    assert before["subscriber_count"] + before["unsubscriber_count"] == 250
    assert after["user_count"] == 251 and after["unsubscriber_count"] == before["unsubscriber_count"] + 1


def test_segment_stats_deterministic_and_errors(emulator: BentoEmulator) -> None:
    seg_id = next(iter(emulator.store.segments))
    with client(emulator) as c:
        one = c.get("/stats/segment", params={"segment_id": seg_id})
        two = c.get("/stats/segment", params={"segment_id": seg_id})
        unknown = c.get("/stats/segment", params={"segment_id": 1})
        missing = c.get("/stats/segment")
    assert one.status_code == 200 and one.json() == two.json()
    assert set(one.json()) == {"user_count", "subscriber_count", "unsubscriber_count"}
    assert unknown.status_code == 404 and missing.status_code == 400


def test_experimental_validation(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        assert c.post("/experimental/validation", json={"email": "a@example.com"}).json() == {"valid": True}
        assert c.post("/experimental/validation", params={"email": "nope"}).json() == {"valid": False}
