"""The fingerprint of `subscriber_fingerprint` (version 2) as one SQL expression, for DuckDB and Postgres.

Per row the SQL gives three things: the ledger key (the normalised email), whether the row is provable
(the SQL is sure Python maps it to the same email, tags and unsubscribe), and the `s2:` fingerprint.
A row that is not provable (an email that may be invalid or needs Unicode-aware trimming, tags that may be
JSON, an `unsubscribed` value Python may refuse) counts as changed, so the Python path, which validates,
sees it. The guards keep to printable ASCII, where `str.strip()`/`str.lower()` and SQL's `trim`/`lower` agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..subscriber_fingerprint import PREFIX, UNSUBSCRIBE_PART
from .columns import BOOLEAN, INTEGER, TEXT, SentColumn, SubscriberColumns

#: `bento_api.facts.EMAIL_PATTERN` on text already known to be printable ASCII without spaces
EMAIL_RE: Final = r"^[^@,;]+@[^@,;]+\.[^@,;]+$"
PRINTABLE_RE: Final = r"^[!-~]+$"
PRINTABLE_OR_SPACE_RE: Final = r"^[ -~]*$"
#: `values.to_bool`'s words
TRUE_WORDS: Final = ("true", "t", "yes", "y", "1")
FALSE_WORDS: Final = ("false", "f", "no", "n", "0")
MAX_EMAIL_LENGTH: Final = 254
SEPARATOR_CODE: Final = 31  # subscriber_fingerprint.SEPARATOR


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _words(words: tuple[str, ...]) -> str:
    return ", ".join(literal(w) for w in words)


@dataclass(frozen=True)
class Dialect:
    """What differs between the engines: regular expressions, casts, sha256 and the tag split."""

    name: str

    def matches(self, value: str, pattern: str) -> str:
        if self.name == "duckdb":
            return f"regexp_full_match({value}, {literal(pattern)})"
        return f"({value} ~ {literal(pattern)})"

    def as_text(self, value: str) -> str:
        return f"CAST({value} AS {'VARCHAR' if self.name == 'duckdb' else 'text'})"

    def trim(self, value: str) -> str:
        return f"{'trim' if self.name == 'duckdb' else 'btrim'}({value}, ' ')"

    def sha256_hex(self, text: str) -> str:
        if self.name == "duckdb":
            return f"sha256({text})"
        return f"encode(sha256(convert_to({text}, 'UTF8')), 'hex')"

    def tag_list(self, value: str) -> str:
        """`mapping.subscribers.tag_string` on printable ASCII text that is not JSON: split on commas, trim, drop empty
        names, keep each name once in first-seen order, join with commas; NULL when no name is left."""
        if self.name == "duckdb":
            parts = f"list_transform(string_split({value}, ','), lambda y: trim(y, ' '))"
            kept = f"list_filter({parts}, lambda x, i: x <> '' AND list_position({parts}, x) = i)"
            return f"NULLIF(array_to_string({kept}, ','), '')"
        return (
            "(SELECT string_agg(d.x, ',' ORDER BY d.o) FROM (SELECT btrim(u.raw, ' ') AS x, min(u.o) AS o "
            f"FROM unnest(string_to_array({value}, ',')) WITH ORDINALITY AS u(raw, o) "
            "WHERE btrim(u.raw, ' ') <> '' GROUP BY btrim(u.raw, ' ')) AS d)"
        )


DUCKDB: Final = Dialect("duckdb")
POSTGRES: Final = Dialect("postgres")


def key_sql(plan: SubscriberColumns, d: Dialect) -> str:
    """The ledger key of a subscriber row: its email trimmed and lower-cased (bento_api.facts.normalise_email)."""
    return f"lower({d.trim(quote(plan.email))})"


def provable_sql(plan: SubscriberColumns, d: Dialect) -> str:
    """TRUE when the SQL is sure its key and fingerprint are what Python computes for the row."""
    email = quote(plan.email)
    trimmed = d.trim(email)
    checks = [
        f"{email} IS NOT NULL",
        d.matches(trimmed, PRINTABLE_RE),
        d.matches(trimmed, EMAIL_RE),
        f"length({trimmed}) <= {MAX_EMAIL_LENGTH}",
    ]
    for tags in plan.tag_columns:
        value = quote(tags.column)
        checks.append(
            f"({value} IS NULL OR ({d.matches(value, PRINTABLE_OR_SPACE_RE)} AND left({d.trim(value)}, 1) <> '['))"
        )
    unsub = plan.unsubscribed
    if unsub is not None and unsub.kind != BOOLEAN:
        value = quote(unsub.column)
        if unsub.kind == INTEGER:
            checks.append(f"({value} IS NULL OR {value} IN (0, 1))")
        else:
            words = _words(TRUE_WORDS + FALSE_WORDS)
            ascii_text = d.matches(value, PRINTABLE_OR_SPACE_RE)
            checks.append(f"({value} IS NULL OR ({ascii_text} AND lower({d.trim(value)}) IN ({words})))")
    return "(" + " AND ".join(f"coalesce({c}, FALSE)" for c in checks) + ")"


def _unsubscribes(unsub: SentColumn, d: Dialect) -> str:
    value = quote(unsub.column)
    if unsub.kind == BOOLEAN:
        return f"coalesce({value}, FALSE)"
    if unsub.kind == INTEGER:
        return f"coalesce({value} = 1, FALSE)"
    return f"coalesce(lower({d.trim(value)}) IN ({_words(TRUE_WORDS)}), FALSE)"


def _value_text(column: SentColumn, d: Dialect) -> str:
    """`value_text` of the field's mapped value, NULL when the field is left out."""
    value = quote(column.column)
    if column.name in ("tags", "remove_tags"):
        return d.tag_list(value)
    if column.kind == TEXT:
        return value
    if column.kind == INTEGER:
        return d.as_text(value)
    return f"CASE WHEN {value} THEN 'true' WHEN NOT {value} THEN 'false' END"


def text_sql(plan: SubscriberColumns, d: Dialect) -> str:
    """The version 2 canonical text of a row (valid for provable rows)."""
    sep = f"chr({SEPARATOR_CODE})"
    parts = [f"'s2' || {sep} || {key_sql(plan, d)}"]
    for column in plan.fields:
        text = _value_text(column, d)
        parts.append(
            f"coalesce({sep} || {literal(column.name + '=')} || {d.as_text(f'length({text})')} || ':' || {text}, '')"
        )
    if plan.unsubscribed is not None:
        parts.append(
            f"CASE WHEN {_unsubscribes(plan.unsubscribed, d)} THEN {sep} || {literal(UNSUBSCRIBE_PART)} ELSE '' END"
        )
    return "(" + " || ".join(parts) + ")"


def fingerprint_sql(plan: SubscriberColumns, d: Dialect) -> str:
    """`subscriber_fingerprint.hash_text` of the row's text: `s2:` and the first 32 hex digits of its sha256."""
    return f"({literal(PREFIX)} || substr({d.sha256_hex(text_sql(plan, d))}, 1, 32))"
