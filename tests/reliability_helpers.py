"""Shared pieces of the reliability suite (issue 9): sentinel credentials, a secret scanner, an independent
checker of request bodies against Bento's rules, deterministic row generators, and the crash-test child.

The checker does not import the destination's own rules (bento_destination.values / settings): it is a second,
independent reading of the row contract (docs/destination.md, docs/bento-api.md) so that a bug in the
destination's validation cannot hide itself.

Run as a module it is the crash-test child: `python -m tests.reliability_helpers crash-child <json options>`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from bento_api.emulator import EmulatorConfig, RequestRecord

from .destination_support import must_isolate

# -- sentinel credentials ---------------------------------------------------------------------------

SENTINEL_PK: Final = "pk_SENTINEL_4b1d9e7c2a6f40e3b8d5"
SENTINEL_SK: Final = "sk_SENTINEL_9c3e5a7b1d2f4e6a8c0b"
_PAIR: Final = f"{SENTINEL_PK}:{SENTINEL_SK}".encode()
#: every form of the keys that must never show: each key, and the Basic auth token (both base64 alphabets)
SECRET_FORMS: Final[tuple[str, ...]] = (
    SENTINEL_PK,
    SENTINEL_SK,
    base64.b64encode(_PAIR).decode(),
    base64.urlsafe_b64encode(_PAIR).decode(),
    base64.b64encode(_PAIR).decode().rstrip("="),
)
#: an emulator's budget far above Bento's so the suite never waits on the real 60/min (faults add their own)
FAST_LIMITS: Final[dict[str, Any]] = {
    "requests_per_minute": 1e7, "stats_requests_per_hour": 1e9, "bucket_capacity": 1e6,
}
#: the client budget used against the emulator (Bento's default stays 60/min)
CLIENT_RPM: Final = 600_000.0


def sentinel_config(**overrides: Any) -> EmulatorConfig:
    """An emulator accepting only the sentinel keys, with budgets raised (no seed subscribers unless asked)."""
    options: dict[str, Any] = {
        **FAST_LIMITS, "publishable_key": SENTINEL_PK, "secret_key": SENTINEL_SK, "subscribers": 0,
    }
    options.update(overrides)
    return EmulatorConfig(**options)


def secrets_in(text: str | bytes) -> list[str]:
    """Which secret forms occur in `text` (bytes are searched as bytes: binary-safe)."""
    if isinstance(text, bytes):
        return [form for form in SECRET_FORMS if form.encode() in text]
    return [form for form in SECRET_FORMS if form in text]


def secrets_in_tree(root: Path) -> list[tuple[str, str]]:
    """(file, secret form) for every file under `root` holding a secret, binary files included."""
    found: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found.extend((str(path), form) for form in secrets_in(path.read_bytes()))
    return found


def count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file())


def clean_environ(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if not must_isolate(k)}


def assert_no_secrets(*texts: str | bytes, root: Path | None = None) -> int:
    """Fail if any text, or any file under `root`, holds a sentinel secret; returns how many places were searched."""
    leaks = [(f"text #{i}", form) for i, text in enumerate(texts) for form in secrets_in(text)]
    searched = len(texts)
    if root is not None and root.exists():
        leaks += secrets_in_tree(root)
        searched += count_files(root)
    assert not leaks, f"sentinel secrets leaked: {leaks[:5]}"
    return searched


# -- Bento's rules, read independently ---------------------------------------------------------------

_EMAIL: Final = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
_MAXIMA: Final = {"/batch/subscribers": 1000, "/batch/events": 1000, "/batch/emails": 60, "/fetch/commands": 100}
_WRAPPERS: Final = {
    "/batch/subscribers": "subscribers", "/batch/events": "events", "/batch/emails": "emails",
    "/fetch/commands": "command",
}
_COMMANDS: Final = {
    "add_tag", "add_tag_via_event", "remove_tag", "add_field", "remove_field", "subscribe", "unsubscribe",
    "change_email",
}
_FLAT: Final = (str, int, float, bool)


def email_problem(value: Any, where: str) -> str | None:
    if not isinstance(value, str):
        return f"{where}: email is {type(value).__name__}, not text"
    if value != value.strip().lower():
        return f"{where}: email {value[:60]!r} is not trimmed and lower-cased"
    if len(value) > 254 or not _EMAIL.match(value):
        return f"{where}: email {value[:60]!r} is not valid"
    return None


def _finite(value: Any, where: str) -> list[str]:
    """NaN/inf anywhere, or a type JSON does not have."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{where}: non-finite number {value}"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _finite(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _finite(v, f"{where}[{i}]")]
    if value is None or isinstance(value, str | int | bool):
        return []
    return [f"{where}: {type(value).__name__} is not JSON"]


def _flat_fields(fields: Mapping[str, Any], where: str) -> list[str]:
    out = []
    for key, value in fields.items():
        if not isinstance(key, str) or not key:
            out.append(f"{where}: empty or non-text key {key!r}")
        elif value is not None and not isinstance(value, _FLAT):
            out.append(f"{where}.{key}: nested value {type(value).__name__} where Bento wants a flat one")
    return out


def _iso(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def row_problems(path: str, row: Any, where: str) -> list[str]:
    """What Bento would refuse in one row of a request to `path`."""
    if not isinstance(row, dict):
        return [f"{where}: row is {type(row).__name__}, not an object"]
    out: list[str] = []
    if path == "/batch/subscribers":
        out += filter(None, [email_problem(row.get("email"), where)])
        for key in ("tags", "remove_tags"):
            if key in row and not isinstance(row[key], str):
                out.append(f"{where}.{key}: tags must be one comma string")
        out += _flat_fields({k: v for k, v in row.items() if k not in ("email", "tags", "remove_tags")}, where)
    elif path == "/batch/events":
        out += filter(None, [email_problem(row.get("email"), where)])
        if not isinstance(row.get("type"), str) or not row["type"].strip():
            out.append(f"{where}: event without a type")
        if "fields" in row:
            if not isinstance(row["fields"], dict):
                out.append(f"{where}.fields: not an object")
            else:
                out += _flat_fields(row["fields"], f"{where}.fields")
        if "details" in row and not isinstance(row["details"], dict):
            out.append(f"{where}.details: not an object")
        if "date" in row and not _iso(row["date"]):
            out.append(f"{where}.date: {row['date']!r} is not ISO 8601")
        unexpected = set(row) - {"email", "type", "fields", "details", "date"}
        if unexpected:
            out.append(f"{where}: unexpected keys {sorted(unexpected)}")
    elif path == "/fetch/commands":
        if row.get("command") not in _COMMANDS:
            out.append(f"{where}: unknown command {row.get('command')!r}")
        out += filter(None, [email_problem(row.get("email"), where)])
    elif path == "/batch/emails":
        for key in ("to", "from"):
            out += filter(None, [email_problem(row.get(key), f"{where}.{key}")])
        for key in ("subject", "html_body"):
            if not isinstance(row.get(key), str) or not row[key]:
                out.append(f"{where}.{key}: missing")
    return out


def request_problems(record: RequestRecord) -> list[str]:
    """Every rule a logged write request breaks (empty list: Bento would take it as it is)."""
    if record.path not in _MAXIMA or record.method != "POST":
        return []
    where = f"{record.method} {record.path}"
    body = record.body
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return [f"{where}: body is not strict JSON ({exc})"]
    if not isinstance(body, dict):
        return [f"{where}: body is {type(body).__name__}"]
    rows = body.get(_WRAPPERS[record.path])
    if record.path == "/fetch/commands" and isinstance(rows, dict):
        rows = [rows]
    if not isinstance(rows, list) or not 1 <= len(rows) <= _MAXIMA[record.path]:
        return [f"{where}: {len(rows) if isinstance(rows, list) else 'no'} rows (1..{_MAXIMA[record.path]} allowed)"]
    out = _finite(body, where)
    for index, row in enumerate(rows):
        out += row_problems(record.path, row, f"{where}[{index}]")
    return out


def log_problems(records: Iterable[RequestRecord]) -> list[str]:
    return [p for r in records for p in request_problems(r)]


# -- deterministic rows -----------------------------------------------------------------------------

PLANS: Final = ("free", "pro", "team")


def subscriber_row(i: int, *, bad_every: int = 0) -> dict[str, Any]:
    """Subscriber i: fields plan/score/first_name, tags; every `bad_every`-th has an invalid email."""
    bad = bad_every and i % bad_every == bad_every - 1
    return {
        "email": f"s{i}-at-example.com" if bad else f"s{i}@soak.example.com",
        "first_name": f"Ünïcødé {i} ✓",
        "plan": PLANS[i % 3],
        "score": i * 0.5,
        "tags": ["customer", f"cohort-{i % 5}"],
    }


def expected_subscriber(i: int) -> tuple[dict[str, Any], list[str]]:
    return {"first_name": f"Ünïcødé {i} ✓", "plan": PLANS[i % 3], "score": i * 0.5}, ["customer", f"cohort-{i % 5}"]


EVENT_PEOPLE: Final = 700


def event_row(i: int, *, bad_every: int = 0, unkeyed_every: int = 0) -> dict[str, Any]:
    """Event i of person e{i % 700} (tier by person): keyed (`unique_key` k{i}) unless every `unkeyed_every`-th.

    `n` (sent in `details`) tells events apart; every `bad_every`-th has a blank type.
    """
    row: dict[str, Any] = {"email": f"e{i % EVENT_PEOPLE}@soak.example.com", "type": "$purchase", "n": i,
                           "fields__tier": PLANS[i % EVENT_PEOPLE % 3]}
    if not (unkeyed_every and i % unkeyed_every == 0):
        row["unique_key"] = f"k{i}"
    if bad_every and i % bad_every == bad_every - 1:
        row["type"] = "   "  # refused: an event needs a type
    return row


def chunks(make: Any, n: int, size: int = 1000, **kwargs: Any) -> Iterator[list[dict[str, Any]]]:
    """Rows 0..n-1 of `make(i, **kwargs)` yielded as pages (dlt resources take lists)."""
    for start in range(0, n, size):
        yield [make(i, **kwargs) for i in range(start, min(n, start + size))]


# -- crash-test child -------------------------------------------------------------------------------

CRASH_SUBSCRIBERS: Final = 3000
CRASH_EVENTS: Final = 2000


def crash_dataset(scale: int = 1) -> dict[str, Any]:
    """The data every crash-test run sends (the same each time): subscribers with fields and tags, keyed events."""
    import dlt

    n_subs, n_events = CRASH_SUBSCRIBERS * scale, CRASH_EVENTS * scale

    @dlt.resource(name="subscribers")
    def subscribers() -> Iterator[list[dict[str, Any]]]:
        yield from chunks(subscriber_row, n_subs, 500)

    @dlt.resource(name="events")
    def events() -> Iterator[list[dict[str, Any]]]:
        yield from chunks(event_row, n_events, 500)

    return {"resources": [subscribers(), events()], "n_subscribers": n_subs, "n_events": n_events}


def crash_child(options: Mapping[str, Any]) -> int:
    """One pipeline run. mode `steps`: extract, normalize, load one by one, printing each phase (the parent kills
    it inside one); mode `sync`: how a user reruns it (bento_destination.sync: pending packages first, then data)."""
    import logging

    import dlt

    from bento_destination import bento
    from bento_destination.sync import file_rotation, sync

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    data = crash_dataset(int(options.get("scale", 1)))
    name, pipelines_dir = str(options["pipeline_name"]), str(options["pipelines_dir"])
    file_max_items = int(options.get("file_max_items", 500))
    credentials = dict(options["credentials"])
    if options.get("mode") == "steps":
        pipeline = dlt.pipeline(name, pipelines_dir=pipelines_dir,
                                destination=bento(requests_per_minute=CLIENT_RPM, **credentials))
        print("phase: extract", flush=True)
        with file_rotation(file_max_items):
            pipeline.extract(data["resources"])
        print("phase: normalize", flush=True)
        pipeline.normalize()
        print("phase: load", flush=True)
        pipeline.load()
        print("phase: done", flush=True)
        return 0
    reports = sync(data["resources"], pipeline_name=name, pipelines_dir=pipelines_dir,
                   file_max_items=file_max_items, requests_per_minute=CLIENT_RPM, **credentials)
    for report in reports:
        totals = report.totals()
        print(f"child: load {report.load_id} sent {totals['sent']:.0f} rejected {totals['rejected']:.0f}", flush=True)
    print("phase: done", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "crash-child":
        return crash_child(json.loads(argv[1]))
    print("usage: python -m tests.reliability_helpers crash-child '<json options>'", file=sys.stderr)
    return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
