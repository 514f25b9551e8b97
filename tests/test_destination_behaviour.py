"""Row-contract behaviour seen from Bento's side (the emulator over real HTTP): what is sent, how, and what is not."""

from __future__ import annotations

import json
import math
import os
import uuid
from pathlib import Path
from typing import Any

import dlt
import pandas as pd
import pytest

from bento_api.emulator import BentoEmulator, Fault
from bento_destination import (
    BentoRejectsExceeded,
    bento,
    bento_dir,
    check_run,
    last_report,
    list_rejects,
)
from bento_destination.sync import balanced_file_rows, file_rotation
from pipelines import dataframe_to_bento

from .destination_support import FAST

pytestmark = pytest.mark.usefixtures("destination_env")


def pipeline_for(tmp_path: Path, **kwargs: Any) -> dlt.Pipeline:
    name = f"behaviour_{uuid.uuid4().hex[:8]}"
    return dlt.pipeline(name, pipelines_dir=str(tmp_path), destination=bento(requests_per_minute=FAST, **kwargs))


def test_events_batch_with_failed_rows_is_recorded_and_not_resent(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.add_fault(Fault(kind="refuse_rows", pattern=r"^flaky", path_prefix="/batch/events"))
    rows = [{"email": f"{'flaky' if i % 250 == 0 else 'ok'}{i}@example.com", "type": "$visit"} for i in range(1500)]
    pipeline = pipeline_for(tmp_path, **emu.credentials)
    info = pipeline.run(rows, table_name="events")
    requests = emu.requests(path="/batch/events")
    assert sorted(r.rows for r in requests) == [500, 1000]  # nothing re-sent (the two go side by side)
    assert len(emu.store.events) == 1494
    report = check_run(pipeline, info)[0].tables["events"]  # 6 of 1500 is under the threshold
    assert (report.sent, report.failed_by_bento, report.rejected) == (1494, 6, 6)
    assert report.rows_in_partly_failed_batches == 1500
    rejects = list_rejects(pipeline)
    assert len(rejects) == 1500 and {r["reason"] for r in rejects} == {"bento_failed"}
    by_batch = {r["batch"]: r["detail"] for r in rejects}  # the 1000-row request had 4 failed, the 500-row one 2
    assert len(by_batch) == 2 and sorted("failed=4" in d for d in by_batch.values()) == [False, True]
    assert any("failed=2" in d for d in by_batch.values())


def test_tags_as_comma_string_and_list(emu: BentoEmulator, tmp_path: Path) -> None:
    pipeline = pipeline_for(tmp_path, force=True, **emu.credentials)  # removes tags of 1 of 2 people: past the guard
    pipeline.run([{"email": "a@example.com", "tags": "vip, beta,,vip"},
                  {"email": "b@example.com", "tags": "lead", "remove_tags": "cold"}], table_name="subscribers")
    pipeline.run([{"email": "b@example.com", "tags": ["warm"], "remove_tags": "lead"}], table_name="subscribers")
    store = emu.store
    assert sorted(store.tag_names(store.subscribers["a@example.com"])) == ["beta", "vip"]
    assert sorted(store.tag_names(store.subscribers["b@example.com"])) == ["warm"]
    sent = emu.requests(path="/batch/subscribers")[0].body["subscribers"]
    assert sent[0]["tags"] == "vip,beta"


def test_unsubscribed_becomes_a_command_and_nothing_resubscribes(emu: BentoEmulator, tmp_path: Path) -> None:
    pipeline = pipeline_for(tmp_path, force=True, **emu.credentials)  # unsubscribes 2 of 3: past the guard
    pipeline.run(pd.DataFrame({"email": ["gone@example.com", "stays@example.com", "quiet@example.com"],
                               "plan": ["pro", "free", None],
                               "unsubscribed": [True, False, True]}), table_name="subscribers")
    store = emu.store
    assert store.subscribers["gone@example.com"].unsubscribed_at is not None
    assert store.subscribers["quiet@example.com"].unsubscribed_at is not None
    assert store.subscribers["stays@example.com"].unsubscribed_at is None
    assert store.subscribers["gone@example.com"].fields.get("plan") == "pro"
    commands = [c for r in emu.requests(path="/fetch/commands") for c in r.body["command"]]
    assert sorted(c["email"] for c in commands) == ["gone@example.com", "quiet@example.com"]
    assert {c["command"] for c in commands} == {"unsubscribe"}
    upserts = [s for r in emu.requests(path="/batch/subscribers") for s in r.body["subscribers"]]
    assert all("unsubscribed" not in s for s in upserts)

    # a later row with unsubscribed=False (or missing) does not resubscribe anyone
    pipeline.run([{"email": "gone@example.com", "unsubscribed": False, "plan": "team"}], table_name="subscribers")
    store = emu.store  # again: reading emu.store applies what Bento queued (bento_like mode)
    assert store.subscribers["gone@example.com"].unsubscribed_at is not None
    assert store.subscribers["gone@example.com"].fields.get("plan") == "team"
    report = last_report(pipeline)
    assert report is not None
    assert all(c["command"] != "subscribe" for r in emu.requests(path="/fetch/commands") for c in r.body["command"])


def test_emails_are_refused_without_allow_email_sends(emu: BentoEmulator, tmp_path: Path) -> None:
    emails = [{"to": f"r{i}@example.com", "from": "author@example.com", "subject": "Hi", "html_body": "<p>x</p>"}
              for i in range(5)]
    pipeline = pipeline_for(tmp_path, **emu.credentials)
    info = pipeline.run(emails, table_name="emails")
    assert emu.requests(path="/batch/emails") == [] and emu.store.emails_sent == []
    assert not pipeline.has_pending_data
    with pytest.raises(BentoRejectsExceeded, match="allow_email_sends"):
        check_run(pipeline, info)
    assert {r["reason"] for r in list_rejects(pipeline)} == {"email_sends_not_allowed"}


def test_emails_are_sent_at_most_once_when_an_answer_is_lost(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.add_fault(Fault(kind="drop_after_apply", count=1, path_prefix="/batch/emails"))
    emails = [{"to": f"r{i}@example.com", "from": "author@example.com", "subject": "Hi", "html_body": "<p>x</p>",
               "personalizations": {"n": i}} for i in range(150)]
    pipeline = pipeline_for(tmp_path, allow_email_sends=True, emails_per_minute=FAST, **emu.credentials)
    info = pipeline.run(emails, table_name="emails")  # dlt retries the batch after the lost answer
    requests = emu.requests(path="/batch/emails")
    assert [r.rows for r in requests] == [60, 60, 30]  # the first request (applied, answer lost) was not repeated
    assert len(emu.store.emails_sent) == 150
    assert len({e.to for e in emu.store.emails_sent}) == 150
    rejects = list_rejects(pipeline)
    assert len(rejects) == 60 and {r["reason"] for r in rejects} == {"email_send_uncertain"}
    with pytest.raises(BentoRejectsExceeded):  # 60 of 150 uncertain is past the threshold: a person should look
        check_run(pipeline, info)
    assert not pipeline.has_pending_data


def test_table_operations_map_other_table_names(emu: BentoEmulator, tmp_path: Path) -> None:
    pipeline = pipeline_for(tmp_path, table_operations={"crm_contacts": "subscribers", "clicks": "events",
                                                         "ops": "commands"}, **emu.credentials)
    info = pipeline.run([{"email": "c@example.com", "company": "Acme"}], table_name="crm_contacts")
    info2 = pipeline.run([{"email": "c@example.com", "type": "$click", "details": {"url": "https://x.io"}}],
                         table_name="clicks")
    info3 = pipeline.run([{"command": "add_tag", "email": "c@example.com", "query": "vip"},
                          {"command": "add_field", "email": "c@example.com",
                           "query": {"key": "Tier", "value": "gold"}}], table_name="ops")
    for i in (info, info2, info3):
        check_run(pipeline, i)
    sub = emu.store.subscribers["c@example.com"]
    assert sub.fields["company"] == "Acme" and sub.fields["tier"] == "gold"
    assert emu.store.tag_names(sub) == ["vip"]
    assert [(e.type, without_key(e.details)) for e in emu.store.events] == [("$click", {"url": "https://x.io"})]
    assert last_report(pipeline).tables["ops"].operation == "commands"  # type: ignore[union-attr]


def without_key(details: dict[str, Any] | None) -> dict[str, Any]:
    """An event's details without the unique key the destination derives by default (keys.py)."""
    assert details is not None and "key" in details["unique"]
    return {k: v for k, v in details.items() if k != "unique"}


def test_secret_looking_columns_are_not_sent_and_not_stored(emu: BentoEmulator, tmp_path: Path) -> None:
    pipeline = pipeline_for(tmp_path, **emu.credentials)
    rows = [{"email": "s@example.com", "password": "hunter2", "apiKey": "k-123", "plan": "pro"},
            {"email": "not-valid", "password": "hunter3"}]
    pipeline.run(rows, table_name="subscribers")
    body = json.dumps([r.body for r in emu.request_log])
    assert "hunter2" not in body and "k-123" not in body
    assert emu.store.subscribers["s@example.com"].fields == {"plan": "pro"}
    report = last_report(pipeline)
    assert report is not None and report.tables["subscribers"].dropped_secret_columns == ["apiKey", "password"]
    assert "not sent (look like secrets): apiKey, password" in report.format()
    stored = "".join(p.read_text() for p in bento_dir(pipeline).iterdir())
    assert "hunter3" not in stored and "not-valid" in stored
    assert emu.secret_key not in stored and emu.publishable_key not in stored

    allowed = pipeline_for(tmp_path, allow_secret_columns=True, **emu.credentials)
    allowed.run([{"email": "t@example.com", "api_token": "tok"}], table_name="subscribers")
    assert emu.store.subscribers["t@example.com"].fields == {"api_token": "tok"}


def test_split_details_variant_columns(emu: BentoEmulator, tmp_path: Path) -> None:
    pipeline = pipeline_for(tmp_path, **emu.credentials)
    # dlt splits a json column that also gets plain text into `details` + `details▶v_text`
    info = pipeline.run([{"email": "a@example.com", "type": "t", "details": {"a": 1}},
                         {"email": "b@example.com", "type": "t", "details": "plain text"}], table_name="events")
    columns = pipeline.default_schema.get_table("events")["columns"]
    assert any(c.startswith("details") and c != "details" for c in columns)
    # the snake_case form `details__v_text` holding JSON text is folded back into `details`
    info2 = pipeline.run([{"email": "c@example.com", "type": "t", "details__v_text": '{"c": {"d": 2}}'}],
                         table_name="events")
    assert {e.email: without_key(e.details) for e in emu.store.events} == {"a@example.com": {"a": 1},
                                                              "c@example.com": {"c": {"d": 2}}}
    with pytest.raises(BentoRejectsExceeded, match="invalid_json"):
        check_run(pipeline, info)
    check_run(pipeline, info2)
    assert [r["row"]["email"] for r in list_rejects(pipeline)] == ["b@example.com"]


def test_config_from_destination_env(emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in emu.credentials.items():
        monkeypatch.setenv(f"DESTINATION__BENTO__{key.upper()}", value)
    monkeypatch.setenv("DESTINATION__BENTO__TABLE_OPERATIONS", '{"people": "subscribers"}')
    monkeypatch.setenv("BENTO_REQUESTS_PER_MINUTE", str(FAST))
    pipeline = dlt.pipeline(f"envcfg_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path), destination=bento())
    check_run(pipeline, pipeline.run([{"email": "e@example.com"}], table_name="people"))
    assert "e@example.com" in emu.store.subscribers


def test_parallel_load_files_share_one_budget(emu: BentoEmulator, tmp_path: Path) -> None:
    name = f"parallel_{uuid.uuid4().hex[:8]}"
    frame = pd.DataFrame({"email": [f"par{i}@example.com" for i in range(6000)], "n": range(6000)})
    dataframe_to_bento.run(frame, pipeline_name=name, pipelines_dir=tmp_path, file_max_items=1000,
                           requests_per_minute=FAST, out=lambda _: None, **emu.credentials)
    info = dlt.attach(name, pipelines_dir=str(tmp_path)).last_trace.last_load_info
    assert info is not None
    jobs = [j for p in info.load_packages for j in p.jobs["completed_jobs"]
            if j.job_file_info.table_name == "subscribers"]
    assert len(jobs) == 6  # six load files, loaded by parallel jobs
    assert "DATA_WRITER__FILE_MAX_ITEMS" not in os.environ  # the rotation setting was restored
    assert len(emu.store.subscribers) == 6000
    assert sorted(r.rows for r in emu.requests(path="/batch/subscribers")) == [1000] * 6
    # sync's check proves the keys just before extracting; the load step does not pay a second GET
    assert len(emu.requests(path="/fetch/tags")) == 1


def test_a_frame_of_known_length_is_split_into_whole_waves_of_load_jobs(emu: BentoEmulator, tmp_path: Path) -> None:
    name = f"waves_{uuid.uuid4().hex[:8]}"
    frame = pd.DataFrame({"email": [f"wave{i}@example.com" for i in range(20_000)]})
    dataframe_to_bento.run(frame, pipeline_name=name, pipelines_dir=tmp_path, requests_per_minute=FAST,
                           out=lambda _: None, **emu.credentials)
    info = dlt.attach(name, pipelines_dir=str(tmp_path)).last_trace.last_load_info
    assert info is not None
    jobs = [j for p in info.load_packages for j in p.jobs["completed_jobs"]
            if j.job_file_info.table_name == "subscribers"]
    assert len(jobs) == 7  # 20 batches as 3 + 3 + ... + 2: one wave, no job left loading alone at the end
    assert sorted(r.rows for r in emu.requests(path="/batch/subscribers")) == [1000] * 20  # whole batches only
    assert len(emu.store.subscribers) == 20_000


def test_balanced_file_rows_fills_every_job_with_whole_batches() -> None:
    assert balanced_file_rows(None) == 10_000  # a stream of unknown length
    # (rows in total, rows per file, files): whole batches per file, files in whole waves of 8 jobs
    # above dlt's 5,000-row write buffer, sizes are its multiples (dlt rotates files only there)
    for total, per_file, files in ((1, 1_000, 1), (5_000, 1_000, 5), (20_000, 3_000, 7), (100_000, 15_000, 7),
                                   (250_000, 35_000, 8), (1_000_000, 65_000, 16), (3_333_333, 85_000, 40)):
        assert balanced_file_rows(total) == per_file
        assert math.ceil(total / per_file) == files


def test_a_plain_pipeline_run_checks_credentials_once_per_load(emu: BentoEmulator, tmp_path: Path) -> None:
    pipeline = pipeline_for(tmp_path, **emu.credentials)
    rows = [{"email": f"once{i}@example.com"} for i in range(3000)]
    with file_rotation(1000):  # three load files, three jobs
        check_run(pipeline, pipeline.run(rows, table_name="subscribers"))
    assert len(emu.requests(path="/batch/subscribers")) == 3
    assert len(emu.requests(path="/fetch/tags")) == 1  # one GET for the load, not one per job or batch
