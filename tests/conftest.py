"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig


@pytest.fixture
def emulator() -> Iterator[BentoEmulator]:
    """A started Bento emulator on 127.0.0.1, stopped afterwards.

    Its rate limits are raised far above Bento's real budget (60/min, stats 30/hour) so tests never
    wait on it; tests of pacing configure their own limits with emulator.set_rate_limit().
    """
    cfg = EmulatorConfig(requests_per_minute=1_000_000.0, stats_requests_per_hour=1_000_000_000.0,
                         bucket_capacity=100_000.0)
    with BentoEmulator(cfg) as emu:
        yield emu
