"""Admin endpoints under /_emulator/ (no auth): inspect and steer an emulator running in another process.

Routes: GET log, GET summary, GET/POST/DELETE faults, POST rate_limit, POST reset_log,
GET subscribers, GET events, GET emails, GET config, GET queue, POST drain.
The data routes (summary, subscribers, events, emails) show the eventual state: they apply every
queued write first, as BentoEmulator.store does. GET queue shows the queue without applying it.
In the counts mode the record routes (log, subscribers, events, emails) answer 409: summary has the counts.
"""

from __future__ import annotations

from typing import Any

from . import codec, counting, limits
from .app import App
from .calls import Response, error
from .config import AUTO
from .faults import Fault
from .ratelimit import RateLimit
from .timeutil import iso

_TRUE = {"1", "true", "yes", "on"}


class AdminAPI:
    """Answers /_emulator/* requests against one App."""

    def __init__(self, app: App, base_url: str) -> None:
        self.app = app
        self.base_url = base_url

    def handle(self, method: str, sub: str, query: dict[str, str], raw: bytes) -> Response:
        body: Any = None
        if raw.strip():
            try:
                body = codec.loads(raw)
            except codec.InvalidJSON:
                return error(400, "Invalid JSON body")
        route = {
            ("GET", "/log"): self._log,
            ("GET", "/summary"): self._summary,
            ("GET", "/faults"): self._faults,
            ("POST", "/faults"): self._add_faults,
            ("DELETE", "/faults"): self._clear_faults,
            ("POST", "/rate_limit"): self._rate_limit,
            ("POST", "/reset_log"): self._reset_log,
            ("GET", "/subscribers"): self._subscribers,
            ("GET", "/events"): self._events,
            ("GET", "/emails"): self._emails,
            ("GET", "/config"): self._config,
            ("GET", "/queue"): self._queue,
            ("POST", "/drain"): self._drain,
        }.get((method, sub.rstrip("/")))
        if route is None:
            return error(404, f"Unknown admin endpoint {method} {limits.ADMIN_PREFIX}{sub}")
        if self.app.tally is not None and route in (self._log, self._subscribers, self._events, self._emails):
            return counting.no_records()
        try:
            return route(query, body)
        except (ValueError, TypeError) as exc:
            return error(400, str(exc))

    def _log(self, query: dict[str, str], body: Any) -> Response:
        bodies = query.get("bodies", "").lower() in _TRUE
        records = self.app.log.filter(query.get("path") or None, query.get("method") or None)
        return Response(200, [r.to_dict(bodies) for r in records])

    def _queue(self, query: dict[str, str], body: Any) -> Response:
        writes = self.app.writes
        return Response(200, {"mode": self.app.cfg.mode, "queued": writes.pending(), "delay_seconds": writes.delay})

    def _drain(self, query: dict[str, str], body: Any) -> Response:
        return Response(200, {"applied": self.app.writes.drain()})

    def _summary(self, query: dict[str, str], body: Any) -> Response:
        self.app.writes.drain()
        limits_now = {}
        for fam in limits.FAMILIES:
            lim = self.app.limiter.get(fam)
            limits_now[fam] = None if lim is None or lim.per_second is None else {
                "per_minute": lim.per_second * 60, "capacity": lim.capacity, "retry_after": lim.retry_after}
        return Response(200, {
            "objects": self.app.object_counts(),
            "requests": self.app.log.summary(),
            "faults": [f.to_dict() for f in self.app.faults.active()],
            "rate_limits": limits_now,
        })

    def _faults(self, query: dict[str, str], body: Any) -> Response:
        return Response(200, [f.to_dict() for f in self.app.faults.active()])

    def _add_faults(self, query: dict[str, str], body: Any) -> Response:
        items = body if isinstance(body, list) else [body]
        if not items or not all(isinstance(i, dict) for i in items):
            raise ValueError("send a JSON object or a list of objects, each with 'kind' and its parameters")
        faults = [Fault.from_dict(i) for i in items]  # all parsed before any is added
        for f in faults:
            self.app.faults.add(f)
        return Response(200, {"added": len(faults)})

    def _clear_faults(self, query: dict[str, str], body: Any) -> Response:
        self.app.faults.clear()
        return Response(200, {"cleared": True})

    def _rate_limit(self, query: dict[str, str], body: Any) -> Response:
        items = body if isinstance(body, list) else [body]
        if not items or not all(isinstance(i, dict) for i in items):
            raise ValueError("send {family, per_minute | per_hour, capacity, retry_after} (or a list)")
        parsed = []
        for item in items:
            unknown = set(item) - {"family", "per_minute", "per_hour", "capacity", "retry_after"}
            if unknown:
                raise ValueError(f"unknown rate_limit parameter(s): {sorted(unknown)}")
            parsed.append((str(item.get("family", "*")), RateLimit.of(
                item.get("per_minute"), item.get("per_hour"), float(item.get("capacity", limits.BUCKET_CAPACITY)),
                self.app.cfg.resolve_retry_after(item.get("retry_after", AUTO)))))
        for family, lim in parsed:
            self.app.limiter.set(family, lim)
        return Response(200, {"updated": [f for f, _ in parsed]})

    def _reset_log(self, query: dict[str, str], body: Any) -> Response:
        self.app.log.clear()
        return Response(200, {"reset": True})

    def _subscribers(self, query: dict[str, str], body: Any) -> Response:
        self.app.writes.drain()
        store = self.app.store
        with store.lock:
            out = [{
                "id": s.id, "uuid": s.uuid, "email": s.email, "fields": dict(s.fields),
                "tags": store.tag_names(s), "unsubscribed_at": iso(s.unsubscribed_at),
                "created_at": iso(s.created_at), "updated_at": iso(s.updated_at),
            } for s in store.subscribers_by_id()]
        return Response(200, out)

    def _events(self, query: dict[str, str], body: Any) -> Response:
        self.app.writes.drain()
        store = self.app.store
        with store.lock:
            out = [{"id": e.id, "email": e.email, "type": e.type, "fields": e.fields, "details": e.details,
                    "date": e.date, "received_at": iso(e.received_at)} for e in store.events]
        return Response(200, out)

    def _emails(self, query: dict[str, str], body: Any) -> Response:
        self.app.writes.drain()
        store = self.app.store
        with store.lock:
            out = [{"to": m.to, "from": m.from_, "subject": m.subject, "html_body": m.html_body,
                    "transactional": m.transactional, "personalizations": m.personalizations,
                    "received_at": iso(m.received_at)} for m in store.emails_sent]
        return Response(200, out)

    def _config(self, query: dict[str, str], body: Any) -> Response:
        cfg = self.app.cfg
        return Response(200, {
            "base_url": self.base_url, "site_uuid": cfg.site_uuid, "publishable_key": cfg.publishable_key,
            "secret_key": cfg.secret_key, "mode": cfg.mode, "seed": cfg.seed, "page_size": cfg.page_size,
            "search_page_size": cfg.search_page_size, "enterprise": cfg.enterprise, "authors": list(cfg.authors),
            "records": cfg.records,
        })
