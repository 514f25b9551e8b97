"""Numbers of identical events over a whole load package, recomputed from its files (which never change).

Two identical events of one input are two events: the n-th gets the key `key#n` (keys.py). Which file a
row lands in, and in which order dlt loads the files, must not change a row's number, so numbering
counts over the table's files in the order of their file ids, rows in file order. The same package
always gives the same numbers: a resumed load (any process) sends the keys the first attempt sent, and
nothing is written into dlt's files.
"""

from __future__ import annotations

from typing import Any

from .keys import COPY_COLUMN, IdenticalRows, base_event_key, explicit_event_key
from .load_files import file_key, read_windows, sink_columns
from .mapping import MappingOptions, map_row
from .rows import iter_rows
from .values import RowError

#: rows read at a time while numbering
CHUNK_ROWS = 10_000
#: listings of the package's files tried before a moving file is an error
ATTEMPTS = 5


def table_files(pipeline: Any, load_id: str, table: str) -> list[tuple[str, str]]:
    """(file key, path) of every load file of `table` in the package, whatever its job's state, by file id."""
    info = pipeline.get_load_package_info(load_id)
    files = {
        file_key(str(job.file_path)): str(job.file_path)
        for jobs in info.jobs.values() for job in jobs if job.job_file_info.table_name == table
    }
    return sorted(files.items())


def event_numbers(
    pipeline: Any, load_id: str, table: str, columns: list[str], options: MappingOptions
) -> dict[str, dict[int, int]]:
    """file key -> {row number: n} for every n-th (n >= 2) identical event without its own key.

    dlt moves a job's file between folders while it loads; a file gone between the listing and the read
    is found again by listing anew (a few times at most).
    """
    for attempt in range(ATTEMPTS):
        try:
            return _numbers(pipeline, load_id, table, columns, options)
        except FileNotFoundError:
            if attempt == ATTEMPTS - 1:
                raise
    return {}


def _numbers(
    pipeline: Any, load_id: str, table: str, columns: list[str], options: MappingOptions
) -> dict[str, dict[int, int]]:
    counter = IdenticalRows()
    out: dict[str, dict[int, int]] = {}
    for key, path in table_files(pipeline, load_id, table):
        numbers: dict[int, int] = {}
        first = 0
        for window in read_windows(path, sink_columns(columns), CHUNK_ROWS):
            loose: list[tuple[int, str]] = []
            for offset, row in enumerate(iter_rows(window)):
                row.pop(COPY_COLUMN, None)
                try:
                    mapped = map_row("events", row, options)
                except RowError:
                    continue
                if mapped.payload is not None and explicit_event_key(mapped.payload) is None:
                    loose.append((first + offset, base_event_key(mapped.payload)))
            occurrences = counter.occurrences([base for _, base in loose]).tolist()
            numbers.update((index, n) for (index, _), n in zip(loose, occurrences, strict=True) if n > 1)
            first += len(window)
        if numbers:
            out[key] = numbers
    return out
