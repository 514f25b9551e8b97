"""Bad-input fuzzing (issue 9) with hypothesis: the mapping functions directly (many examples), and the real sink
against the emulator (fewer). Inputs: unicode (lone surrogates too), huge strings, NaN and infinities, nested values
where flat ones belong, wrong types, bytes, empty rows and tables, the same email twice in one batch, columns named
like secrets or like dlt's variant and nested columns.

Properties: a row is either mapped to a payload Bento would take (checked by an independent reading of the rules in
reliability_helpers) or refused with a reason code and a sentence; nothing else is ever raised; secret-looking
columns are never sent; through the sink every row is either sent or listed as rejected with its reason, no load
package is left pending, and every request body the emulator logged follows Bento's rules.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import dlt
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from bento_api.emulator import BentoEmulator
from bento_destination import close_clients, last_report, list_rejects
from bento_destination.mapping import MappingOptions, map_row
from bento_destination.values import RowError

from .reliability_helpers import (
    CLIENT_RPM,
    assert_no_secrets,
    email_problem,
    log_problems,
    row_problems,
    sentinel_config,
)

PATHS = {"subscribers": "/batch/subscribers", "events": "/batch/events", "commands": "/fetch/commands",
         "emails": "/batch/emails"}
SECRET_WORDS = ("password", "passwd", "token", "apikey", "secret", "privatekey", "accesskey")
REASON = re.compile(r"^[a-z_]+$")

# -- strategies ------------------------------------------------------------------------------------------

VALID_EMAILS = st.sampled_from(["ada@example.com", " Ada@Example.COM ", "ada@example.com", "bob+x@sub.example.org"])
EMAILS = st.one_of(
    VALID_EMAILS,
    st.sampled_from(["", "   ", "no-at-sign", "a@b", "a b@example.com", "a,b@example.com", "@example.com",
                     "ü@exämple.com", "a@example.com;b@example.com", "x" * 250 + "@example.com"]),
    st.builds(lambda s: f"{s}@example.com", st.text(min_size=1, max_size=20)),
    st.emails(),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(alphabet=st.characters(categories=["Cs", "Co", "Cc", "So", "Lo"]), max_size=10),  # surrogates too
    st.builds(lambda n: "é" * n, st.integers(min_value=10_000, max_value=100_000)),  # huge strings
    st.decimals(allow_nan=True, allow_infinity=True),
    st.datetimes(timezones=st.one_of(st.none(), st.timezones())), st.dates(), st.times(), st.uuids(),
    st.binary(max_size=8),
    EMAILS,
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner,
                                                                                  max_size=3)),
    max_leaves=8,
)
COLUMNS = st.one_of(
    st.sampled_from([
        "email", "Email", " EMAIL ", "tags", "remove_tags", "Tags", "unsubscribed", "fields", "fields__plan",
        "fields__a__b", "details", "details__cart__total", "details▶v_text", "details__v_text", "type", "date",
        "unique_key", "command", "query", "query__key", "query__value", "to", "from", "subject", "html_body",
        "transactional", "personalizations", "password", "api_key", "AccessToken", "client_secret", "apiKey",
        "fields__password", "details__token", "First Name", "firstName", "first_name", "", "__", "n", "plan",
        "score▶v_double", "plan__v_text",
    ]),
    st.text(max_size=12),
)
TYPES = st.one_of(st.sampled_from(["$purchase", "signed_up", "", "  ", "$subscribe"]), SCALARS)
COMMANDS = st.one_of(st.sampled_from(["add_tag", "remove_tag", "add_field", "remove_field", "subscribe",
                                      "unsubscribe", "change_email", "ADD_TAG", "explode"]), SCALARS)


def rows_for(operation: str) -> st.SearchStrategy[dict[str, Any]]:
    """Rows with the operation's own columns (often well-formed, often not) plus arbitrary extra columns."""
    base: dict[str, st.SearchStrategy[Any]] = {"email": st.one_of(VALID_EMAILS, EMAILS, VALUES)}
    if operation == "subscribers":
        base["tags"] = st.one_of(st.lists(st.one_of(st.text(max_size=10), VALUES), max_size=4), st.text(), VALUES)
    elif operation == "events":
        base["type"] = st.one_of(st.just("$purchase"), TYPES)
        base["details"] = st.one_of(st.dictionaries(st.text(max_size=6), VALUES, max_size=3), st.text(), VALUES)
        base["fields"] = st.one_of(st.dictionaries(st.text(max_size=6), VALUES, max_size=3), st.text(), VALUES)
    elif operation == "commands":
        base["command"] = COMMANDS
        base["query"] = st.one_of(EMAILS, VALUES, st.fixed_dictionaries({"key": st.text(max_size=6), "value": VALUES}))
    else:
        text = st.one_of(st.text(min_size=1, max_size=20), VALUES)
        base = {"to": st.one_of(VALID_EMAILS, EMAILS, VALUES), "from": st.one_of(VALID_EMAILS, EMAILS, VALUES),
                "subject": text, "html_body": text}
    own = st.fixed_dictionaries({}, optional=base)
    extra = st.dictionaries(COLUMNS, st.one_of(st.none(), st.text(max_size=8), st.integers(), VALUES), max_size=4)
    return st.builds(lambda a, b: {**b, **a}, own, extra)


def secret_keys(value: Any, prefix: str = "") -> list[str]:
    """Keys at any depth that look like secrets (an independent, compact reading of the rule)."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            compact = re.sub(r"[^a-z0-9]", "", str(key).lower())
            if any(word in compact for word in SECRET_WORDS):
                found.append(f"{prefix}{key}")
            found += secret_keys(item, f"{prefix}{key}.")
    elif isinstance(value, list):
        for item in value:
            found += secret_keys(item, prefix)
    return found


def check_mapping(operation: str, row: dict[str, Any], tally: Counter[str]) -> None:
    """The property of one row: a valid payload or a RowError with a reason; never anything else."""
    try:
        mapped = map_row(operation, row, MappingOptions())
    except RowError as error:
        assert REASON.match(error.reason) and error.detail, (error.reason, error.detail)
        tally[f"rejected:{error.reason}"] += 1
        return
    tally["mapped"] += 1
    payloads = ([mapped.payload] if mapped.payload is not None else []) + list(mapped.commands)
    assert payloads, "a mapped row must produce something to send"
    if mapped.payload is not None:
        assert row_problems(PATHS[operation], mapped.payload, operation) == []
    for command in mapped.commands:
        assert row_problems("/fetch/commands", command, "command") == []
    for payload in payloads:
        import json

        json.dumps(payload, allow_nan=False).encode("utf-8")  # strict JSON, valid Unicode
        leaked = secret_keys(payload)
        if operation != "commands":  # a command's query carries a field *name*, which is the user's choice
            assert leaked == [], f"secret-looking keys sent: {leaked}"
    if operation in ("subscribers", "events", "commands"):
        assert email_problem(payloads[0]["email"], "email") is None


def run_property(
    examples: int, strategy: st.SearchStrategy[Any], check: Callable[[Any], None], *, shrink: bool = True
) -> None:
    """`check` on `examples` values (derandomized: the same inputs every run); no shrinking for slow checks."""
    phases = tuple(Phase) if shrink else (Phase.explicit, Phase.reuse, Phase.generate)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True, phases=phases,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
    @given(strategy)
    def prop(value: Any) -> None:
        check(value)

    prop()


@pytest.fixture(autouse=True)
def _isolated(destination_env: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # logs at INFO are searched for secrets afterwards


@pytest.fixture
def figures(capfd: pytest.CaptureFixture[str]) -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    with capfd.disabled():
        for line in lines:
            print(line)


# -- the mapping functions directly ----------------------------------------------------------------------

@pytest.mark.parametrize("operation", list(PATHS))
@pytest.mark.parametrize("examples", [pytest.param(250, id="250"), pytest.param(10_000, id="10k",
                                                                               marks=pytest.mark.slow)])
def test_mapping_sends_valid_payloads_or_gives_a_reason(operation: str, examples: int, figures: list[str]) -> None:
    tally: Counter[str] = Counter()
    run_property(examples, rows_for(operation), lambda row: check_mapping(operation, row, tally))
    tried = sum(tally.values())
    figures.append(f"\nFUZZ FIGURES mapping {operation}: {tried} rows tried, {tally['mapped']} mapped, "
                   f"{tried - tally['mapped']} rejected ({len(tally) - 1} reasons)")
    assert tally["mapped"] > 0 and tried > tally["mapped"]  # the strategy reaches both outcomes


def test_known_bad_values_are_refused_with_their_reason() -> None:
    """The cases the issue names, one by one (hypothesis finds them too, but here they are certain)."""
    options = MappingOptions()
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("subscribers", {"email": "a@example.com", "score": math.nan}, "non_finite_number"),
        ("subscribers", {"email": "a@example.com", "score": -math.inf}, "non_finite_number"),
        ("subscribers", {"email": "a@example.com", "score": Decimal("NaN")}, "non_finite_number"),
        ("subscribers", {"email": "a@example.com", "plan": {"nested": 1}}, "nested_value"),
        ("subscribers", {"email": "a@example.com", "plan": [1, 2]}, "nested_value"),
        ("subscribers", {"email": "a@example.com", "name": "\ud800"}, "unencodable"),
        ("subscribers", {"email": "a@example.com", "blob": b"\x00\x01"}, "unencodable"),
        ("subscribers", {"email": 42}, "invalid_email"),
        ("subscribers", {"email": "x" * 300 + "@example.com"}, "invalid_email"),
        ("subscribers", {}, "missing_email"),
        ("events", {"email": "a@example.com", "type": "t", "fields": {"a": {"b": 1}}}, "nested_fields"),
        ("events", {"email": "a@example.com", "type": "t", "details": {"x": math.inf}}, "non_finite_number"),
        ("events", {"email": "a@example.com", "type": "t", "date": "yesterday"}, "invalid_date"),
        ("events", {"email": "a@example.com"}, "missing_type"),
        ("commands", {"email": "a@example.com", "command": "explode"}, "unknown_command"),
    ]
    for operation, row, reason in cases:
        with pytest.raises(RowError) as caught:
            map_row(operation, row, options)
        assert caught.value.reason == reason, (row, caught.value.reason)
    huge = "é" * 500_000
    mapped = map_row("subscribers", {"email": "a@example.com", "bio": huge, "Password": "hunter2"}, options)
    assert mapped.payload == {"email": "a@example.com", "bio": huge} and mapped.dropped == {"Password"}


# -- through the real sink against the emulator ------------------------------------------------------------

SINK_VALUES = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**62), max_value=2**62),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
        st.builds(lambda n: "∑" * n, st.integers(min_value=1_000, max_value=50_000)),
        st.datetimes(timezones=st.just(dt.UTC)), EMAILS,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(min_size=1, max_size=6), inner,
                                                                         max_size=3)),
    max_leaves=6,
)
SINK_COLUMNS = st.sampled_from(["plan", "score", "First Name", "tags", "password", "api_key", "fields", "details",
                                "fields__tier", "details__cart__total", "unique_key", "date", "n", "unsubscribed"])


def sink_rows(operation: str) -> st.SearchStrategy[list[dict[str, Any]]]:
    own: dict[str, st.SearchStrategy[Any]] = {"email": st.one_of(VALID_EMAILS, EMAILS, SINK_VALUES)}
    if operation == "events":
        own["type"] = st.one_of(st.just("$purchase"), st.sampled_from(["", "signed_up"]), SINK_VALUES)
    # integers past 64 bits stop at dlt's extract (TypeError), before the destination: not fuzzed here
    scalars = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.text(max_size=10), st.floats())
    row = st.builds(lambda a, b: {**b, **a}, st.fixed_dictionaries({}, optional=own),
                    st.dictionaries(SINK_COLUMNS, st.one_of(scalars, SINK_VALUES), max_size=3))
    # the same email twice in one batch, and empty rows, come up often with these small alphabets
    return st.lists(row, min_size=1, max_size=12)


def check_through_sink(operation: str, rows: list[dict[str, Any]], tmp_path: Path, tally: Counter[str]) -> None:
    name = f"fuzz_{uuid.uuid4().hex[:8]}"
    pipelines_dir = tmp_path / name
    with BentoEmulator(sentinel_config()) as emu:
        from bento_destination import bento

        credentials: dict[str, Any] = emu.credentials
        pipeline = dlt.pipeline(name, pipelines_dir=str(pipelines_dir),
                                destination=bento(requests_per_minute=CLIENT_RPM, reject_threshold=1.0,
                                                  **credentials))
        pipeline.run(rows, table_name=operation)  # must not raise
        assert not pipeline.has_pending_data
        assert log_problems(emu.request_log) == []
        report = last_report(pipeline)
        assert report is not None
        table = report.tables[operation]
        rejects = list_rejects(pipeline)
        assert table.received == len(rows)
        assert table.sent + table.rejected == table.received, report.format()
        assert len(rejects) == table.rejected
        assert all(REASON.match(r["reason"]) and r["detail"] for r in rejects)
        assert not any(secret_keys(r.body) for r in emu.request_log if r.body and r.path.startswith("/batch"))
        tally["rows"] += len(rows)
        tally["sent"] += table.sent
        tally["rejected"] += table.rejected
        tally["requests"] += len([r for r in emu.request_log if r.path.startswith("/batch")])
    close_clients()


@pytest.mark.parametrize("operation", ["subscribers", "events"])
@pytest.mark.parametrize("examples", [pytest.param(6, id="6"), pytest.param(150, id="150", marks=pytest.mark.slow)])
def test_bad_rows_through_the_sink_are_sent_valid_or_listed(
    operation: str, examples: int, tmp_path: Path, caplog: pytest.LogCaptureFixture, figures: list[str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    tally: Counter[str] = Counter()
    run_property(examples, sink_rows(operation), lambda rows: check_through_sink(operation, rows, tmp_path, tally),
                 shrink=False)
    figures.append(f"\nFUZZ FIGURES sink {operation}: {examples} runs, {tally['rows']} rows, {tally['sent']} sent, "
                   f"{tally['rejected']} rejected, {tally['requests']} batch requests, 0 invalid")
    captured = capfd.readouterr()
    assert_no_secrets(caplog.text, captured.out, captured.err, root=tmp_path)


def test_empty_tables_send_nothing_and_leave_nothing_pending(tmp_path: Path) -> None:
    with BentoEmulator(sentinel_config()) as emu:
        from bento_destination import bento

        credentials: dict[str, Any] = emu.credentials
        pipeline = dlt.pipeline(f"empty_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path),
                                destination=bento(requests_per_minute=CLIENT_RPM, **credentials))
        pipeline.run([], table_name="subscribers")
        pipeline.run(pd.DataFrame({"email": pd.Series([], dtype="string")}), table_name="events")
        pipeline.run([{}, {}], table_name="subscribers")  # rows without a single value
        assert not pipeline.has_pending_data
        assert [r for r in emu.request_log if r.path.startswith("/batch")] == []
        assert {r["reason"] for r in list_rejects(pipeline)} <= {"missing_email"}
