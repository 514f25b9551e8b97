"""The engine's SQL and Python agree on every fingerprint (property tests, hypothesis).

For generated subscriber rows of the types the engine takes (text, integers, booleans; tags as comma text;
`unsubscribed` as a boolean, an integer or text), the key and version 2 fingerprint DuckDB computes, and the
ones Postgres computes, equal `subscriber_fingerprint_v2(*map_subscriber(row))` for every row the SQL calls
provable; a row Python rejects is never provable. Rows of plain values are always provable, so the
property cannot hold by calling every row unprovable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bento_destination.engine.columns import BOOLEAN, INTEGER, TEXT, EngineDeclined, plan_subscribers
from bento_destination.engine.sql import DUCKDB, POSTGRES, Dialect, fingerprint_sql, key_sql, provable_sql, quote

from .engine_support import duckdb_select, postgres_select, python_fingerprint

Row = dict[str, Any]
UNSUB_KINDS = (BOOLEAN, INTEGER, TEXT)
BIGINT = st.integers(min_value=-(2**63), max_value=2**63 - 1)
#: text as both engines store it (Postgres text cannot hold NUL)
ANY_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
NAME_CHARS = "abcXYZ09._+-"
TAG_TEXT = st.text(st.sampled_from(list("ab ,C[]\"é\t\x1f")), max_size=10)


def emails() -> st.SearchStrategy[str | None]:
    local = st.text(st.sampled_from(list(NAME_CHARS)), min_size=1, max_size=6)
    plain = st.builds(lambda a, b, pad: f"{pad}{a}@{b}.Com{pad}", local, local, st.sampled_from(["", " ", "\t"]))
    return st.one_of(plain, plain, ANY_TEXT, st.none(), st.sampled_from(["a@b", "A@B.c,d", "ä@b.com", "a b@c.de"]))


def unsub_values(kind: str) -> st.SearchStrategy[Any]:
    if kind == BOOLEAN:
        return st.one_of(st.none(), st.booleans())
    if kind == INTEGER:
        return st.one_of(st.none(), st.integers(-2, 3))
    return st.one_of(st.none(), st.sampled_from(["true", " Yes", "N", "0", "maybe", "TRUE\t", "t"]), ANY_TEXT)


def rows(kind: str) -> st.SearchStrategy[list[Row]]:
    row = st.fixed_dictionaries({
        "email": emails(),
        "First Name": st.one_of(st.none(), ANY_TEXT),
        "score": st.one_of(st.none(), BIGINT),
        "vip": st.one_of(st.none(), st.booleans()),
        "tags": st.one_of(st.none(), TAG_TEXT, ANY_TEXT),
        "remove_tags": st.one_of(st.none(), TAG_TEXT),
        "api_key": st.one_of(st.none(), ANY_TEXT),
        "unsubscribed": unsub_values(kind),
    })
    return st.lists(row, min_size=1, max_size=12)


def plain_rows(kind: str) -> st.SearchStrategy[list[Row]]:
    """Rows the SQL must prove: clean emails, ASCII tags, valid `unsubscribed` values."""
    local = st.text(st.sampled_from(list("abcXYZ019")), min_size=1, max_size=6)
    unsub = {BOOLEAN: st.booleans(), INTEGER: st.sampled_from([0, 1]), TEXT: st.sampled_from(["yes", " F ", "1"])}
    row = st.fixed_dictionaries({
        "email": st.builds(lambda a, b: f" {a}@{b}.org", local, local),
        "First Name": st.one_of(st.none(), ANY_TEXT),
        "score": BIGINT,
        "vip": st.booleans(),
        "tags": st.text(st.sampled_from(list("ab ,C")), max_size=8),
        "remove_tags": st.none(),
        "api_key": ANY_TEXT,
        "unsubscribed": unsub[kind],
    })
    return st.lists(row, min_size=1, max_size=8)


def columns(kind: str) -> list[tuple[str, str]]:
    return [("email", TEXT), ("First Name", TEXT), ("score", INTEGER), ("vip", BOOLEAN), ("tags", TEXT),
            ("remove_tags", TEXT), ("api_key", TEXT), ("unsubscribed", kind)]


SQL_TYPES = {"duckdb": {TEXT: "VARCHAR", INTEGER: "BIGINT", BOOLEAN: "BOOLEAN"},
             "postgres": {TEXT: "text", INTEGER: "bigint", BOOLEAN: "boolean"}}


def select_sql(kind: str, d: Dialect, table: str) -> str:
    plan = plan_subscribers(columns(kind))
    return f"SELECT {key_sql(plan, d)}, {provable_sql(plan, d)}, {fingerprint_sql(plan, d)} FROM {table} ORDER BY i"


def create_sql(kind: str, d: Dialect, table: str) -> str:
    types = SQL_TYPES[d.name]
    cols = ", ".join(f"{quote(name)} {types[k]}" for name, k in columns(kind))
    return f"CREATE TABLE {table} (i integer, {cols})"


def check(batch: Sequence[Row], results: Sequence[tuple[Any, ...]], must_prove: bool = False) -> None:
    assert len(results) == len(batch)
    for row, (key, provable, fp) in zip(batch, results, strict=True):
        expected = python_fingerprint(row)
        if provable:
            assert expected == (key, fp), row
        else:
            assert not must_prove, row


@pytest.fixture(scope="module")
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect() as connection:
        yield connection


def duckdb_results(con: duckdb.DuckDBPyConnection, kind: str, batch: Sequence[Row]) -> list[tuple[Any, ...]]:
    names = [name for name, _ in columns(kind)]
    return duckdb_select(con, create_sql(kind, DUCKDB, "t"), names, batch, select_sql(kind, DUCKDB, "t"))


@pytest.mark.parametrize("kind", UNSUB_KINDS)
@settings(max_examples=50, deadline=None)
@given(data=st.data())
def test_duckdb_sql_fingerprint_equals_python(con: duckdb.DuckDBPyConnection, kind: str, data: st.DataObject) -> None:
    batch = data.draw(rows(kind))
    check(batch, duckdb_results(con, kind, batch))


@pytest.mark.parametrize("kind", UNSUB_KINDS)
@settings(max_examples=20, deadline=None)
@given(data=st.data())
def test_duckdb_proves_every_plain_row(con: duckdb.DuckDBPyConnection, kind: str, data: st.DataObject) -> None:
    batch = data.draw(plain_rows(kind))
    check(batch, duckdb_results(con, kind, batch), must_prove=True)


@pytest.fixture
def postgres_results(postgres_url: str) -> Iterator[Callable[[str, Sequence[Row]], list[tuple[Any, ...]]]]:
    with postgres_select(postgres_url) as run:
        yield lambda kind, batch: run(create_sql(kind, POSTGRES, "t"), [n for n, _ in columns(kind)], batch,
                                      select_sql(kind, POSTGRES, "t"))


@pytest.mark.postgres
@pytest.mark.parametrize("kind", UNSUB_KINDS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_postgres_sql_fingerprint_equals_python(
    kind: str, data: st.DataObject, postgres_results: Callable[[str, Sequence[Row]], list[tuple[Any, ...]]]
) -> None:
    batch = data.draw(rows(kind))
    check(batch, postgres_results(kind, batch))
    plain = data.draw(plain_rows(kind))
    check(plain, postgres_results(kind, plain), must_prove=True)


def test_the_plan_declines_what_the_sql_cannot_render() -> None:
    for columns_ in (
        [("email", TEXT), ("details", "STRUCT(a INTEGER)")],
        [("email", TEXT), ("tags", "VARCHAR[]")],
        [("email", TEXT), ("score", "DOUBLE")],
        [("email", INTEGER)],
        [("mail", TEXT)],
        [("email", TEXT), ("Email", TEXT)],
        [("email", TEXT), ("fields__plan", TEXT)],
        [("email", TEXT), ("fields", "JSON")],
    ):
        with pytest.raises(EngineDeclined):
            plan_subscribers(columns_)
    plan = plan_subscribers([("email", TEXT), ("Plan", TEXT), ("api_key", TEXT), ("command", TEXT)])
    assert [f.name for f in plan.fields] == ["plan"] and plan.not_sent == ("api_key", "command")
    allowed = plan_subscribers([("email", TEXT), ("api_key", TEXT)], allow_secret_columns=True)
    assert [f.name for f in allowed.fields] == ["api_key"]
