"""Long waits for a budget are announced before they start: by the client (logger `bento_api.pacing`), and
by `bento-dlt extract` on stderr unless `--quiet`.

The client tests run over real HTTP against the emulator with an injected clock, so a two-minute wait for
Bento's 30 stats requests an hour costs no real time; the command-line test waits for real (a stats budget
of 500 an hour spaces requests 7.3 s apart, just past the announcement threshold).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bento_api import BentoClient, Budgets, resolve_settings
from bento_api.emulator import BentoEmulator, EmulatorConfig
from bento_api.facts import SEGMENT_STATS_PATH, SITE_STATS_PATH, TAGS_PATH
from bento_api.pacing import LONG_WAIT_SECONDS, SAFETY_MARGIN, Pacer, PacerRegistry, format_wait

from .test_cli import base_env
from .test_pacing import FakeClock

REPO = Path(__file__).resolve().parents[1]
PACING_LOGGER = "bento_api.pacing"


def announcements(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == PACING_LOGGER]


def test_format_wait_reads_like_a_person_would_say_it() -> None:
    assert [format_wait(s) for s in (0, 0.2, 5.0, 59.5, 60, 112, 122.4, 3599.2, 3725, 7200)] == [
        "0s", "1s", "5s", "1m00s", "1m00s", "1m52s", "2m03s", "1h00m", "1h02m", "2h00m",
    ]


def test_pacer_announces_only_a_long_wait_of_the_request_first_in_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=PACING_LOGGER)
    clock = FakeClock()
    # eight requests queued one second apart: the last waits 7 s, yet one goes out every second
    fetch = Pacer(1.0 / SAFETY_MARGIN, clock=clock, sleep=lambda s: None, family="fetch")
    assert max(fetch.reserve() for _ in range(8)) > LONG_WAIT_SECONDS
    assert announcements(caplog) == []
    # a request that is next in line and waits longer than the threshold says so, once
    stats = Pacer(LONG_WAIT_SECONDS + 1, clock=clock, sleep=clock.sleep, family="stats")
    stats.acquire()
    assert announcements(caplog) == []
    waited = stats.acquire()
    assert waited >= LONG_WAIT_SECONDS
    assert announcements(caplog) == [f"waiting for the stats budget: next request in {format_wait(waited)}"]
    # a wait at the threshold is not announced
    caplog.clear()
    short = Pacer(LONG_WAIT_SECONDS / SAFETY_MARGIN, clock=clock, sleep=clock.sleep, family="stats")
    short.acquire()
    short.acquire()
    assert announcements(caplog) == []


def test_pacer_announces_a_retry_after_hold(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=PACING_LOGGER)
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock, sleep=clock.sleep, family="batch")
    pacer.acquire()
    pacer.hold_until(clock.now + 90)
    assert pacer.acquire() >= 89
    assert announcements(caplog) == ["waiting for the batch budget: next request in 1m30s"]


@pytest.fixture
def clocked_client(emulator: BentoEmulator) -> Iterator[tuple[BentoClient, FakeClock]]:
    """A client at Bento's default budgets whose waits move a fake clock instead of the wall clock."""
    clock = FakeClock()
    settings = resolve_settings(**emulator.credentials, env={})
    with BentoClient(settings, Budgets(), clock=clock, sleep=clock.sleep, pacers=PacerRegistry()) as client:
        yield client, clock


def test_client_logs_the_wait_for_the_stats_budget(
    clocked_client: tuple[BentoClient, FakeClock], emulator: BentoEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=PACING_LOGGER)
    client, clock = clocked_client
    segment = str(next(iter(emulator.store.segments)))
    started = clock.now
    client.get(SITE_STATS_PATH)
    assert announcements(caplog) == []  # the first stats request goes at once
    client.get(SEGMENT_STATS_PATH, {"segment_id": segment})
    client.get(SEGMENT_STATS_PATH, {"segment_id": segment})
    # 30 an hour: two minutes apart, plus the pacer's safety margin
    spacing = 3600 / 30 * SAFETY_MARGIN
    assert announcements(caplog) == [f"waiting for the stats budget: next request in {format_wait(spacing)}"] * 2
    assert format_wait(spacing) == "2m03s"
    assert clock.now - started >= 2 * 120
    records = [r for r in caplog.records if r.name == PACING_LOGGER]
    assert {r.levelno for r in records} == {logging.WARNING}  # shown even where logging is not configured
    assert [r.path for r in emulator.request_log] == [SITE_STATS_PATH, SEGMENT_STATS_PATH, SEGMENT_STATS_PATH]


def test_client_stays_quiet_at_the_fetch_budget(
    clocked_client: tuple[BentoClient, FakeClock], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=PACING_LOGGER)
    client, clock = clocked_client
    started = clock.now
    for _ in range(10):
        client.get(TAGS_PATH)
    assert clock.now - started >= 9  # 60 a minute: about a second apart, each below the threshold
    assert announcements(caplog) == []


# -- the command line --------------------------------------------------------------------------------

#: spaces stats requests 7.3 s apart: past the threshold, yet short enough for a test
CLI_STATS_PER_HOUR = 500.0


def test_extract_shows_each_stats_wait_on_stderr_and_quiet_silences_it(tmp_path: Path) -> None:
    assert 3600 / CLI_STATS_PER_HOUR * SAFETY_MARGIN > LONG_WAIT_SECONDS
    config = EmulatorConfig(segments=1, requests_per_minute=1e6, stats_requests_per_hour=1e9, bucket_capacity=1e5)
    with BentoEmulator(config) as emu:
        env = base_env(**{f"BENTO_{k.upper()}": v for k, v in emu.credentials.items()},
                       BENTO_REQUESTS_PER_MINUTE="60000")
        runs = {}
        started = time.monotonic()
        for mode in ("shown", "quiet"):
            folder = tmp_path / mode
            folder.mkdir()
            extra = ["--quiet"] if mode == "quiet" else []
            runs[mode] = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "extract", "--resources", "site_stats", "segment_stats",
                 "--stats-requests-per-hour", f"{CLI_STATS_PER_HOUR:g}", "--pipelines-dir", "p", *extra],
                env=env, cwd=folder, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
        outputs = {mode: process.communicate(timeout=120) for mode, process in runs.items()}
        elapsed = time.monotonic() - started
        stats_requests = len(emu.requests(SITE_STATS_PATH)) + len(emu.requests(SEGMENT_STATS_PATH))
    assert {mode: process.returncode for mode, process in runs.items()} == {"shown": 0, "quiet": 0}
    assert stats_requests == 4  # site_stats and one segment, twice
    assert elapsed >= 3600 / CLI_STATS_PER_HOUR
    stderr = outputs["shown"][1]
    spacing = format_wait(3600 / CLI_STATS_PER_HOUR * SAFETY_MARGIN)
    assert f"waiting for the stats budget: next request in {spacing}" in stderr.splitlines()
    assert f"each one after the first waits {spacing}" in stderr  # said before the run starts
    # and the source says what segment_stats will cost once it knows the segments
    assert f"segment_stats: 1 segment(s), one stats request each at {CLI_STATS_PER_HOUR:g} stats requests" in stderr
    assert "site_stats" in outputs["shown"][0] and "segment_stats" in outputs["shown"][0]
    assert outputs["quiet"] == ("", "")
