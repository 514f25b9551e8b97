"""Dagster: each Bento resource an asset (dagster-dlt) loaded into DuckDB, and a reverse-ETL asset calling sync()."""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
from dagster import AssetExecutionContext, Definitions, MaterializeResult, asset
from dagster_dlt import DagsterDltResource, dlt_assets

from bento_destination.sync import sync
from bento_source import bento_source
from pipelines.warehouse_to_bento import warehouse_table

# Keys come from BENTO_* variables or .dlt/secrets.toml. Keep this folder between runs: it holds dlt's
# pipeline folders (cursors, pending packages) and the sync ledger.
DATA_DIR = Path(os.environ.get("BENTO_DLT_DIR", "bento-dlt-data")).resolve()


@dlt_assets(
    dlt_source=bento_source(),
    dlt_pipeline=dlt.pipeline(
        "bento_to_duckdb",
        destination=dlt.destinations.duckdb(str(DATA_DIR / "bento.duckdb")),
        dataset_name="bento_data",
        pipelines_dir=str(DATA_DIR / "pipelines"),
    ),
)
def bento_assets(context: AssetExecutionContext, dlt_resource: DagsterDltResource) -> Iterator[Any]:
    yield from dlt_resource.run(context=context)


@asset
def crm_contacts_in_bento(context: AssetExecutionContext) -> MaterializeResult:
    """Reverse ETL: the warehouse's crm_contacts rows become Bento subscribers; the ledger skips unchanged rows."""
    reports = sync(
        warehouse_table(str(DATA_DIR / "warehouse.duckdb"), "crm_contacts"),
        pipeline_name="crm_contacts_to_bento",
        pipelines_dir=DATA_DIR / "pipelines",
        table_operations={"crm_contacts": "subscribers"},
        out=context.log.info,
    )
    return MaterializeResult(metadata={"sent": int(sum(r.totals()["sent"] for r in reports))})


defs = Definitions(assets=[bento_assets, crm_contacts_in_bento], resources={"dlt_resource": DagsterDltResource()})
