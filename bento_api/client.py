"""The one Bento HTTP client: auth, site_uuid, User-Agent, deadlines, pacing, retries, typed errors.

Both the source and the destination call Bento only through `BentoClient`. It is thread-safe: the
destination shares one client between dlt's parallel load jobs, and the pacers it uses are shared
process-wide (pacing.PACERS) so that two clients of one account never exceed the budget together.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from .answers import MAX_RESPONSE_BYTES, Transient, answer_message, interpret_answer
from .errors import (
    BentoConfigError,
    BentoConnectionError,
    BentoDeadlineError,
    BentoError,
    BentoRateLimitedError,
    BentoResponseError,
    BentoServerError,
)
from .facts import EMAILS_BATCH_PATH, family_of
from .gate import BentoCancelledError, RequestGate
from .limits import EMAILS_PACE, Budgets, resolve_budgets
from .pacing import PACERS, Clock, Pacer, PacerRegistry, Sleep
from .retry import RetryMode, RetryPolicy, resolve_retry_policy
from .settings import BentoSettings
from .version import __version__

logger = logging.getLogger("bento_api")

DEFAULT_USER_AGENT = f"bento-dlt/{__version__}"
#: wall-clock seconds one request may take, body included (httpx's timeouts are per read)
DEFAULT_DEADLINE = 90.0
CONNECT_TIMEOUT = 10.0
LIBRARY_USER_AGENTS = ("python-httpx", "python-requests", "dlt/", "python-urllib", "curl/")


@dataclass
class RequestStats:
    """Counters of what was sent; thread-safe. One per client, and optionally one per caller."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    waited_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: float) -> None:
        with self._lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return {
                "requests": self.requests,
                "retries": self.retries,
                "rate_limited": self.rate_limited,
                "server_errors": self.server_errors,
                "waited_seconds": round(self.waited_seconds, 3),
            }


@dataclass(frozen=True)
class EncodedBody:
    """A JSON request body the caller already encoded, sent as is (the destination encodes each row once to
    pack requests by bytes, so encoding the whole body again would double the work)."""

    content: bytes


def check_user_agent(user_agent: str) -> str:
    user_agent = user_agent.strip()
    if not user_agent:
        raise BentoConfigError("user_agent must not be empty: Bento's edge blocks requests without one (403)")
    if user_agent.lower().startswith(LIBRARY_USER_AGENTS):
        raise BentoConfigError(
            f"user_agent {user_agent!r} looks like an HTTP library's default, which Bento's edge may block "
            "(403); name your application, e.g. 'my-sync/1.0'"
        )
    return user_agent


class BentoClient:
    """Calls Bento's REST API v1. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        settings: BentoSettings,
        budgets: Budgets | None = None,
        *,
        user_agent: str | None = None,
        deadline: float = DEFAULT_DEADLINE,
        retry: RetryPolicy | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        pacers: PacerRegistry | None = None,
        transport: httpx.BaseTransport | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.budgets = budgets or resolve_budgets()
        self.user_agent = check_user_agent(user_agent or DEFAULT_USER_AGENT)
        self.deadline = deadline
        self.retry = retry or resolve_retry_policy()
        self.stats = RequestStats()
        self._clock = clock
        self._sleep = sleep
        self._pacers = pacers or PACERS
        self._rng = random.Random(seed)
        self._in_flight = threading.BoundedSemaphore(self.budgets.max_in_flight)
        self._http = httpx.Client(
            base_url=settings.base_url,
            auth=httpx.BasicAuth(settings.publishable_key, settings.secret_key),
            headers={
                "User-Agent": self.user_agent,
                "Accept": "application/json",
            },
            limits=httpx.Limits(
                max_connections=self.budgets.max_in_flight + 2,
                max_keepalive_connections=self.budgets.max_in_flight + 2,
            ),
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"BentoClient(base_url={self.settings.base_url!r}, site_uuid={self.settings.site_uuid!r})"

    def __enter__(self) -> BentoClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- public calls -------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, Any] | None = None, **kwargs: Any) -> Any:
        return self.request("GET", path, params=params, **kwargs)

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, json_body=body, **kwargs)

    def pacer(self, family: str) -> Pacer:
        return self._pacers.get(
            self.settings.base_url,
            self.settings.site_uuid,
            family,
            self.budgets.interval(family),
            clock=self._clock,
            sleep=self._sleep,
        )

    def wait_for_emails(self, count: int, stats: RequestStats | None = None, gate: RequestGate | None = None) -> float:
        """Wait until `count` emails fit the emails budget (Bento's send pace); the seconds waited.

        `gate`: a cancel ends the wait (its pause raises), as for every other budget wait.
        """
        if count <= 0:
            return 0.0
        waited = self.pacer(EMAILS_PACE).acquire(count, sleep=None if gate is None else gate.pause)
        self._count(stats, waited_seconds=waited)
        return waited

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        retry: RetryPolicy | None = None,
        stats: RequestStats | None = None,
        on_retry: Callable[[BentoError, int], None] | None = None,
        pace_emails: bool = True,
        gate: RequestGate | None = None,
    ) -> Any:
        """Send one request (retrying per policy) and return its parsed JSON body.

        `/batch/emails` also waits for its emails' slots on the emails budget, unless the caller already
        did (`pace_emails=False` after :meth:`wait_for_emails`). `gate` (see gate.py) is asked before every
        attempt (it may stop the request, and caps the attempts) and waits through the back-off between
        attempts. A retry is counted when it is sent, so the stats match what the server saw even when a
        cancel ends a back-off wait.
        """
        policy = retry or self.retry
        if gate is not None:
            left = gate.attempts_left()
            if left <= 0:
                raise BentoCancelledError(
                    self._message("not sent: this request spent its attempts earlier in this run", path), path=path
                )
            policy = dataclasses.replace(policy, max_attempts=min(policy.max_attempts, left))
        family = family_of(path)
        pacer = self.pacer(family)
        if pace_emails and "/" + path.lstrip("/") == EMAILS_BATCH_PATH and isinstance(json_body, dict):
            self.wait_for_emails(len(json_body.get("emails") or ()), stats, gate)
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            waited = pacer.acquire(sleep=None if gate is None else gate.pause)
            repeated = gate.before_attempt() if gate is not None else False
            self._count(stats, requests=1, waited_seconds=waited, retries=int(attempt > 1 or repeated))
            try:
                with self._in_flight:
                    result = self._send_once(method, path, params, json_body)
                pacer.succeeded()
                return result
            except Transient as failure:
                error = failure.error
                if isinstance(error, BentoRateLimitedError):
                    self._count(stats, rate_limited=1)
                    pacer.slow_down()
                elif isinstance(error, BentoServerError):
                    self._count(stats, server_errors=1)
                delay = self._retry_delay(policy, failure, attempt, started)
                if delay is None:
                    raise error from None
                if failure.retry_after is not None:
                    pacer.hold_until(self._clock() + failure.retry_after)
                logger.warning(
                    "Bento %s %s: %s; retrying in %.1fs (attempt %d of %d)",
                    method, path, error.message, delay, attempt + 1, policy.max_attempts,
                )
                if on_retry is not None:
                    on_retry(error, attempt)
                if gate is not None:
                    gate.pause(delay)
                else:
                    self._sleep(delay)

    def iter_pages(
        self, path: str, params: Mapping[str, Any] | None = None, **options: Any
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's `data` list: page=1, 2, ... until the first empty page.

        Options (method, body, page_in_body, first_page, max_pages, stats) are paging.iter_pages's.
        """
        from .paging import iter_pages

        return iter_pages(self, path, params, **options)

    # -- one attempt ---------------------------------------------------------------------------

    def _count(self, stats: RequestStats | None, **deltas: float) -> None:
        self.stats.add(**deltas)
        if stats is not None:
            stats.add(**deltas)

    def _retry_delay(
        self, policy: RetryPolicy, failure: Transient, attempt: int, started: float
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up."""
        if failure.reached and policy.mode is RetryMode.NOT_AFTER_SEND:
            return None
        if attempt >= policy.max_attempts:
            failure.error.message += f" (gave up after {attempt} attempts)"
            return None
        if failure.retry_after is not None:
            if failure.retry_after > policy.max_retry_after:
                failure.error.message += (
                    f" (Retry-After {failure.retry_after:.0f}s is longer than the {policy.max_retry_after:.0f}s"
                    " we wait; lower requests_per_minute or run later)"
                )
                return None
            delay = failure.retry_after
        else:
            delay = policy.backoff(attempt, self._rng)
        if self._clock() - started + delay > policy.max_total_seconds:
            failure.error.message += f" (gave up: retries would pass {policy.max_total_seconds:.0f}s)"
            return None
        return delay

    def _send_once(
        self, method: str, path: str, params: Mapping[str, Any] | None, json_body: Any
    ) -> Any:
        query = {**(params or {}), "site_uuid": self.settings.site_uuid}
        remaining = self.deadline
        started = self._clock()
        if isinstance(json_body, EncodedBody):
            content: bytes | None = json_body.content
        else:
            content = None if json_body is None else json.dumps(json_body, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"} if content is not None else None
        request = self._http.build_request(
            method,
            "/" + path.lstrip("/"),
            params=query,
            content=content,
            headers=headers,
            timeout=httpx.Timeout(remaining, connect=min(CONNECT_TIMEOUT, remaining)),
        )
        try:
            response = self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # the URL has no credentials (check_base_url refuses them) and names what to check
            unreached = BentoConnectionError(
                self._message(f"could not connect to Bento at {self.settings.base_url} ({type(exc).__name__})",
                              path),
                path=path,
            )
            unreached.may_have_arrived = False
            raise Transient(unreached, reached=False) from None
        except httpx.TimeoutException:
            raise Transient(self._deadline_error(path), reached=True) from None
        except httpx.TransportError as exc:
            raise self._broken_connection(exc, path, "before Bento answered") from None
        try:
            raw = self._read_body(response, started, path)
        finally:
            response.close()
        return self._interpret(response, raw, path)

    def _read_body(self, response: httpx.Response, started: float, path: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_raw():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise Transient(
                        BentoResponseError(
                            self._message(f"response larger than {MAX_RESPONSE_BYTES >> 20} MiB refused", path),
                            status=response.status_code, path=path,
                        ),
                        reached=True,
                    )
                if self._clock() - started > self.deadline:
                    raise Transient(self._deadline_error(path), reached=True)
        except httpx.TimeoutException:
            raise Transient(self._deadline_error(path), reached=True) from None
        except httpx.TransportError as exc:
            raise self._broken_connection(exc, path, "while reading Bento's answer") from None
        return b"".join(chunks)

    def _broken_connection(self, exc: httpx.TransportError, path: str, when: str) -> Transient:
        """A connection that broke after the request left: it may have reached Bento."""
        error = BentoConnectionError(
            self._message(f"the connection broke {when} ({type(exc).__name__})", path), path=path
        )
        return Transient(error, reached=True)

    def _deadline_error(self, path: str) -> BentoDeadlineError:
        return BentoDeadlineError(
            self._message(f"no complete answer within the {self.deadline:.0f}s deadline", path), path=path
        )

    def _message(self, text: str, path: str, status: int | None = None) -> str:
        return answer_message(self.settings, text, path, status)

    def _interpret(self, response: httpx.Response, raw: bytes, path: str) -> Any:
        return interpret_answer(response, raw, path, self.settings, self.user_agent)
