"""Events keyed by default (identical rows numbered) and duplicate emails decided over the whole input.

Issue 14, points 2 and 5. The command line runs for real in a subprocess against an emulator started in
this process; `sync()` takes lists of dicts. Every test asserts on the emulator's store (what Bento keeps)
and its request log (what was sent), and compares the run's report with the log.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bento_api import BentoConfigError
from bento_api.emulator import BentoEmulator
from bento_destination import bento
from bento_destination.changes import close_ledgers
from bento_destination.dry_run import classify_rows
from bento_destination.keys import IdenticalRows, number_identical, numbered
from bento_destination.ledger import derive_event_key
from bento_destination.report import last_report
from bento_destination.sync import sync

from .destination_support import ENV_PREFIXES, FAST

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("destination_env")


def cli(*args: str, emu: BentoEmulator, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIXES)}
    env.update(emu.env(), PYTHONPATH=str(REPO), RUNTIME__DLTHUB_TELEMETRY="false", BENTO_REQUESTS_PER_MINUTE="60000")
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=cwd, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120)


def sync_json(*args: str, emu: BentoEmulator, cwd: Path, code: int = 0) -> dict[str, Any]:
    result = cli("sync", *args, "--pipelines-dir", "p", "--json", emu=emu, cwd=cwd)
    assert result.returncode == code, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def sent_rows(emu: BentoEmulator, path: str) -> int:
    return sum(r.rows for r in emu.requests(path, "POST"))


def table_report(summary: dict[str, Any]) -> dict[str, Any]:
    (load,) = summary["loads"]
    (table,) = load["tables"].values()
    result: dict[str, Any] = table
    return result


def event_keys(emu: BentoEmulator) -> list[str]:
    return sorted(str(e.details["unique"]["key"]) for e in emu.store.events if e.details)


# -- numbering ----------------------------------------------------------------------------------------


def test_number_identical_numbers_the_nth_identical_key() -> None:
    assert number_identical(["a", "b", "a", "a", "c", "b"]) == ["a", "b", "a#2", "a#3", "c", "b#2"]
    assert number_identical([]) == []
    assert numbered("k", 1) == "k" and numbered("k", 3) == "k#3"


@given(st.lists(st.sampled_from("abcdef"), max_size=300), st.integers(1, 40), st.randoms())
def test_streamed_numbering_gives_the_same_keys_in_any_order_and_chunking(
    keys: list[str], chunk: int, random: Any
) -> None:
    counter = IdenticalRows()
    streamed: list[str] = []
    for start in range(0, len(keys), chunk):
        part = keys[start : start + chunk]
        streamed += [numbered(k, n) for k, n in zip(part, counter.occurrences(part).tolist(), strict=True)]
    assert streamed == number_identical(keys)
    shuffled = list(keys)
    random.shuffle(shuffled)
    assert sorted(number_identical(shuffled)) == sorted(streamed)  # the set of keys does not depend on order


# -- events through the command line ----------------------------------------------------------------------


def events_csv(path: Path, n: int, *, repeat: int = 0) -> Path:
    """n distinct events without a key column, then the first `repeat` of them again (identical rows)."""
    rows = [{"email": f"user{i % 40}@example.com", "type": "$purchase", "date": f"2024-05-01T10:{i // 60 % 60:02d}:"
             f"{i % 60:02d}Z", "details__order": str(i)} for i in range(n)]
    return write_csv(path, rows + rows[:repeat])


def test_event_table_synced_twice_sends_nothing_the_second_time_and_grows_by_exactly_one(
    emulator: BentoEmulator, tmp_path: Path
) -> None:
    events_csv(tmp_path / "events.csv", 500, repeat=20)
    dry = json.loads(cli("sync", "--from", "events.csv", "--as", "events", "--dry-run", "--json",
                         emu=emulator, cwd=tmp_path).stdout)
    assert (dry["derived_keys"], dry["identical_rows"]) == (520, 20)

    first = sync_json("--from", "events.csv", "--as", "events", emu=emulator, cwd=tmp_path)
    assert len(emulator.store.events) == 520  # the 20 identical rows are events too
    keys = event_keys(emulator)
    assert len(set(keys)) == 520 and sum(k.endswith("#2") for k in keys) == 20
    report = table_report(first)
    assert report["sent"] == sent_rows(emulator, "/batch/events") == 520
    assert (report["derived_keys"], report["identical_rows"]) == (520, 20)

    emulator.reset_log()
    again = sync_json("--from", "events.csv", "--as", "events", emu=emulator, cwd=tmp_path)
    assert emulator.requests("/batch/events") == []
    report = table_report(again)
    assert (report["sent"], report["unchanged"], report["requests"]) == (0, 520, 0)
    assert len(emulator.store.events) == 520

    # the table grows by one row identical to one already sent: exactly that one event is sent
    events_csv(tmp_path / "events.csv", 500, repeat=21)
    emulator.reset_log()
    grown = sync_json("--from", "events.csv", "--as", "events", emu=emulator, cwd=tmp_path)
    assert sent_rows(emulator, "/batch/events") == 1 == table_report(grown)["sent"]
    (request,) = emulator.requests("/batch/events")
    (event,) = request.body["events"]
    base = derive_event_key(event["email"], event["type"], event.get("date"), event["details"])
    assert event["details"]["unique"]["key"] == f"{base}#2"
    assert len(emulator.store.events) == 521


def test_two_identical_rows_in_one_input_are_two_events(emulator: BentoEmulator, tmp_path: Path) -> None:
    row = {"email": "Pat@Example.com", "type": "signed_up", "date": "2024-05-01T10:00:00Z"}
    write_csv(tmp_path / "twice.csv", [row, row])
    summary = sync_json("--from", "twice.csv", "--as", "events", emu=emulator, cwd=tmp_path)
    base = derive_event_key("pat@example.com", "signed_up", "2024-05-01T10:00:00Z")
    assert event_keys(emulator) == sorted([base, f"{base}#2"])
    assert sent_rows(emulator, "/batch/events") == 2 == table_report(summary)["sent"]


def push(emu: BentoEmulator, tmp_path: Path, rows: list[dict[str, Any]], table: str = "events",
         name: str = "push", **kw: Any) -> Any:
    """sync() a list of dicts; the report of its table."""
    (report,) = sync(rows, pipeline_name=name, pipelines_dir=tmp_path, table_name=table, out=lambda _: None,
                     **emu.credentials, requests_per_minute=FAST, **kw)
    return report.tables[table]


def test_explicit_unique_key_wins_and_the_opt_out_sends_again(emu: BentoEmulator, tmp_path: Path) -> None:
    keyed = push(emu, tmp_path, [{"email": "a@example.com", "type": "t", "unique_key": "order-1"}] * 2, name="keyed")
    assert keyed.derived_keys == 0
    assert event_keys(emu) == ["order-1"]  # the row's own key: one event, as Bento keeps one per key

    for _ in range(2):
        report = push(emu, tmp_path, [{"email": "b@example.com", "type": "t"}], name="nokeys", event_keys="none")
        assert (report.sent, report.derived_keys) == (1, 0)
    stored = [e for e in emu.store.events if e.email == "b@example.com"]
    assert len(stored) == 2 and all(not (e.details or {}).get("unique") for e in stored)  # at least once
    with pytest.raises(BentoConfigError, match="event_keys"):
        push(emu, tmp_path, [{"email": "b@example.com", "type": "t"}], name="bad", event_keys="off")


def test_without_the_ledger_bento_keeps_one_event_per_derived_key(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = [{"email": f"u{i}@x.com", "type": "t", "details": {"n": i}} for i in range(30)]
    for _ in range(2):
        assert push(emu, tmp_path, rows + rows[:3], sync_ledger=False).sent == 33
    assert sent_rows(emu, "/batch/events") == 66  # sent twice: nothing remembered what Bento has
    assert len(emu.store.events) == 33  # stored once: each carries its key, the identical rows numbered


def test_derive_event_keys_flag_is_a_deprecated_no_op(emulator: BentoEmulator, tmp_path: Path) -> None:
    events_csv(tmp_path / "events.csv", 5, repeat=1)
    result = cli("sync", "--from", "events.csv", "--as", "events", "--derive-event-keys", "--pipelines-dir", "p",
                 emu=emulator, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "deprecated" in result.stderr
    assert len(emulator.store.events) == 6


# -- duplicate emails ----------------------------------------------------------------------------------


DUPLICATES = [
    {"email": "Dup@x.com", "name": "Ann", "plan": ""},
    {"email": "dup@x.com ", "name": "Bea", "plan": "pro"},
    {"email": "other@x.com", "name": "Cy", "plan": ""},
    {"email": "DUP@X.COM", "name": "Cat", "plan": ""},
]


def test_csv_with_case_duplicate_emails_keeps_one_row_by_content_not_order(
    emulator: BentoEmulator, tmp_path: Path
) -> None:
    write_csv(tmp_path / "people.csv", DUPLICATES)
    dry = json.loads(cli("sync", "--from", "people.csv", "--as", "subscribers", "--dry-run", "--json",
                         "--reject-threshold", "1", emu=emulator, cwd=tmp_path).stdout)
    assert (dry["valid"], dry["rejected_by_reason"]) == (2, {"duplicate_email": 2})

    summary = sync_json("--from", "people.csv", "--as", "subscribers", "--reject-threshold", "1", "--show-rows",
                        emu=emulator, cwd=tmp_path)
    report = table_report(summary)
    assert report["rejected_by_reason"] == {"duplicate_email": 2}
    assert report["sent"] == sent_rows(emulator, "/batch/subscribers") == 2
    kept = emulator.store.subscribers["dup@x.com"]
    assert kept.fields["name"] == "Bea" and kept.fields["plan"] == "pro"  # the row with the most values
    details = sorted(r["detail"] for r in summary["reject_examples"])
    assert len(details) == 2 and all("kept `dup@x.com `" in d for d in details)
    assert sorted(r["row"]["name"] for r in summary["reject_examples"]) == ["Ann", "Cat"]

    # the same rows in another order (an engine gives no order): the same outcome, and nothing to send
    write_csv(tmp_path / "people.csv", DUPLICATES[::-1])
    emulator.reset_log()
    again = sync_json("--from", "people.csv", "--as", "subscribers", "--reject-threshold", "1", "--show-rows",
                      emu=emulator, cwd=tmp_path)
    assert emulator.requests("/batch/subscribers") == []
    assert table_report(again)["rejected_by_reason"] == {"duplicate_email": 2}
    assert sorted(r["detail"] for r in again["reject_examples"]) == details


def test_equally_full_duplicates_are_decided_by_content(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = [{"email": "Same@x.com", "name": "Zed"}, {"email": "same@x.com", "name": "Amy"}]
    for name, order in (("ab", rows), ("ba", rows[::-1])):
        push(emu, tmp_path, order, table="subscribers", name=name, reject_threshold=1.0)
        (record,) = [json.loads(line) for line in (tmp_path / name / "bento_rejects").glob("*.rejects.jsonl")
                     .__next__().read_text().splitlines()]
        assert record["row"]["name"] == "Amy" and "kept `Same@x.com`" in record["detail"]
        assert emu.store.subscribers["same@x.com"].fields["name"] == "Zed"


def test_a_row_that_unsubscribes_wins_over_its_duplicate(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = [{"email": "Leave@x.com", "unsubscribed": True},
            {"email": "leave@x.com", "name": "Lee", "plan": "pro", "unsubscribed": False}]
    reports = sync(rows, pipeline_name="consent", pipelines_dir=tmp_path, table_name="subscribers",
                   out=lambda _: None, reject_threshold=1.0, force=True, **emu.credentials,
                   requests_per_minute=FAST)
    assert reports[-1].tables["subscribers"].rejected_by_reason == {"duplicate_email": 1}
    assert emu.store.subscribers["leave@x.com"].unsubscribed_at is not None


def test_sync_of_dicts_with_case_duplicate_emails_across_load_files(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = [{"email": f"p{i}@x.com", "n": i} for i in range(2_500)]
    rows.insert(100, {"email": " P2400@X.COM", "n": 2400, "extra": "more"})  # in another load file than p2400

    def run() -> Any:
        return sync(rows, pipeline_name="dicts", pipelines_dir=tmp_path, table_name="subscribers",
                    out=lambda _: None, file_max_items=1_000, **emu.credentials, requests_per_minute=FAST)

    (report,) = run()
    table = report.tables["subscribers"]
    assert (table.received, table.sent, table.rejected_by_reason) == (2_501, 2_500, {"duplicate_email": 1})
    assert sent_rows(emu, "/batch/subscribers") == 2_500
    assert emu.store.subscribers["p2400@x.com"].fields["extra"] == "more"
    rejects = (tmp_path / "dicts" / "bento_rejects" / f"{report.load_id}.rejects.jsonl").read_text()
    (record,) = [json.loads(line) for line in rejects.splitlines()]
    assert record["reason"] == "duplicate_email" and "kept ` P2400@X.COM`" in record["detail"]
    assert record["row"] == {"email": "p2400@x.com", "n": 2400}

    emu.reset_log()
    (again,) = run()
    assert emu.requests("/batch/subscribers") == []
    assert again.tables["subscribers"].rejected_by_reason == {"duplicate_email": 1}


@pytest.mark.parametrize("form", ["dicts", "arrow"])
def test_sync_numbers_identical_events_across_load_files(emu: BentoEmulator, tmp_path: Path, form: str) -> None:
    rows = [{"email": f"u{i % 3}@x.com", "type": "$view", "details": json.dumps({"page": i % 300})}
            for i in range(3_000)]

    def run(data: list[dict[str, Any]]) -> Any:
        # dicts become jsonl load files, Arrow tables parquet ones: three files either way
        batches: Any = data if form == "dicts" else [pa.Table.from_pylist(data[i : i + 1_000])
                                                    for i in range(0, len(data), 1_000)]
        (report,) = sync(batches, pipeline_name="views", pipelines_dir=tmp_path, table_name="events",
                         out=lambda _: None, file_max_items=1_000, **emu.credentials, requests_per_minute=FAST)
        return report.tables["events"]

    first = run(rows)
    assert len(emu.store.events) == 3_000 == first.sent == sent_rows(emu, "/batch/events")
    assert (first.derived_keys, first.identical_rows) == (3_000, 2_700)  # 300 contents, 10 rows each
    assert len(set(event_keys(emu))) == 3_000
    emu.reset_log()
    assert run(rows[::-1]).unchanged == 3_000  # the same rows in another order: the same keys
    assert emu.requests("/batch/events") == []
    assert run([*rows, rows[5]]).sent == 1 == sent_rows(emu, "/batch/events")

    # the dry run's ledger preview numbers them the same way: one more copy is the only new row
    close_ledgers()
    counts = classify_rows([*rows, rows[5], rows[5]], "events", site_uuid=emu.credentials["site_uuid"],
                           working_dir=tmp_path / "views")
    assert (counts.unchanged, counts.new, counts.untracked) == (3_001, 1, 0)


def test_plain_pipeline_run_numbers_identical_events_within_a_batch(emu: BentoEmulator, tmp_path: Path) -> None:
    row = {"email": "a@x.com", "type": "t"}
    pipeline = dlt.pipeline("plain", pipelines_dir=str(tmp_path),
                            destination=bento(**emu.credentials, requests_per_minute=FAST))
    pipeline.run([row, row, row], table_name="events")
    base = derive_event_key("a@x.com", "t")
    assert event_keys(emu) == sorted([base, f"{base}#2", f"{base}#3"])
    report = last_report(pipeline)
    assert report is not None and report.tables["events"].derived_keys == 3


def test_emails_whose_hashes_collide_are_told_apart_by_the_email_itself(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the pre-pass counts emails by 32-bit hashes (ten million take 40 MB); a collision only costs a look:
    # with every email hashing alike, only the rows that truly share an email are rejected
    from bento_destination import duplicates

    monkeypatch.setattr(duplicates, "email_hash", lambda _email: 7)
    rows = [{"email": f"p{i}@x.com", "n": i} for i in range(50)] + [{"email": " P7@X.com", "n": 7, "extra": "more"}]
    (report,) = sync(rows, pipeline_name="collide", pipelines_dir=tmp_path, table_name="subscribers",
                     out=lambda _: None, file_max_items=20, **emu.credentials, requests_per_minute=FAST)
    table = report.tables["subscribers"]
    assert (table.received, table.sent, table.rejected_by_reason) == (51, 50, {"duplicate_email": 1})
    assert emu.store.subscribers["p7@x.com"].fields["extra"] == "more"
    counts = duplicates.EmailCounts()
    counts.add(["a@x.com", None, "b@x.com"])
    assert counts.repeated() == {7} and counts.may_repeat("c@x.com") and not counts.may_repeat(None)


def test_repeated_hashes_found_part_by_part_equal_a_count_of_every_hash() -> None:
    # the hashes are sorted a sixteenth of their range at a time; a hash repeated within one chunk, across
    # chunks, at either end of the range, or in every part is found, and no other
    import random
    from collections import Counter

    import numpy

    from bento_destination import duplicates

    rng = random.Random(15)
    emails = [f"user{i}@x.com" for i in range(20_000)] + [f"user{i}@x.com" for i in range(0, 20_000, 97)]
    emails += [None, None]
    rng.shuffle(emails)
    counts = duplicates.EmailCounts()
    chunks = [counts.add(emails[start:start + 3_000]) for start in range(0, len(emails), 3_000)]
    everything = Counter(int(h) for chunk in chunks for h in chunk.tolist())
    want = {h for h, n in everything.items() if n > 1 and h}
    assert len(want) >= 200 and {h >> 28 for h in want} == set(range(16))  # every part holds some
    assert counts.repeated() == want

    ends = duplicates.EmailCounts()
    ends._chunks = [numpy.array([1, 0xFFFFFFFF, 0x10000000], numpy.uint32),
                    numpy.array([0xFFFFFFFF, 0x0FFFFFFF, 1, 0, 0], numpy.uint32)]
    assert ends.repeated() == {1, 0xFFFFFFFF}  # 0 (no email) is never a repeat
