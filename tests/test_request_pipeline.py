"""The sink's request pipeline: a request's ledger commit finishes after its thread moved on, and `finish()`
still waits for it, runs its step, and raises its failure."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from bento_destination.request_pipeline import RequestPipeline


def test_finish_waits_for_commits_added_by_requests_that_end_after_finish_began() -> None:
    pipeline = RequestPipeline(4)
    settled: list[int] = []
    commits: list[Future[None]] = []

    def request(n: int) -> None:
        time.sleep(0.05)  # still running when finish() takes its first look
        commit: Future[None] = Future()
        commits.append(commit)
        pipeline.after(commit, lambda: settled.append(n))
        threading.Timer(0.1, commit.set_result, [None]).start()  # committed later, on another thread

    for n in range(6):
        pipeline.submit(lambda n=n: request(n))
    pipeline.finish()
    assert sorted(settled) == list(range(6))


def test_a_failed_commit_is_raised_by_finish_and_stops_new_requests() -> None:
    pipeline = RequestPipeline(2)
    commit: Future[None] = Future()
    pipeline.after(commit, lambda: pytest.fail("a failed commit marks nothing done"))
    commit.set_exception(OSError("ledger disk full"))
    assert pipeline.failed
    assert pipeline.submit(lambda: None) is None
    with pytest.raises(OSError, match="ledger disk full"):
        pipeline.finish()


def test_a_failing_step_after_the_commit_is_raised_by_finish() -> None:
    pipeline = RequestPipeline(2)
    commit: Future[None] = Future()

    def step() -> None:
        raise RuntimeError("package state not writable")

    pipeline.after(commit, step)
    commit.set_result(None)
    with pytest.raises(RuntimeError, match="package state not writable"):
        pipeline.finish()
