"""Sync results in a database: each run's outcome per table, and one record per sent or rejected row.

After the load step, `sync()` calls `record_results`: it reads what the sink left per load (the report,
the rejects file, the spool of sent rows: sent_rows.py) and writes two tables:

- `bento_sync_runs`: one row per run and table, the counts of what this run did (a load resumed by a
  later run is counted in both runs, each with its own part); unchanged rows are a count here only, so
  an unchanged million-row table adds no row records;
- `bento_sync_rows`: one row per sent or rejected row (status, reason, detail; identity `email`, `key`).

The default target is a DuckDB file beside the pipeline (`<working_dir>/bento_results.duckdb`), written
directly. Any dlt destination (a Postgres schema of the input's warehouse, ...) is opt-in: it is written
by a separate dlt pipeline `<pipeline>_results` after the load, never from the sink (a nested pipeline
there would replace `dlt.current.pipeline()`). A failed write never fails the sync: it warns, keeps the
spool, and the next run writes what is still missing. The JSONL rejects stay either way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pyarrow as pa

from .rejects import load_ids
from .report import LoadReport, read_report
from .sent_rows import CSV_MEMORY_LIMIT, SENT_SUFFIX, spool_paths, spool_sql, spool_tables
from .settings import REJECTS_SUFFIX, REPORT_SUFFIX

RUNS_TABLE: Final = "bento_sync_runs"
ROWS_TABLE: Final = "bento_sync_rows"
RESULTS_FILENAME: Final = "bento_results.duckdb"
DEFAULT_DATASET: Final = "bento_sync_results"
#: per load, what the results tables hold already: counts per table, reject lines (so a resumed load adds its part)
MARK_SUFFIX: Final = ".results.json"
#: TableReport counts copied into bento_sync_runs (as this run's part of them)
COUNTS: Final = (
    "received", "sent", "unchanged", "new", "changed", "rejected", "already_sent", "commands_sent",
    "requests", "retries", "rate_limited", "server_errors",
)
#: seconds a run waits for another process writing the same results DuckDB file before it warns
LOCK_WAIT_SECONDS: Final = 10.0
#: URL schemes that name a dlt destination other than their own name
SCHEME_DESTINATIONS: Final = {"postgresql": "postgres", "postgres": "postgres", "mssql": "mssql"}

logger = logging.getLogger("bento_destination")

_RUNS_FIELDS: list[pa.Field[Any]] = [
    pa.field("run_id", pa.string()), pa.field("load_id", pa.string()), pa.field("pipeline_name", pa.string()),
    pa.field("table_name", pa.string()), pa.field("operation", pa.string()), pa.field("outcome", pa.string()),
    pa.field("started_at", pa.timestamp("us", tz="UTC")), pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    *(pa.field(name, pa.int64()) for name in COUNTS),
    pa.field("rejected_by_reason", pa.string()), pa.field("error", pa.string()),
]
RUNS_SCHEMA = pa.schema(_RUNS_FIELDS)
ROWS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string()), pa.field("load_id", pa.string()), pa.field("pipeline_name", pa.string()),
        pa.field("table_name", pa.string()), pa.field("operation", pa.string()), pa.field("status", pa.string()),
        pa.field("email", pa.string()), pa.field("key", pa.string()), pa.field("reason", pa.string()),
        pa.field("detail", pa.string()), pa.field("row_json", pa.string()),
    ]
)
#: bytes of the sent rows' spool parsed at a time for a dlt destination (about 60,000 rows)
SPOOL_CHUNK_BYTES = 8 << 20
_DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.timestamp("us", tz="UTC"): "TIMESTAMPTZ"}


@dataclass(frozen=True)
class ResultsTarget:
    """Where results go: a DuckDB file written directly, or a dlt destination written by its own pipeline."""

    duckdb_path: Path | None = None
    destination: Any = None
    dataset_name: str = DEFAULT_DATASET
    #: the password of a results URL, hidden in every message about the target
    secret: str | None = None

    def hide(self, text: str) -> str:
        return text.replace(self.secret, "***") if self.secret else text

    def describe(self) -> str:
        if self.duckdb_path is not None:
            return str(self.duckdb_path.resolve())
        name = getattr(self.destination, "destination_name", None) or str(self.destination)
        return f"{name} (dataset {self.dataset_name})"


def results_target(
    results: Any, working_dir: str | os.PathLike[str], dataset_name: str | None = None
) -> ResultsTarget | None:
    """The target `results=` names: True/None the local DuckDB file, False nothing, a path or `duckdb:///path` a
    DuckDB file, another URL (`postgresql://...`) or a dlt destination object a dlt destination (opt-in)."""
    dataset = dataset_name or DEFAULT_DATASET
    if results is False:
        return None
    if results is None or results is True:
        return ResultsTarget(duckdb_path=Path(working_dir) / RESULTS_FILENAME)
    if isinstance(results, os.PathLike):
        return ResultsTarget(duckdb_path=Path(results))
    if isinstance(results, str):
        if results.startswith("duckdb:///"):
            return ResultsTarget(duckdb_path=Path(results[len("duckdb:///"):]))
        scheme, has_scheme, rest = results.partition("://")
        if not has_scheme:
            return ResultsTarget(duckdb_path=Path(results))
        from dlt.common.destination import Destination

        base = scheme.lower().split("+")[0]  # SQLAlchemy's `postgresql+psycopg`: dlt picks its own driver
        name = SCHEME_DESTINATIONS.get(base, base)
        destination = None
        with contextlib.suppress(Exception):  # dlt's error would show the URL, password included
            destination = Destination.from_reference(name, credentials=f"{base}://{rest}")
        if destination is None:
            raise ValueError(
                f"results: no dlt destination for URLs starting {scheme}://; give a DuckDB path, duckdb:///path, "
                "postgresql://..., or a dlt destination object"
            )
        return ResultsTarget(destination=destination, dataset_name=dataset, secret=urlsplit(results).password)
    return ResultsTarget(destination=results, dataset_name=dataset)


@dataclass
class _Collected:
    runs: list[dict[str, Any]]
    rows: list[pa.Table]
    marks: dict[Path, dict[str, Any]]
    #: spools of sent rows with their loads' ids, read a chunk at a time when written (`row_tables`), then deleted
    sent: list[tuple[Path, dict[str, str]]] = field(default_factory=list)

    def row_tables(self) -> Iterator[pa.Table]:
        """The rejected rows, then the sent rows SPOOL_CHUNK_BYTES of spool at a time (for a dlt destination):
        a million sent rows never sit in memory at once."""
        yield from self.rows
        for spool, ids in self.sent:
            yield from _sent_rows(spool, ids)


def record_results(
    target: ResultsTarget,
    pipeline_name: str,
    folder: Path,
    *,
    run_id: str,
    started_at: dt.datetime,
    error: BaseException | None = None,
    out: Callable[[str], None] = print,
) -> bool:
    """Write this run's part of its loads into the results tables; warn (never raise) if that fails."""
    try:
        collected = _collect(pipeline_name, folder, run_id, started_at, error)
        if collected.runs or collected.rows or collected.sent:
            runs = pa.Table.from_pylist(collected.runs, schema=RUNS_SCHEMA)
            if target.duckdb_path is not None:
                _write_duckdb(target.duckdb_path, runs, collected.rows, collected.sent)
            else:
                _write_dlt(target, pipeline_name, folder.parent.parent, runs, collected.row_tables())
    except Exception as failure:  # a results database must never fail the sync it describes
        reason = " ".join(str(failure).split())  # dlt's errors span lines; one line per warning
        message = target.hide(
            f"{pipeline_name}: sync results not written to {target.describe()} ({type(failure).__name__}: "
            f"{reason}); the next run writes them; rejects stay in {folder} (bento-dlt rejects)"
        )
        logger.info(message)  # `out` shows it (the command line prints it once, not twice)
        out(f"warning: {message}")
        return False
    for path, mark in collected.marks.items():
        _save_mark(path, mark)
    for spool, _ in collected.sent:
        spool.unlink(missing_ok=True)
    return True


def _collect(
    pipeline_name: str, folder: Path, run_id: str, started_at: dt.datetime, error: BaseException | None
) -> _Collected:
    """This run's loads: reports written since it started, and loads whose results are still to write."""
    collected = _Collected([], [], {})
    since = started_at.timestamp()
    finished_at = dt.datetime.now(dt.UTC)
    for load_id in load_ids(folder.parent):
        report_file = folder / f"{load_id}{REPORT_SUFFIX}"
        mark_file = folder / f"{load_id}{MARK_SUFFIX}"
        spools = spool_paths(folder, load_id)
        mark = _read_mark(mark_file)
        touched = report_file.is_file() and report_file.stat().st_mtime >= since
        if not (touched or spools or mark.get("pending")):
            continue
        report = read_report(folder.parent, load_id)
        if report is None:
            continue
        _save_mark(mark_file, {**mark, "pending": True})  # a failed write is retried by the next run
        counted: dict[str, dict[str, Any]] = mark.get("tables", {})
        for name, table in sorted(report.tables.items()):
            before = counted.get(name, {})
            part = {key: int(getattr(table, key)) - int(before.get(key, 0)) for key in COUNTS}
            reasons = {r: n - int(before.get("reasons", {}).get(r, 0)) for r, n in table.rejected_by_reason.items()}
            if any(part.values()):
                collected.runs.append({
                    "run_id": run_id, "load_id": load_id, "pipeline_name": pipeline_name, "table_name": name,
                    "operation": table.operation, "outcome": _outcome(report, name, error),
                    "started_at": started_at, "finished_at": finished_at, **part,
                    "rejected_by_reason": json.dumps({r: n for r, n in sorted(reasons.items()) if n}),
                    "error": None if error is None else str(error)[:2000],
                })
            counted[name] = {**{key: int(getattr(table, key)) for key in COUNTS},
                             "reasons": dict(table.rejected_by_reason)}
        ids = {"run_id": run_id, "load_id": load_id, "pipeline_name": pipeline_name}
        lines, rejected = _rejected_rows(folder / f"{load_id}{REJECTS_SUFFIX}", int(mark.get("reject_lines", 0)), ids)
        if rejected is not None:
            collected.rows.append(rejected)
        collected.sent.extend((spool, ids) for spool in spools)
        collected.marks[mark_file] = {"tables": counted, "reject_lines": lines, "pending": False}
    return collected


def _outcome(report: LoadReport, table: str, error: BaseException | None) -> str:
    """done | rejected (past the threshold) | stopped (cancelled or out of retries; resumes) | failed."""
    if error is not None:
        from .runcontext import BentoRunCancelled, BentoRunStopped

        return "stopped" if isinstance(error, BentoRunCancelled | BentoRunStopped) else "failed"
    return "rejected" if any(f"`{table}`" in problem for problem in report.problems()) else "done"


def _rejected_rows(path: Path, skip: int, ids: dict[str, str]) -> tuple[int, pa.Table | None]:
    """Reject records past the first `skip` lines (those are written already), and the file's line count."""
    if not path.is_file():
        return skip, None
    records: list[dict[str, Any]] = []
    count = 0
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            count += 1
            if count <= skip:
                continue
            record = json.loads(line)
            row = record.get("row") if isinstance(record.get("row"), dict) else {}
            email = row.get("email", row.get("to"))
            records.append({
                **ids, "table_name": record.get("table"), "operation": record.get("operation"), "status": "rejected",
                "email": None if email is None else str(email), "key": None, "reason": record.get("reason"),
                "detail": record.get("detail"), "row_json": json.dumps(row, default=str),
            })
    return count, (pa.Table.from_pylist(records, schema=ROWS_SCHEMA) if records else None)


def _sent_rows(spool: Path, ids: dict[str, str]) -> Iterator[pa.Table]:
    """The spool of sent rows as Arrow tables of about SPOOL_CHUNK_BYTES of spool each (whole lines, parsed
    by pyarrow: no Python object per row)."""
    for spooled in spool_tables(spool, SPOOL_CHUNK_BYTES):
        yield _sent_table(spooled, ids)


def _sent_table(spooled: pa.Table, ids: dict[str, str]) -> pa.Table:
    size = spooled.num_rows

    def constant(value: str | None) -> Any:
        scalar = pa.scalar(value, pa.string())
        return pa.repeat(scalar, size) if value is not None else pa.nulls(size, pa.string())

    columns: dict[str, Any] = {
        **{name: constant(value) for name, value in ids.items()},
        "table_name": spooled["table"], "operation": spooled["operation"], "status": constant("sent"),
        "email": spooled["email"], "key": spooled["key"], "reason": constant(None), "detail": constant(None),
        "row_json": constant(None),
    }
    return pa.Table.from_arrays([columns[field.name] for field in ROWS_SCHEMA], schema=ROWS_SCHEMA)


def _read_mark(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_mark(path: Path, mark: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(mark), encoding="utf-8")
    os.replace(tmp, path)


def _ddl(table: str, schema: pa.Schema) -> str:
    columns = ", ".join(f'"{field.name}" {_DUCKDB_TYPES[field.type]}' for field in schema)
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns})"


def _write_duckdb(
    path: Path, runs: pa.Table, rows: list[pa.Table], sent: list[tuple[Path, dict[str, str]]]
) -> None:
    """Both tables in one transaction: a reader never sees a run without its rows. DuckDB reads the spools of
    sent rows itself, under a memory cap: a million sent rows went through Arrow tables at 300 MB more."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _connect_waiting(path) as con:
        con.execute(f"SET memory_limit = '{CSV_MEMORY_LIMIT}'")
        con.execute("SET threads = 1")  # each DuckDB thread needs its own buffers; one fits the cap
        con.execute(_ddl(RUNS_TABLE, RUNS_SCHEMA))
        con.execute(_ddl(ROWS_TABLE, ROWS_SCHEMA))
        con.execute("BEGIN TRANSACTION")
        con.register("new_runs", runs)
        con.execute(f"INSERT INTO {RUNS_TABLE} BY NAME SELECT * FROM new_runs")
        for part in rows:
            con.register("new_rows", part)
            con.execute(f"INSERT INTO {ROWS_TABLE} BY NAME SELECT * FROM new_rows")
            con.unregister("new_rows")
        for spool, ids in sent:
            reader, memory_limit = spool_sql(spool)
            con.execute(f"SET memory_limit = '{memory_limit}'")
            con.execute(
                f"""INSERT INTO {ROWS_TABLE} BY NAME
                SELECT $run_id AS run_id, $load_id AS load_id, $pipeline_name AS pipeline_name,
                       "table" AS table_name, operation, 'sent' AS status, email, key
                FROM {reader}""",
                {**ids, "spool": str(spool)},
            )
        con.execute("COMMIT")


def _connect_waiting(path: Path, wait: float = LOCK_WAIT_SECONDS) -> Any:
    """A DuckDB connection, waiting up to `wait` seconds while another process writes the same file (pipelines
    of several tables may share one results file; each holds it for well under a second)."""
    import duckdb

    deadline = time.monotonic() + wait
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as error:
            if "lock" not in str(error).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _write_dlt(
    target: ResultsTarget, pipeline_name: str, pipelines_dir: Path, runs: pa.Table, rows: Iterable[pa.Table]
) -> None:
    """Any dlt destination, by a pipeline of its own (`<pipeline>_results`), appending both tables."""
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=f"{pipeline_name}_results", destination=target.destination,
        dataset_name=target.dataset_name, pipelines_dir=str(pipelines_dir),
    )
    if pipeline.has_pending_data:  # a failed earlier write: its rows are collected again (marks, spool), and
        pipeline.drop_pending_packages()  # dlt would load only the pending package and ignore the new data
    resources = [
        dlt.resource([runs], name=RUNS_TABLE, write_disposition="append"),
        dlt.resource((part for part in rows if part.num_rows), name=ROWS_TABLE, write_disposition="append"),
    ]
    pipeline.run(resources)


__all__ = ["RESULTS_FILENAME", "ROWS_TABLE", "RUNS_TABLE", "SENT_SUFFIX", "ResultsTarget", "record_results",
           "results_target"]
