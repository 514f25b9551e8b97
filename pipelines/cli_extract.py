"""`bento-dlt extract`: read Bento (read-only) into DuckDB, Parquet files, or any dlt destination.

`--to duckdb` (default) writes one DuckDB file; `--to parquet` writes plain Parquet files through dlt's
filesystem destination (lists replaced, subscribers and stats appended, see `apply_parquet_hints`);
any other name (`postgres`, `bigquery`, `motherduck`, `filesystem`, ...) is a dlt destination configured
the dlt way (`.dlt/secrets.toml` or `DESTINATION__<NAME>__*`). The pipeline state (the subscribers
cursor) lives in the pipelines dir: keep it on persistent storage for scheduled runs.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bento_api import Budgets
from bento_api.pacing import LONG_WAIT_SECONDS, SAFETY_MARGIN, format_wait
from bento_api.timestamps import parse_utc
from bento_source import ALL_RESOURCES, STATS_RESOURCES, apply_parquet_hints, bento_source

from .cli_common import EXIT_OK, EXIT_USAGE, CliError, Console, Result, flag_credentials, resolve_cli_budgets
from .cli_progress import budget_waits_shown, collector_for

DEFAULT_DATASET = "bento"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resources", nargs="+", metavar="NAME", choices=ALL_RESOURCES,
                        help=f"only these resources (default: all of {', '.join(ALL_RESOURCES)})")
    parser.add_argument("--to", default="duckdb", metavar="DESTINATION",
                        help="duckdb (default), parquet, or any dlt destination name configured in dlt's config")
    parser.add_argument("--output", metavar="PATH",
                        help="DuckDB file (default ./<pipeline-name>.duckdb) or Parquet folder "
                             "(default ./bento_parquet); not used by other destinations")
    parser.add_argument("--dataset", default=DEFAULT_DATASET, help=f"dataset (schema) name (default {DEFAULT_DATASET})")
    parser.add_argument("--pipeline-name", help="dlt pipeline name (default bento_to_<destination>)")
    parser.add_argument("--subscribers-since", metavar="ISO8601",
                        help="first run only: load subscribers updated after this time (default: everyone)")


@dataclass
class ExtractSettings:
    """What `extract` needs; the demo builds one with the emulator's credentials."""

    to: str = "duckdb"
    output: str | None = None
    dataset: str = DEFAULT_DATASET
    pipeline_name: str | None = None
    pipelines_dir: str | None = None
    resources: list[str] | None = None
    source_kwargs: dict[str, Any] = field(default_factory=dict)
    #: `progress:` lines on stderr, as `sync` prints them (unless --quiet)
    progress: bool = True


def _destination(cfg: ExtractSettings, name: str) -> tuple[Any, str | None, dict[str, Any]]:
    """(dlt destination, where the files are, extra run() arguments)."""
    import dlt

    if cfg.to == "duckdb":
        path = Path(cfg.output or f"{name}.duckdb").resolve()
        if path.name.split(".", 1)[0] == cfg.dataset:
            raise CliError(f"the DuckDB file {path.name} and the dataset `{cfg.dataset}` share a name, which DuckDB "
                           "cannot tell apart; choose another --output or --dataset", EXIT_USAGE)
        path.parent.mkdir(parents=True, exist_ok=True)
        return dlt.destinations.duckdb(str(path)), str(path), {}
    if cfg.to == "parquet":
        folder = Path(cfg.output or "bento_parquet").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return (dlt.destinations.filesystem(bucket_url=folder.as_uri()), str(folder / cfg.dataset),
                {"loader_file_format": "parquet"})
    if cfg.output:
        raise CliError(f"--output applies to duckdb and parquet; configure `{cfg.to}` through dlt's config "
                       f"(e.g. DESTINATION__{cfg.to.upper()}__CREDENTIALS)", EXIT_USAGE)
    return cfg.to, None, {}


def stats_wait_note(resources: Sequence[str] | None, budgets: Budgets) -> str | None:
    """What the stats resources will cost at the stats budget, when each request waits long for the next."""
    chosen = [name for name in (resources or ALL_RESOURCES) if name in STATS_RESOURCES]
    interval = budgets.interval("stats") * SAFETY_MARGIN
    if not chosen or interval <= LONG_WAIT_SECONDS:
        return None
    return (f"{' and '.join(chosen)}: Bento allows {budgets.stats_requests_per_hour:g} stats requests an hour, so "
            f"each one after the first waits {format_wait(interval)} (site_stats is one request, segment_stats "
            "one per segment); leave them out with --resources for a quick run")


def extract(cfg: ExtractSettings, console: Console) -> dict[str, Any]:
    """Run the source into the destination; returns the JSON summary (tables and row counts, where it went)."""
    import dlt

    name = cfg.pipeline_name or f"bento_to_{cfg.to}"
    destination, location, run_kwargs = _destination(cfg, name)
    progress = collector_for(console, cfg.progress)
    pipeline = dlt.pipeline(pipeline_name=name, pipelines_dir=cfg.pipelines_dir, destination=destination,  # type: ignore[arg-type]
                            dataset_name=cfg.dataset, progress=progress)
    if pipeline.has_pending_data:
        console.note(f"{name}: loading a pending package left by an earlier run first")
        pipeline.run().raise_on_failed_jobs()
    source = bento_source(**cfg.source_kwargs)
    if cfg.resources:
        source = source.with_resources(*cfg.resources)
    if cfg.to == "parquet":
        source = apply_parquet_hints(source)
    started = time.monotonic()
    with budget_waits_shown(console):
        info = pipeline.run(source, **run_kwargs)
    info.raise_on_failed_jobs()
    trace = pipeline.last_trace
    counts = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
    return {
        "pipeline_name": name,
        "pipelines_dir": str(Path(pipeline.pipelines_dir).resolve()),
        "destination": cfg.to,
        "dataset": cfg.dataset,
        "output": location,
        "load_ids": list(info.loads_ids),
        "tables": {t: int(n) for t, n in sorted(counts.items()) if not t.startswith("_dlt")},
        "elapsed_seconds": round(time.monotonic() - started, 2),
    }


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"Bento -> {summary['destination']} (dataset {summary['dataset']}, pipeline {summary['pipeline_name']}), "
             f"{summary['elapsed_seconds']:.1f}s"]
    width = max((len(t) for t in summary["tables"]), default=0)
    lines += [f"  {table:<{width}}  {rows:>8} rows" for table, rows in summary["tables"].items()]
    if not summary["tables"]:
        lines.append("  no rows (nothing changed since the last run, or the resources are empty)")
    if summary["output"]:
        lines.append(f"  files: {summary['output']}")
    return "\n".join(lines)


def run(args: argparse.Namespace, console: Console) -> Result:
    budgets = resolve_cli_budgets(args)
    source_kwargs: dict[str, Any] = {
        **flag_credentials(args),
        "requests_per_minute": budgets.requests_per_minute,
        "stats_requests_per_hour": budgets.stats_requests_per_hour,
    }
    if args.subscribers_since:
        if parse_utc(args.subscribers_since) is None:
            raise CliError(
                f"--subscribers-since must be ISO 8601 (2024-01-31T00:00:00Z), got {args.subscribers_since!r}",
                EXIT_USAGE,
            )
        source_kwargs["subscribers_initial_updated_at"] = args.subscribers_since
    note = stats_wait_note(args.resources, budgets)
    if note:
        console.note(note)
    cfg = ExtractSettings(
        to=args.to, output=args.output, dataset=args.dataset, pipeline_name=args.pipeline_name,
        pipelines_dir=args.pipelines_dir, resources=args.resources, source_kwargs=source_kwargs,
    )
    summary = extract(cfg, console)
    summary.update(command="extract", exit_code=EXIT_OK, ok=True)
    return Result(EXIT_OK, summary, format_summary(summary))
