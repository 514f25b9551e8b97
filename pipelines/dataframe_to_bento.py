"""DataFrame to Bento: a pandas DataFrame, Arrow table or CSV/Parquet/JSONL file into Bento subscribers or events.

    from pipelines.dataframe_to_bento import run
    run(df, table_name="subscribers")                       # keys from [destination.bento] or BENTO_*

    python -m pipelines.dataframe_to_bento --input contacts.parquet --table subscribers
    python -m pipelines.dataframe_to_bento --emulator        # a demo frame into a local emulator

A DataFrame reaches the sink as Arrow record batches; files are streamed batch by batch (Parquet, CSV,
JSONL), never read whole. Exit codes: 0 done, 1 failed, 2 unreadable input, 3 rows rejected past the threshold.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa

from bento_destination import SINK_BATCH_SIZE
from bento_destination.report import LoadReport
from bento_destination.sync import EXIT_OK, balanced_file_rows, exit_code, explain, sync

DEFAULT_PIPELINE = "dataframe_to_bento"
#: against the local emulator only; the real Bento keeps the safe default (60/min)
EMULATOR_REQUESTS_PER_MINUTE = 60_000.0


def run(
    data: Any,
    table_name: str = "subscribers",
    *,
    pipeline_name: str = DEFAULT_PIPELINE,
    pipelines_dir: str | os.PathLike[str] | None = None,
    file_max_items: int | None = None,
    **destination_kwargs: Any,
) -> list[LoadReport]:
    """Send a DataFrame / Arrow table / iterable of record batches to Bento as `table_name`.

    `destination_kwargs` go to `bento(...)`. Raises BentoRejectsExceeded past the reject threshold.
    `file_max_items` (rows per load file, one parallel load job each) is chosen when not given: files
    that fill every job when the row count is known, else 10,000 rows.
    """
    total: int | None = None
    if _is_frame(data) or isinstance(data, pa.Table):
        total = len(data)
        data = dlt.resource(arrow_slices(data), name=table_name)
    if file_max_items is None:
        file_max_items = balanced_file_rows(total)
    return sync(
        data,
        table_name=table_name,
        pipeline_name=pipeline_name,
        pipelines_dir=pipelines_dir,
        file_max_items=file_max_items,
        **destination_kwargs,
    )


def _is_frame(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "iloc")


def arrow_slices(data: Any, chunk: int = SINK_BATCH_SIZE) -> Iterator[pa.Table]:
    """A DataFrame or Arrow table as Arrow slices of `chunk` rows, converted one slice at a time.

    dlt writes one Arrow item into one load file; slices let it rotate files (parallel load jobs).
    The schema is inferred once from the whole frame so every slice has the same column types.
    """
    if isinstance(data, pa.Table):
        yield from (data.slice(start, chunk) for start in range(0, data.num_rows, chunk))
        return
    schema = pa.Schema.from_pandas(data, preserve_index=False)
    for start in range(0, len(data), chunk):
        yield pa.Table.from_pandas(data.iloc[start : start + chunk], schema=schema, preserve_index=False)


def read_file(path: str | os.PathLike[str], chunk: int = SINK_BATCH_SIZE) -> Iterator[pa.RecordBatch]:
    """Stream a Parquet, CSV or JSONL file as Arrow record batches."""
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"input file {source} does not exist")
    suffix = source.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(source).iter_batches(batch_size=chunk)
    elif suffix in (".csv", ".tsv"):
        import pyarrow.csv as pcsv

        parse = pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ",")
        yield from pcsv.open_csv(source, parse_options=parse)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        import pyarrow.json as pjson

        yield from pjson.read_json(source).to_batches(max_chunksize=chunk)
    else:
        raise ValueError(f"unsupported input {source.name}: use .parquet, .csv, .tsv or .jsonl")


def demo_frame(rows: int = 500) -> Any:
    """A demo DataFrame of subscribers with list tags, a custom field, nulls and a few invalid rows."""
    import pandas as pd

    return pd.DataFrame(
        {
            "email": [f"frame{i}@example.com" if i % 100 else f"not-an-email-{i}" for i in range(rows)],
            "first_name": [f"Frame {i}" for i in range(rows)],
            "tags": [["dataframe", "demo"] if i % 2 else ["demo"] for i in range(rows)],
            "plan": ["pro" if i % 3 == 0 else None for i in range(rows)],
        }
    )


@contextlib.contextmanager
def emulator_credentials() -> Iterator[dict[str, Any]]:
    """An in-process emulator whose budget is raised; yields `bento(...)` keywords (its keys and the budget).

    The reverse-ETL pipelines' `--emulator` demos share it.
    """
    from bento_api.emulator import BentoEmulator, EmulatorConfig

    config = EmulatorConfig(requests_per_minute=EMULATOR_REQUESTS_PER_MINUTE * 10, bucket_capacity=1000.0)
    with BentoEmulator(config) as emulator:
        yield {**emulator.credentials, "requests_per_minute": EMULATOR_REQUESTS_PER_MINUTE}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Send a DataFrame or a file of rows to Bento")
    parser.add_argument("--input", help="a .parquet, .csv, .tsv or .jsonl file (default with --emulator: a demo frame)")
    parser.add_argument("--table", default="subscribers", help="table name: subscribers, events, commands, emails")
    parser.add_argument("--operation", help="Bento operation for --table when its name is not one")
    parser.add_argument("--reject-threshold", type=float, help="share of rejected rows that fails the run")
    parser.add_argument("--emulator", action="store_true", help="send to a local emulator (budget raised for it)")
    parser.add_argument("--pipelines-dir", help="where dlt keeps pipeline state, rejects and reports")
    parser.add_argument("--pipeline-name", default=DEFAULT_PIPELINE)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    if not args.input and not args.emulator:
        print("dataframe_to_bento: give --input FILE (or --emulator for a demo)", file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {
        "pipeline_name": args.pipeline_name,
        "pipelines_dir": args.pipelines_dir,
        "reject_threshold": args.reject_threshold,
    }
    if args.operation:
        kwargs["table_operations"] = {args.table: args.operation}
    try:
        with contextlib.ExitStack() as stack:
            if args.emulator:
                kwargs.update(stack.enter_context(emulator_credentials()))
                print("Using an in-process Bento emulator (budget raised for it).")
            if args.input:
                if not Path(args.input).is_file():
                    raise FileNotFoundError(f"input file {args.input} does not exist")
                data: Any = read_file(args.input)
            else:
                data = demo_frame()
            run(data, args.table, **kwargs)
    except Exception as error:
        print(f"dataframe_to_bento: {explain(error)}", file=sys.stderr)
        return exit_code(error)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
