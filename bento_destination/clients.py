"""One BentoClient per (settings, budgets, User-Agent) in the process, and the up-front credentials check.

dlt runs load jobs in a thread pool and calls the sink once per batch; building a client per call
would open a connection pool per batch. The client is thread-safe and its pacers are process-wide,
so sharing it keeps every thread inside one budget.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import Any

from bento_api import BentoClient, BentoSettings, Budgets, resolve_budgets, resolve_settings
from bento_api.facts import CREDENTIALS_CHECK_PATH

from .settings import DESTINATION_NAME

_LOCK = threading.Lock()
_CLIENTS: dict[tuple[BentoSettings, Budgets, str | None], BentoClient] = {}
#: (load_id, settings) pairs whose credentials were already checked in this process
_CHECKED: set[tuple[str, BentoSettings]] = set()
_CHECK_LOCK = threading.Lock()
#: settings -> time.monotonic() of the last GET in this process that proved them
_PROVEN: dict[BentoSettings, float] = {}
#: a proof this recent spares the load step its own GET (the pipelines check just before extracting)
PROOF_FRESH_SECONDS = 600.0

#: a cheap authenticated call: wrong keys or site_uuid answer 401 before any row is sent
CHECK_PATH = CREDENTIALS_CHECK_PATH


def _dlt_value(key: str) -> str | None:
    """`[destination.bento] <key>` from dlt's providers (secrets.toml, config.toml, DESTINATION__BENTO__*)."""
    import dlt

    for accessor in (dlt.secrets, dlt.config):
        try:
            value: Any = accessor.get(f"destination.{DESTINATION_NAME}.{key}")
        except Exception:  # a provider that cannot answer is the same as no value
            value = None
        if value:
            return str(value)
    return None


def destination_settings(
    site_uuid: str | None = None,
    publishable_key: str | None = None,
    secret_key: str | None = None,
    base_url: str | None = None,
) -> BentoSettings:
    """Keyword > dlt config `[destination.bento]` > BENTO_* (one error names everything missing)."""
    return resolve_settings(
        site_uuid=site_uuid or _dlt_value("site_uuid"),
        publishable_key=publishable_key or _dlt_value("publishable_key"),
        secret_key=secret_key or _dlt_value("secret_key"),
        base_url=base_url or _dlt_value("base_url"),
        sections=("destination",),
    )


def shared_client(settings: BentoSettings, budgets: Budgets, user_agent: str | None = None) -> BentoClient:
    key = (settings, budgets, user_agent)
    with _LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _CLIENTS[key] = BentoClient(settings, budgets, user_agent=user_agent)
        return client


@atexit.register
def close_clients() -> None:
    """Close every shared client (tests call this between emulators; atexit at the end)."""
    with _LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        client.close()


def check_credentials(
    site_uuid: str | None = None,
    publishable_key: str | None = None,
    secret_key: str | None = None,
    base_url: str | None = None,
    *,
    requests_per_minute: float | None = None,
    user_agent: str | None = None,
) -> BentoSettings:
    """Resolve the destination's credentials and prove them with one GET; raises a clear BentoError if wrong.

    Call it before extracting: dlt resolves the sink's config only at load time, after extract and
    normalize have already run.
    """
    settings = destination_settings(site_uuid, publishable_key, secret_key, base_url)
    client = shared_client(settings, resolve_budgets(requests_per_minute), user_agent)
    client.get(CHECK_PATH)
    _PROVEN[settings] = time.monotonic()
    return settings


def recently_proven(settings: BentoSettings) -> bool:
    """True if a GET proved these credentials in this process within PROOF_FRESH_SECONDS."""
    proven = _PROVEN.get(settings)
    return proven is not None and time.monotonic() - proven < PROOF_FRESH_SECONDS


def ensure_checked(load_id: str, client: BentoClient) -> bool:
    """Check the client's credentials once per load; True if it sent the GET now.

    The first batch of a load pays one GET, unless `check_credentials` proved the same settings in this
    process moments ago (sync() does so before extracting): a second GET would only delay the first batch.
    """
    key = (load_id, client.settings)
    if key in _CHECKED:
        return False
    with _CHECK_LOCK:
        if key in _CHECKED:
            return False
        checked_now = not recently_proven(client.settings)
        if checked_now:
            client.get(CHECK_PATH)
            _PROVEN[client.settings] = time.monotonic()
        _CHECKED.add(key)
        return checked_now
