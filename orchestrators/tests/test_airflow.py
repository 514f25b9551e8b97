"""The README's Airflow DAG, run with dag.test() against the emulator (needs `.[airflow]`)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import duckdb
import pytest

from .conftest import BENTO_DUCKDB, DATASET, Setting


@pytest.mark.timeout(600)  # a busy CI machine; .ci/run bounds the whole step too
def test_airflow_dag_loads_bento_and_syncs_contacts(setting: Setting) -> None:
    # Airflow's metadata database: SQLite in the temporary AIRFLOW_HOME that conftest set.
    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    example = importlib.import_module("orchestrators.airflow_example")  # reads BENTO_DLT_DIR when imported
    run = example.dag.test()
    assert run.state == "success"
    tasks = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert tasks["sync_crm_contacts"] == "success"
    assert len(tasks) > 2 and set(tasks.values()) == {"success"}
    setting.assert_source_loaded()
    setting.assert_contacts_synced()
    # The task group wipes dlt's local pipeline folder after each task; the state lives on in the DuckDB file.
    with duckdb.connect(str(setting.data_dir / BENTO_DUCKDB), read_only=True) as con:
        states = con.execute(f"SELECT count(*) FROM {DATASET}._dlt_pipeline_state WHERE pipeline_name = ?",
                             ["bento_to_duckdb"]).fetchone()
    assert states is not None and states[0] >= 1
