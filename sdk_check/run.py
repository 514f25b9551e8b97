"""Run Bento's Node SDK against the emulator in each given mode; one line per SDK call; exit 1 on any failure.

    python -m sdk_check.run [MODE ...]      # default: the emulator's `default` mode

Needs `node` and the SDK installed by `npm ci` in sdk_check/node (`make sdk-check` does both).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bento_api.emulator import BentoEmulator, EmulatorConfig

from .checks import PHASES, Check, CheckFailed, Context
from .node_client import Credentials, NodeUnavailable, SdkCall, run_phase, sdk_version
from .plan import Plan

DEFAULT_MODE = "default"
WRONG_SECRET_KEY = "sk_wrong_0000000000000000000000000"
BUDGETED_FAMILIES = ("fetch", "batch")  # the 429 phase gives these one request each


@dataclass(frozen=True)
class Outcome:
    mode: str
    phase: str
    call: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} [{self.mode}] {self.phase:<12} {self.call}: {self.detail}"


def emulator_config(mode: str) -> EmulatorConfig:
    """Budgets far above Bento's (the 429 phase sets its own); `mode` only where the emulator has modes."""
    options: dict[str, Any] = {"requests_per_minute": 1e7, "stats_requests_per_hour": 1e9,
                               "bucket_capacity": 1e6, "subscribers": 20}
    if "mode" in {f.name for f in dataclasses.fields(EmulatorConfig)}:
        options["mode"] = mode
    elif mode != DEFAULT_MODE:
        raise ValueError(f"this emulator has no modes, so it cannot run in mode {mode!r}")
    return EmulatorConfig(**options)


def apply_queued_writes(emulator: BentoEmulator) -> None:
    """Where the emulator queues writes as Bento does, apply them before checking the store."""
    drain = getattr(emulator, "drain", None)
    if callable(drain):
        drain()


def judge(mode: str, phase: str, checks: Sequence[tuple[str, Check]], calls: list[SdkCall],
          ctx: Context) -> Iterator[Outcome]:
    """One outcome per expected call, and a failure for any call the script made that nothing checks."""
    by_name = {c.call: c for c in calls}
    for name, check in checks:
        call = by_name.pop(name, None)
        if call is None:
            yield Outcome(mode, phase, name, False, "the Node script did not report this call")
            continue
        try:
            yield Outcome(mode, phase, name, True, check(call, ctx))
        except CheckFailed as exc:
            yield Outcome(mode, phase, name, False, str(exc))
        except (LookupError, TypeError, AttributeError, ValueError) as exc:  # an answer of an unexpected shape
            yield Outcome(mode, phase, name, False, f"unexpected answer {str(call.result)[:200]}: {exc!r}")
    for name in by_name:
        yield Outcome(mode, phase, name, False, "the Node script made a call no check covers")


def user_agent_outcome(mode: str, emulator: BentoEmulator) -> Outcome:
    """The SDK names itself `bento-node-<site_uuid>`, and the emulator let it through."""
    expected = f"bento-node-{emulator.site_uuid}"
    records = emulator.request_log
    seen = sorted({str(r.user_agent) for r in records})
    refused = [r.path for r in records if r.status == 403]
    ok = bool(records) and seen == [expected] and not refused
    detail = (f"{len(records)} requests, all with {expected!r}, none refused" if ok
              else f"User-Agents {seen}, refused with 403: {refused}")
    return Outcome(mode, "all", "User-Agent", ok, detail)


def run_mode(mode: str) -> Iterator[Outcome]:
    plan = Plan()
    try:
        config = emulator_config(mode)
    except (ValueError, TypeError) as exc:
        yield Outcome(mode, "setup", "emulator", False, str(exc))
        return
    with BentoEmulator(config) as emulator:
        ctx = Context(emulator, plan, plan.set_up(emulator), writes_may_be_queued=mode != DEFAULT_MODE)
        plan_json = plan.to_json(emulator)
        good = Credentials(emulator.site_uuid, emulator.publishable_key, emulator.secret_key, emulator.base_url)
        for phase, checks in PHASES:
            credentials = good
            if phase == "unauthorized":
                credentials = dataclasses.replace(good, secret_key=WRONG_SECRET_KEY)
            if phase == "rate_limited":
                for family in BUDGETED_FAMILIES:
                    emulator.set_rate_limit(family, per_hour=1, capacity=1, retry_after=emulator.config.retry_after)
            try:
                calls = run_phase(phase, credentials, plan_json)
            except (RuntimeError, OSError) as exc:
                yield Outcome(mode, phase, "node", False, str(exc))
                continue
            apply_queued_writes(emulator)
            yield from judge(mode, phase, checks, calls, ctx)
        yield user_agent_outcome(mode, emulator)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdk_check.run", description=__doc__.splitlines()[0])
    parser.add_argument("modes", nargs="*", default=[DEFAULT_MODE], help="emulator modes to run (default: default)")
    args = parser.parse_args(argv)
    try:
        version = sdk_version()
    except NodeUnavailable as exc:
        print(f"sdk_check: {exc}", file=sys.stderr)
        return 2
    print(f"Bento's Node SDK {version} against the emulator, modes: {', '.join(args.modes)}")
    passed = failed = 0
    for mode in args.modes:
        for outcome in run_mode(mode):
            print(outcome.line(), flush=True)
            passed, failed = (passed + 1, failed) if outcome.ok else (passed, failed + 1)
    print(f"sdk_check: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
