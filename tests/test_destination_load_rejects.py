"""Issue 6: exact rejects. Bento counts `failed` rows without naming them; the sink finds which.

Subscriber imports are upserts, so halves of a request are sent again until exactly the refused rows
are known; events are never sent again (each send triggers automations). Over real HTTP against the
emulator on 127.0.0.1, whose budgets are raised far above Bento's (the defaults stay 60/min).
"""

from __future__ import annotations

import itertools
import math
import uuid
from pathlib import Path
from typing import Any

import dlt
import pytest

from bento_api.emulator import BentoEmulator, Fault
from bento_destination import bento, check_run, list_rejects

from .destination_support import FAST

pytestmark = pytest.mark.usefixtures("destination_env")


def credentials(emu: BentoEmulator) -> dict[str, Any]:
    return dict(emu.credentials)


def run_subscribers(emu: BentoEmulator, tmp_path: Path, rows: list[dict[str, Any]], **kwargs: Any) -> Any:
    pipeline = dlt.pipeline(
        f"rejects_{uuid.uuid4().hex[:8]}",
        pipelines_dir=str(tmp_path),
        destination=bento(requests_per_minute=FAST, **credentials(emu), **kwargs),
    )
    info = pipeline.run(rows, table_name="subscribers")
    return pipeline, info


def people(n: int, bad: set[int], prefix: str = "person") -> list[dict[str, Any]]:
    return [
        {"email": f"{'refused' if i in bad else prefix}{i}@example.com", "first_name": f"P{i}", "plan": "pro"}
        for i in range(n)
    ]


def rejected_emails(pipeline: Any) -> list[str]:
    return sorted(r["row"]["email"] for r in list_rejects(pipeline))


def test_chosen_refused_emails_are_exactly_the_rejects_and_everyone_else_arrives(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    bad = {3, 999, 1000, 1500, 2999}
    rows = people(3000, bad)
    refused = {rows[i]["email"] for i in bad}
    emu.add_fault(Fault(kind="refuse_rows", emails=frozenset(refused), path_prefix="/batch/subscribers"))
    pipeline, info = run_subscribers(emu, tmp_path, rows)

    assert rejected_emails(pipeline) == sorted(refused)
    rejects = list_rejects(pipeline)
    assert {r["reason"] for r in rejects} == {"refused_by_bento"}
    assert all(r["detail"].startswith("Bento refused this row") for r in rejects)
    assert set(emu.store.subscribers) == {r["email"] for r in rows} - refused
    table = check_run(pipeline, info)[0].tables["subscribers"]  # 5 of 3000: under the threshold
    assert (table.received, table.sent, table.rejected, table.failed_by_bento) == (3000, 2995, 5, 5)
    # 3 full requests, then per bad row at most one request per halving level (ceil(log2(1000)) = 10)
    requests = emu.requests(path="/batch/subscribers")
    assert [r.rows for r in requests[:1]] == [1000]
    assert 3 < len(requests) <= 3 + len(bad) * math.ceil(math.log2(1000))


def test_one_refused_row_in_a_full_batch_costs_ten_requests(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = people(1000, {617})
    emu.add_fault(Fault(kind="refuse_rows", pattern=r"^refused", path_prefix="/batch/subscribers"))
    pipeline, _ = run_subscribers(emu, tmp_path, rows)
    assert rejected_emails(pipeline) == ["refused617@example.com"]
    sizes = [r.rows for r in emu.requests(path="/batch/subscribers")]
    # the batch, then at most one half per level: 500, 250, 125, 62 or 63, ... down to 1 row
    assert sizes[0] == 1000 and 1 < len(sizes) <= 1 + math.ceil(math.log2(1000))
    assert all(later <= (earlier + 1) // 2 for earlier, later in itertools.pairwise(sizes))


def test_many_refused_rows_by_pattern_cost_k_log_n_requests_not_n(emu: BentoEmulator, tmp_path: Path) -> None:
    bad = {i for i in range(2000) if i % 37 == 5}  # 54 refused rows in two full batches
    rows = people(2000, bad)
    emu.add_fault(Fault(kind="refuse_rows", pattern=r"^refused\d+@", path_prefix="/batch/subscribers"))
    pipeline, _ = run_subscribers(emu, tmp_path, rows)
    assert rejected_emails(pipeline) == sorted(rows[i]["email"] for i in bad)
    extra = len(emu.requests(path="/batch/subscribers")) - 2
    k = len(bad) / 2  # per batch of n = 1000
    assert extra <= 2 * k * (math.ceil(math.log2(1000 / k)) + 2)  # about 300, against 2000 one by one
    assert len(emu.store.subscribers) == 2000 - len(bad)


def test_exact_rejects_survive_server_errors_and_429s(emu: BentoEmulator, tmp_path: Path) -> None:
    bad = {10, 420}
    rows = people(1000, bad)
    emu.add_fault(Fault(kind="refuse_rows", pattern=r"^refused", path_prefix="/batch/subscribers"))
    # a few of each, while halves are being sent again (each retry waits about a second)
    emu.add_fault(Fault(kind="server_error", probability=0.3, count=2, path_prefix="/batch", status=502))
    emu.add_fault(Fault(kind="rate_limit", probability=0.3, count=1, path_prefix="/batch", seconds=0))
    pipeline, info = run_subscribers(emu, tmp_path, rows)
    assert rejected_emails(pipeline) == sorted(rows[i]["email"] for i in bad)
    assert len(emu.store.subscribers) == 1000 - len(bad)
    statuses = {r.status for r in emu.requests(path="/batch/subscribers")}
    assert {200, 502, 429} <= statuses
    table = check_run(pipeline, info)[0].tables["subscribers"]
    assert (table.sent, table.rejected) == (998, 2)


def test_events_with_failed_rows_are_recorded_and_never_sent_again(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.add_fault(Fault(kind="refuse_rows", pattern=r"^refused", path_prefix="/batch/events"))
    rows = [{"email": f"{'refused' if i == 7 else 'e'}{i}@example.com", "type": "$visit"} for i in range(1200)]
    pipeline = dlt.pipeline(
        f"events_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path),
        destination=bento(requests_per_minute=FAST, **credentials(emu)),
    )
    pipeline.run(rows, table_name="events")
    # two requests, side by side (either may arrive first): the file's first 1000 rows and its last 200
    assert sorted(r.rows for r in emu.requests(path="/batch/events")) == [200, 1000]
    rejects = list_rejects(pipeline)
    assert len(rejects) == 1000 and {r["reason"] for r in rejects} == {"bento_failed"}  # the whole request
    assert len({r["batch"] for r in rejects}) == 1
