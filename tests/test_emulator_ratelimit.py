"""Rate limits: the token bucket itself (injected clock) and 429 answers over real HTTP."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig
from bento_api.emulator.ratelimit import RateLimit, RateLimiter, retry_after_header

UA = "bento-dlt-tests/1.0"

#: the default mode's behaviour (a Retry-After on every 429); test_emulator_modes.py covers bento_like
pytestmark = pytest.mark.emulator_mode("default")


def client(emu: BentoEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
                        params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA}, timeout=10)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------ the bucket, on an injected clock
def test_bucket_allows_capacity_then_refuses_with_exact_wait() -> None:
    clock = FakeClock()
    lim = RateLimiter({"batch": RateLimit.of(per_minute=60, capacity=2)}, clock=clock)
    assert lim.acquire("batch").allowed and lim.acquire("batch").allowed
    refused = lim.acquire("batch")
    assert not refused.allowed and refused.wait == pytest.approx(1.0)
    clock.now += 0.4
    again = lim.acquire("batch")
    assert not again.allowed and again.wait == pytest.approx(0.6)  # refusals took no token
    clock.now += 0.6
    assert lim.acquire("batch").allowed
    assert not lim.acquire("batch").allowed


def test_bucket_is_exact_over_a_long_window() -> None:
    """Hammering for an hour gets exactly capacity + rate * duration requests through."""
    clock = FakeClock()
    lim = RateLimiter({"fetch": RateLimit.of(per_minute=60, capacity=2)}, clock=clock)
    allowed = 0
    for _ in range(3600 * 20):  # a try every 50 ms
        allowed += lim.acquire("fetch").allowed
        clock.now += 0.05
    assert allowed == 2 + 3600 - 1 or allowed == 2 + 3600


def test_even_pacing_at_the_rate_is_never_refused_even_with_jitter() -> None:
    clock = FakeClock()
    lim = RateLimiter({"batch": RateLimit.of(per_minute=60, capacity=2)}, clock=clock)
    for i in range(600):
        clock.now = 100.0 + i + (0.3 if i % 2 else -0.3)  # ±0.3 s arrival jitter around 1/s
        assert lim.acquire("batch").allowed, i


def test_families_are_independent_and_unknown_is_unlimited() -> None:
    clock = FakeClock()
    lim = RateLimiter({"batch": RateLimit.of(per_minute=60, capacity=1),
                       "stats": RateLimit.of(per_hour=30, capacity=1)}, clock=clock)
    assert lim.acquire("batch").allowed and not lim.acquire("batch").allowed
    assert lim.acquire("stats").allowed
    refused = lim.acquire("stats")
    assert refused.wait == pytest.approx(120.0)
    assert all(lim.acquire("").allowed for _ in range(10))
    lim.set("*", RateLimit(None))
    assert all(lim.acquire("batch").allowed for _ in range(10))
    with pytest.raises(ValueError):
        lim.set("nope", RateLimit(None))


def test_retry_after_header_values() -> None:
    assert retry_after_header(0.01, "seconds") == "1"
    assert retry_after_header(1.0, "seconds") == "1"
    assert retry_after_header(1.2, "seconds") == "2"
    assert retry_after_header(119.5, "seconds") == "120"
    assert retry_after_header(5, None) is None
    assert retry_after_header(0.5, "http-date", wall=lambda: 1_700_000_000.2) == "Tue, 14 Nov 2023 22:13:21 GMT"


# ------------------------------------------------------------------ over HTTP
def test_default_config_has_bentos_real_budget() -> None:
    with BentoEmulator(mode="default") as emu, client(emu) as c:
        codes = [c.get("/fetch/tags").status_code for _ in range(3)]
        r = c.get("/fetch/tags")
        assert codes == [200, 200, 429]
        assert r.status_code == 429 and r.json() == {"error": "Too many requests"}
        assert r.headers["Retry-After"] == "1"
        assert c.post("/batch/events", json={"events": [{"email": "a@example.com", "type": "$x"}]}).status_code == 200
        stats = [c.get("/stats/site") for _ in range(3)]
    assert [s.status_code for s in stats] == [200, 200, 429]
    assert stats[2].headers["Retry-After"] == "120"  # 30/hour


def test_retry_after_is_the_time_until_a_token(emulator: BentoEmulator) -> None:
    emulator.set_rate_limit("batch", per_minute=6, capacity=1)
    body = {"subscribers": [{"email": "a@example.com"}]}
    with client(emulator) as c:
        assert c.post("/batch/subscribers", json=body).status_code == 200
        r = c.post("/batch/subscribers", json=body)
        assert c.get("/fetch/tags").status_code == 200  # other families untouched
    assert r.status_code == 429 and r.headers["Retry-After"] == "10"
    assert [x.status for x in emulator.requests("/batch/subscribers")] == [200, 429]


def test_retry_after_as_http_date(emulator: BentoEmulator) -> None:
    emulator.set_rate_limit("fetch", per_minute=2, capacity=1, retry_after="http-date")
    with client(emulator) as c:
        c.get("/fetch/tags")
        before = datetime.now(UTC)
        r = c.get("/fetch/tags")
    assert r.status_code == 429
    when = parsedate_to_datetime(r.headers["Retry-After"])
    assert before + timedelta(seconds=28) <= when <= before + timedelta(seconds=32)


def test_429_without_retry_after(emulator: BentoEmulator) -> None:
    emulator.set_rate_limit("fetch", per_minute=60, capacity=1, retry_after=None)
    with client(emulator) as c:
        c.get("/fetch/tags")
        r = c.get("/fetch/tags")
    assert r.status_code == 429 and "retry-after" not in r.headers


def test_unauthorized_and_refused_requests_take_no_token(emulator: BentoEmulator) -> None:
    emulator.set_rate_limit("fetch", per_minute=60, capacity=2)
    with client(emulator) as c:
        for _ in range(5):
            assert c.get("/fetch/tags", params={"site_uuid": "wrong"}).status_code == 401
        assert [c.get("/fetch/tags").status_code for _ in range(3)] == [200, 200, 429]


def test_waiting_is_enforced_as_a_lower_bound(emulator: BentoEmulator) -> None:
    """With 20/s and capacity 1, five successes cannot take less than four intervals."""
    emulator.set_rate_limit("fetch", per_minute=1200, capacity=1)
    ok = 0
    start = time.monotonic()
    with client(emulator) as c:
        while ok < 5:
            r = c.get("/fetch/tags")
            if r.status_code == 429:
                time.sleep(0.01)
            else:
                ok += 1
    assert time.monotonic() - start >= 4 * 0.05 - 0.005


def test_rate_limits_can_be_disabled() -> None:
    with BentoEmulator(EmulatorConfig(rate_limits_enabled=False)) as emu, client(emu) as c:
        assert {c.get("/stats/site").status_code for _ in range(20)} == {200}


def test_family_limits_override_one_family() -> None:
    from bento_api.emulator import RateLimit

    cfg = EmulatorConfig(rate_limits_enabled=True, requests_per_minute=1_000_000,
                         family_limits={"stats": RateLimit.of(per_hour=3600, capacity=1)})
    with BentoEmulator(cfg) as emu, client(emu) as c:
        assert [c.get("/stats/site").status_code for _ in range(2)] == [200, 429]
        assert {c.get("/fetch/tags").status_code for _ in range(5)} == {200}
    with pytest.raises(ValueError):
        EmulatorConfig(family_limits={"search": RateLimit(None)})
