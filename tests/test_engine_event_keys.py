"""The engine's SQL and Python agree on every event key (property tests, hypothesis), and what it declines.

For generated event rows with a `unique_key` column (text or integer), the key DuckDB computes, and the one
Postgres computes, equal the ledger key the Python path records (`event_ledger_key` of `map_event` and the
row's own key) for every row the SQL calls provable; a row Python rejects is never provable. Rows of plain
values are always provable, so the property cannot hold by calling every row unprovable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bento_destination.engine.columns import BOOLEAN, INTEGER, TEXT, EngineDeclined
from bento_destination.engine.events import TIMESTAMP, event_key_sql, event_provable_sql, plan_events
from bento_destination.engine.sql import DUCKDB, POSTGRES, Dialect, quote
from bento_destination.keys import explicit_event_key
from bento_destination.ledger import event_ledger_key
from bento_destination.mapping import MappingOptions, map_event
from bento_destination.values import RowError

from .engine_support import as_sink_row, duckdb_select, postgres_select

Row = dict[str, Any]
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=10)
KEY_KINDS = (TEXT, INTEGER)
BIGINT = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def python_key(row: Row) -> str | None:
    """The ledger key the Python path records for an input row; None if it rejects the row or derives a key."""
    try:
        mapped = map_event(as_sink_row(row), MappingOptions())
    except RowError:
        return None
    assert mapped.payload is not None
    key = explicit_event_key(mapped.payload)
    return None if key is None else event_ledger_key(mapped.payload["email"], mapped.payload["type"], key)


def columns(kind: str) -> list[tuple[str, str]]:
    return [("email", TEXT), ("type", TEXT), ("unique_key", kind), ("plan", TEXT), ("amount", INTEGER),
            ("vip", BOOLEAN)]


def rows(kind: str) -> st.SearchStrategy[list[Row]]:
    local = st.text(st.sampled_from(list("abXZ09.+-\"\\")), min_size=1, max_size=5)
    email = st.one_of(st.builds(lambda a, b, pad: f"{pad}{a}@{b}.Com{pad}", local, local,
                                st.sampled_from(["", " ", "\t"])), ANY_TEXT, st.none())
    types = st.one_of(st.sampled_from(["$purchase", " signed_up ", "", "   ", "a\"b", "c\\d", "é"]), ANY_TEXT,
                      st.none())
    keys = (st.one_of(st.none(), st.text(st.sampled_from(list("ab1-\" \\é")), max_size=5), ANY_TEXT)
            if kind == TEXT else st.one_of(st.none(), BIGINT))
    row = st.fixed_dictionaries({"email": email, "type": types, "unique_key": keys,
                                 "plan": st.one_of(st.none(), ANY_TEXT),
                                 "amount": st.one_of(st.none(), st.integers(-5, 5)),
                                 "vip": st.one_of(st.none(), st.booleans())})
    return st.lists(row, min_size=1, max_size=10)


def plain_rows(kind: str) -> st.SearchStrategy[list[Row]]:
    local = st.text(st.sampled_from(list("abcXYZ019")), min_size=1, max_size=6)
    keys = st.text(st.sampled_from(list("ab1-_ ")), min_size=1, max_size=6) if kind == TEXT else BIGINT
    row = st.fixed_dictionaries({"email": st.builds(lambda a, b: f" {a}@{b}.org", local, local),
                                 "type": st.sampled_from(["$purchase", " signed_up "]), "unique_key": keys,
                                 "plan": ANY_TEXT, "amount": BIGINT, "vip": st.booleans()})
    return st.lists(row, min_size=1, max_size=8)


SQL_TYPES = {"duckdb": {TEXT: "VARCHAR", INTEGER: "BIGINT", BOOLEAN: "BOOLEAN"},
             "postgres": {TEXT: "text", INTEGER: "bigint", BOOLEAN: "boolean"}}


def create_sql(kind: str, d: Dialect) -> str:
    cols = ", ".join(f"{quote(name)} {SQL_TYPES[d.name][k]}" for name, k in columns(kind))
    return f"CREATE TABLE t (i integer, {cols})"


def select_sql(kind: str, d: Dialect) -> str:
    plan = plan_events(columns(kind))
    return f"SELECT {event_key_sql(plan, d)}, {event_provable_sql(plan, d)} FROM t ORDER BY i"


def check(batch: Sequence[Row], results: Sequence[tuple[Any, ...]], must_prove: bool = False) -> None:
    assert len(results) == len(batch)
    for row, (key, provable) in zip(batch, results, strict=True):
        if provable:
            assert python_key(row) == key, row
        else:
            assert not must_prove, row


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as connection:
        yield connection


def duckdb_results(con: duckdb.DuckDBPyConnection, kind: str, batch: Sequence[Row]) -> list[tuple[Any, ...]]:
    names = [name for name, _ in columns(kind)]
    return duckdb_select(con, create_sql(kind, DUCKDB), names, batch, select_sql(kind, DUCKDB))


@pytest.mark.parametrize("kind", KEY_KINDS)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_duckdb_event_key_equals_python(con: duckdb.DuckDBPyConnection, kind: str, data: st.DataObject) -> None:
    batch = data.draw(rows(kind))
    check(batch, duckdb_results(con, kind, batch))
    plain = data.draw(plain_rows(kind))
    check(plain, duckdb_results(con, kind, plain), must_prove=True)


@pytest.fixture
def postgres_results(postgres_url: str) -> Iterator[Callable[[str, Sequence[Row]], list[tuple[Any, ...]]]]:
    with postgres_select(postgres_url) as run:
        yield lambda kind, batch: run(create_sql(kind, POSTGRES), [n for n, _ in columns(kind)], batch,
                                      select_sql(kind, POSTGRES))


@pytest.mark.postgres
@pytest.mark.parametrize("kind", KEY_KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_postgres_event_key_equals_python(
    kind: str, data: st.DataObject, postgres_results: Callable[[str, Sequence[Row]], list[tuple[Any, ...]]]
) -> None:
    batch = data.draw(rows(kind))
    check(batch, postgres_results(kind, batch))
    plain = data.draw(plain_rows(kind))
    check(plain, postgres_results(kind, plain), must_prove=True)


def test_the_event_plan_declines_what_python_must_decide() -> None:
    for columns_ in (
        [("email", TEXT), ("type", TEXT)],  # no unique_key: derived keys stay in Python
        [("email", TEXT), ("type", TEXT), ("unique_key", BOOLEAN)],
        [("email", INTEGER), ("type", TEXT), ("unique_key", TEXT)],
        [("email", TEXT), ("type", TEXT), ("unique_key", TEXT), ("date", TEXT)],  # a text date may not parse
        [("email", TEXT), ("type", TEXT), ("unique_key", TEXT), ("details", "JSON")],
        [("email", TEXT), ("type", TEXT), ("unique_key", TEXT), ("fields", TEXT)],  # JSON text, row by row
        [("email", TEXT), ("type", TEXT), ("unique_key", TEXT), ("details__cart", TEXT)],  # dlt's nested names
        [("email", TEXT), ("type", TEXT), ("unique_key", TEXT), ("unique", TEXT)],
        [("email", TEXT), ("type", TEXT), ("unique_key", TEXT), ("price", "DOUBLE")],
    ):
        with pytest.raises(EngineDeclined):
            plan_events(columns_)
    plan = plan_events([("Email", TEXT), ("type", TEXT), ("unique_key", INTEGER), ("date", TIMESTAMP),
                        ("total", INTEGER), ("note", TEXT), ("api_key", TEXT)])
    assert (plan.email, plan.type, plan.unique, plan.unique_kind) == ("Email", "type", "unique_key", INTEGER)
