"""Which rows Bento took: the identity of each sent row, spooled per load for the sync results database.

The sink may write files but must not run a dlt pipeline of its own, so it appends, per finished sink
batch, one short CSV line per sent row to `<working_dir>/bento_rejects/<load_id>.sent.csv`, next to the
rejects; after the load, `sync()` moves the spool into the results tables (results.py) and deletes it.
CSV, not JSON lines: DuckDB reads CSV through a 1 MB buffer, JSON through a fixed 32 MiB one (a million
sent rows written at the end of a run: about 40 MB less at the run's peak). A `.sent.jsonl` spool an
earlier release left behind is still read. A line holds the row's identity only, not the row:
`table, operation, email, key` (strings quoted, a missing value empty and unquoted), where `key`
is what the sync ledger keys that kind of row by, so results join the ledger (`ledger_entries.key`):
subscribers by email, events by (email, type, unique key), emails by their email key (email_identity.py),
commands by command and query. Not fsynced: the ledger, not this spool, is what keeps a rerun from
sending twice; a spool lost in a power cut only leaves sent rows out of the results.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from .keys import explicit_event_key
from .ledger import event_ledger_key

SENT_SUFFIX: Final = ".sent.csv"
#: the spool of the releases before this one (JSON lines), read if a run left one behind
LEGACY_SENT_SUFFIX: Final = ".sent.jsonl"
SPOOL_SCHEMA: Final = pa.schema([pa.field(n, pa.string()) for n in ("table", "operation", "email", "key")])
#: DuckDB's memory cap while it reads a spool into a results file: its CSV reader needs a few MB beside its
#: 1 MB buffer, its JSON reader (a legacy spool) a 32 MiB buffer
CSV_MEMORY_LIMIT: Final = "24MB"
JSON_MEMORY_LIMIT: Final = "64MB"
_CSV_BUFFER_BYTES: Final = 1 << 20


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


def spool_paths(folder: Path, load_id: str) -> list[Path]:
    """The spools of a load that exist: a legacy one (JSON lines) an earlier release left, then this one's."""
    return [path for path in (folder / f"{load_id}{LEGACY_SENT_SUFFIX}", spool_path(folder, load_id)) if path.is_file()]


def _csv_field(value: str | None) -> str:
    """Quoted, quotes doubled; None empty and unquoted, so it reads back as NULL and "" as an empty string."""
    return "" if value is None else '"' + value.replace('"', '""') + '"'


def spool_sql(spool: Path) -> tuple[str, str]:
    """(DuckDB table function reading the spool, parameter `$spool`; the memory cap it needs)."""
    columns = "{" + ", ".join(f"'{f.name}': 'VARCHAR'" for f in SPOOL_SCHEMA) + "}"
    if spool.name.endswith(LEGACY_SENT_SUFFIX):
        return f"read_json($spool, format = 'newline_delimited', columns = {columns})", JSON_MEMORY_LIMIT
    return (
        f"read_csv($spool, header = false, auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
        f"allow_quoted_nulls = false, columns = {columns}, buffer_size = {_CSV_BUFFER_BYTES}, "
        f"max_line_size = {_CSV_BUFFER_BYTES})",
        CSV_MEMORY_LIMIT,
    )


def spool_tables(spool: Path, chunk_bytes: int) -> Iterator[pa.Table]:
    """The spool as Arrow tables of about `chunk_bytes` of spool each (parsed by pyarrow: no object per row)."""
    if spool.name.endswith(LEGACY_SENT_SUFFIX):
        with spool.open("rb") as handle:
            while block := handle.read(chunk_bytes):
                block += handle.readline()  # up to the end of the line the block cut
                options = pa_json.ParseOptions(explicit_schema=SPOOL_SCHEMA)
                yield pa_json.read_json(io.BytesIO(block), parse_options=options)
        return
    reader = pa_csv.open_csv(
        spool,
        read_options=pa_csv.ReadOptions(column_names=SPOOL_SCHEMA.names, block_size=chunk_bytes, use_threads=False),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={f.name: f.type for f in SPOOL_SCHEMA}, strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    with reader:
        for batch in reader:
            yield pa.Table.from_batches([batch], schema=SPOOL_SCHEMA)


class SentWriter:
    """Appends the sent rows of one load's sink batches (thread-safe: dlt runs load jobs in parallel)."""

    def __init__(self, folder: Path, load_id: str) -> None:
        self.path = spool_path(folder, load_id)
        self._lock = threading.Lock()

    def write(self, table: str, operation: str | None, identities: list[tuple[str | None, str | None]]) -> None:
        if not identities:
            return
        prefix = f"{_csv_field(table)},{_csv_field(operation)}"
        lines = "".join(f"{prefix},{_csv_field(email)},{_csv_field(key)}\n" for email, key in identities)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(lines)
