"""The emulator's counts mode (records="counts"): counts, email hashes and payload digests instead of records."""

from __future__ import annotations

import argparse
import hashlib
import random
import uuid
from pathlib import Path
from typing import Any

import dlt
import httpx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bento_api.emulator import BentoEmulator, EmulatorConfig
from bento_api.emulator.cli import add_arguments, config_from_args
from bento_api.emulator.config import RECORDS_ENV
from bento_api.emulator.hashset import HashSet, hashes_of
from bento_api.emulator.records import RecordsNotKept
from bento_api.emulator.tally import digest_of
from bento_destination import bento

from .destination_support import FAST

UA = "bento-dlt-tests/1.0"
SUBSCRIBERS = "/batch/subscribers"


def counting_emulator(**overrides: Any) -> BentoEmulator:
    options: dict[str, Any] = {"mode": "default", "records": "counts", "requests_per_minute": 1e7,
                                "bucket_capacity": 1e6, "subscribers": 0, **overrides}
    cfg = EmulatorConfig(**options)
    return BentoEmulator(cfg)


def api(emu: BentoEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
                        params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA}, timeout=10)


def people(n: int, plan: str = "pro") -> list[dict[str, Any]]:
    return [{"email": f"person{i}@example.com", "plan": plan, "score": i} for i in range(n)]


def test_upserts_are_counted_hashed_and_digested() -> None:
    rows = people(1500)
    with counting_emulator() as emu, api(emu) as c:
        sent = [{**r, "email": "  " + r["email"].upper()} for r in rows]  # the emulator normalises emails
        assert c.post(SUBSCRIBERS, json={"subscribers": sent[:1000]}).json() == {"results": 1000, "failed": 0}
        assert c.post(SUBSCRIBERS, json={"subscribers": sent[1000:]}).json() == {"results": 500, "failed": 0}
        again = c.post(SUBSCRIBERS, json={"subscribers": [*sent[:10], {"email": "not-an-email"}]})
        assert again.json() == {"results": 10, "failed": 1}
        objects = emu.summary()["objects"]
    assert objects["records"] == "counts"
    assert objects["subscribers"] == 1500  # distinct people
    assert objects["accepted_by_path"] == {SUBSCRIBERS: 1510}  # upserts, repeats included
    assert objects["digest_by_path"][SUBSCRIBERS] == digest_of(rows + rows[:10])
    assert emu.tally is not None and emu.tally.digest(SUBSCRIBERS) == digest_of(rows + rows[:10])
    assert objects["digest_by_path"][SUBSCRIBERS] != digest_of(rows)  # the repeats count
    assert emu.store.subscribers == {}  # no records


def test_the_digest_ignores_order_and_sees_every_value() -> None:
    rows = people(300)
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    changed = [*rows[:-1], {**rows[-1], "plan": "team"}]
    digests = []
    for batch in (rows, shuffled, changed):
        with counting_emulator() as emu, api(emu) as c:
            for start in range(0, len(batch), 70):
                assert c.post(SUBSCRIBERS, json={"subscribers": batch[start:start + 70]}).status_code == 200
            digests.append(emu.summary()["objects"]["digest_by_path"][SUBSCRIBERS])
    assert digests[0] == digests[1] == digest_of(rows)
    assert digests[2] != digests[0] and digests[2] == digest_of(changed)


def test_events_unique_keys_unsubscribes_and_site_stats() -> None:
    events = [
        {"email": "a@example.com", "type": "$purchase", "details": {"unique": {"key": "order-1"}}},
        {"email": "a@example.com", "type": "$purchase", "details": {"unique": {"key": "order-1"}}},  # a repeat
        {"email": "b@example.com", "type": "$visit"},
        {"email": "b@example.com", "type": "$visit"},  # no key: both stored
        {"email": "c@example.com", "type": "$unsubscribe"},
        {"email": "c@example.com"},  # no type: failed
    ]
    with counting_emulator() as emu, api(emu) as c:
        assert c.post("/batch/events", json={"events": events}).json() == {"results": 5, "failed": 1}
        site = c.get("/stats/site").json()
        objects = emu.summary()["objects"]
    assert objects["events"] == 4 and objects["subscribers"] == 3 and objects["unsubscribed"] == 1
    assert objects["accepted_by_path"]["/batch/events"] == 5
    assert objects["digest_by_path"]["/batch/events"] == digest_of(events[:5])
    assert site == {"user_count": 3, "subscriber_count": 2, "unsubscriber_count": 1}


def test_commands_follow_the_people_they_name() -> None:
    commands = [
        {"command": "add_tag", "email": "a@example.com", "query": "vip"},
        {"command": "unsubscribe", "email": "b@example.com"},
        {"command": "change_email", "email": "a@example.com", "query": "b@example.com"},  # taken: failed
        {"command": "change_email", "email": "nobody@example.com", "query": "x@example.com"},  # unknown: failed
        {"command": "change_email", "email": "a@example.com", "query": "new@example.com"},
        {"command": "explode", "email": "a@example.com"},  # unknown command: failed
        {"command": "subscribe", "email": "b@example.com"},
    ]
    with counting_emulator() as emu, api(emu) as c:
        assert c.post("/fetch/commands", json={"command": commands}).json() == {"results": 4, "failed": 3}
        objects = emu.summary()["objects"]
    assert objects["subscribers"] == 2 and objects["unsubscribed"] == 0  # b resubscribed; a became new@
    assert objects["commands_applied"] == {"add_tag": 1, "unsubscribe": 1, "change_email": 1, "subscribe": 1}
    assert emu.tally is not None and emu.tally.knows("new@example.com") and not emu.tally.knows("a@example.com")


def test_reads_that_need_records_say_so() -> None:
    with counting_emulator() as emu, api(emu) as c, httpx.Client(base_url=emu.admin_url, timeout=10) as admin:
        c.post(SUBSCRIBERS, json={"subscribers": people(3)})
        for answer in (c.get("/fetch/search"), c.get("/fetch/subscribers", params={"email": "person1@example.com"}),
                       admin.get("/log"), admin.get("/subscribers"), admin.get("/events"), admin.get("/emails")):
            assert answer.status_code == 409, answer.url
            assert "records=counts" in answer.json()["error"]
        assert c.get("/fetch/tags").status_code == 200  # seeded lists still answer
        assert admin.get("/config").json()["records"] == "counts"
        summary = admin.get("/summary").json()
        with pytest.raises(RecordsNotKept):
            emu.requests(SUBSCRIBERS)
    assert summary["objects"]["subscribers"] == 3
    assert summary["requests"]["by_path"][SUBSCRIBERS] == {"200": 1}
    assert summary["requests"]["rows_by_path"][SUBSCRIBERS] == 3


def test_the_request_counts_include_429s() -> None:
    with counting_emulator() as emu, api(emu) as c:
        emu.set_rate_limit("batch", per_minute=1, capacity=1)
        statuses = [c.post(SUBSCRIBERS, json={"subscribers": people(2)}).status_code for _ in range(3)]
        requests = emu.summary()["requests"]
        emu.reset_log()
        after_reset = emu.summary()["requests"]
    assert statuses == [200, 429, 429]
    assert requests["total"] == 3 and requests["rate_limited"] == 2
    assert requests["rows_by_path"][SUBSCRIBERS] == 2  # only the accepted request's rows
    assert after_reset["total"] == 0 and after_reset["by_path"] == {}


def test_seeded_people_become_hashes() -> None:
    with counting_emulator(subscribers=7) as emu, api(emu) as c:
        assert emu.store.subscribers == {}
        assert c.get("/stats/site").json()["user_count"] == 7


def test_records_setting_from_env_cli_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(RECORDS_ENV, "counts")
    assert EmulatorConfig().records == "counts"
    monkeypatch.setenv(RECORDS_ENV, "some")
    with pytest.raises(ValueError, match=RECORDS_ENV):
        EmulatorConfig()
    monkeypatch.delenv(RECORDS_ENV)
    assert EmulatorConfig().records == "full"
    with pytest.raises(ValueError, match="records"):
        EmulatorConfig(records="half")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert config_from_args(parser.parse_args(["--records", "counts"])).counts_only
    with pytest.raises(SystemExit):
        parser.parse_args(["--records", "all"])


@pytest.mark.usefixtures("destination_env")
def test_a_sync_leaves_the_digest_of_what_a_full_emulator_received(tmp_path: Path) -> None:
    """The same destination run against both modes: the counts mode's figures match the full mode's records."""
    frame = [{"email": f"p{i}@example.com", "plan": ["free", "pro"][i % 2], "tags": "a,b" if i % 3 else None}
             for i in range(2500)]
    figures = []
    for records in ("full", "counts"):
        cfg = EmulatorConfig(mode="default", records=records, requests_per_minute=1e7, bucket_capacity=1e6,
                             subscribers=0, stats_requests_per_hour=1e9)
        with BentoEmulator(cfg) as emu:
            pipeline = dlt.pipeline(f"counts_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path),
                                    destination=bento(requests_per_minute=FAST, **emu.credentials))
            pipeline.run(frame, table_name="subscribers")
            if records == "full":
                items = [item for r in emu.requests(SUBSCRIBERS) for item in r.body["subscribers"]]
                figures.append((len(emu.store.subscribers), len(items), digest_of(items)))
            else:
                objects = emu.summary()["objects"]
                figures.append((objects["subscribers"], objects["accepted_by_path"][SUBSCRIBERS],
                                objects["digest_by_path"][SUBSCRIBERS]))
    assert figures[0] == figures[1]
    assert figures[0][:2] == (2500, 2500)


# ---------------------------------------------------------------- the hash set itself
def keys(values: list[int]) -> Any:
    return np.array(values, dtype=np.uint64)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 40), max_size=30)),
                max_size=25))
def test_hash_set_agrees_with_a_python_set(operations: list[tuple[bool, list[int]]]) -> None:
    hashes, model = HashSet(merge_at=8), set[int]()  # merge often, so both arrays are exercised
    for adding, values in operations:
        if adding:
            assert hashes.add(keys(values)) == len(set(values) - model)
            model |= set(values)
        else:
            assert hashes.discard(keys(values)) == len(set(values) & model)
            model -= set(values)
        assert len(hashes) == len(model)
        probe = sorted(model | {0, 5, 2**64 - 1})
        assert hashes.contains(keys(probe)).tolist() == [p in model for p in probe]


def test_hashes_are_stable_across_processes() -> None:
    # blake2b, not Python's salted hash(): a figure computed in a test process matches the emulator's process
    expected = int.from_bytes(hashlib.blake2b(b"ada@example.com", digest_size=8).digest(), "little")
    assert hashes_of([b"ada@example.com"]).tolist() == [expected]
