"""The emulator's two modes over real HTTP: bento_like's queued writes, its answers where Bento is unknown
(429 without Retry-After, 422 on too many items, a proxy's HTML 413), and how each mode is chosen.

The default mode's own behaviour is covered by the other test_emulator_* files; the User-Agent rule of
each mode by test_emulator_auth.py.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from bento_api import BentoClient, BentoInvalidRequestError, RetryPolicy, resolve_budgets, resolve_settings
from bento_api.emulator import BentoEmulator, EmulatorConfig
from bento_api.emulator.config import BENTO_LIKE_WRITE_DELAY, MODE_ENV
from bento_api.pacing import PacerRegistry

UA = "bento-dlt-tests/1.0"
FAST: dict[str, Any] = {"requests_per_minute": 1e7, "stats_requests_per_hour": 1e9, "bucket_capacity": 1e6,
                        "subscribers": 0}


class FakeClock:
    """The write queue's clock: a test moves it to make queued writes due, without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(emu: BentoEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
                        params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA}, timeout=10)


def lookup(c: httpx.Client, email: str) -> Any:
    """The subscriber as a GET through the API sees it (None when Bento does not have it yet)."""
    r = c.get("/fetch/subscribers", params={"email": email})
    assert r.status_code == 200
    return r.json()["data"]


def tag_names(c: httpx.Client, visitor: dict[str, Any]) -> set[str]:
    names = {t["id"]: t["attributes"]["name"] for t in c.get("/fetch/tags").json()["data"]}
    return {names[i] for i in visitor["attributes"]["cached_tag_ids"]}


# -- choosing the mode ---------------------------------------------------------------------------------


def test_the_mode_comes_from_the_environment_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MODE_ENV, raising=False)
    assert EmulatorConfig().mode == "default"
    for spelling in ("bento_like", "bento-like", " BENTO-LIKE "):
        monkeypatch.setenv(MODE_ENV, spelling)
        assert EmulatorConfig().mode == "bento_like"
    assert EmulatorConfig(mode="default").mode == "default"  # an explicit mode wins over the environment
    assert BentoEmulator(mode="default").config.mode == "default"
    monkeypatch.setenv(MODE_ENV, "strict")
    with pytest.raises(ValueError, match=r"BENTO_EMULATOR_MODE='strict'.*'default' or 'bento_like'"):
        EmulatorConfig()


def test_bad_mode_or_delay_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown emulator mode 'fast'"):
        EmulatorConfig(mode="fast")
    for delay in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="write_delay_seconds"):
            EmulatorConfig(mode="bento_like", write_delay_seconds=delay)


# -- queued writes -------------------------------------------------------------------------------------


def test_a_queued_import_is_invisible_to_reads_until_drained() -> None:
    with BentoEmulator(mode="bento_like", **FAST) as emu, client(emu) as c:
        r = c.post("/batch/subscribers", json={"subscribers": [{"email": "late@example.com", "plan": "pro"},
                                                               {"email": "not-an-email"}]})
        assert r.status_code == 200
        assert r.json() == {"results": 1, "failed": 1}  # rows are checked at once; only applying waits
        assert lookup(c, "late@example.com") is None
        assert c.get("/stats/site").json()["user_count"] == 0
        assert c.post("/fetch/search", json={"page": 1}).json()["data"] == []
        assert emu.queued == 1
        assert emu.drain() == 1
        assert emu.queued == 0 and emu.drain() == 0
        assert lookup(c, "late@example.com")["attributes"]["fields"] == {"plan": "pro"}


def test_a_queued_write_is_applied_once_its_delay_has_passed() -> None:
    clock = FakeClock()
    with BentoEmulator(mode="bento_like", write_delay_seconds=30.0, queue_clock=clock, **FAST) as emu, \
            client(emu) as c:
        assert c.post("/batch/events", json={"events": [{"email": "ev@example.com", "type": "$signup"}]}).json() \
            == {"results": 1, "failed": 0}
        clock.now += 29.9
        assert lookup(c, "ev@example.com") is None
        clock.now += 0.1
        assert lookup(c, "ev@example.com") is not None  # every request applies what is due first
        assert emu.queued == 0


def test_queued_writes_are_applied_in_the_order_they_were_accepted() -> None:
    clock = FakeClock()
    with BentoEmulator(mode="bento_like", write_delay_seconds=30.0, queue_clock=clock, **FAST) as emu, \
            client(emu) as c:
        c.post("/batch/subscribers", json={"subscribers": [{"email": "o@example.com", "tags": "vip"}]})
        clock.now += 10
        c.post("/fetch/commands", json={"command": [{"command": "remove_tag", "email": "o@example.com",
                                                     "query": "vip"}]})
        clock.now += 10
        c.post("/batch/subscribers", json={"subscribers": [{"email": "o@example.com", "plan": "team"}]})
        clock.now += 25  # the first two are due, the third is not
        visitor = lookup(c, "o@example.com")
        assert tag_names(c, visitor) == set() and visitor["attributes"]["fields"] is None
        assert emu.queued == 1
        clock.now += 5
        assert lookup(c, "o@example.com")["attributes"]["fields"] == {"plan": "team"}


def test_commands_answer_failed_0_and_fail_silently_later() -> None:
    commands = {"command": [
        {"command": "add_tag", "email": "a@example.com", "query": "vip"},
        {"command": "change_email", "email": "a@example.com", "query": "b@example.com"},  # b exists: fails
        {"command": "launch_rockets", "email": "a@example.com"},  # unknown: fails
    ]}
    people = {"subscribers": [{"email": "a@example.com"}, {"email": "b@example.com"}]}
    with BentoEmulator(mode="bento_like", **FAST) as emu, client(emu) as c:
        c.post("/batch/subscribers", json=people)
        assert c.post("/fetch/commands", json=commands).json() == {"results": 3, "failed": 0}
        emu.drain()
        assert tag_names(c, lookup(c, "a@example.com")) == {"vip"}
        assert lookup(c, "b@example.com") is not None
    with BentoEmulator(mode="default", **FAST) as emu, client(emu) as c:  # the default mode counts failures
        c.post("/batch/subscribers", json=people)
        assert c.post("/fetch/commands", json=commands).json() == {"results": 1, "failed": 2}


def test_email_sends_are_queued_too() -> None:
    email = {"to": "r@example.com", "from": "author@example.com", "subject": "Hi", "html_body": "<p>hi</p>"}
    with BentoEmulator(mode="bento_like", **FAST) as emu, client(emu) as c:
        assert c.post("/batch/emails", json={"emails": [email]}).json() == {"results": 1}
        assert lookup(c, "r@example.com") is None  # the recipient is created when the send is applied
        assert emu.queued == 1
        assert [m.to for m in emu.store.emails_sent] == ["r@example.com"]


def test_reading_the_store_from_python_shows_the_eventual_state() -> None:
    with BentoEmulator(mode="bento_like", **FAST) as emu, client(emu) as c:
        c.post("/batch/subscribers", json={"subscribers": [{"email": "x@example.com"}]})
        assert lookup(c, "x@example.com") is None
        assert "x@example.com" in emu.store.subscribers  # inspecting from Python drains first
        assert lookup(c, "x@example.com") is not None
        c.post("/batch/subscribers", json={"subscribers": [{"email": "y@example.com"}]})
        assert emu.summary()["objects"]["subscribers"] == 2


def test_admin_queue_and_drain_endpoints() -> None:
    with BentoEmulator(mode="bento_like", **FAST) as emu, client(emu) as c, \
            httpx.Client(base_url=emu.admin_url, timeout=10) as admin:
        c.post("/batch/subscribers", json={"subscribers": [{"email": "q@example.com"}]})
        c.post("/batch/events", json={"events": [{"email": "q@example.com", "type": "$x"}]})
        assert admin.get("/queue").json() == {"mode": "bento_like", "queued": 2,
                                              "delay_seconds": BENTO_LIKE_WRITE_DELAY}
        assert admin.post("/drain").json() == {"applied": 2}
        assert admin.get("/queue").json()["queued"] == 0
        assert lookup(c, "q@example.com") is not None
        c.post("/batch/subscribers", json={"subscribers": [{"email": "later@example.com"}]})
        emails = [s["email"] for s in admin.get("/subscribers").json()]  # data routes drain first, like emu.store
        assert emails == ["q@example.com", "later@example.com"]
        assert admin.get("/config").json()["mode"] == "bento_like"


def test_the_default_mode_queues_nothing() -> None:
    with BentoEmulator(mode="default", **FAST) as emu, client(emu) as c, \
            httpx.Client(base_url=emu.admin_url, timeout=10) as admin:
        c.post("/batch/subscribers", json={"subscribers": [{"email": "now@example.com"}]})
        assert lookup(c, "now@example.com") is not None
        assert emu.queued == 0 and emu.drain() == 0
        assert admin.get("/queue").json() == {"mode": "default", "queued": 0, "delay_seconds": None}


def test_wait_for_writes_waits_for_the_delay_and_no_longer_than_asked() -> None:
    with BentoEmulator(mode="bento_like", write_delay_seconds=0.2, **FAST) as emu, client(emu) as c:
        before = time.monotonic()
        c.post("/batch/subscribers", json={"subscribers": [{"email": "w@example.com"}]})
        assert emu.wait_for_writes(timeout=30)
        assert time.monotonic() - before >= 0.2
        assert lookup(c, "w@example.com") is not None
    with BentoEmulator(mode="bento_like", **FAST) as emu, client(emu) as c:  # 60 s: not due within 0.05 s
        c.post("/batch/subscribers", json={"subscribers": [{"email": "w@example.com"}]})
        assert not emu.wait_for_writes(timeout=0.05)
        assert emu.queued == 1


# -- answers where Bento is unknown -----------------------------------------------------------------------


def _rows(n: int, make: Any) -> list[Any]:
    return [make(i) for i in range(n)]


@pytest.mark.parametrize(("path", "body"), [
    ("/batch/subscribers", {"subscribers": _rows(1001, lambda i: {"email": f"u{i}@example.com"})}),
    ("/batch/events", {"events": _rows(1001, lambda i: {"email": f"u{i}@example.com", "type": "$x"})}),
    ("/batch/emails", {"emails": _rows(61, lambda i: {"to": f"u{i}@example.com", "from": "author@example.com",
                                                      "subject": "s", "html_body": "<p>x</p>"})}),
    ("/fetch/commands", {"command": _rows(101, lambda i: {"command": "subscribe", "email": f"u{i}@example.com"})}),
])
def test_too_many_items_answer_422_json_and_queue_nothing(path: str, body: dict[str, Any]) -> None:
    with BentoEmulator(mode="bento_like", **FAST) as emu, client(emu) as c:
        r = c.post(path, json=body)
        assert r.status_code == 422
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"].startswith("Too many")
        assert emu.queued == 0


def test_too_large_a_body_answers_a_proxys_html_413() -> None:
    body = {"subscribers": [{"email": f"big{i}@example.com", "bio": "x" * 200} for i in range(100)]}
    with BentoEmulator(mode="bento_like", max_body_bytes=10_000, **FAST) as emu, client(emu) as c:
        r = c.post("/batch/subscribers", json=body)
        assert r.status_code == 413
        assert r.headers["content-type"].startswith("text/html")
        assert r.text.startswith("<html>") and "413 Request Entity Too Large" in r.text
        assert emu.queued == 0
        with BentoClient(resolve_settings(**emu.credentials, env={}), resolve_budgets(requests_per_minute=1e6),
                         pacers=PacerRegistry()) as ours, pytest.raises(BentoInvalidRequestError) as refused:
            ours.post("/batch/subscribers", body)
        assert refused.value.status == 413 and not refused.value.transient  # our client does not retry it
    with BentoEmulator(mode="default", max_body_bytes=10_000, **FAST) as emu, client(emu) as c:
        r = c.post("/batch/subscribers", json=body)
        assert r.status_code == 413 and r.json() == {"error": "Request body too large"}


def test_429s_carry_no_retry_after_unless_asked_for() -> None:
    with BentoEmulator(mode="bento_like") as emu, client(emu) as c:  # Bento's budget: 60/min, capacity 2
        codes = [c.get("/fetch/tags") for _ in range(3)]
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert "retry-after" not in codes[2].headers and codes[2].json() == {"error": "Too many requests"}
        emu.set_rate_limit("batch", per_minute=6, capacity=1)
        c.post("/batch/events", json={"events": [{"email": "a@example.com", "type": "$x"}]})
        r = c.post("/batch/events", json={"events": [{"email": "a@example.com", "type": "$x"}]})
        assert r.status_code == 429 and "retry-after" not in r.headers
        emu.set_rate_limit("batch", per_minute=6, capacity=1, retry_after="seconds")  # an explicit header stays
        c.post("/batch/events", json={"events": [{"email": "a@example.com", "type": "$x"}]})
        r = c.post("/batch/events", json={"events": [{"email": "a@example.com", "type": "$x"}]})
        assert r.status_code == 429 and r.headers["Retry-After"] == "10"
    with BentoEmulator(mode="bento_like", retry_after="http-date") as emu, client(emu) as c:
        r = [c.get("/fetch/tags") for _ in range(3)][-1]
        assert r.status_code == 429 and r.headers["Retry-After"].endswith("GMT")


def test_our_client_backs_off_on_a_429_without_retry_after() -> None:
    with BentoEmulator(mode="bento_like", **FAST) as emu:
        emu.set_rate_limit("fetch", per_minute=60, capacity=1)  # a second request within 1 s is refused
        retry = RetryPolicy(max_attempts=6, backoff_base=0.5, backoff_cap=2.0)
        with BentoClient(resolve_settings(**emu.credentials, env={}), resolve_budgets(requests_per_minute=1e6),
                         pacers=PacerRegistry(), retry=retry) as ours:
            ours.get("/fetch/tags")
            assert isinstance(ours.get("/fetch/tags")["data"], list)
            assert ours.stats.rate_limited >= 1
    statuses = [r.status for r in emu.requests("/fetch/tags")]
    assert statuses[0] == 200 and statuses[-1] == 200 and 429 in statuses
