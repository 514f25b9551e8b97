"""Pacing benchmark: sustained traffic through the client against the emulator limited to R requests/min.

Claim (issue 3): the client uses at least 95% of R and meets no 429 after the first minute.
Several threads share one client (as dlt's parallel load jobs do) and send as fast as the client lets
them; the emulator, in its own process, enforces R with a token bucket of capacity 2 (Bento-like).

    .venv/bin/python -m bench.bench_pacing --rpm 600 --seconds 90
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from bento_api import BentoClient, BentoRateLimitedError, resolve_budgets, resolve_settings

from .emulator_process import emulator_process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rpm", type=float, default=600.0, help="the emulator's limit and the client's budget")
    parser.add_argument("--seconds", type=float, default=90.0, help="how long to send")
    parser.add_argument("--workers", type=int, default=4, help="threads sharing one client")
    parser.add_argument("--capacity", type=float, default=2.0, help="the emulator's token bucket capacity")
    parser.add_argument("--path", default="/fetch/tags")
    args = parser.parse_args()

    emu_args = ["--requests-per-minute", str(args.rpm), "--capacity", str(args.capacity), "--no-log-bodies"]
    with emulator_process(emu_args) as emu:
        settings = resolve_settings(**emu.credentials, env={})
        budgets = resolve_budgets(requests_per_minute=args.rpm, max_in_flight=args.workers, env={})
        with BentoClient(settings, budgets) as client:
            stop_at = time.monotonic() + args.seconds
            gave_up = [0]

            def work() -> None:
                while time.monotonic() < stop_at:
                    try:
                        client.get(args.path)
                    except BentoRateLimitedError:
                        gave_up[0] += 1

            threads = [threading.Thread(target=work) for _ in range(args.workers)]
            started = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
        log = [r for r in emu.log() if r["path"] == args.path]
    t0 = min(r["t"] for r in log)
    ok = [r for r in log if r["status"] == 200]
    limited = [r for r in log if r["status"] == 429]
    late_429 = [r for r in limited if r["t"] - t0 > 60.0]
    # Use of the budget: successful requests per minute over the span they were sent in.
    span = max(r["t"] for r in ok) - min(r["t"] for r in ok)
    achieved_rpm = (len(ok) - 1) / span * 60.0 if span > 0 else 0.0
    result = {
        "budget_rpm": args.rpm,
        "seconds": round(elapsed, 1),
        "workers": args.workers,
        "requests_ok": len(ok),
        "achieved_rpm": round(achieved_rpm, 1),
        "budget_used": round(achieved_rpm / args.rpm, 4),
        "status_429_total": len(limited),
        "status_429_after_first_minute": len(late_429),
        "client_gave_up": gave_up[0],
    }
    print(json.dumps(result, indent=2))
    held = result["budget_used"] >= 0.95 and not late_429
    print("HOLDS" if held else "DOES NOT HOLD", "(>= 95% of the budget, no 429 after the first minute)")


if __name__ == "__main__":
    main()
