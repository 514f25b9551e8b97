"""Warehouse to Bento: rows of DuckDB (default) or any SQLAlchemy database into Bento subscribers/events.

    python -m pipelines.warehouse_to_bento --source warehouse.duckdb --table crm_contacts \\
        --operation crm_contacts=subscribers
    python -m pipelines.warehouse_to_bento --source postgresql://user@host/db --table events
    python -m pipelines.warehouse_to_bento --emulator      # a demo DuckDB file into a local emulator

Keys come from keywords, `[destination.bento]` in .dlt/secrets.toml, DESTINATION__BENTO__* or BENTO_*.
DuckDB files are read directly as Arrow record batches (no SQLAlchemy driver needed); any other URL goes
through dlt's `sql_table(backend="pyarrow")`. One table of subscribers (or of events with a `unique_key`
column) in a DuckDB file or in Postgres is diffed where it lives first (docs/ledger.md): only its new and
changed rows are read. Either way rows stay Arrow until the sink converts one
batch at a time. Exit codes: 0 done, 1 failed, 2 unreadable input, 3 rows rejected past the threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
from dlt.extract.resource import DltResource

from bento_destination import SINK_BATCH_SIZE
from bento_destination.engine import EngineRows, EngineSource, diffed_rows
from bento_destination.operations import resolve_operation
from bento_destination.report import LoadReport
from bento_destination.sync import DEFAULT_FILE_MAX_ITEMS, EXIT_OK, exit_code, explain, sync

from .dataframe_to_bento import emulator_credentials

DEFAULT_PIPELINE = "warehouse_to_bento"
DEFAULT_SOURCE = "warehouse.duckdb"


def is_duckdb(source: str) -> bool:
    return source.startswith("duckdb:///") or "://" not in source


def _duckdb_path(source: str) -> str:
    return source[len("duckdb:///") :] if source.startswith("duckdb:///") else source


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duckdb_batches(path: str, table: str, chunk: int = SINK_BATCH_SIZE) -> Iterator[pa.RecordBatch]:
    """Stream a DuckDB table as Arrow record batches (never the whole table in memory)."""
    import duckdb

    if not Path(path).is_file():
        raise FileNotFoundError(f"DuckDB file {path} does not exist")
    connection = duckdb.connect(path, read_only=True)
    try:
        reader = connection.sql(f"SELECT * FROM {_quoted(table)}").to_arrow_reader(chunk)
        if reader is not None:
            yield from reader
    finally:
        connection.close()


def warehouse_table(source: str, table: str) -> DltResource:
    """A dlt resource named after `table` reading it from `source` (DuckDB path/URL or SQLAlchemy URL)."""
    if is_duckdb(source):
        return dlt.resource(duckdb_batches(_duckdb_path(source), table), name=table)
    from dlt.sources.sql_database import sql_table

    return sql_table(credentials=source, table=table, backend="pyarrow", chunk_size=SINK_BATCH_SIZE)


def run(
    source: str = DEFAULT_SOURCE,
    tables: Sequence[str] = ("subscribers",),
    *,
    pipeline_name: str = DEFAULT_PIPELINE,
    pipelines_dir: str | os.PathLike[str] | None = None,
    file_max_items: int | None = DEFAULT_FILE_MAX_ITEMS,
    **destination_kwargs: Any,
) -> list[LoadReport]:
    """Send warehouse tables to Bento; returns the load reports, raises BentoRejectsExceeded past the threshold.

    `destination_kwargs` go to `bento(...)`: credentials, `table_operations`, `reject_threshold`, ...
    """
    if is_duckdb(source) and not Path(_duckdb_path(source)).is_file():
        raise FileNotFoundError(f"DuckDB file {_duckdb_path(source)} does not exist")
    if len(tables) == 1:
        rows = _diffed(source, tables[0], pipeline_name, pipelines_dir, destination_kwargs)
        if rows is not None:  # only the new and changed rows, found by DuckDB or Postgres
            return sync(rows, pipeline_name=pipeline_name, pipelines_dir=pipelines_dir, table_name=tables[0],
                        file_max_items=file_max_items, **destination_kwargs)
    resources = [warehouse_table(source, table) for table in tables]
    return sync(
        resources,
        pipeline_name=pipeline_name,
        pipelines_dir=pipelines_dir,
        file_max_items=file_max_items,
        **destination_kwargs,
    )


def _diffed(
    source: str, table: str, pipeline_name: str, pipelines_dir: str | os.PathLike[str] | None,
    destination_kwargs: dict[str, Any],
) -> EngineRows | None:
    """The engine's rows for one table of a DuckDB file or of Postgres (docs/ledger.md), else None."""
    operation = resolve_operation(table, destination_kwargs.get("table_operations"))
    if operation not in ("subscribers", "events"):
        return None
    if is_duckdb(source):
        where = EngineSource("duckdb", _duckdb_path(source), table)
    elif source.split("://", 1)[0].split("+", 1)[0] == "postgresql":
        where = EngineSource("postgres", source, table)
    else:
        return None
    return diffed_rows(where, operation=operation, pipeline_name=pipeline_name, pipelines_dir=pipelines_dir,
                       table_name=table.rpartition(".")[2], **destination_kwargs)


def write_demo_warehouse(path: Path, subscribers: int = 300, events: int = 600) -> None:
    """A small DuckDB warehouse for the demo: crm_contacts (subscribers) and product_events (events)."""
    import duckdb

    with duckdb.connect(str(path)) as con:
        con.execute(
            "CREATE OR REPLACE TABLE crm_contacts AS SELECT 'person' || i || '@example.com' AS email, "
            "'Person ' || i AS first_name, CASE WHEN i % 3 = 0 THEN 'pro' ELSE 'free' END AS plan, "
            "CASE WHEN i % 2 = 0 THEN ['customer', 'demo'] ELSE ['demo'] END AS tags, "
            "i % 50 = 0 AS unsubscribed FROM range(?) t(i)",
            [subscribers],
        )
        # events go to the contacts who stay subscribed (every index but multiples of 50): whether an event for
        # someone the same run unsubscribes is sent depends on which table's load job reaches the ledger first
        con.execute(
            "CREATE OR REPLACE TABLE product_events AS SELECT "
            "'person' || (1 + i % 49 + 50 * ((i // 49) % ?)) || '@example.com' AS email, "
            "'$purchase' AS type, 'order-' || i AS unique_key, "
            "{'value': {'currency': 'USD', 'amount': 100 + i}} AS details FROM range(?) t(i)",
            [max(1, subscribers // 50), events],
        )


@contextlib.contextmanager
def emulator_demo() -> Iterator[dict[str, Any]]:
    """An in-process emulator and a demo warehouse; yields `run` keyword arguments."""
    with tempfile.TemporaryDirectory() as folder, emulator_credentials() as credentials:
        path = Path(folder) / "demo_warehouse.duckdb"
        write_demo_warehouse(path)
        yield {
            **credentials,
            "source": str(path),
            "tables": ("crm_contacts", "product_events"),
            "table_operations": {"crm_contacts": "subscribers", "product_events": "events"},
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Send warehouse rows to Bento (reverse ETL)")
    parser.add_argument("--source", help=f"DuckDB file or SQLAlchemy URL (default: {DEFAULT_SOURCE})")
    parser.add_argument("--table", action="append", dest="tables", help="table to send (repeat; default subscribers)")
    parser.add_argument("--operation", action="append", default=[], metavar="TABLE=OPERATION",
                        help="send TABLE as subscribers, events, commands or emails (repeat)")
    parser.add_argument("--reject-threshold", type=float, help="share of rejected rows that fails the run")
    parser.add_argument("--allow-email-sends", action="store_true", help="allow the emails table to send emails")
    parser.add_argument("--emulator", action="store_true", help="send a demo warehouse to a local emulator")
    parser.add_argument("--pipelines-dir", help="where dlt keeps pipeline state, rejects and reports")
    parser.add_argument("--pipeline-name", default=DEFAULT_PIPELINE)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    operations: dict[str, str] = {}
    for pair in args.operation:
        table, sep, operation = pair.partition("=")
        if not sep:
            print(f"--operation wants TABLE=OPERATION, got {pair!r}", file=sys.stderr)
            return 2
        operations[table.strip()] = operation.strip()
    kwargs: dict[str, Any] = {
        "pipeline_name": args.pipeline_name,
        "pipelines_dir": args.pipelines_dir,
        "reject_threshold": args.reject_threshold,
        "allow_email_sends": args.allow_email_sends or None,
    }
    try:
        with contextlib.ExitStack() as stack:
            if args.emulator:
                kwargs.update(stack.enter_context(emulator_demo()))
                print("Using an in-process Bento emulator and a demo warehouse (budget raised for the emulator).")
            if args.source:
                kwargs["source"] = args.source
            if args.tables:
                kwargs["tables"] = args.tables
            if operations:
                kwargs["table_operations"] = {**kwargs.get("table_operations", {}), **operations}
            run(**kwargs)
    except Exception as error:
        print(f"warehouse_to_bento: {explain(error)}", file=sys.stderr)
        return exit_code(error)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
