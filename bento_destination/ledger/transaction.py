"""Changes collected in memory and committed as one unit: the ops a commit writes, as Arrow tables."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

import pyarrow as pa

from bento_api.facts import normalise_email

from .lww import ALL_OPERATIONS

#: reserved namespaces (a leading underscore can never be an operation name)
TAGS_NS: Final = "_tags"
UNSUBSCRIBED_NS: Final = "_unsubscribed"

_OPERATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

#: (key, value) pairs: a sequence of 2-tuples, or a two-column Arrow table (vectorised callers)
Pairs = Sequence[tuple[str, str]] | pa.Table


def check_operation(operation: str) -> str:
    """An operation name (`subscribers`, `events`): never one of the reserved, underscored namespaces."""
    if not isinstance(operation, str) or not _OPERATION_RE.match(operation):
        raise ValueError(f"operation must be a name like 'subscribers' or 'events', got {operation!r}")
    return operation


def string_array(values: Iterable[object] | pa.Array | pa.ChunkedArray, what: str) -> pa.Array:
    """Arrow strings, refusing None and non-strings: a missing key would silently match nothing."""
    try:
        if isinstance(values, pa.ChunkedArray):
            array = values.combine_chunks().cast(pa.string())
        elif isinstance(values, pa.Array):
            array = values.cast(pa.string())
        else:
            array = pa.array(values if isinstance(values, list | tuple) else list(values), type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise TypeError(f"every {what} must be a string: {exc}") from exc
    if array.null_count:
        raise ValueError(f"a {what} is missing (None)")
    return array


def pairs_table(items: Pairs, first: str, second: str) -> pa.Table:
    """Two Arrow columns from (a, b) pairs, built column-wise (no per-row Arrow objects)."""
    if isinstance(items, pa.Table):
        if items.num_columns != 2:
            raise ValueError(f"an Arrow table of pairs needs exactly two columns ({first}, {second})")
        return pa.table({first: string_array(items.column(0), first), second: string_array(items.column(1), second)})
    a = string_array([pair[0] for pair in items], first)
    b = string_array([pair[1] for pair in items], second)
    return pa.table({first: a, second: b})


def as_list(values: Iterable[str]) -> list[str]:
    """A lone string means one email, not its characters."""
    return [values] if isinstance(values, str) else list(values)


def ops_table(
    op: str, ns: str, keys: pa.Array, subs: pa.Array | None = None, values: pa.Array | None = None
) -> pa.Table:
    """Rows of the segment schema; ``seq`` is stamped at commit."""
    n = len(keys)
    return pa.table(
        {
            "seq": pa.nulls(n, pa.int64()),
            "op": pa.repeat(pa.scalar(op, pa.string()), n),
            "ns": pa.repeat(pa.scalar(ns, pa.string()), n),
            "key": keys,
            "sub": subs if subs is not None else pa.repeat(pa.scalar("", pa.string()), n),
            "value": values if values is not None else pa.nulls(n, pa.string()),
        }
    )


class LedgerTransaction:
    """Changes collected in memory and committed as one unit (one segment, one DuckDB transaction).

    Use it to record what one acknowledged Bento batch implies (fingerprints, tags added,
    unsubscribes) so that a crash can never keep half of it.
    """

    def __init__(self) -> None:
        self._parts: list[pa.Table] = []

    def acknowledge(self, operation: str, items: Pairs) -> None:
        """Record (key, fingerprint) pairs that Bento acknowledged."""
        ns = check_operation(operation)
        table = pairs_table(items, "key", "value")
        if table.num_rows:
            self._parts.append(
                ops_table(
                    "put", ns, table.column("key").combine_chunks(), values=table.column("value").combine_chunks()
                )
            )

    def add_owned_tags(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Record (email, tag) pairs this connector added, so ``remove_tags`` may later take them off."""
        self._tag_op("put", pairs)

    def remove_owned_tags(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Forget (email, tag) pairs, after the connector removed them."""
        self._tag_op("del", pairs)

    def _tag_op(self, op: str, pairs: Iterable[tuple[str, str]]) -> None:
        listed = [(normalise_email(e), t.strip()) for e, t in pairs]
        if listed:
            table = pairs_table(listed, "email", "tag")
            self._parts.append(
                ops_table(
                    op, TAGS_NS, table.column("email").combine_chunks(), subs=table.column("tag").combine_chunks()
                )
            )

    def mark_unsubscribed(self, emails: Iterable[str]) -> None:
        """Remember that these people are unsubscribed: no sync may resubscribe them."""
        self._email_op("put", emails)

    def clear_unsubscribed(self, emails: Iterable[str]) -> None:
        """Forget an unsubscribe: only for an explicit, user-given resubscription."""
        self._email_op("del", emails)

    def _email_op(self, op: str, emails: Iterable[str]) -> None:
        keys = string_array([normalise_email(e) for e in as_list(emails)], "email")
        if len(keys):
            self._parts.append(ops_table(op, UNSUBSCRIBED_NS, keys))

    def put_entries(self, ns: str, rows: Sequence[tuple[str, str, str]]) -> None:
        """Write (key, sub, value) rows of a reserved namespace (``_emails``): the last write per (key, sub) wins.

        Reserved namespaces start with an underscore, so ``reset`` of every operation never touches them.
        """
        if not ns.startswith("_"):
            raise ValueError(f"put_entries writes reserved namespaces (a leading underscore), got {ns!r}")
        if rows:
            keys = string_array([r[0] for r in rows], "key")
            subs = string_array([r[1] for r in rows], "sub")
            values = string_array([r[2] for r in rows], "value")
            self._parts.append(ops_table("put", ns, keys, subs=subs, values=values))

    def reset(self, operation: str | None = None, *, consent: bool = False, tags: bool = False) -> None:
        """Forget fingerprints of one operation (or all); consent and tag memory only when asked."""
        namespaces = [ALL_OPERATIONS if operation is None else check_operation(operation)]
        if consent:
            namespaces.append(UNSUBSCRIBED_NS)
        if tags:
            namespaces.append(TAGS_NS)
        for ns in namespaces:
            self._parts.append(ops_table("reset", ns, pa.array([""], pa.string())))

    def ops(self) -> pa.Table | None:
        """Everything collected, as one table of ops (None when nothing was)."""
        if not self._parts:
            return None
        return pa.concat_tables(self._parts)
