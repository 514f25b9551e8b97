"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig
from pipelines.telemetry import TELEMETRY_ENV

from .destination_support import must_isolate


def pinned_mode(request: pytest.FixtureRequest) -> dict[str, str]:
    """{"mode": ...} from an `emulator_mode` marker, else {} (the mode of BENTO_EMULATOR_MODE)."""
    marker = request.node.get_closest_marker("emulator_mode")
    return {"mode": str(marker.args[0])} if marker is not None else {}


@pytest.fixture(scope="session", autouse=True)
def no_dlt_telemetry() -> Iterator[None]:
    """No network but loopback: dlt's telemetry stays off in every test and in the CLI subprocesses they start.

    dlt starts telemetry once per process, at the first pipeline, so this is set before any test runs.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(TELEMETRY_ENV, "false")
        yield


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[BentoEmulator]:
    """A started Bento emulator on 127.0.0.1, stopped afterwards.

    Its rate limits are raised far above Bento's real budget (60/min, stats 30/hour) so tests never
    wait on it; tests of pacing configure their own limits with emulator.set_rate_limit(). Its mode is
    BENTO_EMULATOR_MODE's unless the test is marked `@pytest.mark.emulator_mode("default" | "bento_like")`.
    """
    cfg = EmulatorConfig(requests_per_minute=1_000_000.0, stats_requests_per_hour=1_000_000_000.0,
                         bucket_capacity=100_000.0, **pinned_mode(request))
    with BentoEmulator(cfg) as emu:
        yield emu


@pytest.fixture
def destination_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No BENTO_/dlt settings from the environment; shared clients, ledgers and plain runs' locks closed afterwards."""
    from bento_destination import close_clients
    from bento_destination.changes import close_ledgers
    from bento_destination.runcontext import end_plain_runs

    for key in list(os.environ):
        if must_isolate(key):
            monkeypatch.delenv(key)
    yield
    close_ledgers()
    end_plain_runs()
    close_clients()


@pytest.fixture
def emu(request: pytest.FixtureRequest) -> Iterator[BentoEmulator]:
    """An emulator with no seeded subscribers (so counts are exactly what a test sent) and raised limits."""
    config = EmulatorConfig(requests_per_minute=1e7, stats_requests_per_hour=1e9, bucket_capacity=1e6, subscribers=0,
                            **pinned_mode(request))
    with BentoEmulator(config) as emulator:
        yield emulator
