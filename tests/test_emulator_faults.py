"""Every injected fault over real HTTP, plus matching, counts and seeded reproducibility."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig, Fault, parse_fault_spec

UA = "bento-dlt-tests/1.0"
ONE = {"subscribers": [{"email": "fault@example.com"}]}


def client(emu: BentoEmulator, timeout: float = 10) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
                        params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA}, timeout=timeout)


def stored(emu: BentoEmulator) -> bool:
    return "fault@example.com" in emu.store.subscribers


def test_server_error_default_and_custom_status(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("server_error", count=1))
    emulator.add_fault(Fault("server_error", status=502, message="upstream down", count=1))
    with client(emulator) as c:
        first, second, third = (c.post("/batch/subscribers", json=ONE) for _ in range(3))
    assert first.status_code == 503 and first.json() == {"error": "Service Unavailable"}
    assert second.status_code == 502 and second.json() == {"error": "upstream down"}
    assert third.status_code == 200
    assert [r.fault for r in emulator.request_log] == ["server_error", "server_error", None]


def test_server_error_applies_nothing_unless_asked(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("server_error", count=1))
    with client(emulator) as c:
        assert c.post("/batch/subscribers", json=ONE).status_code == 503
        assert not stored(emulator)
        emulator.add_fault(Fault("server_error", status=504, apply=True, count=1))
        assert c.post("/batch/subscribers", json=ONE).status_code == 504
    assert stored(emulator)


def test_latency_is_added(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("latency", seconds=0.3, path_prefix="/fetch/tags"))
    with client(emulator) as c:
        start = time.monotonic()
        assert c.get("/fetch/tags").status_code == 200
        assert time.monotonic() - start >= 0.3
        start = time.monotonic()
        assert c.get("/fetch/fields").status_code == 200
    assert emulator.requests("/fetch/tags")[0].duration >= 0.3


def test_drop_after_apply_loses_the_answer_not_the_write(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("drop_after_apply", count=1))
    with client(emulator) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            c.post("/batch/subscribers", json=ONE)
        assert c.get("/fetch/tags").status_code == 200  # the pool recovers on a new connection
    assert stored(emulator)
    rec = emulator.requests("/batch/subscribers")[0]
    assert rec.dropped and rec.status == 0 and rec.fault == "drop_after_apply"


def test_drop_before_apply_writes_nothing(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("drop_before_apply", count=1))
    with client(emulator) as c, pytest.raises(httpx.RemoteProtocolError):
        c.post("/batch/subscribers", json=ONE)
    assert not stored(emulator)


def test_trickle_outlasts_a_deadline(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("trickle", interval=0.1, count=1))
    received = b""
    with client(emulator, timeout=1.0) as c:  # each read is quick: httpx's own timeout never fires
        start = time.monotonic()
        with c.stream("POST", "/batch/subscribers", json=ONE) as r:
            assert r.status_code == 200
            assert int(r.headers["content-length"]) >= 6000  # 600 s at 1 byte per 0.1 s
            for chunk in r.iter_raw():
                received += chunk
                if time.monotonic() - start > 0.8:
                    break
    assert 0 < len(received) < 100
    assert stored(emulator)


def test_short_trickle_delivers_valid_json_slowly(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("trickle", seconds=0.3, interval=0.05, chunk=20, count=1))
    with client(emulator) as c:
        start = time.monotonic()
        r = c.post("/batch/subscribers", json=ONE)
        elapsed = time.monotonic() - start
    assert r.json() == {"results": 1, "failed": 0}
    assert elapsed >= 0.25


def test_html_error_is_a_cloudflare_page(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("html_error", count=1))
    with client(emulator) as c:
        r = c.get("/fetch/tags")
    assert r.status_code == 502
    assert r.headers["content-type"].startswith("text/html")
    assert "Cloudflare" in r.text
    with pytest.raises(json.JSONDecodeError):
        r.json()


def test_truncated_json_after_apply(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("truncated_json", count=1))
    with client(emulator) as c:
        r = c.post("/batch/subscribers", json=ONE)
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()
    assert stored(emulator)


def test_error_200(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("error_200", message="queue full", count=1))
    with client(emulator) as c:
        r = c.post("/batch/subscribers", json=ONE)
    assert r.status_code == 200 and r.json() == {"error": "queue full"}
    assert not stored(emulator)


def test_huge_body(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("huge_body", count=1))
    with client(emulator) as c, c.stream("GET", "/fetch/tags") as r:
        assert r.status_code == 200
        assert int(r.headers["content-length"]) >= 32 * 1024 * 1024


def test_refuse_rows_by_email_and_pattern(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("refuse_rows", emails=frozenset({"Two@example.com"}), pattern=r"^spam"))
    rows = [{"email": "one@example.com"}, {"email": "two@example.com"}, {"email": "spammy@example.com"}]
    events = [{"email": r["email"], "type": "$x"} for r in rows]
    with client(emulator) as c:
        subs = c.post("/batch/subscribers", json={"subscribers": rows}).json()
        evs = c.post("/batch/events", json={"events": events}).json()
    assert subs == {"results": 1, "failed": 2}
    assert evs == {"results": 1, "failed": 2}
    assert "two@example.com" not in emulator.store.subscribers
    assert [e.email for e in emulator.store.events] == ["one@example.com"]


def test_forced_rate_limit_with_and_without_retry_after(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("rate_limit", seconds=7, count=1))
    emulator.add_fault(Fault("rate_limit", retry_after=None, count=1))
    with client(emulator) as c:
        first, second, third = (c.get("/fetch/tags") for _ in range(3))
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    assert first.json() == {"error": "Too many requests"}
    assert second.status_code == 429 and "retry-after" not in second.headers
    assert third.status_code == 200


def test_forced_rate_limit_takes_no_token(emulator: BentoEmulator) -> None:
    emulator.set_rate_limit("fetch", per_minute=6, capacity=2)
    emulator.add_fault(Fault("rate_limit", count=3))
    with client(emulator) as c:
        assert [c.get("/fetch/tags").status_code for _ in range(6)] == [429, 429, 429, 200, 200, 429]


def test_path_prefix_and_method_filters(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault("server_error", path_prefix="/batch", method="post"))
    with client(emulator) as c:
        assert c.get("/fetch/tags").status_code == 200
        assert c.post("/fetch/commands", json={"command": []}).status_code == 400
        assert c.post("/batch/events", json={"events": [{"email": "a@example.com", "type": "$x"}]}).status_code == 503
        emulator.clear_faults()
        assert c.post("/batch/events", json={"events": [{"email": "a@example.com", "type": "$x"}]}).status_code == 200


def test_probability_is_reproducible_from_the_seed() -> None:
    def run(seed: int) -> list[int]:
        cfg = EmulatorConfig(seed=seed, rate_limits_enabled=False,
                             faults=(Fault("server_error", probability=0.5),))
        with BentoEmulator(cfg) as emu, client(emu) as c:
            return [c.get("/fetch/tags").status_code for _ in range(40)]

    a, b, other = run(7), run(7), run(8)
    assert a == b
    assert a != other
    assert 5 < a.count(503) < 35


def test_fault_validation_and_cli_spec() -> None:
    with pytest.raises(ValueError):
        Fault("meteor")
    with pytest.raises(ValueError):
        Fault("server_error", status=404)
    with pytest.raises(ValueError):
        Fault("refuse_rows")
    assert parse_fault_spec("server_error:probability=0.2,status=502") == Fault("server_error", probability=0.2,
                                                                                  status=502)
    assert parse_fault_spec("latency:seconds=0.3").seconds == 0.3
    spec = parse_fault_spec("refuse_rows:emails=A@x.com;b@x.com,count=none,path_prefix=/batch")
    assert spec.emails == frozenset({"a@x.com", "b@x.com"}) and spec.count is None and spec.path_prefix == "/batch"
    assert parse_fault_spec("server_error:apply=true").apply is True
    assert parse_fault_spec("rate_limit:retry_after=none").retry_after is None
    with pytest.raises(ValueError):
        parse_fault_spec("latency:bogus=1")
