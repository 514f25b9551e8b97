"""Helpers for the engine's tests: rows as the Python path sees them, and a ledger holding version 2 fingerprints.

While the Python path still acknowledges subscribers with version 1 fingerprints, the engine (which computes
version 2) finds every row changed. `record_v2` puts into a ledger what the Python path records once it writes
version 2, through the ledger's own API: the fingerprints are `subscriber_fingerprint_v2` of `map_subscriber`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bento_destination.changes import LEDGER_FILENAME
from bento_destination.engine.columns import dlt_name
from bento_destination.ledger import SyncLedger
from bento_destination.mapping import MappingOptions, map_subscriber
from bento_destination.subscriber_fingerprint import subscriber_fingerprint_v2
from bento_destination.values import RowError


def as_sink_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """An input row as the sink receives it: dlt's column names, nulls left out."""
    return {dlt_name(column): value for column, value in row.items() if value is not None}


def python_fingerprint(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """(email key, v2 fingerprint) the Python path computes for an input row; None if it rejects the row."""
    try:
        mapped = map_subscriber(as_sink_row(row), MappingOptions())
    except RowError:
        return None
    email = mapped.payload["email"] if mapped.payload else mapped.commands[0]["email"]
    return str(email), subscriber_fingerprint_v2(mapped.payload, mapped.commands)


def ledger_path(cwd: Path, pipeline: str = "bento_sync_subscribers") -> Path:
    return cwd / "p" / pipeline / LEDGER_FILENAME


def record_v2(ledger_file: Path, site: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Acknowledge the rows' version 2 fingerprints in the ledger file; how many."""
    pairs = [pair for pair in map(python_fingerprint, rows) if pair is not None]
    with SyncLedger.open(str(ledger_file), site=site) as ledger:
        ledger.acknowledge("subscribers", pairs)
    return len(pairs)


def duckdb_select(con: Any, create: str, names: Sequence[str], batch: Sequence[Mapping[str, Any]],
                  select: str) -> list[tuple[Any, ...]]:
    """Rows into a fresh table `t` (`create`, an `i` column first, then `names`), then `select`'s result."""
    con.execute("DROP TABLE IF EXISTS t")
    con.execute(create)
    con.executemany(f"INSERT INTO t VALUES (?, {', '.join('?' for _ in names)})",
                    [[i, *(row[n] for n in names)] for i, row in enumerate(batch)])
    return list(con.execute(select).fetchall())


@contextmanager
def postgres_select(url: str) -> Iterator[Callable[[str, Sequence[str], Sequence[Mapping[str, Any]], str],
                                                   list[tuple[Any, ...]]]]:
    """`duckdb_select` on a Postgres database (SQLAlchemy URL)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)

    def run(create: str, names: Sequence[str], batch: Sequence[Mapping[str, Any]], select: str
            ) -> list[tuple[Any, ...]]:
        with engine.begin() as con:
            con.exec_driver_sql("DROP TABLE IF EXISTS t")
            con.exec_driver_sql(create)
            placeholders = ", ".join(f"%(c{j})s" for j in range(len(names)))
            con.exec_driver_sql(f"INSERT INTO t VALUES (%(i)s, {placeholders})",
                                [{"i": i, **{f"c{j}": row[n] for j, n in enumerate(names)}}
                                 for i, row in enumerate(batch)])
            return [tuple(r) for r in con.exec_driver_sql(select).fetchall()]

    try:
        yield run
    finally:
        engine.dispose()
