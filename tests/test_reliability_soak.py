"""Fault soak (issue 9): many rows through the real destination path (`sync`) while the emulator injects 429s
with and without Retry-After, 5xx (some after the write was applied), latency and dropped connections.

Counts delivered, rejected, lost and duplicated rows from the emulator's store and request log, not from our
own report (the report is checked against them). Default run: 5,000 rows; `-m slow`: 100,000 rows.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from bento_api.emulator import BentoEmulator, Fault, RequestRecord
from bento_destination import list_rejects, list_reports
from bento_destination.sync import sync

from .reliability_helpers import (
    CLIENT_RPM,
    assert_no_secrets,
    chunks,
    event_row,
    expected_subscriber,
    log_problems,
    sentinel_config,
    subscriber_row,
)

SUB_BAD_EVERY = 500  # every 500th subscriber has an invalid email
EVENT_BAD_EVERY = 400  # every 400th event has a blank type
UNKEYED_EVERY = 10  # every 10th event has no unique_key column: it gets a derived key (keys.py)
APPLIED_502 = 502  # the status of the server_error fault that applies the write before failing


def soak_faults() -> list[Fault]:
    """Each kind fires once up front (so even the short run meets all of them), then at random (seeded)."""
    batch = "/batch"
    once = [
        Fault("server_error", count=1, path_prefix="/fetch"),  # the credentials check rides through a 503
        Fault("rate_limit", count=1, seconds=1, path_prefix=batch),
        Fault("rate_limit", count=1, retry_after=None, path_prefix=batch),
        Fault("server_error", count=1, status=503, path_prefix=batch),
        Fault("server_error", count=1, status=APPLIED_502, apply=True, path_prefix=batch),
        Fault("drop_before_apply", count=1, path_prefix=batch),
        Fault("drop_after_apply", count=1, path_prefix=batch),
    ]
    random = [
        Fault("latency", probability=0.25, seconds=0.05, path_prefix=batch),
        Fault("rate_limit", probability=0.04, seconds=1, path_prefix=batch),
        Fault("rate_limit", probability=0.04, retry_after=None, path_prefix=batch),
        Fault("server_error", probability=0.04, status=503, path_prefix=batch),
        Fault("server_error", probability=0.03, status=500, path_prefix=batch),
        Fault("server_error", probability=0.03, status=APPLIED_502, apply=True, path_prefix=batch),
        Fault("drop_before_apply", probability=0.03, path_prefix=batch),
        Fault("drop_after_apply", probability=0.03, path_prefix=batch),
    ]
    return once + random


@pytest.fixture(autouse=True)
def _isolated(destination_env: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # logs at INFO are searched for secrets afterwards


def applied(record: RequestRecord) -> bool:
    """Whether the emulator applied this write (its answer may still have been lost)."""
    return record.status == 200 or record.fault == "drop_after_apply" or (
        record.fault == "server_error" and record.status == APPLIED_502
    )


def run_with_resume(data: list[Any], name: str, pipelines_dir: Path, file_max_items: int,
                    credentials: dict[str, str], out: list[str]) -> int:
    """sync(), and if a load outlived every retry, resume the pending package the documented way; returns resumes."""
    try:
        sync(data, pipeline_name=name, pipelines_dir=pipelines_dir, file_max_items=file_max_items,
             requests_per_minute=CLIENT_RPM, out=out.append, **credentials)
        return 0
    except PipelineStepFailed as error:
        out.append(str(error))
    pipeline = dlt.attach(name, pipelines_dir=str(pipelines_dir))
    resumes = 0
    while pipeline.has_pending_data and resumes < 5:
        resumes += 1
        try:
            pipeline.load()
        except PipelineStepFailed as error:
            out.append(str(error))
    assert not pipeline.has_pending_data
    return resumes


@pytest.mark.parametrize(
    ("rows", "file_max_items"),
    [pytest.param(5_000, 250, id="5k"), pytest.param(100_000, 1000, id="100k", marks=pytest.mark.slow)],
)
def test_fault_soak_delivers_every_valid_row_once(
    rows: int, file_max_items: int, tmp_path: Path, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    n_subs = rows * 3 // 5
    n_events = rows - n_subs

    @dlt.resource(name="subscribers")
    def subscribers() -> Iterator[list[dict[str, Any]]]:
        yield from chunks(subscriber_row, n_subs, bad_every=SUB_BAD_EVERY)

    @dlt.resource(name="events")
    def events() -> Iterator[list[dict[str, Any]]]:
        yield from chunks(event_row, n_events, bad_every=EVENT_BAD_EVERY, unkeyed_every=UNKEYED_EVERY)

    name = f"soak_{uuid.uuid4().hex[:8]}"
    out: list[str] = []
    with BentoEmulator(sentinel_config(seed=9, faults=tuple(soak_faults()))) as emu:
        resumes = run_with_resume([subscribers(), events()], name, tmp_path, file_max_items, emu.credentials, out)
        log = emu.request_log
        store = emu.store

        # -- nothing invalid was ever sent ---------------------------------------------------------------
        assert log_problems(log) == []

        # -- subscribers: every valid one, with its fields and tags; the store is keyed by email ----------
        valid_subs = [i for i in range(n_subs) if i % SUB_BAD_EVERY != SUB_BAD_EVERY - 1]
        lost_subs = []
        for i in valid_subs:
            sub = store.subscribers.get(f"s{i}@soak.example.com")
            fields, tags = expected_subscriber(i)
            if sub is None or {k: sub.fields.get(k) for k in fields} != fields \
                    or sorted(store.tag_names(sub)) != sorted(tags):
                lost_subs.append(i)
        assert lost_subs == []
        soak_people = [e for e in store.subscribers if e.startswith("s") and e.endswith("@soak.example.com")]
        assert len(soak_people) == len(valid_subs)  # no invalid one slipped in, none twice

        # -- events: exactly once, keyed by their own unique_key or by a derived one, lost answers or not --
        valid_events = [i for i in range(n_events) if i % EVENT_BAD_EVERY != EVENT_BAD_EVERY - 1]
        stored = Counter(e.details["n"] for e in store.events if e.details and "n" in e.details)
        lost_events = [i for i in valid_events if stored[i] == 0]
        assert lost_events == []
        assert set(stored) == set(valid_events)
        keyed_dupes = {i: c for i, c in stored.items() if i % UNKEYED_EVERY and c != 1}
        assert keyed_dupes == {}
        unkeyed_dupes = sum(c - 1 for i, c in stored.items() if i % UNKEYED_EVERY == 0)
        assert unkeyed_dupes == 0

        # -- every reject is listed with its reason ------------------------------------------------------
        rejects = list_rejects(name, pipelines_dir=tmp_path)
        reasons = Counter((r["table"], r["reason"]) for r in rejects)
        assert reasons == {
            ("subscribers", "invalid_email"): n_subs - len(valid_subs),
            ("events", "missing_type"): n_events - len(valid_events),
        }
        assert all(r["detail"] for r in rejects)

        # -- our report agrees with the emulator ---------------------------------------------------------
        reports = list_reports(name, pipelines_dir=tmp_path)
        sent = Counter[str]()
        for report in reports:
            for table, t in report.tables.items():
                sent[table] += t.sent
        assert sent == {"subscribers": len(valid_subs), "events": len(valid_events)}

        faults = Counter(r.fault for r in log if r.fault)
        statuses = Counter(r.status for r in log)
        resent_sub_rows = sum(r.rows for r in log if r.path == "/batch/subscribers" and applied(r)) - len(valid_subs)
        figures = {
            "rows": rows, "delivered": len(valid_subs) + len(valid_events), "rejected": len(rejects),
            "lost": len(lost_subs) + len(lost_events), "duplicate_subscribers": 0,
            "duplicate_unkeyed_events": unkeyed_dupes, "resent_subscriber_rows": resent_sub_rows,
            "requests": len(log), "faults": dict(faults), "statuses": dict(statuses), "load_resumes": resumes,
        }
        with capfd.disabled():
            print(f"\nSOAK FIGURES {figures}")
        # each kind of fault really happened (latency is not logged as a fault: it only delays)
        assert {"rate_limit", "server_error", "drop_before_apply", "drop_after_apply"} <= set(faults)
        assert statuses[429] >= 2

    captured = capfd.readouterr()
    assert_no_secrets(caplog.text, captured.out, captured.err, "\n".join(out), root=tmp_path)
