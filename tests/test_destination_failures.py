"""Failure paths of the destination over real HTTP: nothing is left pending for reasons retrying cannot fix,
credentials fail before any row is sent, and 401/403/429/5xx/413 each take their documented path."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import dlt
import pandas as pd
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from bento_api import BentoAuthError
from bento_api.emulator import BentoEmulator, EmulatorConfig, Fault
from bento_destination import (
    BentoRejectsExceeded,
    bento,
    check_credentials,
    check_run,
    last_report,
    list_rejects,
)
from bento_destination.sync import sync
from pipelines import dataframe_to_bento

from .destination_support import FAST

pytestmark = pytest.mark.usefixtures("destination_env")


def people(n: int, start: int = 0, bad_every: int = 0) -> list[dict[str, Any]]:
    return [
        {"email": f"bad{i}" if bad_every and i % bad_every == 0 else f"p{i}@example.com", "plan": "pro"}
        for i in range(start, start + n)
    ]


def pipeline_for(tmp_path: Path, name: str, **kwargs: Any) -> dlt.Pipeline:
    return dlt.pipeline(name, pipelines_dir=str(tmp_path), destination=bento(requests_per_minute=FAST, **kwargs))


def new_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_unknown_table_fails_loudly_and_leaves_nothing_pending(emu: BentoEmulator, tmp_path: Path) -> None:
    name = new_name("unknown")
    pipeline = pipeline_for(tmp_path, name, **emu.credentials)
    info = pipeline.run(people(50), table_name="crm_contacts")  # the load itself finishes
    assert not pipeline.has_pending_data
    with pytest.raises(BentoRejectsExceeded, match=r"crm_contacts.*table_operations"):
        check_run(pipeline, info)
    assert emu.requests(path="/batch/subscribers") == []
    rejects = list_rejects(pipeline)
    assert len(rejects) == 50 and {r["reason"] for r in rejects} == {"unknown_table"}

    info = pipeline.run(people(30), table_name="subscribers")  # the next run loads the new data
    check_run(pipeline, info)
    assert len(emu.store.subscribers) == 30


def test_rejects_past_the_threshold_fail_loudly_and_leave_nothing_pending(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    name = new_name("threshold")
    with pytest.raises(BentoRejectsExceeded, match="25 of 100 rows rejected") as caught:
        dataframe_to_bento.run(people(100, bad_every=4), pipeline_name=name, pipelines_dir=tmp_path,
                               requests_per_minute=FAST, out=lambda _: None, **emu.credentials)
    assert caught.value.reports[0].tables["subscribers"].sent == 75
    assert len(emu.store.subscribers) == 75
    pipeline = dlt.attach(name, pipelines_dir=str(tmp_path))
    assert not pipeline.has_pending_data

    reports = dataframe_to_bento.run(people(40, start=1000), pipeline_name=name, pipelines_dir=tmp_path,
                                     requests_per_minute=FAST, out=lambda _: None, **emu.credentials)
    assert reports[-1].tables["subscribers"].sent == 40
    assert len(emu.store.subscribers) == 115


def test_reject_threshold_is_configurable(emu: BentoEmulator, tmp_path: Path) -> None:
    pipeline = pipeline_for(tmp_path, new_name("lenient"), reject_threshold=0.5, **emu.credentials)
    info = pipeline.run(people(100, bad_every=4), table_name="subscribers")
    assert check_run(pipeline, info)[0].tables["subscribers"].rejected == 25


def test_wrong_credentials_fail_before_any_row_is_sent(emu: BentoEmulator, tmp_path: Path) -> None:
    wrong = {**emu.credentials, "secret_key": "sk_wrong_0000000000000000000000"}
    with pytest.raises(BentoAuthError, match=r"401.*publishable_key, secret_key and site_uuid") as caught:
        sync(people(10), table_name="subscribers", pipeline_name=new_name("creds"), pipelines_dir=tmp_path,
             out=lambda _: None, requests_per_minute=FAST, **wrong)
    assert "sk_wrong" not in str(caught.value)
    assert [r.path for r in emu.request_log] == ["/fetch/tags"]
    assert check_credentials(**emu.credentials).site_uuid == emu.site_uuid


def test_wrong_credentials_inside_the_sink_stop_the_load_before_any_batch(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    name = new_name("sinkcreds")
    wrong = {**emu.credentials, "site_uuid": "site-that-does-not-exist"}
    pipeline = pipeline_for(tmp_path, name, **wrong)
    with pytest.raises(PipelineStepFailed, match="401"):
        pipeline.run(people(2500), table_name="subscribers")
    assert emu.requests(path="/batch/subscribers") == []
    assert len(emu.requests(path="/fetch/tags")) == 1  # terminal: one clear error, not five retries
    # credentials can be fixed, so this package stays pending and loads once they are
    assert pipeline.has_pending_data
    fixed = pipeline_for(tmp_path, name, **emu.credentials)
    fixed.load()
    assert len(emu.store.subscribers) == 2500


def test_forbidden_user_agent_is_a_terminal_error_with_a_clear_message(tmp_path: Path) -> None:
    config = EmulatorConfig(requests_per_minute=1e7, bucket_capacity=1e6, subscribers=0,
                            blocked_user_agents=("blocked-app/",))
    with BentoEmulator(config) as emu:
        pipeline = pipeline_for(tmp_path, new_name("forbidden"), user_agent="blocked-app/1.0", **emu.credentials)
        with pytest.raises(PipelineStepFailed, match=r"403.*User-Agent"):
            pipeline.run(people(5), table_name="subscribers")
        assert len(emu.request_log) == 1


def test_429s_are_waited_out_and_counted(emu: BentoEmulator, tmp_path: Path) -> None:
    # one request a second: the client, at its raised budget, sends the next batch sooner even on a busy machine
    emu.set_rate_limit("batch", per_minute=60, capacity=1)
    pipeline = pipeline_for(tmp_path, new_name("ratelimited"), **emu.credentials)
    info = pipeline.run(people(3000), table_name="subscribers")
    report = check_run(pipeline, info)[0].tables["subscribers"]
    assert len(emu.store.subscribers) == 3000
    assert report.rate_limited >= 1 and report.retries >= report.rate_limited
    accepted = [r for r in emu.requests(path="/batch/subscribers") if r.status == 200]
    assert sum(r.rows for r in accepted) == 3000


def test_server_errors_are_retried_without_resending_acknowledged_batches(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    emu.add_fault(Fault(kind="server_error", status=503, count=1, path_prefix="/batch/subscribers"))
    pipeline = pipeline_for(tmp_path, new_name("fivexx"), **emu.credentials)
    info = pipeline.run(people(2000), table_name="subscribers")
    report = check_run(pipeline, info)[0].tables["subscribers"]
    assert (report.server_errors, report.retries, report.sent) == (1, 1, 2000)
    statuses = [r.status for r in emu.requests(path="/batch/subscribers")]
    assert sorted(statuses) == [200, 200, 503]


@pytest.mark.parametrize("as_frame", [False, True], ids=["jsonl", "parquet"])
def test_transient_failure_after_retries_resumes_at_the_failed_batch(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_frame: bool
) -> None:
    monkeypatch.setenv("LOAD__RAISE_ON_MAX_RETRIES", "1")
    # one token, refilled after 10 minutes: the 2nd batch gets a 429 with Retry-After past what the client waits
    emu.set_rate_limit("batch", per_minute=0.1, capacity=1)
    name = new_name("resume")
    pipeline = pipeline_for(tmp_path, name, **emu.credentials)
    rows: Any = pd.DataFrame(people(2500)) if as_frame else people(2500)
    with pytest.raises(PipelineStepFailed, match="429"):
        pipeline.run(rows, table_name="subscribers")
    assert pipeline.has_pending_data
    assert [r.rows for r in emu.requests(path="/batch/subscribers") if r.status == 200] == [1000]

    emu.set_rate_limit("batch", per_minute=1e7, capacity=1e6)
    info = pipeline.load()
    check_run(pipeline, info)
    applied = [r for r in emu.requests(path="/batch/subscribers") if r.status == 200]
    assert sorted(r.rows for r in applied) == [500, 1000, 1000]  # the acknowledged first one was not sent again
    assert len({email for r in applied for email in r.emails}) == 2500
    assert len(emu.store.subscribers) == 2500
    report = last_report(pipeline)
    assert report is not None and report.tables["subscribers"].sent == 2500
    assert any("429" in e for e in report.errors)


def test_413_on_a_large_batch_halves_it(tmp_path: Path) -> None:
    config = EmulatorConfig(requests_per_minute=1e7, bucket_capacity=1e6, subscribers=0, max_body_bytes=40_000)
    with BentoEmulator(config) as emu:
        pipeline = pipeline_for(tmp_path, new_name("halve"), **emu.credentials)
        info = pipeline.run(people(1000), table_name="subscribers")
        report = check_run(pipeline, info)[0].tables["subscribers"]
        assert len(emu.store.subscribers) == 1000
        records = emu.requests(path="/batch/subscribers")
        accepted = [r for r in records if r.status == 200]
        assert sum(r.rows for r in accepted) == 1000 and max(r.rows for r in accepted) <= 500
        assert [r.status for r in records if r.status != 200] == [413]  # the emulator logs the 413 too
        assert report.requests == len(records) and report.rejected == 0  # the refused attempt was counted


def test_invalid_request_on_a_small_batch_is_rejected_not_retried(emu: BentoEmulator, tmp_path: Path) -> None:
    emails = [{"to": f"r{i}@example.com", "from": "stranger@example.com", "subject": "Hi", "html_body": "<p>hi</p>"}
              for i in range(10)]
    pipeline = pipeline_for(tmp_path, new_name("refused"), allow_email_sends=True, **emu.credentials)
    info = pipeline.run(emails, table_name="emails")
    assert not pipeline.has_pending_data
    assert len(emu.requests(path="/batch/emails")) == 1
    with pytest.raises(BentoRejectsExceeded, match="refused_by_bento"):
        check_run(pipeline, info)
    rejects = list_rejects(pipeline)
    assert len(rejects) == 10 and "Author" in rejects[0]["detail"]


def test_a_bug_is_a_terminal_error_not_five_silent_retries(emu: BentoEmulator, tmp_path: Path) -> None:
    # batch_size=10 makes dlt hand the sink rows instead of the load file it reads itself: it cannot work
    pipeline = pipeline_for(tmp_path, new_name("bug"), batch_size=10, **emu.credentials)
    with pytest.raises(PipelineStepFailed, match=r"failed unexpectedly.*TypeError.*batch_size"):
        pipeline.run(people(5), table_name="subscribers")
    report = last_report(pipeline)
    assert report is not None and len(report.errors) == 1  # one attempt, then a person must look
    assert emu.requests(path="/batch/subscribers") == []
