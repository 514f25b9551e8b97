"""What every `bento-dlt` subcommand shares: exit codes, output, credentials options, error classification.

Output rules (for people and for schedulers alike): the final summary goes to stdout (as one JSON
object with `--json`), progress and notes go to stderr, `--quiet` silences everything but errors.
No message ever carries a key: errors from `bento_api` are redacted at the source, and `Console`
redacts every known key again before it writes anything.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

from bento_api import BentoConfigError, BentoError, BentoSettings, Budgets, redact, resolve_budgets, resolve_settings
from bento_api.settings import is_loopback

if TYPE_CHECKING:
    from bento_destination.config import BentoDestinationConfig

# -- exit codes (README, "The command line") ----------------------------------------------------------
EXIT_OK = 0
#: Bento unreachable, credentials, server, or a load that failed
EXIT_FAILED = 1
#: usage, or input that cannot be read (missing file, bad SQL)
EXIT_USAGE = 2
#: done, but rows were rejected past the threshold
EXIT_REJECTS = 3
#: busy: another run holds the lock (sysexits' EX_TEMPFAIL); nothing was sent
EXIT_BUSY = 75
#: stopped by SIGINT / SIGTERM (128 + the signal's number); the next run resumes
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

CREDENTIAL_KEYS = ("site_uuid", "publishable_key", "secret_key", "base_url")
SECRET_KEYS = ("site_uuid", "publishable_key", "secret_key")
SECTIONS = {"source": "sources", "destination": "destination"}
#: flags that are keywords of the destination's config too (the flag wins, as a keyword does)
DESTINATION_FLAGS = ("requests_per_minute", "emails_per_minute", "ledger_url")
#: an email address inside a reject's detail (`duplicate_email` names the address the rows share)
_EMAIL_IN_TEXT = re.compile(r"([^\s'\"`(),;:<>@]+)@([^\s'\"`(),;:<>@]+\.[^\s'\"`(),;:<>@]+)")


def _invoked_as() -> str:
    """How the user started us (`.venv/bin/bento-dlt`), so printed follow-up commands work when pasted."""
    first = sys.argv[0] if sys.argv else ""
    return first if os.path.basename(first) == "bento-dlt" else "bento-dlt"


PROG = _invoked_as()


class CliError(Exception):
    """A failure the command line reports as one message and one exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class Result:
    """What a subcommand hands back: its exit code, a JSON-ready summary and the human-readable text."""

    code: int
    summary: dict[str, Any]
    text: str = ""


@dataclass
class Console:
    """Writes notes and progress to stderr and the summary to stdout, redacting every known secret."""

    quiet: bool = False
    json_mode: bool = False
    secrets: list[str] = field(default_factory=list)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)

    def note(self, text: str) -> None:
        """Progress and remarks (stderr); silenced by --quiet."""
        if not self.quiet:
            print(self.redact(text), file=self.err, flush=True)

    def error(self, text: str) -> None:
        print(self.redact(text), file=self.err, flush=True)

    def result(self, result: Result) -> None:
        if self.json_mode:
            print(self.redact(json.dumps(result.summary, default=str, sort_keys=True)), file=self.out, flush=True)
        elif result.text and not self.quiet:
            print(self.redact(result.text), file=self.out, flush=True)


def known_secrets(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> list[str]:
    """Every key the process could know: flags, BENTO_* and SOURCES__/DESTINATION__BENTO__* variables."""
    env = os.environ if env is None else env
    values = [getattr(args, key, None) for key in SECRET_KEYS]
    for key in ("publishable_key", "secret_key"):
        values += [env.get(f"BENTO_{key.upper()}"), env.get(f"SOURCES__BENTO__{key.upper()}"),
                   env.get(f"DESTINATION__BENTO__{key.upper()}")]
    return [str(v) for v in values if v]


def mask_emails(text: str) -> str:
    """`'ann.lee@example.com'` -> `'a***@example.com'`: which domain, not whose address."""
    return _EMAIL_IN_TEXT.sub(lambda m: f"{m.group(1)[:1]}***@{m.group(2)}", text)


def reject_example(record: Mapping[str, Any], show_rows: bool) -> dict[str, Any]:
    """A rejected row as `--json` shows it: reason and detail, addresses masked; the row itself only on request.

    Scheduler logs keep what they are given; a row carries a person's email and fields.
    """
    if show_rows:
        return dict(record)
    out = {k: v for k, v in record.items() if k not in ("row", "detail")}
    out["detail"] = mask_emails(str(record.get("detail", "")))
    return out


# -- options -----------------------------------------------------------------------------------------


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a share between 0 and 1 (0.1 = 10%), got {text!r}")
    return value


def output_options() -> argparse.ArgumentParser:
    """--json and --quiet, accepted after any subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="print one JSON summary on stdout (for schedulers)")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress or summary; errors only")
    return parent


def default_pipelines_dir() -> str:
    """dlt's own default for this user (`~/.dlt/pipelines`, `/var/dlt/pipelines` as root, ...)."""
    from dlt.common.pipeline import get_dlt_pipelines_dir

    return str(get_dlt_pipelines_dir())


#: stands for dlt's default pipelines folder in help texts, until the help is shown
PIPELINES_DIR_TOKEN = "<dlt-pipelines-dir>"


class HelpFormatter(argparse.HelpFormatter):
    """Fills in dlt's default pipelines folder only when a help text is shown: asking dlt for it sets up
    dlt's run context, with its telemetry setting, before the demo could turn telemetry off."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return text.replace(PIPELINES_DIR_TOKEN, default_pipelines_dir().replace("%", "%%")) if text else text


def pipelines_dir_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--pipelines-dir", metavar="DIR",
                        help="where dlt keeps pipeline state, pending packages, rejects and reports "
                             f"(default: dlt's, here {PIPELINES_DIR_TOKEN}; keep it on persistent storage)")
    return parent


def credential_options() -> argparse.ArgumentParser:
    """Credentials and budgets; the flags win over dlt config and BENTO_* variables."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "Bento account (default: [sources.bento]/[destination.bento] in .dlt/secrets.toml, "
        "SOURCES__BENTO__*/DESTINATION__BENTO__*, then BENTO_* variables)"
    )
    group.add_argument("--base-url", help="API base URL (default https://app.bentonow.com/api/v1)")
    group.add_argument("--site-uuid", help="site UUID")
    group.add_argument("--publishable-key", help="publishable key (prefer the environment: flags show in `ps`)")
    group.add_argument("--secret-key", help="secret key (prefer the environment: flags show in `ps`)")
    budget = parent.add_argument_group("budgets (defaults: Bento's 60 requests/min per family, stats 30/hour, "
                                       "60 emails/min)")
    budget.add_argument("--requests-per-minute", type=positive_float, metavar="N",
                        help="fetch, batch and experimental requests per minute (or BENTO_REQUESTS_PER_MINUTE)")
    budget.add_argument("--stats-requests-per-hour", type=positive_float, metavar="N",
                        help="stats requests per hour (or BENTO_STATS_REQUESTS_PER_HOUR)")
    budget.add_argument("--emails-per-minute", type=positive_float, metavar="N",
                        help="emails sent per minute on /batch/emails, Bento's send pace (default 60; or "
                             "BENTO_EMAILS_PER_MINUTE)")
    return parent


# -- credentials -------------------------------------------------------------------------------------


def _dlt_value(section: str, key: str) -> str | None:
    """`[<section>.bento] <key>` from dlt's providers (env, .dlt/secrets.toml, .dlt/config.toml).

    For the source's side and for telling where a value comes from; the destination's values come from its
    spec (`destination_config`).
    """
    import dlt

    for accessor in (dlt.secrets, dlt.config):
        try:
            value: Any = accessor.get(f"{section}.bento.{key}")
        except Exception:  # a provider that cannot answer means no value
            value = None
        if value:
            return str(value)
    return None


def credential_origin(args: argparse.Namespace, side: str, key: str, env: Mapping[str, str] | None = None) -> str:
    """Where a credential comes from, by name only (never the value)."""
    env = os.environ if env is None else env
    section = SECTIONS[side]
    if getattr(args, key, None):
        return f"--{key.replace('_', '-')}"
    if env.get(f"{section.upper()}__BENTO__{key.upper()}"):
        return f"{section.upper()}__BENTO__{key.upper()}"
    if _dlt_value(section, key):
        return f"[{section}.bento] in .dlt/secrets.toml or config.toml"
    if env.get(f"BENTO_{key.upper()}"):
        return f"BENTO_{key.upper()}"
    return "default" if key == "base_url" else "missing"


def destination_config(args: argparse.Namespace, pipeline_name: str | None = None) -> BentoDestinationConfig:
    """The destination's spec resolved as the load of `pipeline_name` resolves it, the flags given as keywords."""
    from bento_destination.config import resolve_destination_config

    flags = {key: getattr(args, key, None) for key in (*CREDENTIAL_KEYS, *DESTINATION_FLAGS)}
    return resolve_destination_config(pipeline_name, **flags)


def resolve_credentials(args: argparse.Namespace, side: str, pipeline_name: str | None = None) -> BentoSettings:
    """Flags > dlt config of the side (`[sources.bento]` or `[destination.bento]`) > BENTO_* variables."""
    if side == "destination":
        return destination_config(args, pipeline_name).settings()
    section = SECTIONS[side]
    given = {key: getattr(args, key, None) or _dlt_value(section, key) for key in CREDENTIAL_KEYS}
    return resolve_settings(given["site_uuid"], given["publishable_key"], given["secret_key"], given["base_url"],
                            sections=(section,))


def resolve_cli_budgets(args: argparse.Namespace) -> Budgets:
    return resolve_budgets(getattr(args, "requests_per_minute", None), getattr(args, "stats_requests_per_hour", None),
                           emails_per_minute=getattr(args, "emails_per_minute", None))


def flag_credentials(args: argparse.Namespace) -> dict[str, Any]:
    """Only the credentials given as flags (the rest is left to dlt's injection and BENTO_*)."""
    return {key: getattr(args, key) for key in CREDENTIAL_KEYS if getattr(args, key, None)}


def is_local(base_url: str) -> bool:
    """True for the emulator (a loopback host): no confirmation needed, no real account touched."""
    return is_loopback(urlsplit(base_url).hostname or "")


def mask(value: str) -> str:
    """A site_uuid shown so a person can tell accounts apart, without printing it whole."""
    return value if len(value) <= 8 else f"{value[:4]}…{value[-4:]}"


# -- errors ------------------------------------------------------------------------------------------


def _chain(error: BaseException) -> Iterable[BaseException]:
    """The error and what it wraps (dlt nests the sink's errors as `.exception` and as causes)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        nested = getattr(current, "exception", None)
        current = nested if isinstance(nested, BaseException) else (current.__cause__ or current.__context__)


def classify(error: BaseException) -> tuple[int, str]:
    """Exit code and message for an exception that ended a command."""
    chain = list(_chain(error))
    for item in chain:
        if isinstance(item, CliError):
            return item.code, item.message
    from bento_destination.ledger import LedgerBusyError
    from bento_destination.runcontext import BentoRunCancelled
    from bento_destination.runlock import BentoBusyError

    for item in chain:
        if isinstance(item, BentoBusyError | LedgerBusyError):  # another run holds the lock or the ledger file
            return EXIT_BUSY, str(item)
        if isinstance(item, BentoRunCancelled):
            return (EXIT_SIGTERM if item.signal_number == signal.SIGTERM else EXIT_SIGINT), str(item)
    for item in chain:
        if isinstance(item, BentoConfigError):
            return EXIT_FAILED, f"configuration: {item}"
        if isinstance(item, BentoError):
            return EXIT_FAILED, str(item)
    names = {type(item).__name__ for item in chain}
    innermost = chain[-1]
    if names & {"DestinationTerminalException", "DestinationTransientException"}:
        return EXIT_FAILED, str(innermost)
    if "UnknownDestinationModule" in names or "InvalidDestinationReference" in names:
        return EXIT_USAGE, str(innermost)
    if "ConfigFieldMissingException" in names:
        return EXIT_FAILED, f"configuration missing: {innermost}"
    return EXIT_FAILED, f"{type(innermost).__name__}: {innermost}"
