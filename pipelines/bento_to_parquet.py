"""Bento to Parquet files: dlt's filesystem destination into a local folder.

    python -m pipelines.bento_to_parquet --out ./bento_parquet              # BENTO_* credentials
    python -m pipelines.bento_to_parquet --emulator --out ./bento_parquet   # a seeded local emulator

Plain Parquet cannot merge, so `apply_parquet_hints` sets the lists to `replace`, subscribers to
`append` (only rows changed since the cursor: take the newest `updated_at` per `id`) and stats to
`append`. Files land in `<out>/<dataset>/<table>/<load_id>.<file_id>.parquet`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dlt
from dlt.common.pipeline import LoadInfo

from bento_source import apply_parquet_hints, bento_source
from pipelines.bento_to_duckdb import DEFAULT_DATASET, parse_args, run_for_command_line, summarize

DEFAULT_PIPELINE = "bento_to_parquet"


def run(
    *,
    out_dir: str | Path = "bento_parquet",
    pipeline_name: str = DEFAULT_PIPELINE,
    pipelines_dir: str | Path | None = None,
    dataset_name: str = DEFAULT_DATASET,
    resources: Sequence[str] | None = None,
    dev_mode: bool = False,
    **source_kwargs: Any,
) -> dlt.Pipeline:
    """Load Bento into Parquet files under `out_dir` and return the pipeline."""
    folder = Path(out_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    # dlt's own default (~/.dlt/pipelines) unless a folder is given
    where: dict[str, Any] = {"pipelines_dir": str(pipelines_dir)} if pipelines_dir is not None else {}
    pipeline = dlt.pipeline(
        pipeline_name=pipeline_name,
        **where,
        destination=dlt.destinations.filesystem(bucket_url=folder.as_uri()),
        dataset_name=dataset_name,
        dev_mode=dev_mode,
    )
    source = bento_source(**source_kwargs)
    if resources:
        source = source.with_resources(*resources)
    info: LoadInfo = pipeline.run(apply_parquet_hints(source), loader_file_format="parquet")
    info.raise_on_failed_jobs()
    return pipeline


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 0 when loaded, 1 when Bento or the load failed."""
    args = parse_args(argv, "Load Bento into Parquet files")
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), format="%(levelname)s %(name)s: %(message)s")
    kwargs: dict[str, Any] = {
        "resources": args.resources,
        "pipelines_dir": args.pipelines_dir,
        "pipeline_name": args.pipeline_name or DEFAULT_PIPELINE,
        "out_dir": args.out or "bento_parquet",
    }
    pipeline = run_for_command_line("bento_to_parquet", run, kwargs, use_emulator=args.emulator)
    if pipeline is None:
        return 1
    print(summarize(pipeline))
    print(f"Parquet files under {Path(kwargs['out_dir']).resolve() / DEFAULT_DATASET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
