"""The Bento client of one run context, its credentials check and when they were last proven.

dlt runs load jobs in a thread pool and calls the sink once per batch; building a client per call would
open a connection pool per batch. So each run context (runcontext.py) holds one client per settings (one
run has one), shared by its threads and closed when the run ends. The pacers are process-wide
(bento_api.pacing), so two runs of one process still share one budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from bento_api import BentoClient, BentoSettings, Budgets
from bento_api.facts import CREDENTIALS_CHECK_PATH

#: a proof this recent spares the load step its own GET (sync() checks just before extracting)
PROOF_FRESH_SECONDS = 600.0
#: a cheap authenticated call: wrong keys or site_uuid answer 401 before any row is sent
CHECK_PATH = CREDENTIALS_CHECK_PATH

ClientKey = tuple[BentoSettings, Budgets, str | None]


class RunClients:
    """One run's clients, credentials checks and proofs (thread-safe); `close()` when the run ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._clients: dict[ClientKey, BentoClient] = {}
        #: settings -> the load whose credentials were checked last (one check per load and settings)
        self._checked: dict[BentoSettings, str] = {}
        #: settings -> clock() of the last GET of this run that proved them
        self._proven: dict[BentoSettings, float] = {}

    def client(self, settings: BentoSettings, budgets: Budgets, user_agent: str | None = None) -> BentoClient:
        key = (settings, budgets, user_agent)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = BentoClient(settings, budgets, user_agent=user_agent)
            return client

    def prove(self, client: BentoClient) -> None:
        """One GET with the client's credentials; raises a clear BentoError if Bento refuses them."""
        client.get(CHECK_PATH)
        with self._lock:
            self._proven[client.settings] = self._clock()

    def recently_proven(self, settings: BentoSettings) -> bool:
        """True if a GET of this run proved these credentials within PROOF_FRESH_SECONDS."""
        with self._lock:
            proven = self._proven.get(settings)
        return proven is not None and self._clock() - proven < PROOF_FRESH_SECONDS

    def ensure_checked(self, load_id: str, client: BentoClient) -> bool:
        """Check the client's credentials once per load; True if it sent the GET now.

        The first batch of a load pays one GET, unless this run proved the same settings moments ago
        (sync() does so before extracting): a second GET would only delay the first batch.
        """
        settings = client.settings
        with self._check_lock:
            if self._checked.get(settings) == load_id:
                return False
            checked_now = not self.recently_proven(settings)
            if checked_now:
                self.prove(client)
            self._checked[settings] = load_id
            return checked_now

    def __len__(self) -> int:
        """How many clients the run holds open (one per settings; a run has one)."""
        with self._lock:
            return len(self._clients)

    def close(self) -> None:
        """Close every client of the run (a later call of the run would open a new one)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
