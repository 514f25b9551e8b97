"""Bento to DuckDB: every resource of `bento_source` into one embedded DuckDB file (the default pipeline).

    python -m pipelines.bento_to_duckdb              # keys from BENTO_* or .dlt/secrets.toml [sources.bento]
    python -m pipelines.bento_to_duckdb --emulator   # a seeded in-process emulator instead of Bento

With `--emulator` the budgets of both the emulator and the client are raised so the demo runs in
seconds; against the real Bento the safe defaults (60/min, stats 30/hour) apply unless you raise them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import dlt
from dlt.common.pipeline import LoadInfo
from dlt.pipeline.exceptions import PipelineStepFailed

from bento_api import BentoError
from bento_source import bento_source

DEFAULT_PIPELINE = "bento_to_duckdb"
DEFAULT_DATASET = "bento"
#: budgets used against the local emulator only (the real Bento keeps the safe defaults)
EMULATOR_BUDGETS: dict[str, float] = {"requests_per_minute": 60_000.0, "stats_requests_per_hour": 100_000.0}


def run(
    *,
    duckdb_path: str | Path | None = None,
    pipeline_name: str = DEFAULT_PIPELINE,
    pipelines_dir: str | Path | None = None,
    dataset_name: str = DEFAULT_DATASET,
    resources: Sequence[str] | None = None,
    dev_mode: bool = False,
    **source_kwargs: Any,
) -> dlt.Pipeline:
    """Load Bento into DuckDB and return the pipeline (its `last_trace` holds the load info).

    `source_kwargs` go to `bento_source` (credentials, budgets, `segment_ids`, ...); `resources` picks a
    subset. Failed load jobs raise, so a caller never mistakes a partial load for a full one.
    """
    path = Path(duckdb_path) if duckdb_path is not None else Path(f"{pipeline_name}.duckdb")
    if path.stem == dataset_name:
        # DuckDB then cannot tell the catalog from the schema ("Ambiguous reference") and the load fails
        raise ValueError(f"the DuckDB file {path.name!r} must not be named like the dataset {dataset_name!r}")
    # dlt's own default (~/.dlt/pipelines) unless a folder is given
    where: dict[str, Any] = {"pipelines_dir": str(pipelines_dir)} if pipelines_dir is not None else {}
    pipeline = dlt.pipeline(
        pipeline_name=pipeline_name,
        **where,
        # absolute: dlt would otherwise reuse the DuckDB path an earlier run of this pipeline name recorded
        destination=dlt.destinations.duckdb(str(path.resolve())),
        dataset_name=dataset_name,
        dev_mode=dev_mode,
    )
    source = bento_source(**source_kwargs)
    if resources:
        source = source.with_resources(*resources)
    info: LoadInfo = pipeline.run(source)
    info.raise_on_failed_jobs()
    return pipeline


@contextlib.contextmanager
def emulator_credentials(seed: int = 7, **config: Any) -> Iterator[dict[str, Any]]:
    """A seeded emulator on 127.0.0.1 for the demo; yields source keyword arguments (keys and raised budgets)."""
    from bento_api.emulator import BentoEmulator, EmulatorConfig

    settings: dict[str, Any] = {"broadcasts": 500, "subscribers": 1000, "page_size": 25, **config}
    settings.setdefault("requests_per_minute", EMULATOR_BUDGETS["requests_per_minute"] * 10)
    settings.setdefault("stats_requests_per_hour", EMULATOR_BUDGETS["stats_requests_per_hour"] * 10)
    with BentoEmulator(EmulatorConfig(seed=seed, **settings)) as emulator:
        yield {**emulator.credentials, **EMULATOR_BUDGETS}


def summarize(pipeline: dlt.Pipeline) -> str:
    """Rows per table of the last run, one line each (for the command line)."""
    trace = pipeline.last_trace
    counts = trace.last_normalize_info.row_counts if trace and trace.last_normalize_info else {}
    lines = [f"{name}: {count}" for name, count in sorted(counts.items()) if not name.startswith("_dlt")]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--emulator", action="store_true", help="read a seeded local emulator instead of Bento")
    parser.add_argument("--resources", nargs="*", help="only these resources (default: all)")
    parser.add_argument("--pipelines-dir", help="where dlt keeps pipeline state (default: ~/.dlt/pipelines)")
    parser.add_argument("--pipeline-name", help="dlt pipeline name")
    parser.add_argument("--out", help="output: the DuckDB file, or the Parquet folder")
    return parser.parse_args(argv)


def explain(error: BaseException) -> str:
    """The innermost Bento error's message (it says what to check), else the error itself."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, BentoError):
            return str(seen)
        nested = getattr(seen, "exception", None)
        seen = nested if isinstance(nested, BaseException) else (seen.__cause__ or seen.__context__)
    return str(error)


def run_for_command_line(
    name: str, run_pipeline: Callable[..., Any], kwargs: dict[str, Any], *, use_emulator: bool
) -> Any | None:
    """`run_pipeline(**kwargs)` for a `main`, against a seeded emulator if asked; None (and why) if it failed."""
    try:
        with contextlib.ExitStack() as stack:
            if use_emulator:
                kwargs.update(stack.enter_context(emulator_credentials()))
                print("Using a seeded local emulator (budgets raised for it).")
            return run_pipeline(**kwargs)
    except (PipelineStepFailed, BentoError) as error:
        print(f"{name} failed: {explain(error)}", file=sys.stderr)
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 0 when loaded, 1 when Bento or the load failed (README's exit codes)."""
    args = parse_args(argv, "Load Bento into DuckDB")
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    kwargs: dict[str, Any] = {
        "resources": args.resources,
        "pipelines_dir": args.pipelines_dir,
        "pipeline_name": args.pipeline_name or DEFAULT_PIPELINE,
        "duckdb_path": args.out,
    }
    pipeline = run_for_command_line("bento_to_duckdb", run, kwargs, use_emulator=args.emulator)
    if pipeline is None:
        return 1
    print(summarize(pipeline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
