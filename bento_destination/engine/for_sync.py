"""The engine's rows for a `sync()` of one warehouse table, resolved as that sync's load will resolve them.

`bento-dlt sync --from ... --table T`, `pipelines.warehouse_to_bento` and a program calling `sync()` itself
all ask here: the destination's config (keywords, then dlt's config) gives the ledger the load will use and
the site, so the engine diffs against the same ledger the sink acknowledges into.

    rows = diffed_rows(EngineSource("duckdb", "warehouse.duckdb", "crm_contacts"), operation="subscribers",
                       pipeline_name="crm_to_bento")
    sync(rows if rows is not None else every_row, pipeline_name="crm_to_bento", table_name="crm_contacts")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..config import resolve_destination_config
from ..rejects import bento_dir
from .rows import EngineRows, EngineSource, engine_rows


def diffed_rows(
    source: EngineSource,
    *,
    operation: str,
    pipeline_name: str,
    pipelines_dir: str | os.PathLike[str] | None = None,
    table_name: str | None = None,
    note: Callable[[str], None] = print,
    **destination_kwargs: Any,
) -> EngineRows | None:
    """The new and changed rows of `source` for `sync(..., pipeline_name=..., **destination_kwargs)`, or None
    when the engine cannot take it (`note` says why; read every row then)."""
    config = resolve_destination_config(pipeline_name, **destination_kwargs)
    ledger = config.ledger_options()
    working_dir = bento_dir(pipeline_name, pipelines_dir).parent
    return engine_rows(
        source, operation=operation, table_name=table_name or source.table.rpartition(".")[2],
        ledger_location=ledger.location(working_dir), site=config.settings().site_uuid,
        sync_ledger=ledger.sync_ledger, full_resync=ledger.full_resync,
        allow_secret_columns=config.allow_secret_columns, note=note,
    )
