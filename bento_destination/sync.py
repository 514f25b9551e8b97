"""One reverse-ETL run done safely: credentials first, pending packages first, then new data, then the verdict.

The two runnable pipelines and the CLI's `sync` share this. Order matters with dlt 1.31: config is
resolved only at load time (so wrong keys would surface after extract), and `pipeline.run` with a
pending package loads only that package and ignores the new data.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import dlt

from bento_api import BentoError

from .clients import check_credentials
from .report import BentoRejectsExceeded, LoadReport, check_run, reports_for
from .sink import bento, validate_options

FILE_MAX_ITEMS_ENV = "DATA_WRITER__FILE_MAX_ITEMS"
CREDENTIAL_KEYS = ("site_uuid", "publishable_key", "secret_key", "base_url")

#: exit codes (DESIGN.md): 0 done, 1 failed, 2 usage or unreadable input, 3 rejected past the threshold
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTS = 0, 1, 2, 3


def sync(
    data: Any,
    *,
    pipeline_name: str,
    pipelines_dir: str | os.PathLike[str] | None = None,
    table_name: str | None = None,
    file_max_items: int | None = None,
    out: Callable[[str], None] = print,
    **destination_kwargs: Any,
) -> list[LoadReport]:
    """Load `data` into Bento with `bento(**destination_kwargs)`; print each load's report; raise if rejected.

    Raises a BentoError for wrong credentials (before anything is extracted), dlt's PipelineStepFailed
    when a load fails, and BentoRejectsExceeded when rows were rejected past the threshold (the loads
    themselves finished, so no package is left pending).
    """
    validate_options(destination_kwargs.get("table_operations"), destination_kwargs.get("reject_threshold"))
    check_credentials(
        **{k: destination_kwargs.get(k) for k in CREDENTIAL_KEYS},
        requests_per_minute=destination_kwargs.get("requests_per_minute"),
        user_agent=destination_kwargs.get("user_agent"),
    )
    options: dict[str, Any] = {"pipelines_dir": str(pipelines_dir)} if pipelines_dir is not None else {}
    pipeline = dlt.pipeline(
        pipeline_name=pipeline_name,
        destination=bento(**{k: v for k, v in destination_kwargs.items() if v is not None}),
        **options,
    )
    infos = []
    if pipeline.has_pending_data:
        out(f"{pipeline_name}: loading the package left pending by an earlier run first")
        infos.append(pipeline.load())
    with file_rotation(file_max_items):
        infos.append(pipeline.run(data, **({"table_name": table_name} if table_name else {})))
    reports = [report for info in infos for report in reports_for(pipeline, info)]
    for report in reports:
        out(report.format())
    for info in infos:
        check_run(pipeline, info)
    return reports


@contextlib.contextmanager
def file_rotation(file_max_items: int | None) -> Iterator[None]:
    """Start a new load file every `file_max_items` rows while extracting, then restore the setting.

    Several files per table let dlt send them as parallel load jobs, each with its own resume offsets.
    dlt reads `DATA_WRITER__FILE_MAX_ITEMS` for both jsonl and Arrow streams (a single Arrow item is
    never split, so DataFrames are fed in slices, see pipelines/dataframe_to_bento.py).
    """
    if file_max_items is None:
        yield
        return
    previous = os.environ.get(FILE_MAX_ITEMS_ENV)
    os.environ[FILE_MAX_ITEMS_ENV] = str(int(file_max_items))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FILE_MAX_ITEMS_ENV, None)
        else:
            os.environ[FILE_MAX_ITEMS_ENV] = previous


def exit_code(error: BaseException) -> int:
    """The command-line exit code for an error raised by `sync` or by reading the input."""
    if isinstance(error, BentoRejectsExceeded):
        return EXIT_REJECTS
    if isinstance(error, BentoError):
        return EXIT_FAILED  # credentials, Bento unreachable, server
    if isinstance(error, OSError | ValueError):
        return EXIT_USAGE  # a missing or unreadable input file (pyarrow's ArrowInvalid is a ValueError)
    return EXIT_FAILED


def explain(error: BaseException) -> str:
    """The innermost Bento error's message (it says what to check), else the error itself."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, BentoError | BentoRejectsExceeded):
            return str(seen)
        nested = getattr(seen, "exception", None)
        seen = nested if isinstance(nested, BaseException) else (seen.__cause__ or seen.__context__)
    return str(error)
