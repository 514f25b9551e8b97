"""The request pipeline, in Bento's order: edge (User-Agent), auth, route, rate limit, faults, body, handler.

It knows nothing about sockets: it turns a parsed request into an Outcome (an answer, a dropped
connection, or an answer to trickle), and logs one RequestRecord per API request. server.py does the I/O.
Before answering, it applies the queued writes that are due (bento_like mode), so a read sees exactly
the writes whose delay has passed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
import time
from dataclasses import dataclass
from typing import Any

from . import api, codec, counting, limits
from .calls import Call, Response, error
from .config import EmulatorConfig
from .faults import BEFORE_APPLY_KINDS, Fault, FaultInjector
from .ratelimit import RateLimiter, retry_after_header
from .records import RequestLog, RequestRecord
from .store import Store
from .tally import Tally
from .writequeue import WriteQueue

_CLOUDFLARE_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway | app.bentonow.com | Cloudflare</title></head>\n"
    "<body><div id=\"cf-error-details\"><h1>Bad gateway</h1><span>Error code 502</span>\n"
    "<p>The web server reported a bad gateway error.</p><p>Cloudflare Ray ID: 8f0e0e0e0e0e0e0e</p>"
    "</div></body></html>\n"
)
#: what a reverse proxy sends for a body over its limit (bento_like mode: Bento's own answer is unknown)
_PROXY_413_PAGE = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
_STATUS_TEXT = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
                504: "Gateway Timeout"}


@dataclass
class Outcome:
    """What the server must do: send `response` (None = close the socket without answering),
    optionally slowly (trickle)."""

    response: Response | None
    trickle: Fault | None = None


class App:
    """Everything one emulated Bento site needs to answer requests."""

    def __init__(self, cfg: EmulatorConfig, store: Store, limiter: RateLimiter, faults: FaultInjector,
                 log: RequestLog, writes: WriteQueue, tally: Tally | None = None) -> None:
        self.cfg = cfg
        self.store = store
        #: the counts mode's memory of writes (None: records are kept in the store), and its handlers
        self.tally = tally
        self._routes = counting.routes(tally) if tally is not None else {}
        self.writes = writes
        self.limiter = limiter
        self.faults = faults
        self.log = log
        self.stopping = threading.Event()
        self._expected_auth = "Basic " + base64.b64encode(
            f"{cfg.publishable_key}:{cfg.secret_key}".encode()).decode()

    # ------------------------------------------------------------------ checks
    def _user_agent_blocked(self, ua: str | None) -> bool:
        if ua is None or not ua.strip():
            return True
        low = ua.strip().lower()
        return any(low.startswith(p) for p in self.cfg.user_agent_blocklist)

    def _authorized(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            base64.b64decode(authorization[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(authorization.strip().encode(), self._expected_auth.encode())

    def _site_ok(self, query: dict[str, str], body: Any) -> bool:
        site = query.get("site_uuid")
        if site is None and isinstance(body, dict) and isinstance(body.get("site_uuid"), str):
            site = body["site_uuid"]  # the Node and PHP SDKs put it in POST bodies
        return site is not None and hmac.compare_digest(site.encode(), self.cfg.site_uuid.encode())

    # ------------------------------------------------------------------ pipeline
    def process(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], raw: bytes,
                arrived: float) -> Outcome:
        """Answer one request under /api/v1 (path relative to it) and log it."""
        self.writes.apply_due()
        body: Any = None
        bad_json = False
        if raw.strip():
            try:
                body = codec.loads(raw)
            except codec.InvalidJSON:
                bad_json = True
        rows, emails = api.body_rows(path, body)
        record = RequestRecord(
            method=method, path=path, query=query, body=body if self.cfg.log_bodies else None, status=0,
            family=api.family_of(path), rows=rows, emails=emails, user_agent=headers.get("user-agent"),
            t=arrived)
        try:
            outcome = self._answer(method, path, query, headers, body, bad_json, record)
        except Exception as exc:  # an emulator bug must still answer, and loudly
            outcome = Outcome(error(500, f"emulator error: {type(exc).__name__}: {exc}"))
            record.fault = "emulator_bug"
        if outcome.response is None:
            record.dropped = True
        else:
            record.status = outcome.response.status
        record.duration = time.monotonic() - arrived
        self.log.append(record)
        return outcome

    def log_unread(self, method: str, path: str, query: dict[str, str], user_agent: str | None, status: int,
                   arrived: float) -> None:
        """Log a request answered before its body was read (413: larger than max_body_bytes): no body, 0 rows."""
        self.log.append(RequestRecord(
            method=method, path=path, query=query, body=None, status=status, family=api.family_of(path), rows=0,
            emails=[], user_agent=user_agent, t=arrived, duration=time.monotonic() - arrived))

    def _answer(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any,
                bad_json: bool, record: RequestRecord) -> Outcome:
        if self._user_agent_blocked(headers.get("user-agent")):
            blocked = "a missing, empty or library-default" if self.cfg.user_agent_blocklist else "a missing or empty"
            return Outcome(error(403, "Forbidden: set a User-Agent naming your application (e.g. my-app/1.0); "
                                      f"{blocked} User-Agent is blocked"))
        if not self._authorized(headers.get("authorization")) or not self._site_ok(query, body):
            return Outcome(error(401, "Unauthorized"))
        handler = self._routes.get((method, path)) or api.resolve(method, path)
        if handler is None:
            return Outcome(error(404, "Not Found"))
        decision = self.limiter.acquire(record.family)
        if not decision.allowed:
            return Outcome(self._too_many(decision.wait, decision.retry_after))
        plan = self.faults.plan(method, path)
        if plan.delay > 0:
            self.stopping.wait(plan.delay)
        fault = plan.terminal
        if fault is not None:
            record.fault = fault.kind
            if fault.kind == "rate_limit":
                self.limiter.refund(record.family)
        if bad_json:
            return Outcome(error(400, "Invalid JSON body"))
        call = Call(method, path, query, body, self.store, self.cfg, self.writes.submit, plan)
        if fault is not None and fault.kind in ("server_error", "html_error") and fault.apply:
            handler(call)  # applied, but the answer is lost to a gateway error
        if fault is not None and fault.kind in BEFORE_APPLY_KINDS:
            return _fault_outcome(fault, None)
        answer = handler(call)
        if fault is not None:
            return _fault_outcome(fault, answer)
        return Outcome(answer)

    def object_counts(self) -> dict[str, Any]:
        """Objects held, as the summary shows them: the store's, with the tally's in the counts mode."""
        counts: dict[str, Any] = dict(self.store.counts())
        if self.tally is not None:
            counts.update(self.tally.counts())
        return counts

    def body_too_large(self) -> Response:
        """413 for a body over max_body_bytes: JSON, or in bento_like a proxy's HTML page."""
        if self.cfg.bento_like:
            return Response(413, raw=_PROXY_413_PAGE.encode(), content_type="text/html")
        return error(413, "Request body too large")

    def _too_many(self, wait: float, mode: str | None) -> Response:
        resp = error(429, "Too many requests")
        value = retry_after_header(wait, mode)
        if value is not None:
            resp.headers["Retry-After"] = value
        return resp


def _fault_outcome(fault: Fault, answer: Response | None) -> Outcome:
    """The answer a fault produces; `answer` is the real one for faults that act after applying."""
    kind = fault.kind
    if kind == "server_error":
        return Outcome(error(fault.status, fault.message or _STATUS_TEXT.get(fault.status, "Server Error")))
    if kind == "html_error":
        return Outcome(Response(502, raw=_CLOUDFLARE_PAGE.encode(), content_type="text/html; charset=UTF-8"))
    if kind == "error_200":
        return Outcome(Response(200, {"error": fault.message or "Something went wrong, please try again"}))
    if kind == "rate_limit":
        resp = error(429, "Too many requests")
        value = retry_after_header(fault.retry_after_seconds(), fault.retry_after)
        if value is not None:
            resp.headers["Retry-After"] = value
        return Outcome(resp)
    if kind in ("drop_before_apply", "drop_after_apply"):
        return Outcome(None)
    if kind == "redirect":
        assert fault.location is not None  # Fault checks it
        page = f'<html><body>You are being <a href="{fault.location}">redirected</a>.</body></html>'
        return Outcome(Response(fault.status, raw=page.encode(), content_type="text/html; charset=utf-8",
                                headers={"Location": fault.location}))
    if kind == "huge_body":
        size = int(fault.megabytes * 1024 * 1024)
        raw = b'{"data":[],"padding":"' + b"x" * size + b'"}'
        return Outcome(Response(200, raw=raw))
    assert answer is not None
    if kind == "truncated_json":
        full = answer.raw if answer.raw is not None else codec.dumps(answer.payload)
        cut = full[: max(1, len(full) // 2)]
        return Outcome(Response(answer.status, raw=cut, content_type=answer.content_type, headers=answer.headers))
    if kind == "trickle":
        return Outcome(answer, trickle=fault)
    raise AssertionError(f"unhandled fault kind {kind}")


def api_path(raw_path: str) -> str | None:
    """The path relative to /api/v1 without a trailing slash, or None if outside the API."""
    if raw_path == limits.API_PREFIX or not raw_path.startswith(limits.API_PREFIX + "/"):
        return None
    rel = raw_path[len(limits.API_PREFIX):]
    return rel.rstrip("/") or "/"
