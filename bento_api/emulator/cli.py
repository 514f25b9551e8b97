"""Command line: `python -m bento_api.emulator` and the `bento-dlt emulator` subcommand.

add_arguments() and run() are separate so the project's CLI can mount the same options.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

from .config import MODE_ENV, RECORDS_ENV, EmulatorConfig
from .emulator import BentoEmulator
from .faults import KINDS, parse_fault_spec

_SIZES = ("tags", "fields", "segments", "broadcasts", "sequences", "workflows", "subscribers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the emulator's options; every default lives in EmulatorConfig, not here."""
    m = parser.add_argument_group("mode")
    m.add_argument("--mode", choices=("default", "bento-like", "bento_like"),
                   help=f"default: writes applied at once, only a missing User-Agent blocked; bento-like: imports "
                        f"and commands queued, 429 without Retry-After, 413/422 on oversized requests, library "
                        f"User-Agents blocked (default: ${MODE_ENV}, else default)")
    m.add_argument("--write-delay", type=float, metavar="SECONDS",
                   help="bento-like mode: seconds before a queued write is applied (default 60; "
                        "POST /_emulator/drain applies them at once)")
    g = parser.add_argument_group("server")
    g.add_argument("--host", help="loopback address to bind (default 127.0.0.1; others are refused)")
    g.add_argument("--port", type=int, help="port (default 0 = a free port, printed at start)")
    g.add_argument("--seed", type=int, help="seed for the data and the fault RNG (default 1)")
    g.add_argument("--site-uuid", help="test site_uuid to accept")
    g.add_argument("--publishable-key", help="test publishable key to accept")
    g.add_argument("--secret-key", help="test secret key to accept")
    g.add_argument("--author", action="append", dest="authors", metavar="EMAIL",
                   help="sender allowed as `from` on /batch/emails (repeatable; default author@example.com)")
    g.add_argument("--non-enterprise", action="store_true",
                   help="answer /fetch/search with 403, as for an account without Enterprise")
    g.add_argument("--no-log-bodies", action="store_true",
                   help="keep only counts and emails of requests in the log (large benchmarks)")
    g.add_argument("--records", choices=("full", "counts"),
                   help=f"full: keep every subscriber, event and request; counts: keep counts, hashes of emails and "
                        f"digests of payloads only (ten-million-row benchmarks; default: ${RECORDS_ENV}, else full)")
    d = parser.add_argument_group("data")
    d.add_argument("--page-size", type=int, help="page size of broadcasts, sequences, workflows (default 25)")
    d.add_argument("--search-page-size", type=int, help="page size of /fetch/search (default 100)")
    for name in _SIZES:
        d.add_argument(f"--{name}", type=int, metavar="N", help=f"number of seeded {name}")
    r = parser.add_argument_group("rate limits (defaults: Bento's 60/min per family, stats 30/hour, capacity 2)")
    r.add_argument("--no-rate-limit", action="store_true", help="disable every rate limit")
    r.add_argument("--requests-per-minute", type=float, metavar="R", help="fetch, batch and experimental budget")
    r.add_argument("--stats-per-hour", type=float, metavar="H", help="stats budget")
    r.add_argument("--capacity", type=float, metavar="C", help="token bucket capacity (burst)")
    r.add_argument("--retry-after", choices=("seconds", "http-date", "none"),
                   help="Retry-After on 429: integer seconds, an HTTP-date, or no header "
                        "(default: seconds; none in the bento-like mode)")
    f = parser.add_argument_group("faults")
    f.add_argument("--fault", action="append", default=[], metavar="KIND:KEY=VALUE,...",
                   help=f"inject a fault (repeatable), e.g. server_error:probability=0.2 or latency:seconds=0.3; "
                        f"kinds: {', '.join(sorted(KINDS))}")


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """EmulatorConfig from parsed options; options left out keep EmulatorConfig's defaults."""
    kw: dict[str, Any] = {}
    if args.mode is not None:
        kw["mode"] = args.mode
    if args.write_delay is not None:
        kw["write_delay_seconds"] = args.write_delay
    for name in ("host", "port", "seed", "site_uuid", "publishable_key", "secret_key", "page_size",
                 "search_page_size", *_SIZES):
        value = getattr(args, name, None)
        if value is not None:
            kw[name] = value
    if args.authors:
        kw["authors"] = tuple(args.authors)
    if args.non_enterprise:
        kw["enterprise"] = False
    if args.no_log_bodies:
        kw["log_bodies"] = False
    if args.records is not None:
        kw["records"] = args.records
    if args.no_rate_limit:
        kw["rate_limits_enabled"] = False
    if args.requests_per_minute is not None:
        kw["requests_per_minute"] = args.requests_per_minute
    if args.stats_per_hour is not None:
        kw["stats_requests_per_hour"] = args.stats_per_hour
    if args.capacity is not None:
        kw["bucket_capacity"] = args.capacity
    if args.retry_after is not None:
        kw["retry_after"] = None if args.retry_after == "none" else args.retry_after
    kw["faults"] = tuple(parse_fault_spec(spec) for spec in args.fault)
    return EmulatorConfig(**kw)


def _print_banner(emu: BentoEmulator, out: TextIO) -> None:
    print(f"Bento emulator listening on {emu.base_url}", file=out)
    if emu.config.bento_like:
        print(f"Mode bento_like: imports, commands and email sends are queued for {emu.config.write_delay_seconds:g}s "
              f"(POST {emu.admin_url}/drain applies them now)", file=out)
    if emu.config.counts_only:
        print(f"Records: counts (no records kept; GET {emu.admin_url}/summary has the counts and digests)", file=out)
    print(f"Admin endpoints: {emu.admin_url}/ (log, summary, faults, rate_limit, subscribers, events, queue, drain)",
          file=out)
    print("# test credentials, for your shell:", file=out)
    for key, value in emu.env().items():
        print(f"export {key}={value}", file=out)
    print("Press Ctrl-C to stop.", file=out, flush=True)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Start the emulator, print its URL and credentials, serve until Ctrl-C or SIGTERM. Exit code."""
    stream = out if out is not None else sys.stdout
    try:
        cfg = config_from_args(args)
    except ValueError as exc:
        print(f"bento emulator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        emu = BentoEmulator(cfg).start()
    except OSError as exc:
        print(f"bento emulator: cannot listen on {cfg.host}:{cfg.port}: {exc}", file=sys.stderr)
        return 1
    try:
        _print_banner(emu, stream)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        total = emu.log.total
        emu.stop()
    print(f"Bento emulator stopped after {total} API requests.", file=stream, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bento_api.emulator",
                                     description="Run a local Bento API emulator on 127.0.0.1 for tests.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
