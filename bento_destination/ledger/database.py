"""The ledger's DuckDB database: its tables, its caps, opening a ledger file, and its recorded versions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from .errors import LedgerBusyError, LedgerError, first_line
from .keys import FORMAT_VERSION, VERSIONS

#: DuckDB's working-memory cap for the ledger; beyond it DuckDB spills to its temporary folder (joins,
#: compaction) or evicts table blocks it can read again. 1,000,000 keys are about 40 MB in DuckDB's
#: format. Not much lower: a checkpoint needs a few MB pinned, and at 8 MB it failed (a fatal error).
#: At 32 MB the ledger's buffers were about 15 MB of a streamed 1,000,000-row sync's peak RSS. Not 16 MB:
#: DuckDB's hash join of even two keys against a reopened ledger asks for 7.5 MiB, which ran out there on
#: every consent and tag lookup; at 24 MB lookups and commits of up to 50,000 keys against 1,000,000 stored
#: fit. A statement that does not gets a second try under the bulk cap (`LedgerReads._with_room`).
DEFAULT_MEMORY_LIMIT = "24MB"
#: the cap while one statement handles more than BULK_ROWS rows (a load file's keys classified at once,
#: a million keys acknowledged at once, reading many segments, compacting): such a statement needs room
#: for its intermediates (classifying 100,000 keys ran out at 16 MB), and the steady cap comes back when
#: it is done
DEFAULT_BULK_MEMORY_LIMIT = "512MB"
BULK_ROWS = 50_000
#: DuckDB worker threads of the ledger connection: the ledger is used by one thread at a time anyway,
#: and each DuckDB thread keeps its own buffers
DEFAULT_THREADS = 1

_DDL = """
CREATE TABLE IF NOT EXISTS ledger_entries (
    site VARCHAR NOT NULL,
    ns VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    sub VARCHAR NOT NULL,
    value VARCHAR,
    seq BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_meta (k VARCHAR PRIMARY KEY, v VARCHAR);
"""


def open_file(file: Path, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """Open (or create) a ledger file, its tables and its versions; a file another process holds is refused."""
    file.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(file), config=config)
    except duckdb.Error as exc:
        if "lock" in str(exc).lower():
            raise LedgerBusyError(
                f"cannot open the ledger file {file}: it is in use by another run. Another process holds it "
                f"({first_line(exc)}); a DuckDB ledger file serves one pipeline run at a time. This run "
                "sends nothing more; run it again once the other one has finished"
            ) from exc
        raise LedgerError(
            f"cannot open the ledger file {file}: {exc}. Another process may hold it: "
            "a DuckDB ledger file serves one pipeline run at a time"
        ) from exc
    try:
        prepare(con, f"the ledger file {file}")
    except BaseException:
        con.close()
        raise
    return con


def prepare(con: duckdb.DuckDBPyConnection, what: str) -> None:
    """Create the tables; refuse a ledger a newer release wrote; record this release's versions (`keys.VERSIONS`).

    Entries keep the version they were written with (a fingerprint says it): an older ledger is read as it
    is, and migrates entry by entry (docs/ledger.md, "Versions").
    """
    con.execute(_DDL)
    rows = con.execute("SELECT v FROM ledger_meta WHERE k = 'format'").fetchall()
    written = int(rows[0][0]) if rows and str(rows[0][0]).isdigit() else FORMAT_VERSION
    if written > FORMAT_VERSION:
        raise LedgerError(
            f"{what} was written by a newer release (format {written}; this one reads up to {FORMAT_VERSION}): "
            "upgrade bento-dlt before syncing with it"
        )
    if written < FORMAT_VERSION:
        con.execute("INSERT OR REPLACE INTO ledger_meta VALUES ('upgraded_from_format', ?)", [str(written)])
    con.executemany("INSERT OR REPLACE INTO ledger_meta VALUES (?, ?)", [list(item) for item in VERSIONS.items()])


def versions(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """What a ledger database records about itself (format and versions)."""
    return {str(k): str(v) for k, v in con.execute("SELECT k, v FROM ledger_meta ORDER BY k").fetchall()}
