"""The README's Prefect example, run twice against the emulator on a temporary Prefect server (needs `.[prefect]`)."""

from __future__ import annotations

import importlib

import pytest
from prefect.testing.utilities import prefect_test_harness

from .conftest import CRM_CONTACTS, Setting


@pytest.mark.timeout(600)  # a busy CI machine; .ci/run bounds the whole step too
def test_prefect_flow_runs_both_directions(setting: Setting) -> None:
    example = importlib.import_module("orchestrators.prefect_example")  # reads BENTO_DLT_DIR when imported
    with prefect_test_harness():  # a temporary server on 127.0.0.1 with its own SQLite database
        assert example.bento_both_ways() == CRM_CONTACTS
        setting.assert_source_loaded()
        setting.assert_contacts_synced()
        # Second run: the cursor and the sync ledger were kept in BENTO_DLT_DIR, so nothing is sent again.
        batches_before = len(setting.emulator.requests("/batch/subscribers", "POST"))
        assert example.bento_both_ways() == 0
        assert len(setting.emulator.requests("/batch/subscribers", "POST")) == batches_before
