"""`map_subscriber_batch`: a whole Arrow batch of subscribers mapped at once, with version 2 fingerprints.

The column plan is `mapping.subscribers.subscriber_plan`'s, decided once from the batch's column names. Each column
is then converted with Arrow compute (columns.py); the few rows that need Python (errors, nested or odd values,
columns that could collide, dlt variant columns, text outside ASCII in an email) are mapped again by `map_row`
itself, so every row's payload, commands, error and notes are exactly those of the per-row path. Payload dicts are
built only for the rows the caller asks for (`SubscriberBatch.mapped`): the rows it will actually send.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import numpy as np
import pyarrow as pa

from bento_api.facts import RESERVED_IMPORT_KEYS

from ..mapping import MappedRow, MappingOptions, map_row
from ..mapping.common import FIELD, FIELDS_OBJECT, TAGS, Step
from ..mapping.subscribers import SUBSCRIBER_RESERVED, subscriber_plan, tag_string
from ..rows import clean_row, variant_base
from ..settings import MAX_ROW_BYTES
from ..subscriber_fingerprint import subscriber_fingerprint_v2
from ..values import RowError, to_bool
from .columns import ColumnValues, Mask, as_flag, bool_values, email_values, field_values, pc, present, with_memo
from .fingerprints import canonical_texts, hash_texts

#: JSON may write a character of text as up to 6 bytes (`\u001f`); a row whose bound passes MAX_ROW_BYTES is
#: measured exactly by `map_row`
_JSON_GROWTH: Final = 6
_JSON_PER_FIELD: Final = 8  # quotes, colon, comma around a field's name and value
_JSON_ROW: Final = 16  # braces and the `email` key


@dataclass
class _Field:
    """A column sent as one payload field: its name, its values, and the rows that send one."""

    name: str
    values: ColumnValues
    sends: Mask


@dataclass
class _Note:
    """A column recorded but not sent (secret-looking, or a key Bento's import would read), where it has a value."""

    where: str
    reserved: bool
    rows: Mask


@dataclass
class SubscriberBatch:
    """What each row of a batch becomes: email, v2 fingerprint, unsubscribe flag, or the reason it cannot be sent.

    `emails[i]` and `fingerprints[i]` are None exactly where `errors` holds row i.
    """

    batch: pa.RecordBatch
    emails: list[str | None]
    fingerprints: list[str | None]
    unsubscribes: Mask
    errors: dict[int, tuple[str, str]]
    _fields: list[_Field] = field(repr=False)
    _notes: list[_Note] = field(repr=False)
    _redone: dict[int, MappedRow] = field(repr=False)

    def __len__(self) -> int:
        return self.batch.num_rows

    def error(self, index: int) -> tuple[str, str] | None:
        """(reason, detail) of a row `map_row` would refuse, else None."""
        return self.errors.get(index)

    def mapped(self, indices: Sequence[int]) -> list[MappedRow]:
        """Payload, commands and notes of the given rows (none of them an error row), as `map_row` gives them."""
        payloads, commands = self.payloads(indices)
        notes = [(n.where, n.reserved, n.rows[list(indices)].tolist()) for n in self._notes]
        out = []
        for j, i in enumerate(indices):
            if i in self._redone:
                out.append(self._redone[i])
                continue
            result = MappedRow(payloads[j], commands[j])
            for where, reserved, rows in notes:
                if rows[j]:
                    (result.reserved if reserved else result.dropped).add(where)
            out.append(result)
        return out

    def payloads(self, indices: Sequence[int]) -> tuple[list[dict[str, Any] | None], list[list[dict[str, Any]]]]:
        """The upsert payload (None for an unsubscribe alone) and the commands of each given row.

        Only these rows become dicts: the rows a sink will send, not those the ledger found unchanged.
        """
        with collector_paused():
            return self._payloads(indices)

    def _payloads(self, indices: Sequence[int]) -> tuple[list[dict[str, Any] | None], list[list[dict[str, Any]]]]:
        picked = list(indices)
        if self.errors and any(i in self.errors for i in picked):
            raise ValueError("payloads() asked for a row that cannot be sent; check errors first")
        emails = self.emails if picked == list(range(len(self))) else [self.emails[i] for i in picked]
        unsubscribes = self.unsubscribes[picked].tolist()
        names = [f.name for f in self._fields]
        columns = [f.values.take(picked) for f in self._fields]
        gaps = [not f.sends[picked].all() for f in self._fields]
        if any(gaps):  # some fields have no value in some rows: leave them out of those payloads
            sends = [f.sends[picked].tolist() for f in self._fields]
            payloads: list[dict[str, Any] | None] = []
            for j, email in enumerate(emails):
                payload = {"email": email}
                for name, values, sent in zip(names, columns, sends, strict=True):
                    if sent[j]:
                        payload[name] = values[j]
                payloads.append(payload)
        else:
            keys = ("email", *names)
            payloads = [dict(zip(keys, row, strict=True)) for row in zip(emails, *columns, strict=True)]
        commands: list[list[dict[str, Any]]] = [
            [{"command": "unsubscribe", "email": email}] if unsubscribe else []
            for email, unsubscribe in zip(emails, unsubscribes, strict=True)
        ]
        for j in np.flatnonzero(self.unsubscribes[picked]).tolist():
            if len(payloads[j] or ()) == 1:
                payloads[j] = None  # nothing to upsert: the command alone
        if self._redone:
            for j, i in enumerate(picked):
                if i in self._redone:
                    payloads[j], commands[j] = self._redone[i].payload, self._redone[i].commands
        return payloads, commands

    def rows(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The source rows as the sink sees them (nulls dropped, variant columns folded), e.g. for rejects."""
        taken = self.batch.take(pa.array(list(indices), pa.int64())).to_pylist()
        return [clean_row(row) for row in taken]

    def sendable(self) -> list[int]:
        """Indices of the rows that map to something to send (every row but the errors)."""
        return [i for i in range(len(self)) if i not in self.errors]

    def notes(self) -> tuple[set[str], set[str], set[str]]:
        """(dropped, reserved, ignored) over the rows that can be sent, as the run report collects them."""
        ok = np.ones(len(self), np.bool_)
        ok[list(self.errors)] = False
        dropped = {n.where for n in self._notes if not n.reserved and (n.rows & ok).any()}
        reserved = {n.where for n in self._notes if n.reserved and (n.rows & ok).any()}
        ignored: set[str] = set()
        for result in self._redone.values():
            dropped |= result.dropped
            reserved |= result.reserved
            ignored |= result.ignored
        return dropped, reserved, ignored


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while many dicts are built at once (they form no cycles).

    Each thousand new containers trigger a collection, and the older ones scan every container alive: for
    100,000 payloads that scanning took longer than building them. The collector is switched back on after,
    unless it was off before (as another thread or the caller may have it).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def as_record_batch(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    """One RecordBatch (a Table's chunks combined)."""
    if isinstance(data, pa.RecordBatch):
        return data
    table = data.combine_chunks()
    return pa.RecordBatch.from_arrays([column.combine_chunks() for column in table.columns], schema=table.schema)


def _conflicting(names: list[str]) -> set[str]:
    """Field names that could meet another column's in one row: those rows go through `map_row`'s checks."""
    counts = Counter(names)
    return {name for name in names if counts[name] > 1 or name in SUBSCRIBER_RESERVED}


def map_subscriber_batch(data: pa.RecordBatch | pa.Table, options: MappingOptions) -> SubscriberBatch:
    """Map every row of a subscribers batch; the same result per row as `map_row("subscribers", row, options)`."""
    batch = as_record_batch(data)
    size = batch.num_rows
    redo = np.zeros(size, np.bool_)
    names: list[str] = []
    for column, array in zip(batch.schema.names, batch.columns, strict=True):
        if variant_base(column) is None:
            names.append(column)
        else:  # a row with a variant value has its columns in another order: its own plan, in map_row
            redo |= present(array)
    plan = subscriber_plan(tuple(names))
    fields: list[_Field] = []
    notes: list[_Note] = []
    unsubscribes = np.zeros(size, np.bool_)
    email_text: pa.Array = pa.nulls(size, pa.string())
    if plan.error is not None:  # which rows meet it depends on their nulls: map_row decides per row
        redo[:] = True
    else:
        email = email_values(batch.column(plan.email), plan.email)
        redo |= email.redo | ~present(email.text)  # no email: map_row's own message
        email_text = email.text
        unsubscribes = _map_steps(batch, plan.steps, options, fields, notes, redo)
        redo |= _past_size_bound(email.text, fields)
    keep = pa.array(~redo, pa.bool_())
    email_text = pc.if_else(keep, email_text, pa.scalar(None, pa.string()))
    fingerprints = hash_texts(canonical_texts(
        email_text, [(f.name, f.values.text) for f in fields], unsubscribes & ~redo
    ))
    emails: list[str | None] = email_text.to_pylist()
    for f in fields:
        f.sends &= ~redo
    for note in notes:
        note.rows &= ~redo
    errors, redone = _redo_rows(batch, np.flatnonzero(redo).tolist(), options, emails, fingerprints, unsubscribes)
    return SubscriberBatch(batch, emails, fingerprints, unsubscribes, errors, fields, notes, redone)


def _map_steps(
    batch: pa.RecordBatch, steps: Sequence[Step], options: MappingOptions, fields: list[_Field], notes: list[_Note],
    redo: Mask,
) -> Mask:
    """Convert each planned column (filling `fields`, `notes`, `redo`); returns the unsubscribe flags."""
    size = batch.num_rows
    unsubscribes = np.zeros(size, np.bool_)
    live = [s.name for s in steps if s.kind == FIELD and s.name and s.name not in RESERVED_IMPORT_KEYS
            and not (s.secret and not options.allow_secret_columns)]
    conflicting = _conflicting(live)
    for step in steps:
        column = step.column
        array = batch.column(column)
        has_value = present(array)
        if step.kind == FIELD:
            if not step.name or step.name in conflicting:
                redo |= has_value  # map_row raises (no valid name) or checks the collision
            elif step.name in RESERVED_IMPORT_KEYS:
                notes.append(_Note(step.where, True, has_value))
            elif step.secret and not options.allow_secret_columns:
                notes.append(_Note(step.where, False, has_value))
            else:
                values = field_values(array, step.where)
                redo |= values.redo
                fields.append(_Field(step.name, values, present(values.text)))
        elif step.kind == FIELDS_OBJECT:
            redo |= has_value  # a dict or JSON object of fields: per row
        elif step.kind == TAGS:
            values = with_memo(array, partial(tag_string, column=column))
            redo |= values.redo
            fields.append(_Field(step.name, values, present(values.text)))
        else:  # UNSUBSCRIBED
            flags = bool_values(array) or with_memo(array, partial(to_bool, column=column))
            redo |= flags.redo
            unsubscribes = as_flag(flags) & ~flags.redo
    return unsubscribes


def _past_size_bound(email: pa.Array, fields: list[_Field]) -> Mask:
    """Rows whose JSON might pass MAX_ROW_BYTES (an upper bound; `map_row` measures them exactly)."""
    bound = np.asarray(pc.fill_null(pc.binary_length(email), 0).to_numpy(zero_copy_only=False), np.int64)
    bound = bound * _JSON_GROWTH + _JSON_ROW
    for f in fields:
        sizes = np.asarray(pc.fill_null(pc.binary_length(f.values.text), 0).to_numpy(zero_copy_only=False), np.int64)
        bound += np.where(f.sends, sizes * _JSON_GROWTH + len(f.name) * _JSON_GROWTH + _JSON_PER_FIELD, 0)
    return np.asarray(bound > MAX_ROW_BYTES, np.bool_)


def _redo_rows(
    batch: pa.RecordBatch, indices: list[int], options: MappingOptions, emails: list[str | None],
    fingerprints: list[str | None], unsubscribes: Mask,
) -> tuple[dict[int, tuple[str, str]], dict[int, MappedRow]]:
    """Map the marked rows with `map_row` (filling their email, fingerprint and flag); their errors and results."""
    errors: dict[int, tuple[str, str]] = {}
    redone: dict[int, MappedRow] = {}
    if not indices:
        return errors, redone
    rows = batch.take(pa.array(indices, pa.int64())).to_pylist()
    for i, row in zip(indices, rows, strict=True):
        try:
            result = map_row("subscribers", clean_row(row), options)
        except RowError as error:
            errors[i] = (error.reason, error.detail)
            emails[i] = fingerprints[i] = None
            unsubscribes[i] = False
            continue
        redone[i] = result
        unsubscribe = any(command.get("command") == "unsubscribe" for command in result.commands)
        emails[i] = str(result.payload["email"] if result.payload is not None else result.commands[0]["email"])
        fingerprints[i] = subscriber_fingerprint_v2(result.payload, result.commands)
        unsubscribes[i] = unsubscribe
    return errors, redone
