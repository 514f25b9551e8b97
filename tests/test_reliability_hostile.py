"""Hostile responses (issue 9): an HTML error page, truncated JSON, a 200 whose body is an error, a huge body and a
server that trickles bytes. Each must give a clear, typed error (or be ridden through by a retry) and never hang:
through the client directly, through a source run (Bento -> DuckDB) and through a destination run (rows -> Bento).

Every test runs with sentinel credentials and checks that they appear in no log, output, error or file. pytest's
timeout is the hang guard; durations are only checked as lower bounds (a trickle really was slow).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import duckdb
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from bento_api import (
    BentoClient,
    BentoDeadlineError,
    BentoError,
    BentoResponseError,
    BentoServerError,
    RetryPolicy,
    resolve_budgets,
    resolve_settings,
)
from bento_api.emulator import BentoEmulator, Fault
from bento_api.pacing import PacerRegistry
from bento_destination import bento, list_rejects
from bento_source import bento_source

from .reliability_helpers import (
    CLIENT_RPM,
    assert_no_secrets,
    log_problems,
    secrets_in,
    sentinel_config,
)

ONE_TRY = RetryPolicy(max_attempts=1)
TWO_TRIES = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_cap=0.02)
#: larger than the client's 32 MiB cap on a response
HUGE_MB = 40.0

#: kind -> (fault options, error type, words the message must hold)
HOSTILE: dict[str, tuple[dict[str, Any], type[BentoError], str]] = {
    "html_error": ({}, BentoServerError, "502"),  # a gateway's HTML page is a 5xx: shown, cut short
    "truncated_json": ({}, BentoResponseError, "invalid JSON"),
    "error_200": ({"message": "Something broke on our side"}, BentoResponseError, "success status carrying an error"),
    "huge_body": ({"megabytes": HUGE_MB}, BentoResponseError, "larger than 32 MiB"),
    "trickle": ({"seconds": 30.0, "chunk": 1, "interval": 0.2}, BentoDeadlineError, "deadline"),
}


@pytest.fixture(autouse=True)
def _guard(
    destination_env: None, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str], tmp_path: Path,
) -> Iterator[None]:
    """Clean environment in; after the test, no sentinel secret in any log, output or file under tmp_path."""
    caplog.set_level(logging.DEBUG)
    yield
    captured = capfd.readouterr()
    assert_no_secrets(caplog.text, captured.out, captured.err, root=tmp_path)


@pytest.fixture
def emu() -> Iterator[BentoEmulator]:
    with BentoEmulator(sentinel_config()) as emulator:
        yield emulator


def client_for(emu: BentoEmulator, *, retry: RetryPolicy = ONE_TRY, deadline: float = 2.0) -> BentoClient:
    settings = resolve_settings(**emu.credentials, env={})
    return BentoClient(settings, resolve_budgets(requests_per_minute=CLIENT_RPM), retry=retry, deadline=deadline,
                       pacers=PacerRegistry())


def assert_clean_error(error: BaseException) -> None:
    """The whole chain of an error holds no secret."""
    seen: BaseException | None = error
    while seen is not None:
        assert secrets_in(str(seen)) == [] and secrets_in(repr(seen)) == []
        seen = seen.__cause__ or seen.__context__


# -- through the client ------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(HOSTILE))
def test_client_gives_a_clear_typed_error_and_does_not_hang(kind: str, emu: BentoEmulator) -> None:
    options, error_type, words = HOSTILE[kind]
    emu.add_fault(Fault(kind, path_prefix="/fetch/tags", **options))
    started = time.monotonic()
    with client_for(emu, retry=TWO_TRIES) as client, pytest.raises(error_type) as caught:
        client.get("/fetch/tags")
    assert words in caught.value.message and "/fetch/tags" in caught.value.message
    assert_clean_error(caught.value)
    if kind == "trickle":
        assert time.monotonic() - started >= 2.0  # it waited for the deadline (lower bound only)
    if kind == "error_200":
        assert len(emu.requests("/fetch/tags")) == 1  # an error inside a 200 is not retried blindly
    else:
        assert len(emu.requests("/fetch/tags")) == 2  # transient: retried once, then a clear error


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [k for k in HOSTILE if k != "error_200"])
def test_client_rides_through_one_hostile_answer(kind: str, emu: BentoEmulator) -> None:
    options, _, _ = HOSTILE[kind]
    emu.add_fault(Fault(kind, path_prefix="/fetch/tags", count=1, **options))
    with client_for(emu, retry=TWO_TRIES) as client:
        tags = client.get("/fetch/tags")
    assert len(tags["data"]) == len(emu.store.tags)


def test_an_html_page_on_a_write_says_what_it_is(emu: BentoEmulator) -> None:
    emu.add_fault(Fault("html_error", path_prefix="/batch"))
    with client_for(emu) as client, pytest.raises(BentoServerError) as caught:
        client.post("/batch/subscribers", {"subscribers": [{"email": "a@example.com"}]})
    assert "502" in caught.value.message and "Bad gateway" in caught.value.message
    assert emu.store.subscribers == {}


# -- through a source run (Bento -> DuckDB) ------------------------------------------------------------------

def source_pipeline(tmp_path: Path) -> tuple[Any, Path]:
    name = f"hostile_src_{uuid.uuid4().hex[:8]}"
    database = tmp_path / f"{name}.duckdb"
    pipeline = dlt.pipeline(name, pipelines_dir=str(tmp_path / "pipelines"),
                            destination=dlt.destinations.duckdb(str(database)), dataset_name="bento")
    return pipeline, database


def tag_rows(database: Path) -> int:
    with duckdb.connect(str(database), read_only=True) as con:
        row = con.execute("SELECT count(*) FROM bento.tags").fetchone()
    return int(row[0]) if row else 0


SLOW_KINDS = [pytest.param(k, marks=pytest.mark.slow) for k in HOSTILE if k != "error_200"]
#: in a combined run each hostile kind hits a different request once (a finite trickle: waited for, not abandoned)
FINITE_TRICKLE = {"seconds": 2.0, "chunk": 64, "interval": 0.05}


def once_each(path_prefix: str) -> list[Fault]:
    """Every transient hostile kind, once each, on successive requests under `path_prefix`."""
    faults = []
    for kind in ("html_error", "truncated_json", "huge_body", "trickle"):
        options = FINITE_TRICKLE if kind == "trickle" else HOSTILE[kind][0]
        faults.append(Fault(kind, path_prefix=path_prefix, count=1, **options))
    return faults


@pytest.mark.timeout(120)
def test_source_run_rides_through_every_hostile_answer(emu: BentoEmulator, tmp_path: Path) -> None:
    tags, fields, segments = once_each("/fetch/tags"), once_each("/fetch/fields"), once_each("/fetch/segments")
    for fault in (tags[0], tags[3], fields[1], segments[2]):  # tags: an HTML page, then a trickle
        emu.add_fault(fault)
    pipeline, database = source_pipeline(tmp_path)
    started = time.monotonic()
    credentials: dict[str, Any] = emu.credentials
    pipeline.run(bento_source(**credentials, requests_per_minute=CLIENT_RPM).with_resources("tags", "fields",
                                                                                             "segments"))
    assert tag_rows(database) == len(emu.store.tags)
    hit = {r.fault for r in emu.request_log if r.fault}
    assert hit == {"html_error", "truncated_json", "huge_body", "trickle"}
    assert time.monotonic() - started >= 2.0  # the trickle was waited for (lower bound only)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", SLOW_KINDS)
def test_source_run_rides_through_each_hostile_answer(kind: str, emu: BentoEmulator, tmp_path: Path) -> None:
    options = FINITE_TRICKLE if kind == "trickle" else HOSTILE[kind][0]
    emu.add_fault(Fault(kind, path_prefix="/fetch/tags", count=1, **options))
    pipeline, database = source_pipeline(tmp_path)
    credentials: dict[str, Any] = emu.credentials
    pipeline.run(bento_source(**credentials, requests_per_minute=CLIENT_RPM).with_resources("tags"))
    assert tag_rows(database) == len(emu.store.tags)
    # a finite trickle is slow but whole: waited for, not retried; the others are retried once
    assert [r.fault for r in emu.requests("/fetch/tags")] == ([kind] if kind == "trickle" else [kind, None])


@pytest.mark.timeout(60)
def test_source_run_fails_clearly_on_an_error_inside_a_200(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.add_fault(Fault("error_200", path_prefix="/fetch/tags", message="Something broke on our side"))
    pipeline, _ = source_pipeline(tmp_path)
    credentials: dict[str, Any] = emu.credentials
    with pytest.raises(PipelineStepFailed) as caught:
        pipeline.run(bento_source(**credentials, requests_per_minute=CLIENT_RPM).with_resources("tags"))
    assert "success status carrying an error" in str(caught.value)
    assert "Something broke on our side" in str(caught.value)
    assert_clean_error(caught.value)


# -- through a destination run (rows -> Bento) ---------------------------------------------------------------

def people(n: int) -> list[dict[str, Any]]:
    return [{"email": f"h{i}@example.com", "plan": "pro", "tags": ["hostile"]} for i in range(n)]


def destination_pipeline(tmp_path: Path, emu: BentoEmulator) -> Any:
    credentials: dict[str, Any] = emu.credentials
    return dlt.pipeline(f"hostile_dst_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path),
                        destination=bento(requests_per_minute=CLIENT_RPM, **credentials))


def assert_delivered(pipeline: Any, emu: BentoEmulator, n: int) -> None:
    assert not pipeline.has_pending_data
    assert len(emu.store.subscribers) == n
    assert all(emu.store.tag_names(s) == ["hostile"] and s.fields["plan"] == "pro"
               for s in emu.store.subscribers.values())
    assert list_rejects(pipeline) == []
    assert log_problems(emu.request_log) == []


@pytest.mark.timeout(120)
def test_destination_run_rides_through_every_hostile_answer(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for fault in once_each("/batch"):
        emu.add_fault(fault)
    monkeypatch.setenv("DATA_WRITER__FILE_MAX_ITEMS", "100")  # four load files: four batch requests at once
    pipeline = destination_pipeline(tmp_path, emu)
    started = time.monotonic()
    pipeline.run(people(400), table_name="subscribers")
    assert_delivered(pipeline, emu, 400)
    assert {r.fault for r in emu.request_log if r.fault} == {"html_error", "truncated_json", "huge_body", "trickle"}
    assert time.monotonic() - started >= 2.0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", SLOW_KINDS)
def test_destination_run_rides_through_each_hostile_answer(kind: str, emu: BentoEmulator, tmp_path: Path) -> None:
    options = FINITE_TRICKLE if kind == "trickle" else HOSTILE[kind][0]
    emu.add_fault(Fault(kind, path_prefix="/batch", count=1, **options))
    pipeline = destination_pipeline(tmp_path, emu)
    pipeline.run(people(300), table_name="subscribers")
    assert_delivered(pipeline, emu, 300)


@pytest.mark.timeout(60)
def test_destination_lists_rows_refused_by_an_error_inside_a_200(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.add_fault(Fault("error_200", path_prefix="/batch", count=1, message="Something broke on our side"))
    pipeline = destination_pipeline(tmp_path, emu)
    pipeline.run(people(50), table_name="subscribers")  # finishes: the rows are kept as rejected, not lost
    assert not pipeline.has_pending_data
    rejects = list_rejects(pipeline)
    assert len(rejects) == 50 and {r["reason"] for r in rejects} == {"refused_by_bento"}
    assert all("Something broke on our side" in r["detail"] for r in rejects)
    assert emu.store.subscribers == {}
