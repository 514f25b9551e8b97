"""The batch mapper (bento_destination/arrow_mapping) against the per-row mapper, row for row.

For every row of a generated Arrow batch (mixed types, nulls, odd values), `map_subscriber_batch` must give what
`map_row` gives for the row the sink sees (`rows.iter_rows`): the same payload (keys in the same order), commands,
error reason and detail, dropped/reserved/ignored columns, and the fingerprint `subscriber_fingerprint_v2` gives.
"""

from __future__ import annotations

import datetime as dt
import decimal
import string
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bento_destination.arrow_mapping import SubscriberBatch, map_subscriber_batch
from bento_destination.arrow_mapping.fingerprints import hash_texts
from bento_destination.mapping import MappedRow, MappingOptions, map_row
from bento_destination.rows import iter_rows
from bento_destination.settings import MAX_ROW_BYTES
from bento_destination.subscriber_fingerprint import hash_text, subscriber_fingerprint_v2
from bento_destination.values import RowError

ODD_TEXT = string.ascii_letters + string.digits + " \t\n\x00\x0b\x1c\x1f@.,;[]\"{}:_-éÉİß\u00a0\u2028\u0130 "
EMAIL_PARTS = st.text(alphabet="abcXYZ09._+-é", min_size=1, max_size=6)
EMAILS = st.one_of(
    st.builds(lambda a, b, c, pad: f"{pad}{a}@{b}.{c}{pad[::-1]}", EMAIL_PARTS, EMAIL_PARTS, EMAIL_PARTS,
              st.sampled_from(["", " ", "\t", "\x1c", "\u00a0", " \n"])),
    st.text(alphabet=ODD_TEXT, max_size=12),
    st.just("x" * 250 + "@b.co"),
)
TEXT = st.text(alphabet=ODD_TEXT, max_size=10)
TAG_TEXT = st.one_of(TEXT, st.just('["a", "b,c", "a"]'), st.just("[1, 2.5]"), st.just("[not json"), st.just(" x, y ,x"))
FLAG_TEXT = st.sampled_from(["yes", " TRUE ", "f", "0", "1", "maybe", ""])
DAY_US = 86400 * 10**6
#: Python's datetime years 1 to 9999 in microseconds, a day inside so that a zone's local time fits too
US_RANGE = (-62135596800 * 10**6 + DAY_US, 253402300799 * 10**6 - DAY_US)


def ticks(unit: str) -> st.SearchStrategy[int]:
    low, high = US_RANGE
    if unit == "ns":
        return st.one_of(st.integers(-(2**63) + 1, 2**63 - 1), st.integers(-(10**15), 10**15).map(lambda t: t * 1000))
    scale = {"s": 10**6, "ms": 1000, "us": 1}[unit]
    return st.integers(low // scale + 1, high // scale - 1)


#: (arrow type or builder, strategy of non-null values); a builder turns a list of values into the column
Kind = tuple[Callable[[list[Any]], pa.Array], st.SearchStrategy[Any]]


def typed(kind: pa.DataType) -> Callable[[list[Any]], pa.Array]:
    return lambda values: pa.array(values, kind)


def timestamps(unit: str, zone: str | None) -> Kind:
    return (lambda values: pa.array(values, pa.int64()).cast(pa.timestamp(unit, zone)), ticks(unit))


KINDS: dict[str, Kind] = {
    "text": (typed(pa.string()), TEXT),
    "large_text": (typed(pa.large_string()), TEXT),
    "category": (lambda values: pa.array(values, pa.string()).dictionary_encode(), st.sampled_from(["a", "B", "é"])),
    "int": (typed(pa.int64()), st.integers(-(2**63), 2**63 - 1)),
    "uint": (typed(pa.uint64()), st.integers(0, 2**64 - 1)),
    "small_int": (typed(pa.int8()), st.integers(-128, 127)),
    "float": (typed(pa.float64()), st.floats()),
    "float32": (typed(pa.float32()), st.floats(width=32)),
    "bool": (typed(pa.bool_()), st.booleans()),
    "date": (typed(pa.date32()), st.dates()),
    "ts_s": timestamps("s", None),
    "ts_ms_utc": timestamps("ms", "UTC"),
    "ts_us": timestamps("us", None),
    "ts_ns": timestamps("ns", None),
    "ts_ns_utc": timestamps("ns", "UTC"),
    "ts_offset": timestamps("us", "+02:00"),
    "ts_zero_offset": timestamps("ms", "+00:00"),
    "ts_etc_utc": timestamps("s", "Etc/UTC"),
    "ts_zone": timestamps("us", "Europe/Paris"),
    "decimal": (typed(pa.decimal128(12, 2)), st.decimals(-(10**9), 10**9, places=2, allow_nan=False)),
    "time": (typed(pa.time64("us")), st.times()),
    "binary": (typed(pa.binary()), st.binary(max_size=4)),
    "struct": (typed(pa.struct([("a", pa.string()), ("b", pa.int64())])),
               st.fixed_dictionaries({"a": st.one_of(st.none(), TEXT), "b": st.integers(0, 9)})),
    "list": (typed(pa.list_(pa.string())), st.lists(st.one_of(st.none(), TEXT), max_size=4)),
    "nulls": (lambda values: pa.nulls(len(values)), st.none()),
}

#: column name -> the kinds it may have (names chosen to meet every rule of the plan)
COLUMNS: dict[str, list[str]] = {
    "email": ["text", "text", "text", "large_text", "int"],
    "first_name": ["text", "category", "int", "nulls"],
    "Last Name": ["text", "large_text"],
    "plan": ["text", "category", "bool"],
    "fields__plan": ["text", "int"],
    "fields__tags": ["text"],
    "score": ["float", "float32", "int", "decimal", "uint", "small_int"],
    "joined": ["date", "ts_s", "ts_ms_utc", "ts_us", "ts_ns", "ts_ns_utc", "ts_offset", "ts_zone", "time", "text",
               "ts_zero_offset", "ts_etc_utc"],
    "tags": ["list", "text", "int", "category"],
    "remove_tags": ["list", "text"],
    "unsubscribed": ["bool", "text", "int", "float"],
    "api_key": ["text"],
    "command": ["text"],
    "fields": ["struct", "text"],
    "profile": ["struct", "list", "binary"],
    "first_name▶v_bigint": ["int"],
    "__": ["text"],
}
STRATEGY_OVERRIDES: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("email", "text"): EMAILS,
    ("email", "large_text"): EMAILS,
    ("tags", "text"): TAG_TEXT,
    ("remove_tags", "text"): TAG_TEXT,
    ("unsubscribed", "text"): FLAG_TEXT,
    ("unsubscribed", "int"): st.integers(-1, 2),
    ("unsubscribed", "float"): st.sampled_from([0.0, 1.0, 0.5]),
    ("joined", "text"): st.sampled_from(["2024-01-02", "2024-01-02T03:04:05+02:00", "nope"]),
    ("fields", "text"): st.sampled_from(['{"a": 1}', "not json", "", '{"api_token": "x", "Mood": "ok"}']),
}


@st.composite
def batches(draw: st.DrawFn) -> pa.RecordBatch:
    size = draw(st.integers(0, 8))
    others = [name for name in COLUMNS if name != "email"]
    names = ["email", *draw(st.lists(st.sampled_from(others), max_size=7, unique=True))]
    if draw(st.integers(0, 9)) == 0:
        names.remove("email")
    names = draw(st.permutations(names))
    arrays = []
    for name in names:
        kind = draw(st.sampled_from(COLUMNS[name]))
        build, values = KINDS[kind]
        values = STRATEGY_OVERRIDES.get((name, kind), values)
        null_share = draw(st.sampled_from([0.0, 0.3, 1.0]))
        column = [None if draw(st.floats(0, 1)) < null_share else draw(values) for _ in range(size)]
        if name == "email" and null_share == 1.0:
            column = [draw(values) for _ in range(size)]
        arrays.append(build(column))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def per_row(batch: pa.RecordBatch, options: MappingOptions) -> list[MappedRow | RowError]:
    out: list[MappedRow | RowError] = []
    for row in iter_rows(batch):
        try:
            out.append(map_row("subscribers", row, options))
        except RowError as error:
            out.append(error)
    return out


def assert_same(batch: pa.RecordBatch, options: MappingOptions) -> SubscriberBatch:
    expected = per_row(batch, options)
    result = map_subscriber_batch(batch, options)
    assert len(result) == len(expected)
    for i, want in enumerate(expected):
        if isinstance(want, RowError):
            assert result.error(i) == (want.reason, want.detail), i
            assert result.fingerprints[i] is None and result.emails[i] is None
            continue
        assert result.error(i) is None, (i, result.error(i), want)
        [got] = result.mapped([i])
        assert got.payload == want.payload, i
        assert list((got.payload or {}).items()) == list((want.payload or {}).items()), i  # same key order
        assert got.commands == want.commands, i
        assert (got.dropped, got.reserved, got.ignored) == (want.dropped, want.reserved, want.ignored), i
        assert result.fingerprints[i] == subscriber_fingerprint_v2(want.payload, want.commands), i
        assert result.emails[i] == (want.payload or want.commands[0])["email"], i
        assert bool(result.unsubscribes[i]) == any(c["command"] == "unsubscribe" for c in want.commands), i
    sendable = result.sendable()
    assert result.mapped(sendable) == [want for want in expected if isinstance(want, MappedRow)]
    return result


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=batches(), allow_secrets=st.booleans())
def test_batch_mapper_agrees_with_map_row_on_every_row(batch: pa.RecordBatch, allow_secrets: bool) -> None:
    assert_same(batch, MappingOptions(allow_secret_columns=allow_secrets))


def batch_of(columns: dict[str, pa.Array]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(list(columns.values()), names=list(columns))


def test_plain_rows_are_mapped_without_map_row_and_rows_it_refuses_keep_its_reason() -> None:
    batch = batch_of({
        "email": pa.array([" Ann@Example.COM ", "not-an-email", None, "bob@example.com"]),
        "First Name": pa.array(["Ann", "X", "Y", None]),
        "score": pa.array([1.5, 2.0, 3.0, float("nan")]),
        "tags": pa.array([["vip", "b,vip"], None, None, []], pa.list_(pa.string())),
        "unsubscribed": pa.array([False, None, None, True]),
    })
    result = assert_same(batch, MappingOptions())
    assert result.errors == {
        1: ("invalid_email", "`email` 'not-an-email' is not a valid email address"),
        2: ("missing_email", "`email` is missing or empty"),
        3: ("non_finite_number", "`score` is nan (NaN or infinity cannot be sent)"),
    }
    [ann] = result.mapped([0])
    assert ann.payload == {"email": "ann@example.com", "first_name": "Ann", "score": 1.5, "tags": "vip,b"}
    assert result.sendable() == [0]
    with pytest.raises(ValueError, match="cannot be sent"):
        result.mapped([1])


def test_an_unsubscribe_alone_is_a_command_and_its_fingerprint_says_so() -> None:
    batch = batch_of({"email": pa.array(["a@b.co", "c@d.co"]), "unsubscribed": pa.array(["yes", "no"])})
    result = assert_same(batch, MappingOptions())
    first, second = result.mapped([0, 1])
    assert first.payload is None and first.commands == [{"command": "unsubscribe", "email": "a@b.co"}]
    assert second.payload == {"email": "c@d.co"} and not second.commands
    assert result.unsubscribes.tolist() == [True, False]
    assert result.fingerprints[0] != result.fingerprints[1]


def test_secret_and_reserved_columns_are_recorded_only_where_they_hold_a_value() -> None:
    batch = batch_of({
        "email": pa.array(["a@b.co", "c@d.co"]),
        "api_key": pa.array(["k", None]),
        "command": pa.array([None, "unsubscribe"]),
    })
    result = assert_same(batch, MappingOptions())
    first, second = result.mapped([0, 1])
    assert (first.dropped, first.reserved) == ({"api_key"}, set())
    assert (second.dropped, second.reserved) == (set(), {"command"})
    assert result.notes() == ({"api_key"}, {"command"}, set())


def test_columns_that_may_collide_are_checked_by_map_row_row_by_row() -> None:
    batch = batch_of({
        "email": pa.array(["a@b.co", "c@d.co", "e@f.co"]),
        "plan": pa.array(["pro", None, "team"]),
        "fields__plan": pa.array([None, "free", "free"]),
    })
    result = assert_same(batch, MappingOptions())
    assert [row.payload for row in result.mapped([0, 1])] == [
        {"email": "a@b.co", "plan": "pro"}, {"email": "c@d.co", "plan": "free"},
    ]
    assert result.error(2) == (
        "conflicting_columns", "`fields__plan.plan` sets field `plan`, which another column also sets"
    )


def test_a_row_past_the_size_limit_is_refused_as_map_row_refuses_it() -> None:
    big = "x" * (MAX_ROW_BYTES // 2)
    batch = batch_of({
        "email": pa.array(["a@b.co", "c@d.co"]), "a": pa.array([big, "small"]), "b": pa.array([big, None]),
    })
    result = assert_same(batch, MappingOptions())
    reason = result.error(0)
    assert reason is not None and reason[0] == "row_too_large"
    assert result.error(1) is None


def test_duplicate_names_variants_and_a_missing_email_column_go_through_map_row() -> None:
    duplicate = batch_of({"email": pa.array(["a@b.co", "c@d.co"]), "Plan": pa.array(["x", None]),
                          "plan": pa.array(["y", "z"])})
    result = assert_same(duplicate, MappingOptions())
    assert result.error(0) is not None and result.error(0)[0] == "duplicate_column"  # type: ignore[index]
    assert result.mapped([1])[0].payload == {"email": "c@d.co", "plan": "z"}
    variant = batch_of({"email": pa.array(["a@b.co", "c@d.co"]), "age": pa.array(["ten", None]),
                        "age▶v_bigint": pa.array([None, 10], pa.int64())})
    assert [row.payload for row in assert_same(variant, MappingOptions()).mapped([0, 1])] == [
        {"email": "a@b.co", "age": "ten"}, {"email": "c@d.co", "age": 10},
    ]
    no_email = batch_of({"name": pa.array(["a", "b"])})
    assert set(assert_same(no_email, MappingOptions()).errors.values()) == {
        ("missing_email", "`email` is missing or empty")
    }


def test_dates_and_timestamps_are_sent_as_the_text_iso_datetime_gives() -> None:
    moments = [dt.datetime(1969, 12, 31, 23, 59, 59, 999999), dt.datetime(2024, 5, 6, 7, 8, 9), None]
    batch = batch_of({
        "email": pa.array(["a@b.co", "c@d.co", "e@f.co"]),
        "naive": pa.array(moments, pa.timestamp("us")),
        "utc_ms": pa.array(moments, pa.timestamp("ms", "UTC")),
        "nanos": pa.array([1, None, -1], pa.timestamp("ns")),
        "paris": pa.array(moments, pa.timestamp("us", "Europe/Paris")),
        "day": pa.array([dt.date(1, 1, 1), dt.date(2024, 2, 29), None]),
        "amount": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.00"), None], pa.decimal128(5, 2)),
    })
    result = assert_same(batch, MappingOptions())
    first = result.mapped([0])[0].payload
    assert first is not None
    assert first["naive"] == "1969-12-31T23:59:59.999999+00:00"
    assert first["utc_ms"] == "1969-12-31T23:59:59.999000+00:00"
    assert first["nanos"] == "1970-01-01T00:00:00.000000001+00:00"
    assert first["day"] == "0001-01-01T00:00:00+00:00"
    assert first["amount"] == 1.5 and result.mapped([1])[0].payload["amount"] == 2  # type: ignore[index]


def test_a_table_of_several_chunks_is_mapped_as_one_batch() -> None:
    part = pa.table({"email": ["a@b.co", "c@d.co"], "plan": ["pro", None]})
    table = pa.concat_tables([part, part.slice(1)])
    result = map_subscriber_batch(table, MappingOptions())
    assert result.emails == ["a@b.co", "c@d.co", "c@d.co"]
    assert result.fingerprints[1] == result.fingerprints[2] != result.fingerprints[0]
    assert result.rows([0]) == [{"email": "a@b.co", "plan": "pro"}]
    empty = map_subscriber_batch(part.slice(0, 0), MappingOptions())
    assert len(empty) == 0 and empty.sendable() == [] and empty.fingerprints == []


def test_fingerprints_are_hashed_from_a_sliced_buffer_as_python_hashes_the_text() -> None:
    texts = pa.array(["x", "yé", None, "", "s2\x1fa@b.co"], pa.string()).slice(1)
    assert hash_texts(texts) == [hash_text("yé"), None, hash_text(""), hash_text("s2\x1fa@b.co")]


def test_tag_lists_are_grouped_only_when_equal_keys_mean_equal_lists() -> None:
    for lists in ([["a\x00", "b"], ["a", "\x00b"], [], [""]], [["x", None], ["x", None], ["y"]]):
        batch = batch_of({
            "email": pa.array([f"p{i}@b.co" for i in range(len(lists))]),
            "tags": pa.array(lists, pa.list_(pa.string())),
        })
        result = assert_same(batch, MappingOptions())
        assert [(row.payload or {}).get("tags") for row in result.mapped(range(len(lists)))] in (
            ["a\x00,b", "a,\x00b", None, None], ["x", "x", "y"],
        )


def test_a_flag_column_whose_every_value_is_refused_rejects_each_row_as_map_row_does() -> None:
    """Found by the property test: every `unsubscribed` refused left a null-typed flag column to fill."""
    table = pa.table({
        "email": ["a@example.com", "b@example.com"],
        "unsubscribed": ["maybe", "maybe"],
        "fields": pa.array([None, None], pa.struct([("x", pa.int64())])),
    })
    batch = map_subscriber_batch(table, MappingOptions())
    expected = {}
    for index, row in enumerate(iter_rows(table)):
        with pytest.raises(RowError) as refused:
            map_row("subscribers", row, MappingOptions())
        expected[index] = (refused.value.reason, refused.value.detail)
    assert batch.errors == expected
