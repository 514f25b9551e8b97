"""The `bento-dlt` command line: the parser and the dispatch; each subcommand lives in its own module.

    bento-dlt demo                      both directions against a local emulator (never a real account)
    bento-dlt extract [--to duckdb|parquet|<dlt destination>] ...       Bento -> warehouse (read-only)
    bento-dlt sync --from INPUT --as subscribers|events|commands|emails ...    warehouse -> Bento
    bento-dlt emails uncertain | release --run ID --yes     emails whose send may have reached Bento
    bento-dlt rejects | report | doctor | emulator

Exit codes (README, "The command line"): 0 done; 1 failed (Bento unreachable, credentials, server);
2 usage or unreadable input; 3 done, but rows were rejected past the threshold; 75 busy (another run holds
the lock); 130 / 143 stopped by SIGINT / SIGTERM (the next run resumes).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from .cli_common import (
    EXIT_FAILED,
    EXIT_REJECTS,
    EXIT_USAGE,
    Console,
    HelpFormatter,
    Result,
    classify,
    credential_options,
    known_secrets,
    output_options,
    pipelines_dir_option,
)
from .telemetry import turn_off_dlt_telemetry

Handler = Callable[[argparse.Namespace, Console], Result]

EPILOG = "exit codes: 0 done; 1 failed (Bento unreachable, credentials, server); 2 usage or unreadable input; " \
         "3 done, but rows were rejected past the threshold; 75 busy (another run holds the lock); " \
         "130 / 143 stopped by SIGINT / SIGTERM (the next run resumes)"


def build_parser() -> argparse.ArgumentParser:
    from bento_api.emulator import cli as emulator_cli

    from . import cli_emails, cli_extract, cli_inspect, cli_sync, demo

    parser = argparse.ArgumentParser(prog="bento-dlt", description="Bento <-> data pipelines on dlt", epilog=EPILOG,
                                     formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    out, account, pipes = output_options(), credential_options(), pipelines_dir_option()

    def add(name: str, help_text: str, handler: Handler, *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text, epilog=EPILOG, parents=[*parents, out],
                                  formatter_class=HelpFormatter)
        sub.set_defaults(handler=handler)
        return sub

    demo.add_arguments(add("demo", "push a sample CRM into a local Bento emulator and read it all back", demo.run))
    cli_extract.add_arguments(add("extract", "read Bento into DuckDB, Parquet or any dlt destination (read-only)",
                                  cli_extract.run, account, pipes))
    cli_sync.add_arguments(add("sync", "send a table, query or file to Bento as subscribers, events, commands or "
                                       "emails", cli_sync.run, account, pipes))
    cli_emails.add_arguments(add("emails", "list the emails whose send may have reached Bento (uncertain), or release "
                                           "them after checking Bento's logs", cli_emails.run, pipes))
    cli_inspect.add_rejects_arguments(add("rejects", "list rows a sync rejected, with reasons",
                                          cli_inspect.run_rejects, pipes))
    cli_inspect.add_report_arguments(add("report", "show the reports of the last syncs", cli_inspect.run_report, pipes))
    cli_inspect.add_doctor_arguments(add("doctor", "check credentials, site_uuid and User-Agent; print the limits",
                                         cli_inspect.run_doctor, account))
    about = ("run a local Bento-compatible server (loopback only) to try syncs and extracts without touching a "
             "real account; it prints the BENTO_* variables that point the other commands at it")
    emulator = commands.add_parser("emulator", help="run a local Bento-compatible server for tests",
                                   description=about)
    emulator_cli.add_arguments(emulator)
    emulator.set_defaults(handler=None, run_emulator=emulator_cli.run)
    return parser


def _configure_logging(console: Console) -> None:
    """Library warnings (retries, slow-downs) go to stderr; --quiet keeps errors only.

    dlt's own log stays silent unless LOG_LEVEL asks for detail: it logs a failed load job with its
    traceback, and the command already says what failed, in one line.
    """
    chosen = os.environ.get("LOG_LEVEL")
    level = logging.ERROR if console.quiet else getattr(logging, (chosen or "WARNING").upper(), 30)
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RUNTIME__LOG_LEVEL", chosen.upper() if chosen else "CRITICAL")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.handler is None:
        turn_off_dlt_telemetry()  # the emulator command serves loopback only and reaches nothing else
        return int(args.run_emulator(args))
    console = Console(quiet=args.quiet, json_mode=args.json, secrets=known_secrets(args))
    _configure_logging(console)
    try:
        result = _run(args, console)
        console.result(result)
        if console.quiet and result.code == EXIT_REJECTS:  # otherwise --quiet would leave exit 3 unexplained
            why = result.summary.get("error") or "rows were rejected past the threshold"
            console.error(f"bento-dlt {args.command}: {why} (exit 3)")
    except BrokenPipeError:  # `bento-dlt ... | head`: the reader left; send the rest nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    return result.code


def _run(args: argparse.Namespace, console: Console) -> Result:
    """The handler's result; every failure becomes one message and an exit code, never a traceback."""
    try:
        result: Result = args.handler(args, console)
        return result
    except KeyboardInterrupt:
        console.error(f"bento-dlt {args.command}: interrupted")
        return Result(130, {"command": args.command, "ok": False, "exit_code": 130, "error": "interrupted"})
    except Exception as error:
        if os.environ.get("BENTO_DLT_TRACEBACK"):
            raise
        code, message = classify(error)
        console.error(f"bento-dlt {args.command}: {message}")
        if code == EXIT_USAGE and not args.json:
            console.error(f"(see: bento-dlt {args.command} --help)")
        return Result(code, {"command": args.command, "ok": False, "exit_code": code, "error": message})


if __name__ == "__main__":
    sys.exit(main())
