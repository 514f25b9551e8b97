"""Group commit: callers that record while a commit is under way share the next commit, and each returns only
once its own changes are committed (or raises why they were not)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bento_destination.ledger import SyncLedger
from bento_destination.ledger.group_commit import GroupCommit


def test_changes_queued_during_a_commit_go_together_into_the_next_one() -> None:
    commits: list[list[int]] = []
    first_started = threading.Event()
    release_first = threading.Event()

    def commit(changes: list[int]) -> None:
        if not commits:
            first_started.set()
            release_first.wait(5)
        commits.append(changes)

    group: GroupCommit[int] = GroupCommit(commit)
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(group.submit, 0)
        assert first_started.wait(5)
        later = [pool.submit(group.submit, n) for n in range(1, 6)]
        while len(group._queued) < 5:  # all five wait behind the first commit
            threading.Event().wait(0.005)
        assert not first.done() and not any(f.done() for f in later)
        release_first.set()
        for future in [first, *later]:
            future.result(5)
    assert commits == [[0], [1, 2, 3, 4, 5]]


def test_a_failed_commit_fails_every_caller_of_its_group_and_the_next_ones_still_commit() -> None:
    commits: list[list[str]] = []

    def commit(changes: list[str]) -> None:
        if "bad" in changes:
            raise RuntimeError("disk full")
        commits.append(changes)

    group: GroupCommit[str] = GroupCommit(commit)
    with pytest.raises(RuntimeError, match="disk full"):
        group.submit("bad")
    group.submit("good")
    assert commits == [["good"]]


def test_concurrent_acknowledgements_all_reach_the_ledger(tmp_path: Path) -> None:
    with SyncLedger.open(str(tmp_path / "ledger.duckdb"), site="site") as ledger:
        def acknowledge(request: int) -> None:
            pairs = [(f"p{request}-{i}@example.com", f"s2:{request}-{i}") for i in range(200)]
            ledger.record(lambda tx: tx.acknowledge("subscribers", pairs))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(acknowledge, range(40)))
        pairs = [(f"p{r}-{i}@example.com", f"s2:{r}-{i}") for r in range(40) for i in range(200)]
        new, changed, unchanged = ledger.partition("subscribers", pairs)
        assert (len(new), len(changed), len(unchanged)) == (0, 0, 8_000)


def test_submit_later_returns_at_once_and_its_future_is_done_only_after_the_commit() -> None:
    commits: list[list[int]] = []
    gate = threading.Event()
    with ThreadPoolExecutor(1) as committer:  # stands for the ledger's one thread

        def commit(changes: list[int]) -> None:
            gate.wait(5)
            commits.append(changes)

        group: GroupCommit[int] = GroupCommit(commit, committer.submit)
        futures = [group.submit_later(n) for n in range(4)]  # none of these calls waits for the commit
        assert not any(f.done() for f in futures) and commits == []
        gate.set()
        for future in futures:
            future.result(5)
    assert sorted(n for c in commits for n in c) == [0, 1, 2, 3]
    assert len(commits) <= 2  # queued while the first commit waited: they went together


def test_submit_later_hands_a_failed_commit_to_every_future_of_its_group() -> None:
    def commit(changes: list[str]) -> None:
        raise RuntimeError("disk full")

    with ThreadPoolExecutor(1) as committer:
        group: GroupCommit[str] = GroupCommit(commit, committer.submit)
        future = group.submit_later("row")
        with pytest.raises(RuntimeError, match="disk full"):
            future.result(5)


def test_the_ledger_records_later_on_its_thread_and_reads_see_it_once_the_future_is_done(tmp_path: Path) -> None:
    with SyncLedger.open(str(tmp_path / "ledger.duckdb"), site="site") as ledger:
        pairs = [(f"p{i}@example.com", f"s2:{i}") for i in range(500)]
        futures = [ledger.record_later(lambda tx, chunk=pairs[k::5]: tx.acknowledge("subscribers", chunk))
                   for k in range(5)]
        for future in futures:
            future.result(10)
        assert ledger.partition("subscribers", pairs)[2] == list(range(500))


def test_a_commit_takes_at_most_max_group_callers_and_submit_later_waits_past_max_waiting() -> None:
    commits: list[list[int]] = []
    scheduled: list[Callable[[], None]] = []  # drains run only when the test runs them
    group: GroupCommit[int] = GroupCommit(commits.append, scheduled.append, max_group=3, max_waiting=4)
    queued = [group.submit_later(n) for n in range(4)]
    assert len(scheduled) == 1 and not any(f.done() for f in queued)
    with ThreadPoolExecutor(1) as sender:
        blocked = sender.submit(group.submit_later, 99)  # a fifth waiting change: the sender waits
        threading.Event().wait(0.2)
        assert not blocked.done()
        scheduled.pop()()  # the drain: commits the oldest three, which lets the sender queue its change
        last = blocked.result(5)
        while scheduled:
            scheduled.pop()()
    for future in [*queued, last]:
        future.result(5)
    assert all(len(c) <= 3 for c in commits)
    assert [n for c in commits for n in c] == [0, 1, 2, 3, 99]  # oldest first


def test_acknowledgements_that_outrun_the_commits_all_commit_under_the_steady_memory_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 100 requests' rows queued at once: one commit of all of them needs more than the ledger's steady cap
    # (DuckDB's out-of-memory error, seen on an unthrottled 1,000,000-row sync); groups of MAX_GROUP do not,
    # so no commit needs the bulk cap's second try
    caplog.set_level(logging.INFO, logger="bento_destination.ledger")
    with SyncLedger.open(str(tmp_path / "ledger.duckdb"), site="site") as ledger:
        futures = []
        for request in range(100):
            pairs = [(f"p{request}-{i}@example.com", "s2:" + "f" * 64 + str(i)) for i in range(1000)]
            futures.append(ledger.record_later(lambda tx, pairs=pairs: tx.acknowledge("subscribers", pairs)))
        for future in futures:
            future.result(60)
        pairs = [(f"p{r}-{i}@example.com", "s2:" + "f" * 64 + str(i)) for r in range(100) for i in range(1000)]
        assert len(ledger.partition("subscribers", pairs)[2]) == 100_000
    assert not [r for r in caplog.records if "ran out of DuckDB memory" in r.getMessage()]


def test_a_commit_past_the_steady_cap_is_applied_again_under_the_bulk_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a steady cap too small for one request's rows: the commit is rolled back, applied again under the bulk
    # cap, and every row is stored once; without the second try the acknowledgement raised DuckDB's error
    caplog.set_level(logging.INFO, logger="bento_destination.ledger")
    path = str(tmp_path / "ledger.duckdb")
    pairs = [(f"q{i}@example.com", "s2:" + "f" * 64 + str(i)) for i in range(8000)]
    with SyncLedger.open(path, site="site", memory_limit="6MB") as ledger:
        ledger.acknowledge("subscribers", pairs)
    assert [r for r in caplog.records if "ran out of DuckDB memory" in r.getMessage()]
    with SyncLedger.open(path, site="site") as ledger:
        assert len(ledger.partition("subscribers", pairs)[2]) == 8000
        assert len(ledger.entries("subscribers")) == 8000


def _reopened_ledger_with_every_kind_of_entry(location: str) -> None:
    with SyncLedger.open(location, site="site") as ledger:
        ledger.acknowledge("subscribers", [(f"k{i}@example.com", f"s2:{i}") for i in range(4)])
        ledger.mark_unsubscribed(["gone@example.com"])
        ledger.add_owned_tags([("k0@example.com", "crm")])


def _read_each_way(ledger: SyncLedger) -> None:
    two = ["gone@example.com", "k0@example.com"]
    assert ledger.unsubscribed(two) == {"gone@example.com"}
    assert ledger.seen("subscribers", two) == {"k0@example.com"}
    assert ledger.owned_tags(two) == {"gone@example.com": set(), "k0@example.com": {"crm"}}
    assert [key for key, *_ in ledger.entries("_unsubscribed", two)] == ["gone@example.com"]
    assert list(ledger.classify("subscribers", [("k0@example.com", "s2:0"), ("k1@example.com", "s2:x")])) == [2, 1]


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_lookups_of_a_few_keys_fit_the_steady_cap_with_no_second_try(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    # DuckDB's hash join of two keys against a reopened ledger asked for 7.5 MiB: under a 16 MB cap every
    # consent and tag lookup ran out of memory and ran again under the bulk cap
    location = str(tmp_path / ("ledger.duckdb" if kind == "file" else "ledger-folder"))
    _reopened_ledger_with_every_kind_of_entry(location)
    caplog.set_level(logging.INFO, logger="bento_destination.ledger")
    with SyncLedger.open(location, site="site") as ledger:
        _read_each_way(ledger)
    assert not [r for r in caplog.records if "ran out of DuckDB memory" in r.getMessage()]


def test_a_lookup_past_the_steady_cap_is_run_again_under_the_bulk_cap(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    location = str(tmp_path / "ledger.duckdb")
    _reopened_ledger_with_every_kind_of_entry(location)
    caplog.set_level(logging.INFO, logger="bento_destination.ledger")
    with SyncLedger.open(location, site="site", memory_limit="8MB") as ledger:
        _read_each_way(ledger)
    assert len([r for r in caplog.records if "ran out of DuckDB memory" in r.getMessage()]) >= 4
