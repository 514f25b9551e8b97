"""The Node SDK check's own logic (sdk_check/), without Node: its checks must fail when the emulator is wrong.

`make sdk-check` runs the SDK itself (CI does, after the tests); these tests make sure that a check cannot
pass on an emulator that ignored a write, that a call nobody checks is a failure, and that the Node
script and the checks name the same calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from bento_api.emulator import BentoEmulator
from sdk_check.checks import PHASES, CheckFailed, Context, command_tag_added, over_budget_write, site_stats
from sdk_check.node_client import SCRIPT, SdkCall
from sdk_check.plan import Plan
from sdk_check.run import emulator_config, judge, run_mode


@pytest.fixture
def ctx() -> Iterator[Context]:
    plan = Plan()
    with BentoEmulator(emulator_config("default")) as emulator:
        yield Context(emulator, plan, plan.set_up(emulator), writes_may_be_queued=False)


def test_a_command_the_emulator_ignored_fails_its_check(ctx: Context) -> None:
    answer = SdkCall("Commands.addTag", result=1)
    with pytest.raises(CheckFailed, match="no subscriber"):
        command_tag_added(answer, ctx)
    ctx.emulator.store.add_subscriber(ctx.plan.emails["command_tagged"], tags=[ctx.plan.command_tag])
    assert "added" in command_tag_added(answer, ctx)
    with pytest.raises(CheckFailed, match="results 0"):
        command_tag_added(SdkCall("Commands.addTag", result=0), ctx)


def test_an_error_where_a_result_was_due_fails_and_the_wrong_error_fails(ctx: Context) -> None:
    with pytest.raises(CheckFailed, match="raised NotAuthorizedError"):
        site_stats(SdkCall("Stats.getSiteStats", error_name="NotAuthorizedError", error_message="Not authorized"), ctx)
    with pytest.raises(CheckFailed, match="expected RateLimitedError"):
        over_budget_write(SdkCall("Batch.importEvents(over budget)", error_name="Error", error_message="[500]"), ctx)
    with pytest.raises(CheckFailed, match="expected RateLimitedError, got a result"):
        over_budget_write(SdkCall("Batch.importEvents(over budget)", result=1), ctx)


def test_site_stats_must_match_the_store(ctx: Context) -> None:
    with pytest.raises(CheckFailed):
        site_stats(SdkCall("Stats.getSiteStats", result={"user_count": 0, "subscriber_count": 0,
                                                          "unsubscriber_count": 0}), ctx)


def test_a_missing_call_and_an_unchecked_call_are_failures(ctx: Context) -> None:
    checks = dict(PHASES)["readback"]
    outcomes = list(judge("default", "readback", checks, [SdkCall("Tags.getTags(extra)", result=[])], ctx))
    assert [(o.call, o.ok) for o in outcomes] == [
        ("Subscribers.getSubscribers(imported)", False), ("Tags.getTags(after writes)", False),
        ("Tags.getTags(extra)", False)]
    assert "did not report" in outcomes[0].detail and "no check covers" in outcomes[2].detail


def test_an_answer_of_the_wrong_shape_is_a_failure_not_a_crash(ctx: Context) -> None:
    checks = dict(PHASES)["readback"][1:]  # Tags.getTags(after writes) expects a list of JSON:API objects
    [outcome] = judge("default", "readback", checks, [SdkCall("Tags.getTags(after writes)", result=[3])], ctx)
    assert not outcome.ok and "not a JSON:API object" in outcome.detail


def test_an_unknown_mode_is_one_failed_setup_line() -> None:
    [outcome] = list(run_mode("no-such-mode"))
    assert not outcome.ok and outcome.phase == "setup"


def test_the_node_script_makes_exactly_the_calls_that_are_checked() -> None:
    script = SCRIPT.read_text()
    for phase, checks in PHASES:
        body = re.search(rf"^  {phase}: \[\n(.*?)^  \],$", script, re.S | re.M)
        assert body is not None, phase
        names = re.findall(r"^    \['([^']+)',", body.group(1), re.M)
        assert names == [name for name, _ in checks], phase
