"""Admin endpoints under /_emulator/ (no auth), as a benchmark in another process would use them."""

from __future__ import annotations

import httpx

from bento_api.emulator import BentoEmulator

UA = "bento-dlt-tests/1.0"


def api(emu: BentoEmulator) -> httpx.Client:
    return httpx.Client(base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
                        params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA}, timeout=10)


def admin(emu: BentoEmulator) -> httpx.Client:
    """No credentials and a library User-Agent: the admin side needs neither."""
    return httpx.Client(base_url=emu.admin_url, timeout=10)


def test_log_and_summary(emulator: BentoEmulator) -> None:
    with api(emulator) as c:
        c.post("/batch/subscribers", json={"subscribers": [{"email": "a@example.com"}, {"email": "b@example.com"}]})
        c.post("/batch/subscribers", json={"subscribers": [{"email": "a@example.com"}]})
        c.get("/fetch/nothing")
    with admin(emulator) as a:
        log = a.get("/log").json()
        with_bodies = a.get("/log", params={"bodies": "1", "path": "/batch/subscribers"}).json()
        summary = a.get("/summary").json()
    assert [(r["path"], r["status"]) for r in log] == [("/batch/subscribers", 200), ("/batch/subscribers", 200),
                                                       ("/fetch/nothing", 404)]
    assert "body" not in log[0] and log[0]["rows"] == 2 and log[0]["emails"] == ["a@example.com", "b@example.com"]
    assert with_bodies[1]["body"] == {"subscribers": [{"email": "a@example.com"}]}
    assert summary["objects"]["subscribers"] == 252
    req = summary["requests"]
    assert req["total"] == 3 and req["by_status"] == {"200": 2, "404": 1}
    assert req["by_path"]["/batch/subscribers"] == {"200": 2}
    assert req["rows_by_path"]["/batch/subscribers"] == 3
    assert req["duplicate_emails_by_path"]["/batch/subscribers"] == 1
    assert summary["rate_limits"]["batch"]["capacity"] == 100_000


def test_faults_via_admin(emulator: BentoEmulator) -> None:
    with admin(emulator) as a, api(emulator) as c:
        r = a.post("/faults", json=[{"kind": "server_error", "status": 500, "count": 1},
                                    {"kind": "refuse_rows", "emails": ["x@example.com"]}])
        assert r.json() == {"added": 2}
        assert {f["kind"] for f in a.get("/faults").json()} == {"server_error", "refuse_rows"}
        assert c.get("/fetch/tags").status_code == 500
        assert c.post("/batch/subscribers", json={"subscribers": [{"email": "x@example.com"}]}).json() == {
            "results": 0, "failed": 1}
        assert a.post("/faults", json={"kind": "meteor"}).status_code == 400
        assert a.post("/faults", json={"kind": "latency", "sekonds": 1}).status_code == 400
        assert a.delete("/faults").json() == {"cleared": True}
        assert a.get("/faults").json() == []


def test_rate_limit_via_admin(emulator: BentoEmulator) -> None:
    with admin(emulator) as a, api(emulator) as c:
        r = a.post("/rate_limit", json={"family": "fetch", "per_minute": 6, "capacity": 1, "retry_after": "seconds"})
        assert r.json() == {"updated": ["fetch"]}
        assert [c.get("/fetch/tags").status_code for _ in range(2)] == [200, 429]
        a.post("/rate_limit", json={"family": "*", "per_minute": None})
        assert c.get("/fetch/tags").status_code == 200
        assert a.post("/rate_limit", json={"family": "nope", "per_minute": 1}).status_code == 400
        assert a.post("/rate_limit", json={"family": "fetch", "per_minute": -1}).status_code == 400


def test_reset_log_and_data_views(emulator: BentoEmulator) -> None:
    with api(emulator) as c:
        c.post("/batch/events", json={"events": [{"email": "ev@example.com", "type": "$x", "details": {"k": 1}}]})
        c.post("/batch/emails", json={"emails": [{"to": "t@example.com", "from": "author@example.com",
                                                  "subject": "s", "html_body": "<p>b</p>"}]})
    with admin(emulator) as a:
        subs = a.get("/subscribers").json()
        events = a.get("/events").json()
        emails = a.get("/emails").json()
        config = a.get("/config").json()
        assert a.post("/reset_log").json() == {"reset": True}
        assert a.get("/log").json() == []
        assert a.get("/nothing").status_code == 404
    assert len(subs) == 252 and {"id", "uuid", "email", "fields", "tags", "unsubscribed_at"} <= set(subs[0])
    assert events == [{**events[0], "email": "ev@example.com", "type": "$x", "details": {"k": 1}}]
    assert emails[0]["to"] == "t@example.com"
    assert config["base_url"] == emulator.base_url and config["site_uuid"] == emulator.site_uuid
    assert emulator.request_log == []
