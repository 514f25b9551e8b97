"""Airflow: dlt's PipelineTasksGroup loads Bento into DuckDB, then a task sends the warehouse's contacts with sync()."""

import os
from pathlib import Path

import dlt
import pendulum
from airflow.sdk import DAG, task
from dlt.helpers.airflow_helper import PipelineTasksGroup

from bento_destination.sync import sync
from bento_source import bento_source
from pipelines.warehouse_to_bento import warehouse_table

# Keys come from BENTO_* variables or .dlt/secrets.toml. Keep this folder between runs: it holds the DuckDB
# file and the sync ledger. The task group keeps dlt's pipeline folder in a temporary folder, wiped after
# each task; dlt restores the source's state (the subscribers cursor) from the DuckDB file.
DATA_DIR = Path(os.environ.get("BENTO_DLT_DIR", "bento-dlt-data")).resolve()

with DAG("bento", schedule="@hourly", start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False) as dag:
    bento_to_duckdb = PipelineTasksGroup("bento_to_duckdb", use_data_folder=False, wipe_local_data=True)
    pipeline = dlt.pipeline(
        "bento_to_duckdb",
        destination=dlt.destinations.duckdb(str(DATA_DIR / "bento.duckdb")),
        dataset_name="bento_data",
    )
    # One Airflow task per independent group of resources, run one after another.
    bento_to_duckdb.add_run(pipeline, bento_source(), decompose="serialize", trigger_rule="all_done", retries=0)

    @task
    def sync_crm_contacts() -> int:
        """Reverse ETL: the warehouse's crm_contacts rows become Bento subscribers; the ledger skips unchanged rows."""
        reports = sync(
            warehouse_table(str(DATA_DIR / "warehouse.duckdb"), "crm_contacts"),
            pipeline_name="crm_contacts_to_bento",
            pipelines_dir=DATA_DIR / "pipelines",
            table_operations={"crm_contacts": "subscribers"},
        )
        return int(sum(r.totals()["sent"] for r in reports))

    bento_to_duckdb >> sync_crm_contacts()
