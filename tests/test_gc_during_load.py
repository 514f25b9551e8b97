"""The collector's first threshold is raised while load jobs run and restored by the last one out."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from bento_destination.gc_during_load import LOAD_THRESHOLD, fewer_collections


@pytest.fixture(autouse=True)
def _restore_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_raised_inside_and_restored_after_even_on_error() -> None:
    gc.set_threshold(700, 10, 10)
    with pytest.raises(ValueError), fewer_collections():
        assert gc.get_threshold() == (LOAD_THRESHOLD, 10, 10)
        raise ValueError("the load failed")
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_jobs_restore_only_when_the_last_leaves() -> None:
    gc.set_threshold(500, 7, 9)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[tuple[int, int, int]] = []

    def first() -> None:
        with fewer_collections():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with fewer_collections():
            second_in.set()
            first_out.wait(5)
            seen.append(gc.get_threshold())  # the first job left; this one still runs raised

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == [(LOAD_THRESHOLD, 7, 9)]
    assert gc.get_threshold() == (500, 7, 9)


def test_a_program_that_turned_collection_off_or_set_a_higher_threshold_keeps_it() -> None:
    for setting in ((0, 10, 10), (100_000, 10, 10)):
        gc.set_threshold(*setting)
        with fewer_collections():
            assert gc.get_threshold() == setting
        assert gc.get_threshold() == setting
