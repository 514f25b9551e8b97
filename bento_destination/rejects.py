"""Where rejected rows go and how to list them: one JSONL file per load under the pipeline's working dir.

`<pipelines_dir>/<pipeline_name>/bento_rejects/<load_id>.rejects.jsonl`: one line per rejected row,
`{"load_id", "table", "operation", "reason", "detail", "row"}` (plus `"batch"` when Bento reported
failed rows in a batch without saying which). Secret-looking columns are removed from `row` and every
line is passed through the credentials' redaction before it is written. The CLI reads the same files.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .settings import REJECTS_DIRNAME, REJECTS_SUFFIX, REPORT_SUFFIX

PipelineRef = Any  # a dlt Pipeline, a pipeline name, or a working directory path


def bento_dir(pipeline: PipelineRef, pipelines_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding rejects and reports of a pipeline (a dlt Pipeline or its name)."""
    working_dir = getattr(pipeline, "working_dir", None)
    if working_dir is None:
        if isinstance(pipeline, Path):
            working_dir = pipeline
        else:
            from dlt.common.pipeline import get_dlt_pipelines_dir

            working_dir = Path(pipelines_dir or get_dlt_pipelines_dir()) / str(pipeline)
    return Path(working_dir) / REJECTS_DIRNAME


def load_ids(pipeline: PipelineRef, pipelines_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Loads that left a reject file or a report, oldest first (dlt load ids are timestamps)."""
    folder = bento_dir(pipeline, pipelines_dir)
    if not folder.is_dir():
        return []
    found = {
        name[: -len(suffix)]
        for name in os.listdir(folder)
        for suffix in (REJECTS_SUFFIX, REPORT_SUFFIX)
        if name.endswith(suffix)
    }
    return sorted(found, key=_load_id_order)


def _load_id_order(load_id: str) -> tuple[float, str]:
    try:
        return (float(load_id), load_id)
    except ValueError:
        return (float("inf"), load_id)


def iter_rejects(
    pipeline: PipelineRef,
    load_id: str | None = None,
    *,
    pipelines_dir: str | os.PathLike[str] | None = None,
    table: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield rejected rows of one load (or of every load, oldest first) without reading whole files."""
    folder = bento_dir(pipeline, pipelines_dir)
    for lid in [load_id] if load_id is not None else load_ids(pipeline, pipelines_dir):
        path = folder / f"{lid}{REJECTS_SUFFIX}"
        if not path.is_file():
            continue
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                record = json.loads(line)
                if table is None or record.get("table") == table:
                    yield record


def list_rejects(
    pipeline: PipelineRef,
    load_id: str | None = None,
    *,
    pipelines_dir: str | os.PathLike[str] | None = None,
    table: str | None = None,
) -> list[dict[str, Any]]:
    """Rejected rows with their reasons: `list_rejects(pipeline)` or `list_rejects("name", pipelines_dir=...)`."""
    return list(iter_rejects(pipeline, load_id, pipelines_dir=pipelines_dir, table=table))


class RejectWriter:
    """Appends reject records of one load; thread-safe (dlt runs load jobs in parallel threads)."""

    def __init__(self, folder: Path, load_id: str, redact: Callable[[str], str]) -> None:
        self.path = folder / f"{load_id}{REJECTS_SUFFIX}"
        self._redact = redact
        self._lock = threading.Lock()

    def write(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        lines = "".join(
            self._redact(json.dumps(record, default=str)) + "\n" for record in records
        )
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
