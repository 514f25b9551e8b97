"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NoReturn

import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig
from pipelines.telemetry import TELEMETRY_ENV

from .destination_support import must_isolate
from .postgres_server import PostgresServer, PostgresUnavailable
from .s3_server import S3Server


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


# -- real servers the tests start: Postgres (Debian's package) and an S3 API (moto) ---------------------


def unavailable(reason: str) -> NoReturn:
    """A server a test needs cannot run here: in CI (CI=true) that fails the test, elsewhere it is skipped."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A Postgres cluster on a free port of 127.0.0.1 for the whole session, stopped and deleted after."""
    try:  # the [postgres] extra: dlt's postgres destination uses psycopg2, SQLAlchemy 2.1's postgresql:// psycopg
        import psycopg  # noqa: F401
        import psycopg2  # noqa: F401
    except ImportError as exc:
        unavailable(f"{exc.name} is not installed: pip install -e '.[postgres]'")
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A SQLAlchemy URL (superuser and password) of a new empty database, dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 API on a free port of 127.0.0.1 for the whole session, in its own process."""
    try:  # the [s3] extra (s3fs) and the [s3-test] extra (moto's server)
        import moto.server  # noqa: F401
        import s3fs  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        unavailable(f"{exc.name} is not installed: pip install -e '.[s3,s3-test]'")
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log").start()
    try:
        yield server
    finally:
        server.stop()
