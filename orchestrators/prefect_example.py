"""Prefect: one flow, both directions: Bento into DuckDB, then the warehouse's contacts into Bento with sync()."""

import os
from pathlib import Path

import dlt
from prefect import flow, get_run_logger, task

from bento_destination.sync import sync
from bento_source import bento_source
from pipelines.warehouse_to_bento import warehouse_table

# Keys come from BENTO_* variables or .dlt/secrets.toml. Keep this folder between runs: it holds dlt's
# pipeline folders (cursors, pending packages) and the sync ledger.
DATA_DIR = Path(os.environ.get("BENTO_DLT_DIR", "bento-dlt-data")).resolve()


@task
def load_bento() -> str:
    pipeline = dlt.pipeline(
        "bento_to_duckdb",
        destination=dlt.destinations.duckdb(str(DATA_DIR / "bento.duckdb")),
        dataset_name="bento_data",
        pipelines_dir=str(DATA_DIR / "pipelines"),
    )
    info = pipeline.run(bento_source())
    info.raise_on_failed_jobs()
    return str(info)


@task
def sync_crm_contacts() -> int:
    """Reverse ETL: the warehouse's crm_contacts rows become Bento subscribers; the ledger skips unchanged rows."""
    reports = sync(
        warehouse_table(str(DATA_DIR / "warehouse.duckdb"), "crm_contacts"),
        pipeline_name="crm_contacts_to_bento",
        pipelines_dir=DATA_DIR / "pipelines",
        table_operations={"crm_contacts": "subscribers"},
        out=get_run_logger().info,
    )
    return int(sum(r.totals()["sent"] for r in reports))


@flow
def bento_both_ways() -> int:
    load_bento()
    return sync_crm_contacts()
