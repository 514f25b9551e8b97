"""The up-front credentials check, with the configuration the load will use.

dlt resolves the destination's config only at load time, after extract and normalize; a wrong key
would surface only then. `check_credentials` resolves the same spec (config.py) and proves it with one
GET first. The client, and the proof that spares the load its own GET, belong to a run context
(runcontext.py, run_clients.py): nothing here outlives a run.
"""

from __future__ import annotations

from typing import Any

from bento_api import BentoClient, BentoSettings

from .config import BentoDestinationConfig, resolve_destination_config
from .run_clients import CHECK_PATH
from .runcontext import RunContext, current_run, end_plain_runs

__all__ = ["CHECK_PATH", "check_credentials", "close_clients", "prove_credentials"]


def check_credentials(
    site_uuid: str | None = None,
    publishable_key: str | None = None,
    secret_key: str | None = None,
    base_url: str | None = None,
    *,
    requests_per_minute: float | None = None,
    user_agent: str | None = None,
    pipeline: Any = None,
) -> BentoSettings:
    """Resolve the destination's credentials and prove them with one GET; raises a clear BentoError if wrong.

    Call it before extracting. With `pipeline`, the config is the one its load will resolve (its
    `bento(...)` keywords, its name's sections), and the proof spares that load its own GET; the
    keywords here are then ignored. Without it, the keywords and dlt's config are used, and the
    load checks the credentials again.
    """
    if pipeline is not None:
        config = resolve_destination_config(pipeline.pipeline_name, pipeline.destination)
        return prove_credentials(config, current_run(pipeline.working_dir))
    config = resolve_destination_config(
        None, None, site_uuid=site_uuid, publishable_key=publishable_key, secret_key=secret_key,
        base_url=base_url, requests_per_minute=requests_per_minute, user_agent=user_agent,
    )
    return prove_credentials(config)


def prove_credentials(config: BentoDestinationConfig, run: RunContext | None = None) -> BentoSettings:
    """One GET with `config`'s credentials; the run (if any) remembers the proof and keeps the client."""
    settings = config.settings()
    if run is None:
        with BentoClient(settings, config.budgets(), user_agent=config.user_agent) as client:
            client.get(CHECK_PATH)
        return settings
    run.clients.prove(run.clients.client(settings, config.budgets(), config.user_agent))
    return settings


def close_clients() -> None:
    """End the plain runs of this process, closing their clients (tests call this between emulators)."""
    end_plain_runs()
