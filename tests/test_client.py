"""The Bento client over real HTTP against the emulator: auth, limits, pages, retries, deadlines."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bento_api import (
    NEVER_AFTER_SEND,
    BentoAuthError,
    BentoClient,
    BentoConfigError,
    BentoConnectionError,
    BentoDeadlineError,
    BentoInvalidRequestError,
    BentoRateLimitedError,
    BentoResponseError,
    BentoServerError,
    BentoSettings,
    RetryPolicy,
    resolve_budgets,
    resolve_settings,
)
from bento_api.emulator import BentoEmulator, Fault
from bento_api.pacing import PacerRegistry

FAST = resolve_budgets(requests_per_minute=600_000, stats_requests_per_hour=10_000_000)
QUICK_RETRY = RetryPolicy(max_attempts=4, backoff_base=0.01, backoff_cap=0.05)


class RecordingSleep:
    """Sleeps for real, and remembers every requested duration (lower-bound checks need no clock games)."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        time.sleep(seconds)


def make_client(emu: BentoEmulator, **kwargs: Any) -> BentoClient:
    settings = resolve_settings(**emu.credentials, env={})
    kwargs.setdefault("retry", QUICK_RETRY)
    kwargs.setdefault("pacers", PacerRegistry())
    return BentoClient(settings, kwargs.pop("budgets", FAST), **kwargs)


@pytest.fixture
def client(emulator: BentoEmulator) -> Iterator[BentoClient]:
    with make_client(emulator) as c:
        yield c


def subscribers(n: int, prefix: str = "person") -> list[dict[str, Any]]:
    return [{"email": f"{prefix}{i}@example.com", "first_name": f"P{i}"} for i in range(n)]


# -- credentials and headers ---------------------------------------------------------------------


def test_wrong_secret_key_is_401_with_a_hint(emulator: BentoEmulator) -> None:
    creds = {**emulator.credentials, "secret_key": "sk_wrong_but_long_enough"}
    with (
        BentoClient(resolve_settings(**creds, env={}), FAST, pacers=PacerRegistry()) as c,
        pytest.raises(BentoAuthError) as err,
    ):
        c.get("/fetch/tags")
    assert err.value.status == 401
    assert "publishable_key, secret_key and site_uuid" in str(err.value)
    assert len(emulator.requests("/fetch/tags")) == 1  # not retried


def test_wrong_site_uuid_is_401(emulator: BentoEmulator) -> None:
    creds = {**emulator.credentials, "site_uuid": "not-this-site"}
    with (
        BentoClient(resolve_settings(**creds, env={}), FAST, pacers=PacerRegistry()) as c,
        pytest.raises(BentoAuthError),
    ):
        c.get("/fetch/tags")


def test_every_request_carries_site_uuid_and_our_user_agent(client: BentoClient, emulator: BentoEmulator) -> None:
    client.get("/fetch/tags")
    client.post("/batch/subscribers", {"subscribers": subscribers(2)})
    for record in emulator.request_log:
        assert record.query.get("site_uuid") == emulator.site_uuid
        assert record.user_agent.startswith("bento-dlt/")


def test_library_default_or_empty_user_agent_is_refused_before_sending(emulator: BentoEmulator) -> None:
    for agent in ("python-httpx/0.28.1", "   "):
        with pytest.raises(BentoConfigError, match=r"User-Agent|user_agent"):
            make_client(emulator, user_agent=agent)
    assert emulator.request_log == []


def test_custom_user_agent_is_sent(emulator: BentoEmulator) -> None:
    with make_client(emulator, user_agent="acme-sync/2.0") as c:
        c.get("/fetch/tags")
    assert emulator.request_log[-1].user_agent == "acme-sync/2.0"


def test_missing_credentials_name_every_item_and_where_to_set_it() -> None:
    with pytest.raises(BentoConfigError) as err:
        resolve_settings(site_uuid="abc", env={})
    text = str(err.value)
    for key in ("publishable_key", "secret_key", "BENTO_SECRET_KEY", "SOURCES__BENTO__SECRET_KEY"):
        assert key in text
    assert "site_uuid:" not in text


def test_precedence_keyword_then_bento_env_and_dlt_variables_left_to_dlt() -> None:
    env = {
        "BENTO_SITE_UUID": "from-bento-env",
        "DESTINATION__BENTO__SITE_UUID": "from-dlt-env",
        "SOURCES__BENTO__SITE_UUID": "from-dlt-env",
        "BENTO_PUBLISHABLE_KEY": "pk_env",
        "BENTO_SECRET_KEY": "sk_env",
    }
    # dlt resolves its own variables and passes them in as keywords (tests/test_destination_config.py):
    # read here as well, they would be a second, hand-made resolution
    for sections in (("destination",), ("sources",)):
        assert resolve_settings(env=env, sections=sections).site_uuid == "from-bento-env"
    assert resolve_settings(site_uuid="kw", env=env).site_uuid == "kw"


def test_plain_http_is_refused_unless_loopback() -> None:
    creds = {"site_uuid": "s", "publishable_key": "pk_x", "secret_key": "sk_x"}
    with pytest.raises(BentoConfigError, match="clear text"):
        resolve_settings(**creds, base_url="http://bento.example.com/api/v1", env={})
    for url in ("http://127.0.0.1:9/api/v1", "http://localhost:9/api/v1", "http://[::1]:9/api/v1"):
        assert resolve_settings(**creds, base_url=url, env={}).base_url == url


# -- batches -------------------------------------------------------------------------------------


def test_batch_past_the_maximum_is_invalid_and_not_retried(client: BentoClient, emulator: BentoEmulator) -> None:
    with pytest.raises(BentoInvalidRequestError) as err:
        client.post("/batch/subscribers", {"subscribers": subscribers(1001)})
    assert err.value.status == (422 if emulator.config.bento_like else 400)  # Bento's status is unknown
    assert len(emulator.requests("/batch/subscribers")) == 1
    assert not any(email.startswith("person") for email in emulator.store.subscribers)


def test_batch_with_three_bad_emails_reports_failed_3_and_stores_none(
    client: BentoClient, emulator: BentoEmulator
) -> None:
    rows = [*subscribers(7), {"email": "not-an-email"}, {"email": "a@b"}, {"email": "two@@example.com"}]
    answer = client.post("/batch/subscribers", {"subscribers": rows})
    assert answer == {"results": 7, "failed": 3}
    stored = {email for email in emulator.store.subscribers if "example.com" in email and "@" in email}
    ours = {f"person{i}@example.com" for i in range(7)}
    assert ours <= stored
    assert not {"not-an-email", "a@b", "two@@example.com"} & set(emulator.store.subscribers)


# -- pages ---------------------------------------------------------------------------------------


def test_pages_walk_ends_with_exactly_one_empty_page(emulator: BentoEmulator, client: BentoClient) -> None:
    pages = list(client.iter_pages("/fetch/broadcasts", {"status": "sent"}))
    sent = [r for r in emulator.request_log if r.path == "/fetch/broadcasts"]
    asked = [int(r.query["page"]) for r in sent]
    assert asked == list(range(1, len(pages) + 2))
    assert len(pages) >= 2
    assert sum(len(p) for p in pages) == len({row["id"] for p in pages for row in p})


# -- retries -------------------------------------------------------------------------------------


def test_429_with_retry_after_is_waited_for(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="rate_limit", count=1, seconds=1, retry_after="seconds"))
    sleep = RecordingSleep()
    with make_client(emulator, sleep=sleep) as c:
        started = time.monotonic()
        c.get("/fetch/tags")
        elapsed = time.monotonic() - started
    assert elapsed >= 1.0
    assert max(sleep.calls) >= 1.0
    assert c.stats.rate_limited == 1 and c.stats.retries == 1


def test_429_with_an_http_date_retry_after(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="rate_limit", count=1, seconds=2, retry_after="http-date"))
    sleep = RecordingSleep()
    with make_client(emulator, sleep=sleep) as c:
        c.get("/fetch/tags")
    assert sleep.calls and max(sleep.calls) > 0.5  # an HTTP-date has 1 s resolution


def test_429_without_retry_after_backs_off_and_slows_the_pace(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="rate_limit", count=2, retry_after=None))
    with make_client(emulator) as c:
        before = c.pacer("fetch").interval
        c.get("/fetch/tags")
        assert c.pacer("fetch").interval > before
    assert c.stats.rate_limited == 2


def test_rides_through_a_burst_of_5xx(client: BentoClient, emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="server_error", count=3, status=503))
    answer = client.post("/batch/subscribers", {"subscribers": subscribers(5)})
    assert answer["results"] == 5
    assert client.stats.retries == 3 and client.stats.server_errors == 3


def test_gives_up_after_the_cap_with_a_clear_error(client: BentoClient, emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="server_error", status=502))
    with pytest.raises(BentoServerError, match="gave up after 4 attempts"):
        client.get("/fetch/tags")
    assert len(emulator.requests("/fetch/tags")) == 4


def test_rate_limit_gives_up_after_the_cap(client: BentoClient, emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="rate_limit", retry_after=None))
    with pytest.raises(BentoRateLimitedError):
        client.get("/fetch/tags")


def test_emails_are_not_retried_once_they_may_have_reached_bento(client: BentoClient, emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="server_error", status=503, path_prefix="/batch/emails"))
    email = {"to": "a@example.com", "from": emulator.config.authors[0], "subject": "s", "html_body": "<p>x</p>"}
    with pytest.raises(BentoServerError):
        client.post("/batch/emails", {"emails": [email]}, retry=NEVER_AFTER_SEND)
    assert len(emulator.requests("/batch/emails")) == 1


def test_emails_are_retried_after_a_429(client: BentoClient, emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="rate_limit", count=1, seconds=0.2, path_prefix="/batch/emails"))
    email = {"to": "a@example.com", "from": emulator.config.authors[0], "subject": "s", "html_body": "<p>x</p>"}
    policy = RetryPolicy(mode=NEVER_AFTER_SEND.mode, backoff_base=0.01)
    assert client.post("/batch/emails", {"emails": [email]}, retry=policy) == {"results": 1}
    assert len(emulator.requests("/batch/emails")) == 2


def test_unknown_author_is_a_clear_invalid_request_not_a_retry(client: BentoClient, emulator: BentoEmulator) -> None:
    email = {"to": "a@example.com", "from": "nobody@example.com", "subject": "s", "html_body": "<p>x</p>"}
    with pytest.raises(BentoInvalidRequestError, match="Author"):
        client.post("/batch/emails", {"emails": [email]}, retry=NEVER_AFTER_SEND)
    assert len(emulator.requests("/batch/emails")) == 1


def test_a_dropped_response_after_apply_is_retried_for_idempotent_imports(
    client: BentoClient, emulator: BentoEmulator
) -> None:
    emulator.add_fault(Fault(kind="drop_after_apply", count=1, path_prefix="/batch/subscribers"))
    assert client.post("/batch/subscribers", {"subscribers": subscribers(3)})["results"] == 3
    assert len(emulator.requests("/batch/subscribers")) == 2
    assert {f"person{i}@example.com" for i in range(3)} <= set(emulator.store.subscribers)


def test_connection_refused_is_a_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = BentoSettings("site", "pk_x", "sk_x", f"http://127.0.0.1:{port}/api/v1")
    with BentoClient(settings, FAST, retry=QUICK_RETRY, pacers=PacerRegistry()) as c:
        with pytest.raises(BentoConnectionError, match="could not connect"):
            c.get("/fetch/tags")
        assert c.stats.requests == 4


# -- hostile answers -----------------------------------------------------------------------------


def test_a_trickling_server_is_abandoned_at_the_deadline(emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="trickle", seconds=60, chunk=1, interval=0.05, path_prefix="/fetch/tags"))
    with make_client(emulator, deadline=1.0, retry=RetryPolicy(max_attempts=1)) as c:
        started = time.monotonic()
        with pytest.raises(BentoDeadlineError, match="deadline"):
            c.get("/fetch/tags")
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 30


@pytest.mark.parametrize("kind", ["html_error", "truncated_json"])
def test_non_json_answers_are_clear_errors(client: BentoClient, emulator: BentoEmulator, kind: str) -> None:
    emulator.add_fault(Fault(kind=kind, path_prefix="/fetch/tags"))
    with pytest.raises((BentoResponseError, BentoServerError)) as err:
        client.get("/fetch/tags")
    assert "/fetch/tags" in str(err.value)


def test_an_error_inside_a_200_is_not_taken_for_success(client: BentoClient, emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="error_200", message="something broke", path_prefix="/fetch/tags"))
    with pytest.raises(BentoResponseError, match="something broke"):
        client.get("/fetch/tags")
    assert len(emulator.requests("/fetch/tags")) == 1


def test_a_huge_body_is_refused(client: BentoClient, emulator: BentoEmulator) -> None:
    emulator.add_fault(Fault(kind="huge_body", megabytes=40, path_prefix="/fetch/tags", count=1))
    with make_client(emulator, retry=RetryPolicy(max_attempts=1)) as c, pytest.raises(BentoResponseError, match="MiB"):
        c.get("/fetch/tags")


# -- pacing --------------------------------------------------------------------------------------


def test_requests_are_spaced_at_the_budget(emulator: BentoEmulator) -> None:
    budgets = resolve_budgets(requests_per_minute=600)  # one every 0.1 s
    with make_client(emulator, budgets=budgets) as c:
        started = time.monotonic()
        for _ in range(6):
            c.get("/fetch/tags")
        elapsed = time.monotonic() - started
    assert elapsed >= 0.5
    arrivals = [r.t for r in emulator.requests("/fetch/tags")]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # no burst: most arrivals are a full interval apart (one may be pushed by a busy machine's scheduling)
    assert sorted(gaps)[1] >= 0.08


# -- secrets -------------------------------------------------------------------------------------

SENTINEL_PK = "pk_SENTINEL_publishable_7f3a9c"
SENTINEL_SK = "sk_SENTINEL_secret_b41d22e8"


def test_no_secret_in_any_exception_log_or_file(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    import base64
    import logging

    caplog.set_level(logging.DEBUG)
    secrets = [
        SENTINEL_PK,
        SENTINEL_SK,
        base64.b64encode(f"{SENTINEL_PK}:{SENTINEL_SK}".encode()).decode(),
    ]
    texts: list[str] = []
    with BentoEmulator(publishable_key=SENTINEL_PK, secret_key=SENTINEL_SK, requests_per_minute=1e6) as emu:
        with make_client(emu) as good:
            texts.append(repr(good))
            texts.append(repr(good.settings))
            faults = [
                Fault(kind="server_error", status=500),
                Fault(kind="rate_limit", retry_after=None),
                Fault(kind="html_error"),
                Fault(kind="truncated_json"),
                Fault(kind="error_200"),
            ]
            for fault in faults:
                emu.clear_faults()
                emu.add_fault(fault)
                with pytest.raises(Exception) as err:
                    good.get("/fetch/tags")
                texts += [str(err.value), repr(err.value), repr(err.value.__dict__)]
            emu.clear_faults()
            with pytest.raises(BentoInvalidRequestError) as err:
                good.post("/batch/subscribers", {"subscribers": subscribers(1001)})
            texts += [str(err.value), repr(err.value.__dict__)]
        wrong = {**emu.credentials, "secret_key": SENTINEL_SK + "x"}
        with BentoClient(resolve_settings(**wrong, env={}), FAST, pacers=PacerRegistry()) as bad:
            with pytest.raises(BentoAuthError) as err:
                bad.get("/fetch/tags")
            texts += [str(err.value), repr(err.value.__dict__)]
    texts.append(caplog.text)
    texts += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file()]
    blob = "\n".join(texts)
    assert "gave up" in blob  # the errors really were produced
    for secret in secrets:
        assert secret not in blob
