"""The command line: `python -m bento_api.emulator` in a subprocess, and option parsing in-process."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bento_api.emulator import Fault
from bento_api.emulator.cli import add_arguments, config_from_args, run
from bento_api.emulator.config import MODE_ENV

ROOT = Path(__file__).resolve().parents[1]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_module_prints_url_and_credentials_and_serves() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bento_api.emulator", "--port", "0", "--seed", "3", "--broadcasts", "10",
         "--no-rate-limit", "--fault", "server_error:path_prefix=/stats,status=502"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("Press Ctrl-C"):
                break
        exports = dict(x.removeprefix("export ").split("=", 1) for x in lines if x.startswith("export "))
        assert set(exports) == {"BENTO_BASE_URL", "BENTO_SITE_UUID", "BENTO_PUBLISHABLE_KEY", "BENTO_SECRET_KEY"}
        base = exports["BENTO_BASE_URL"]
        assert base.startswith("http://127.0.0.1:") and base.endswith("/api/v1")
        assert any(base in x for x in lines if x.startswith("Bento emulator listening on"))
        with httpx.Client(base_url=base, auth=(exports["BENTO_PUBLISHABLE_KEY"], exports["BENTO_SECRET_KEY"]),
                          params={"site_uuid": exports["BENTO_SITE_UUID"]},
                          headers={"User-Agent": "bento-dlt-tests/1.0"}, timeout=10) as c:
            sent = [b for s in ("sent",) for b in c.get("/fetch/broadcasts", params={"status": s}).json()["data"]]
            assert len(sent) == 5
            assert c.get("/stats/site").status_code == 502
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert "stopped after 2 API requests" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_options_map_to_config() -> None:
    cfg = config_from_args(parse(
        "--port", "0", "--seed", "9", "--page-size", "10", "--search-page-size", "50", "--subscribers", "5",
        "--requests-per-minute", "600", "--stats-per-hour", "120", "--capacity", "1", "--retry-after", "none",
        "--non-enterprise", "--no-log-bodies", "--author", "me@example.com", "--fault", "latency:seconds=0.3",
        "--fault", "server_error:probability=0.2"))
    assert (cfg.seed, cfg.page_size, cfg.search_page_size, cfg.subscribers) == (9, 10, 50, 5)
    assert (cfg.requests_per_minute, cfg.stats_requests_per_hour, cfg.bucket_capacity) == (600, 120, 1)
    assert cfg.retry_after is None and not cfg.enterprise and not cfg.log_bodies
    assert cfg.authors == ("me@example.com",)
    assert cfg.faults == (Fault("latency", seconds=0.3), Fault("server_error", probability=0.2))
    defaults = config_from_args(parse())
    assert defaults.rate_limits_enabled and defaults.page_size == 25 and defaults.requests_per_minute == 60
    assert not config_from_args(parse("--no-rate-limit")).rate_limits_enabled


@pytest.mark.parametrize("spelling", ["bento-like", "bento_like"])
def test_mode_and_write_delay_options(spelling: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_from_args(parse("--mode", spelling, "--write-delay", "2.5"))
    assert cfg.mode == "bento_like" and cfg.write_delay_seconds == 2.5
    assert cfg.effective_retry_after is None and "curl/" in cfg.user_agent_blocklist
    monkeypatch.setenv(MODE_ENV, "bento_like")
    assert config_from_args(parse()).mode == "bento_like"  # without --mode, the environment decides
    default = config_from_args(parse("--mode", "default"))
    assert default.mode == "default" and default.effective_retry_after == "seconds"
    assert default.user_agent_blocklist == ()
    with pytest.raises(SystemExit):
        parse("--mode", "strict")


@pytest.mark.parametrize("argv", [("--host", "0.0.0.0"), ("--fault", "meteor:x=1"), ("--page-size", "0"),
                                  ("--write-delay", "-1")])
def test_bad_options_exit_2(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse(*argv)) == 2
    assert "bento emulator:" in capsys.readouterr().err


def test_a_bad_mode_in_the_environment_exits_2(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(MODE_ENV, "strict")
    assert run(parse()) == 2
    assert "BENTO_EMULATOR_MODE='strict'" in capsys.readouterr().err
