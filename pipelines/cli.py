"""The `bento-dlt` command line (subcommands are filled in one module each)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from bento_api.emulator import cli as emulator_cli

    parser = argparse.ArgumentParser(prog="bento-dlt", description="Bento <-> data pipelines on dlt")
    commands = parser.add_subparsers(dest="command", required=True)
    emulator = commands.add_parser("emulator", help="run a local Bento-compatible server for tests")
    emulator_cli.add_arguments(emulator)
    emulator.set_defaults(handler=emulator_cli.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
