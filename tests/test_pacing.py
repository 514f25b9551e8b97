"""The pacer with an injected clock: even spacing, no bursts after idling, Retry-After holds, slow-down."""

from __future__ import annotations

import threading

from bento_api.limits import resolve_budgets
from bento_api.pacing import MAX_SLOWDOWN, SAFETY_MARGIN, Pacer
from bento_api.retry import parse_retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_slots_are_evenly_spaced_and_idle_time_gives_no_burst() -> None:
    clock = FakeClock()
    pacer = Pacer(0.5 / SAFETY_MARGIN, clock=clock, sleep=lambda s: None)
    assert [round(pacer.reserve(), 9) for _ in range(4)] == [0.0, 0.5, 1.0, 1.5]
    clock.now += 60  # a long idle
    waits = [round(pacer.reserve(), 9) for _ in range(3)]
    assert waits == [0.0, 0.5, 1.0]


def test_threads_share_one_timeline() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0 / SAFETY_MARGIN, clock=clock, sleep=lambda s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            w = pacer.reserve()
            with lock:
                waits.append(w)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [round(w, 6) for w in sorted(waits)] == [float(i) for i in range(200)]


def test_hold_until_and_slow_down_and_recovery() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, clock=clock, sleep=lambda s: None)
    pacer.reserve()
    pacer.hold_until(clock.now + 30)
    assert pacer.reserve() == 30.0
    for _ in range(20):
        pacer.slow_down()
    assert pacer.interval == MAX_SLOWDOWN * pacer.base_interval
    for _ in range(200):
        pacer.succeeded()
    assert pacer.interval == pacer.base_interval


def test_budget_defaults_and_env_overrides() -> None:
    default = resolve_budgets(env={})
    assert default.interval("batch") == 1.0 and default.interval("stats") == 120.0
    raised = resolve_budgets(env={"BENTO_REQUESTS_PER_MINUTE": "100", "BENTO_STATS_REQUESTS_PER_HOUR": "60"})
    assert raised.interval("fetch") == 0.6 and raised.interval("stats") == 60.0
    assert resolve_budgets(requests_per_minute=30, env={"BENTO_REQUESTS_PER_MINUTE": "100"}).interval("fetch") == 2.0


def test_retry_after_parsing() -> None:
    assert parse_retry_after("3", 0) == 3.0
    assert parse_retry_after("0", 0) is None
    assert parse_retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert parse_retry_after("garbage", 0) is None
    assert parse_retry_after(None, 0) is None


def test_a_late_waker_does_not_bunch_with_the_next_slot() -> None:
    clock = FakeClock()
    oversleep = {"once": 0.6}

    def sleep(seconds: float) -> None:
        clock.sleep(seconds + oversleep.pop("once", 0.0))

    pacer = Pacer(1.0 / SAFETY_MARGIN, clock=clock, sleep=sleep)
    pacer.acquire()  # starts at 100.0
    pacer.acquire()  # its slot is 101.0, but it wakes 0.6 s late
    late_start = clock.now
    pacer.acquire()  # its slot is 102.0: only 0.4 s after the late start, so it waits on
    assert round(late_start, 6) == 101.6
    assert round(clock.now - late_start, 6) >= 1.0


def test_email_budget_weighs_each_request_by_its_emails() -> None:
    budgets = resolve_budgets(env={})
    assert budgets.emails_per_minute == 60.0 and budgets.interval("emails") == 1.0
    assert resolve_budgets(env={"BENTO_EMAILS_PER_MINUTE": "120"}).interval("emails") == 0.5
    assert resolve_budgets(emails_per_minute=30, env={"BENTO_EMAILS_PER_MINUTE": "120"}).interval("emails") == 2.0
    clock = FakeClock()
    pacer = Pacer(budgets.interval("emails") / SAFETY_MARGIN, clock=clock, sleep=clock.sleep)
    # 60 emails go at once, the next request waits until they have had their minute, then 10 more seconds
    assert [round(pacer.acquire(w), 9) for w in (60, 10, 1)] == [0.0, 60.0, 10.0]
    assert round(clock.now - 100.0, 9) == 70.0
