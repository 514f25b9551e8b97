"""The README's Dagster example, materialized in-process against the emulator (needs `.[dagster]`)."""

from __future__ import annotations

import importlib

import pytest
from dagster import instance_for_test

from .conftest import Setting


@pytest.mark.timeout(600)  # a busy CI machine; .ci/run bounds the whole step too
def test_dagster_assets_load_bento_and_sync_contacts(setting: Setting) -> None:
    example = importlib.import_module("orchestrators.dagster_example")  # reads BENTO_DLT_DIR when imported
    with instance_for_test() as instance:  # a temporary DAGSTER_HOME, telemetry disabled
        result = example.defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
    assert result.success
    materialized = {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}
    assert "crm_contacts_in_bento" in materialized
    assert len(materialized) == 1 + len(example.bento_source().resources)
    setting.assert_source_loaded()
    setting.assert_contacts_synced()
    sent = result.asset_materializations_for_node("crm_contacts_in_bento")[0].metadata["sent"]
    assert sent.value == 30
