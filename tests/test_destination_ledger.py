"""Issue 8: the sync ledger wired into the destination, over real HTTP against the emulator on 127.0.0.1.

Budgets are raised for the emulator (client 60000/min) so these run in seconds; the defaults stay 60/min.
"""

from __future__ import annotations

import math
import shutil
import uuid
from pathlib import Path
from typing import Any

import dlt
import pytest

from bento_api.emulator import BentoEmulator, Fault
from bento_destination import BentoRejectsExceeded, check_run, last_report, list_rejects
from bento_destination.changes import classify_rows, close_ledgers, forget_unsubscribes, reset_ledger
from bento_destination.ledger import BlastRadiusExceeded, SyncLedger
from bento_destination.sink import bento
from bento_destination.sync import file_rotation, sync

from .destination_support import FAST

pytestmark = pytest.mark.usefixtures("destination_env")


def subscribers(n: int, version: dict[int, str] | None = None) -> list[dict[str, Any]]:
    version = version or {}
    return [
        {"email": f"user{i}@example.com", "plan": version.get(i, ["free", "pro"][i % 2]), "score": i}
        for i in range(n)
    ]


def run(emu: BentoEmulator, tmp: Path, rows: Any, table: str = "subscribers", name: str = "ledger", **kw: Any) -> Any:
    reports = sync(
        rows, pipeline_name=name, pipelines_dir=tmp, table_name=table, out=lambda _: None,
        **emu.credentials, requests_per_minute=FAST, **kw,
    )
    return reports[-1].tables[table]


def batch_requests(emu: BentoEmulator, path: str = "/batch/subscribers") -> int:
    return len(emu.requests(path=path))


def test_20000_rows_unchanged_sends_nothing_and_1_percent_changed_sends_full_batches(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    first = run(emu, tmp_path, subscribers(20_000), file_max_items=5_000)
    assert first.sent == 20_000 and first.new == 20_000 and batch_requests(emu) == 20

    emu.reset_log()
    again = run(emu, tmp_path, subscribers(20_000), file_max_items=5_000)
    assert batch_requests(emu) == 0
    assert (again.received, again.sent, again.unchanged, again.new, again.changed) == (20_000, 0, 20_000, 0, 0)

    emu.reset_log()
    changed = {i: "team" for i in range(0, 20_000, 100)}  # 1%, spread over every load file and sink batch
    third = run(emu, tmp_path, subscribers(20_000, changed), file_max_items=5_000)
    windows = 4 * 2  # four files of 5,000 rows, each read as windows of 2,000 and 3,000 (file_progress.RAMP)
    assert batch_requests(emu) <= math.ceil(200 / 1000) + windows
    assert (third.sent, third.changed, third.unchanged) == (200, 200, 19_800)
    assert all(emu.store.subscribers[f"user{i}@example.com"].fields["plan"] == "team" for i in changed)


def test_the_sink_compares_each_window_of_a_file_once_and_counts_what_it_found(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[int] = []
    real_partition = SyncLedger.partition

    def counting_partition(self: SyncLedger, operation: str, items: Any, older: Any = None) -> Any:
        compared.append(len(items))
        return real_partition(self, operation, items, older)

    monkeypatch.setattr(SyncLedger, "partition", counting_partition)
    first = run(emu, tmp_path, subscribers(3_000), file_max_items=1_000)
    changed = {i: "team" for i in range(0, 3_000, 30)}
    emu.reset_log()
    compared.clear()
    second = run(emu, tmp_path, subscribers(3_100, changed), file_max_items=1_000)
    # one join per window of a file (the pre-pass only decides; dlt's files keep every row)
    assert sorted(compared) == [100, 1_000, 1_000, 1_000]
    assert (first.new, first.changed, first.sent) == (3_000, 0, 3_000)
    assert (second.new, second.changed, second.unchanged, second.sent) == (100, 100, 2_900, 200)
    assert batch_requests(emu) == 4  # the changed and new rows of each of the four files: one request each
    emu.reset_log()
    assert run(emu, tmp_path, subscribers(3_100, changed)).unchanged == 3_100 and batch_requests(emu) == 0


def test_plain_pipeline_run_filters_per_sink_batch(emu: BentoEmulator, tmp_path: Path) -> None:
    pipeline = dlt.pipeline("plain", pipelines_dir=str(tmp_path), destination=bento(**emu.credentials,
                                                                                    requests_per_minute=FAST))
    pipeline.run(subscribers(3_000), table_name="subscribers")
    close_ledgers()
    emu.reset_log()
    pipeline.run(subscribers(3_000, {5: "team"}), table_name="subscribers")
    [body] = [r.body for r in emu.requests(path="/batch/subscribers")]
    assert body is not None and [s["email"] for s in body["subscribers"]] == ["user5@example.com"]
    report = last_report(pipeline)
    assert report is not None
    assert (report.tables["subscribers"].unchanged, report.tables["subscribers"].changed) == (2_999, 1)
    assert (Path(pipeline.working_dir) / "bento_ledger.duckdb").exists()


def test_rows_bento_refused_are_not_acknowledged(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.add_fault(Fault("refuse_rows", emails=frozenset({"user3@example.com"}), path_prefix="/batch"))
    first = run(emu, tmp_path, subscribers(50), reject_threshold=1.0)
    # Bento said failed=1 without saying which: every row it may have refused stays unacknowledged
    assert first.rejected >= 1 and first.sent + first.rejected == 50
    emu.clear_faults()
    emu.reset_log()
    again = run(emu, tmp_path, subscribers(50))
    assert again.sent == first.rejected and again.unchanged == first.sent and batch_requests(emu) >= 1
    emu.reset_log()
    assert run(emu, tmp_path, subscribers(50)).unchanged == 50 and batch_requests(emu) == 0


def test_folder_ledger_survives_deleting_the_working_dir(emu: BentoEmulator, tmp_path: Path) -> None:
    url = (tmp_path / "kept-ledger").as_uri()  # file:///.../kept-ledger
    pipelines = tmp_path / "pipelines"
    assert run(emu, pipelines, subscribers(2_500), ledger_url=url).sent == 2_500
    close_ledgers()
    shutil.rmtree(pipelines)
    emu.reset_log()
    again = run(emu, pipelines, subscribers(2_500), ledger_url=url)
    assert batch_requests(emu) == 0 and again.unchanged == 2_500
    assert not (pipelines / "ledger" / "bento_ledger.duckdb").exists()


def test_ledger_url_from_env_and_memory_url(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"memory://bento-ledger-{uuid.uuid4().hex}"
    monkeypatch.setenv("DESTINATION__BENTO__LEDGER_URL", url)
    run(emu, tmp_path / "a", subscribers(100))
    close_ledgers()
    emu.reset_log()
    assert run(emu, tmp_path / "b", subscribers(100), name="other").unchanged == 100
    assert batch_requests(emu) == 0
    with SyncLedger.open(url, site=emu.credentials["site_uuid"]) as ledger:
        assert ledger.known_audience() == 100


def test_full_resync_and_reset(emu: BentoEmulator, tmp_path: Path) -> None:
    run(emu, tmp_path, subscribers(300))
    emu.reset_log()
    assert run(emu, tmp_path, subscribers(300), full_resync=True).sent == 300
    assert run(emu, tmp_path, subscribers(300)).unchanged == 300
    site = emu.credentials["site_uuid"]
    working = tmp_path / "ledger"
    assert classify_rows(subscribers(300, {1: "x"}), "subscribers", site_uuid=site, working_dir=working).as_dict() == {
        "new": 0, "changed": 1, "unchanged": 299, "invalid": 0, "untracked": 0,
    }
    reset_ledger(site, working_dir=working)
    emu.reset_log()
    assert run(emu, tmp_path, subscribers(300)).sent == 300 and batch_requests(emu) == 1


def events(n: int, email: str | None = None) -> list[dict[str, Any]]:
    return [
        {"email": email or f"user{i % 50}@example.com", "type": "$purchase",
         "date": f"2024-05-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z", "details": {"order": i}}
        for i in range(n)
    ]


def test_keyed_events_are_sent_once(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = [{**e, "unique_key": f"order-{i}"} for i, e in enumerate(events(1_500))]
    assert run(emu, tmp_path, rows, table="events").sent == 1_500
    emu.reset_log()
    again = run(emu, tmp_path, [*rows, {"email": "new@example.com", "type": "x", "unique_key": "k"}], table="events")
    assert (again.unchanged, again.new, again.sent) == (1_500, 1, 1)
    assert batch_requests(emu, "/batch/events") == 1


def test_derived_keys_by_default_number_identical_events(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = events(200)
    first = run(emu, tmp_path, rows + rows[:10], table="events")
    assert first.sent == 210 and first.derived_keys == 210 and first.identical_rows == 10
    assert len(emu.store.events) == 210  # identical rows are events too: the 10 repeats carry `key#2`
    keys = {e.details["unique"]["key"] for e in emu.store.events if e.details}
    assert len(keys) == 210 and sum(key.endswith("#2") for key in keys) == 10
    emu.reset_log()
    assert run(emu, tmp_path, rows + rows[:10], table="events").unchanged == 210
    assert batch_requests(emu, "/batch/events") == 0


def test_consent_unsubscribes_are_remembered(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = subscribers(20)
    rows[3]["unsubscribed"] = True
    run(emu, tmp_path, rows)
    assert emu.store.subscribers["user3@example.com"].unsubscribed_at is not None

    evs = [{"email": "user3@example.com", "type": "$visit"}, {"email": "user4@example.com", "type": "$visit"}]
    report = run(emu, tmp_path, evs, table="events", reject_threshold=1.0)
    assert report.sent == 1 and report.rejected_by_reason == {"unsubscribed_person": 1}
    report = run(emu, tmp_path, evs, table="events", allow_events_for_unsubscribed=True)
    assert (report.sent, report.unchanged) == (1, 1)  # user4's event (keyed by default) was already sent

    cmds = [{"command": "subscribe", "email": "user3@example.com"}, {"command": "subscribe", "email": "x@example.com"}]
    report = run(emu, tmp_path, cmds, table="commands", reject_threshold=1.0)
    assert report.sent == 1 and report.rejected_by_reason == {"would_resubscribe": 1}
    assert emu.store.subscribers["user3@example.com"].unsubscribed_at is not None

    close_ledgers()
    forget_unsubscribes(["user3@example.com"], emu.credentials["site_uuid"], working_dir=tmp_path / "ledger")
    assert run(emu, tmp_path, cmds[:1], table="commands").sent == 1


def test_blast_radius_stops_before_sending(emu: BentoEmulator, tmp_path: Path) -> None:
    run(emu, tmp_path, subscribers(100))
    rows = subscribers(100)
    for row in rows[:20]:
        row["unsubscribed"] = True
    emu.reset_log()
    with pytest.raises(BlastRadiusExceeded) as caught:
        run(emu, tmp_path, rows)
    assert caught.value.would_unsubscribe == 20 and caught.value.known_audience == 100
    assert emu.requests(method="POST") == []
    pipeline = dlt.pipeline("ledger", pipelines_dir=str(tmp_path))
    assert not pipeline.has_pending_data

    for row in rows[5:20]:
        row.pop("unsubscribed")
    assert run(emu, tmp_path, rows).commands_sent == 5  # 5% is under the 10% default

    rows = subscribers(100)
    for row in rows[:30]:
        row["remove_tags"] = "customer"
    with pytest.raises(BlastRadiusExceeded):
        run(emu, tmp_path, rows)
    assert run(emu, tmp_path, rows, force=True).sent == 30
    assert run(emu, tmp_path, rows, max_blast_radius=0.2).unchanged == 100  # unchanged removals do not count


def test_a_plain_pipeline_run_is_guarded_too_and_leaves_nothing_pending(emu: BentoEmulator, tmp_path: Path) -> None:
    def plain(**kw: Any) -> dlt.Pipeline:
        return dlt.pipeline("plain_guard", pipelines_dir=str(tmp_path),
                            destination=bento(**emu.credentials, requests_per_minute=FAST, **kw))

    check_run(plain(), plain().run(subscribers(100), table_name="subscribers"))
    rows = subscribers(100)
    for row in rows[:20]:
        row["unsubscribed"] = True
    emu.reset_log()
    pipeline = plain()
    with file_rotation(25):  # four load jobs: none may send before the verdict on the whole package
        info = pipeline.run(rows, table_name="subscribers")
    assert emu.requests(method="POST") == []
    assert not pipeline.has_pending_data
    with pytest.raises(BentoRejectsExceeded, match="100 of 100 rows rejected"):
        check_run(pipeline, info)
    rejects = list_rejects(pipeline)
    assert {r["reason"] for r in rejects} == {"blast_radius_exceeded"} and len(rejects) == 100
    assert "unsubscribe 20 people (20.0% of 100 known)" in rejects[0]["detail"]
    assert all(emu.store.subscribers[f"user{i}@example.com"].unsubscribed_at is None for i in range(20))

    forced = plain(force=True)
    check_run(forced, forced.run(rows, table_name="subscribers"))
    assert all(emu.store.subscribers[f"user{i}@example.com"].unsubscribed_at is not None for i in range(20))


def test_blast_radius_first_run_uses_people_in_the_run(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = subscribers(100)
    rows[0]["unsubscribed"] = True
    assert run(emu, tmp_path, rows).commands_sent == 1  # 1 of max(0 known, 100 in the run)
    only = [{"email": "a@example.com", "unsubscribed": True}]
    with pytest.raises(BlastRadiusExceeded):
        run(emu, tmp_path / "fresh", only, name="fresh")  # 1 of max(0, 1): 100%


def test_tag_ownership_removes_only_tags_we_added(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.store.add_subscriber("ada@example.com", tags=["vip"])
    run(emu, tmp_path, [{"email": "ada@example.com", "tags": "trial"}], tag_ownership=True)
    assert sorted(emu.store.tag_names(emu.store.subscribers["ada@example.com"])) == ["trial", "vip"]
    report = run(emu, tmp_path, [{"email": "ada@example.com", "remove_tags": "vip,trial"}], tag_ownership=True,
                 force=True)
    assert report.tags_not_owned == 1
    assert emu.store.tag_names(emu.store.subscribers["ada@example.com"]) == ["vip"]
    cmds = [{"command": "remove_tag", "email": "ada@example.com", "query": "vip"}]
    report = run(emu, tmp_path, cmds, table="commands", tag_ownership=True, force=True, reject_threshold=1.0)
    assert report.rejected_by_reason == {"tag_not_owned": 1}
    assert emu.store.tag_names(emu.store.subscribers["ada@example.com"]) == ["vip"]
