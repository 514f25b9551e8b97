"""Seed data: deterministic (same seed, byte-identical answers), sized by the config, Bento-shaped."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx

from bento_api.emulator import BentoEmulator, EmulatorConfig

UA = "bento-dlt-tests/1.0"
STATUSES = ("sent", "draft", "sending", "scheduled", "paused", "canceled")


def snapshot(seed: int) -> list[bytes]:
    """The raw bytes of every read endpoint of a fresh emulator."""
    out = []
    with BentoEmulator(EmulatorConfig(seed=seed, rate_limits_enabled=False)) as emu, \
            httpx.Client(base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
                         params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA}) as c:
        for path in ("/fetch/tags", "/fetch/fields", "/fetch/segments", "/stats/site"):
            out.append(c.get(path).content)
        for status in STATUSES:
            for page in (1, 2, 3):
                out.append(c.get("/fetch/broadcasts", params={"status": status, "page": page}).content)
        for path in ("/fetch/sequences", "/fetch/workflows"):
            out.append(c.get(path).content)
        for page in (1, 2, 3):
            out.append(c.post("/fetch/search", json={"page": page}).content)
        for tid in sorted(emu.store.templates)[:20]:
            out.append(c.get(f"/fetch/emails/templates/{tid}").content)
        seg = next(iter(emu.store.segments))
        out.append(c.get("/stats/segment", params={"segment_id": seg}).content)
    return out


def test_same_seed_gives_byte_identical_data() -> None:
    assert snapshot(7) == snapshot(7)


def test_other_seed_gives_other_data() -> None:
    a, b = snapshot(7), snapshot(8)
    assert a != b
    assert a[0] != b[0]  # tags differ in their dates


def test_store_objects_identical_for_a_seed() -> None:
    def dump(seed: int) -> list[dict[str, Any]]:
        store = BentoEmulator(EmulatorConfig(seed=seed)).store  # never started: seeding needs no server
        objects: tuple[Any, ...] = (*store.subscribers.values(), *store.tags.values(), *store.fields.values(),
                                    *store.segments.values(), *store.broadcasts, *store.sequences,
                                    *store.workflows, *store.templates.values())
        return [dataclasses.asdict(x) for x in objects]

    assert dump(3) == dump(3)


def test_sizes_follow_the_config() -> None:
    cfg = EmulatorConfig(tags=3, fields=15, segments=0, broadcasts=500, sequences=1, workflows=0, subscribers=1000)
    counts = BentoEmulator(cfg).store.counts()
    assert (counts["tags"], counts["fields"], counts["segments"], counts["broadcasts"], counts["sequences"],
            counts["workflows"], counts["subscribers"]) == (3, 15, 0, 500, 1, 0, 1000)


def test_seed_covers_every_broadcast_status_and_edge_case() -> None:
    store = BentoEmulator(EmulatorConfig()).store
    statuses = [b.status for b in store.broadcasts]
    assert set(statuses) == set(STATUSES)
    assert statuses.count("sent") > EmulatorConfig().page_size  # sent spans more than one page
    subs = list(store.subscribers.values())
    assert any(s.unsubscribed_at is not None for s in subs)
    assert any(not s.fields for s in subs) and any(s.tag_ids for s in subs)
    assert len({s.email for s in subs}) == len(subs) and len({s.uuid for s in subs}) == len(subs)
    assert all(s.updated_at >= s.created_at for s in subs)


def test_zero_sized_seed_still_serves() -> None:
    cfg = EmulatorConfig(tags=0, fields=0, segments=0, broadcasts=0, sequences=0, workflows=0, subscribers=0,
                         rate_limits_enabled=False)
    with BentoEmulator(cfg) as emu, httpx.Client(
            base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
            params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA}) as c:
        assert c.get("/fetch/broadcasts").json() == {"data": []}
        assert c.post("/fetch/search", json={}).json() == {"data": [], "meta": {"page": 1}}
        assert c.get("/stats/site").json() == {"user_count": 0, "subscriber_count": 0, "unsubscriber_count": 0}
