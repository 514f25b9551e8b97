"""Emulator edge checks over real HTTP: credentials, site_uuid, User-Agent, routing, JSON bodies."""

from __future__ import annotations

import httpx
import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig

UA = "bento-dlt-tests/1.0"


def client(emu: BentoEmulator, **headers: str) -> httpx.Client:
    """A plain httpx client with the emulator's test credentials and a real User-Agent."""
    return httpx.Client(base_url=emu.base_url, auth=(emu.publishable_key, emu.secret_key),
                        params={"site_uuid": emu.site_uuid}, headers={"User-Agent": UA, **headers}, timeout=10)


def test_valid_credentials_answer_200(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        r = c.get("/fetch/tags")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize("auth", [None, ("pk_wrong", "sk_wrong"), ("pk_emulator_0000000000000000000000", "sk_x")])
def test_missing_or_wrong_credentials_answer_401(emulator: BentoEmulator, auth: tuple[str, str] | None) -> None:
    r = httpx.get(emulator.base_url + "/fetch/tags", params={"site_uuid": emulator.site_uuid}, auth=auth,
                  headers={"User-Agent": UA})
    assert r.status_code == 401
    assert r.json() == {"error": "Unauthorized"}


def test_garbled_basic_header_answers_401(emulator: BentoEmulator) -> None:
    r = httpx.get(emulator.base_url + "/fetch/tags", params={"site_uuid": emulator.site_uuid},
                  headers={"User-Agent": UA, "Authorization": "Basic %%%not-base64"})
    assert r.status_code == 401


@pytest.mark.parametrize("site", [None, "wrong-site"])
def test_missing_or_wrong_site_uuid_answers_401(emulator: BentoEmulator, site: str | None) -> None:
    params = {} if site is None else {"site_uuid": site}
    r = httpx.get(emulator.base_url + "/fetch/tags", params=params,
                  auth=(emulator.publishable_key, emulator.secret_key), headers={"User-Agent": UA})
    assert r.status_code == 401
    assert r.json() == {"error": "Unauthorized"}


def test_site_uuid_in_post_body_is_accepted(emulator: BentoEmulator) -> None:
    """The Node and PHP SDKs put site_uuid into POST bodies."""
    r = httpx.post(emulator.base_url + "/batch/subscribers",
                   json={"site_uuid": emulator.site_uuid, "subscribers": [{"email": "body@example.com"}]},
                   auth=(emulator.publishable_key, emulator.secret_key), headers={"User-Agent": UA})
    assert r.status_code == 200
    assert r.json() == {"results": 1, "failed": 0}


LIBRARY_AGENTS = ["python-httpx/0.28.1", "python-requests/2.32", "dlt/1.31.0", "curl/8.5.0", "Python-urllib/3.11"]


@pytest.mark.parametrize("mode", ["default", "bento_like"])
def test_empty_user_agent_answers_403_in_both_modes(mode: str) -> None:
    with BentoEmulator(mode=mode) as emu, client(emu, **{"User-Agent": ""}) as c:
        r = c.get("/fetch/tags")
    assert r.status_code == 403
    assert "User-Agent" in r.json()["error"]


@pytest.mark.parametrize("mode", ["default", "bento_like"])
def test_missing_user_agent_answers_403_in_both_modes(mode: str) -> None:
    with BentoEmulator(mode=mode) as emu, client(emu) as c:
        c.headers.pop("User-Agent")
        r = c.get("/fetch/tags")
    assert "user-agent" not in r.request.headers
    assert r.status_code == 403
    assert r.json()["error"].startswith("Forbidden")


@pytest.mark.parametrize("agent", LIBRARY_AGENTS)
def test_library_user_agents_are_blocked_in_the_bento_like_mode(agent: str) -> None:
    """The strict list catches an HTTP library's default leaking from our client."""
    with BentoEmulator(mode="bento_like") as emu, client(emu, **{"User-Agent": agent}) as c:
        r = c.get("/fetch/tags")
    assert r.status_code == 403
    assert "library-default User-Agent" in r.json()["error"]


@pytest.mark.parametrize("agent", [*LIBRARY_AGENTS, "bento-node-emulator-site", "bento-php-x"])
def test_default_mode_blocks_only_a_missing_or_empty_user_agent(agent: str) -> None:
    """Bento documents only a missing User-Agent as blocked: its Python SDK (python-requests' default) works."""
    with BentoEmulator(mode="default") as emu, client(emu, **{"User-Agent": agent}) as c:
        r = c.get("/fetch/tags")
    assert r.status_code == 200


def test_blocked_user_agents_are_configurable() -> None:
    with BentoEmulator(EmulatorConfig(blocked_user_agents=("evil/",))) as emu, \
            client(emu, **{"User-Agent": "python-httpx/0.28.1"}) as c:
        assert c.get("/fetch/tags").status_code == 200
        c.headers["User-Agent"] = "Evil/2"
        assert c.get("/fetch/tags").status_code == 403


@pytest.mark.parametrize(("method", "path"), [("GET", "/fetch/nothing"), ("DELETE", "/fetch/tags"),
                                              ("GET", "/batch/subscribers"), ("POST", "/stats/site"),
                                              ("GET", "/fetch/emails/templates/abc")])
def test_unknown_path_or_wrong_method_answers_404(emulator: BentoEmulator, method: str, path: str) -> None:
    with client(emulator) as c:
        r = c.request(method, path)
    assert r.status_code == 404
    assert "error" in r.json()


def test_path_outside_api_answers_404(emulator: BentoEmulator) -> None:
    r = httpx.get(f"{emulator.root_url}/api/v2/fetch/tags", headers={"User-Agent": UA})
    assert r.status_code == 404


def test_invalid_json_body_answers_400(emulator: BentoEmulator) -> None:
    with client(emulator, **{"Content-Type": "application/json"}) as c:
        r = c.post("/batch/subscribers", content=b'{"subscribers": [')
    assert r.status_code == 400
    assert r.json() == {"error": "Invalid JSON body"}
    assert emulator.store.counts()["subscribers"] == 250


def test_trailing_slash_is_the_same_route(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        assert c.get("/fetch/tags/").status_code == 200


def test_non_loopback_host_is_refused() -> None:
    with pytest.raises(ValueError, match="loopback"):
        EmulatorConfig(host="0.0.0.0")
    assert EmulatorConfig(host="localhost").host == "127.0.0.1"


def test_keep_alive_connection_is_reused(emulator: BentoEmulator) -> None:
    """HTTP/1.1 with exact Content-Length: one pooled connection carries many requests."""
    with client(emulator) as c:
        ports = set()
        for _ in range(20):
            r = c.get("/fetch/subscribers", params={"email": "nobody@example.com"})
            assert r.status_code == 200
            assert r.headers["connection"] == "keep-alive"
            ports.add(r.extensions["network_stream"].get_extra_info("client_addr"))
    assert len(ports) == 1


def test_request_log_records_each_request(emulator: BentoEmulator) -> None:
    with client(emulator) as c:
        c.post("/batch/subscribers", json={"subscribers": [{"email": "a@example.com"}, {"email": "A@example.com "}]})
        c.get("/fetch/tags")
        c.headers["User-Agent"] = ""
        c.get("/fetch/tags")
    recs = emulator.request_log
    assert [(r.method, r.path, r.status) for r in recs] == [
        ("POST", "/batch/subscribers", 200), ("GET", "/fetch/tags", 200), ("GET", "/fetch/tags", 403)]
    batch = recs[0]
    assert batch.family == "batch" and batch.rows == 2 and batch.emails == ["a@example.com", "a@example.com"]
    assert batch.user_agent == UA and batch.query == {"site_uuid": emulator.site_uuid}
    assert batch.body == {"subscribers": [{"email": "a@example.com"}, {"email": "A@example.com "}]}
    assert not batch.dropped and recs[0].t <= recs[1].t
    assert emulator.requests(path="/fetch/tags", method="get") == recs[1:]
    emulator.reset_log()
    assert emulator.request_log == []


def test_log_bodies_false_keeps_counts_only() -> None:
    with BentoEmulator(EmulatorConfig(log_bodies=False)) as emu, client(emu) as c:
        c.post("/batch/events", json={"events": [{"email": "x@example.com", "type": "$t"}]})
        (rec,) = emu.request_log
    assert rec.body is None and rec.rows == 1 and rec.emails == ["x@example.com"]


def test_client_hanging_up_mid_body_is_quiet_and_harmless(emulator: BentoEmulator,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", emulator.port)) as s:
        s.sendall(b"POST /api/v1/batch/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"ev")
    with client(emulator) as c:
        assert c.get("/fetch/tags").status_code == 200
    assert capfd.readouterr().err == ""
