"""Which rows Bento took: the identity of each sent row, spooled per load for the sync results database.

The sink may write files but must not run a dlt pipeline of its own, so it appends, per finished sink
batch, one short JSON line per sent row to `<working_dir>/bento_rejects/<load_id>.sent.jsonl`, next to the
rejects; after the load, `sync()` moves the spool into the results tables (results.py) and deletes it.
A line holds the row's identity only, not the row: `{"table", "operation", "email", "key"}`, where `key`
is what the sync ledger keys that kind of row by, so results join the ledger (`ledger_entries.key`):
subscribers by email, events by (email, type, unique key), emails by their email key (email_identity.py),
commands by command and query. Not fsynced: the ledger, not this spool, is what keeps a rerun from
sending twice; a spool lost in a power cut only leaves sent rows out of the results.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Final

from .keys import explicit_event_key
from .ledger import event_ledger_key

SENT_SUFFIX: Final = ".sent.jsonl"


def row_identity(operation: str, payload: dict[str, Any], key: str | None = None) -> tuple[str | None, str | None]:
    """(email, key) of a sent payload; `key` is the email's ledger key for the emails operation."""
    command = payload.get("command")
    if command is not None:
        query = payload.get("query")
        return _text(payload.get("email")), str(command) + (f":{query}" if query not in (None, "") else "")
    if operation == "emails":
        return _text(payload.get("to")), key
    email = _text(payload.get("email"))
    if operation == "events":
        event_key = explicit_event_key(payload)
        if email is None or event_key is None:
            return email, None
        return email, event_ledger_key(email, str(payload.get("type", "")), event_key)
    return email, email


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def spool_path(folder: Path, load_id: str) -> Path:
    return folder / f"{load_id}{SENT_SUFFIX}"


class SentWriter:
    """Appends the sent rows of one load's sink batches (thread-safe: dlt runs load jobs in parallel)."""

    def __init__(self, folder: Path, load_id: str) -> None:
        self.path = spool_path(folder, load_id)
        self._lock = threading.Lock()

    def write(self, table: str, operation: str | None, identities: list[tuple[str | None, str | None]]) -> None:
        if not identities:
            return
        prefix = json.dumps({"table": table, "operation": operation})[:-1]
        lines = "".join(
            f'{prefix}, "email": {json.dumps(email)}, "key": {json.dumps(key)}}}\n' for email, key in identities
        )
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(lines)
