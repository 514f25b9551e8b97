"""The Bento client of a run context (run_clients.py): one per run, shared by its load, closed when the run
ends; the credentials check once per load; a proof that spares a load its GET only within its own run."""

from __future__ import annotations

import uuid
from pathlib import Path

import dlt
import pytest

from bento_api import BentoAuthError, resolve_budgets, resolve_settings
from bento_api.emulator import BentoEmulator
from bento_destination import bento, bento_run, check_credentials
from bento_destination.clients import CHECK_PATH
from bento_destination.config import resolve_destination_config
from bento_destination.run_clients import PROOF_FRESH_SECONDS, RunClients

from .destination_support import FAST

pytestmark = pytest.mark.usefixtures("destination_env")


def pipeline_for(tmp_path: Path, emu: BentoEmulator, **kwargs: str) -> dlt.Pipeline:
    return dlt.pipeline(f"clients_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path),
                        destination=bento(requests_per_minute=FAST, **emu.credentials, **kwargs))


def checks(emu: BentoEmulator) -> int:
    return len(emu.requests(path=CHECK_PATH))


def test_one_client_per_run_shared_with_its_load_and_closed_when_the_run_ends(
    emu: BentoEmulator, tmp_path: Path
) -> None:
    pipeline = pipeline_for(tmp_path, emu, user_agent="run-clients/1.0")
    with bento_run(pipeline) as run:
        check_credentials(pipeline=pipeline)  # the pipeline's own keywords: its load's config
        pipeline.run([{"email": f"c{i}@example.com"} for i in range(3)], table_name="subscribers")
        assert checks(emu) == 1  # the load trusted the run's proof
        assert len(run.clients) == 1  # the check and every load job used one client
        config = resolve_destination_config(pipeline.pipeline_name, pipeline.destination)
        client = run.clients.client(config.settings(), config.budgets(), config.user_agent)
        assert len(run.clients) == 1
    assert {r.user_agent for r in emu.request_log} == {"run-clients/1.0"}
    assert len(run.clients) == 0
    with pytest.raises(RuntimeError):  # httpx: the client has been closed
        client.get(CHECK_PATH)


def test_a_proof_spares_the_load_of_its_own_pipeline_only(emu: BentoEmulator, tmp_path: Path) -> None:
    proven, other = pipeline_for(tmp_path, emu), pipeline_for(tmp_path, emu)
    check_credentials(pipeline=proven)
    other.run([{"email": "other@example.com"}], table_name="subscribers")
    assert checks(emu) == 2  # the other pipeline's run knew of no proof: it paid its own GET
    proven.run([{"email": "proven@example.com"}], table_name="subscribers")
    assert checks(emu) == 2
    # without a pipeline, the GET proves the keys but nothing keeps the proof: the next load checks again
    check_credentials(**emu.credentials)
    pipeline_for(tmp_path, emu).run([{"email": "third@example.com"}], table_name="subscribers")
    assert checks(emu) == 4


def test_wrong_keys_fail_the_check_without_showing_them(emu: BentoEmulator, tmp_path: Path) -> None:
    wrong = {**emu.credentials, "secret_key": "sk_wrong_key_0001"}
    pipeline = dlt.pipeline(f"clients_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path),
                            destination=bento(requests_per_minute=FAST, **wrong))
    for call in (lambda: check_credentials(**wrong), lambda: check_credentials(pipeline=pipeline)):
        with pytest.raises(BentoAuthError) as caught:
            call()
        assert "sk_wrong_key_0001" not in str(caught.value)


def test_the_check_runs_once_per_load_and_again_when_the_proof_is_old(emu: BentoEmulator) -> None:
    now = [1000.0]
    clients = RunClients(clock=lambda: now[0])
    client = clients.client(resolve_settings(**emu.credentials, env={}), resolve_budgets(FAST, env={}))
    clients.prove(client)
    assert checks(emu) == 1
    assert not clients.ensure_checked("load-1", client)  # proven moments ago: no second GET
    now[0] += PROOF_FRESH_SECONDS + 1
    assert not clients.ensure_checked("load-1", client)  # this load was checked already
    assert clients.ensure_checked("load-2", client)  # a new load, and the proof is old: one GET
    assert not clients.ensure_checked("load-2", client)
    assert checks(emu) == 2
    clients.close()
    assert len(clients) == 0
