"""BentoEmulator: a Bento-compatible HTTP server on loopback, started in a background thread."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import limits
from .admin import AdminAPI
from .app import App
from .config import AUTO, EmulatorConfig
from .faults import Fault, FaultInjector
from .ratelimit import RateLimit, RateLimiter
from .records import CountingLog, RequestLog, RequestRecord
from .seed import seed_store
from .server import EmulatorHTTPServer
from .store import Store
from .tally import Tally
from .writequeue import WriteQueue


class BentoEmulator:
    """A local Bento: real HTTP on 127.0.0.1, seeded data, Bento's checks, limits and optional faults.

    Use as a context manager (or call start()/stop()). Everything is in memory and thread-safe.
    `queue_clock` is the clock of the bento_like write queue (tests inject one to make writes due).
    """

    def __init__(self, config: EmulatorConfig | None = None, *,
                 queue_clock: Callable[[], float] = time.monotonic, **overrides: Any) -> None:
        cfg = config if config is not None else EmulatorConfig()
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides)
        self.config = cfg
        self._store = Store(cfg.seed)
        seed_store(self._store, cfg)
        self.writes = WriteQueue(self._store.lock, cfg.write_delay_seconds if cfg.queues_writes else None,
                                 queue_clock)
        self.limiter = RateLimiter(cfg.initial_rate_limits())
        self.faults = FaultInjector(cfg.seed, cfg.faults)
        #: the counts mode's counts and hashes of writes (docs/emulator.md, "Counts mode"); None in the full mode
        self.tally: Tally | None = None
        if cfg.counts_only:
            self.tally = Tally(self._store.lock)
            self.tally.absorb(self._store)
        self.log = CountingLog() if cfg.counts_only else RequestLog()
        self.app = App(cfg, self._store, self.limiter, self.faults, self.log, self.writes, self.tally)
        self._admin = AdminAPI(self.app, "")
        self._server: EmulatorHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> BentoEmulator:
        """Bind (port 0 = a free port) and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        self.app.stopping.clear()
        self._server = EmulatorHTTPServer((self.config.host, self.config.port), self.app, self._admin)
        self._admin.base_url = self.base_url
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"bento-emulator:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections (trickles and latencies end too); idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self.app.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> BentoEmulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    # ------------------------------------------------------------------ addresses and credentials
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not running: call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def root_url(self) -> str:
        """http://127.0.0.1:<port> (admin endpoints live under /_emulator/)."""
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a client uses instead of https://app.bentonow.com/api/v1."""
        return self.root_url + limits.API_PREFIX

    @property
    def admin_url(self) -> str:
        return self.root_url + limits.ADMIN_PREFIX

    @property
    def site_uuid(self) -> str:
        return self.config.site_uuid

    @property
    def publishable_key(self) -> str:
        return self.config.publishable_key

    @property
    def secret_key(self) -> str:
        return self.config.secret_key

    @property
    def credentials(self) -> dict[str, str]:
        """Keyword arguments for our client, source and destination."""
        return {"site_uuid": self.site_uuid, "publishable_key": self.publishable_key,
                "secret_key": self.secret_key, "base_url": self.base_url}

    def env(self) -> dict[str, str]:
        """The BENTO_* environment variables pointing at this emulator."""
        return {"BENTO_BASE_URL": self.base_url, "BENTO_SITE_UUID": self.site_uuid,
                "BENTO_PUBLISHABLE_KEY": self.publishable_key, "BENTO_SECRET_KEY": self.secret_key}

    # ------------------------------------------------------------------ data and the write queue
    @property
    def store(self) -> Store:
        """The data, as it will be once every accepted write is applied: reading it drains the queue first.

        Tests inspect the eventual state this way; a read through the HTTP API sees only applied writes.
        """
        self.writes.drain()
        return self._store

    @property
    def mode(self) -> str:
        return self.config.mode

    def drain(self) -> int:
        """Apply every queued write now, as if its delay had passed (same as POST /_emulator/drain).

        Returns how many write requests were applied; always 0 in the default mode, which queues nothing.
        """
        return self.writes.drain()

    @property
    def queued(self) -> int:
        """Write requests accepted but not applied yet (only the bento_like mode queues)."""
        return self.writes.pending()

    def wait_for_writes(self, timeout: float) -> bool:
        """Wait (really) until every queued write is due, at most `timeout` seconds, and apply them.

        For demos that show the delay instead of skipping it; True if nothing is left queued.
        """
        deadline = time.monotonic() + timeout
        while (wait := self.writes.next_due_in()) is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(wait, left))
            self.writes.apply_due()
        return self.writes.pending() == 0

    # ------------------------------------------------------------------ log, faults, limits
    @property
    def request_log(self) -> list[RequestRecord]:
        """A snapshot of every API request so far, in completion order (RecordsNotKept in the counts mode)."""
        return self.log.snapshot()

    def requests(self, path: str | None = None, method: str | None = None) -> list[RequestRecord]:
        """Logged requests with this exact path (relative to /api/v1) and/or method."""
        return self.log.filter(path, method)

    def reset_log(self) -> None:
        self.log.clear()

    def summary(self) -> dict[str, Any]:
        """Same as GET /_emulator/summary: counts once every queued write is applied (it drains)."""
        self.writes.drain()
        return {"objects": self.app.object_counts(), "requests": self.log.summary()}

    def add_fault(self, fault: Fault) -> None:
        self.faults.add(fault)

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_rate_limit(self, family: str, per_minute: float | None = None, per_hour: float | None = None,
                       capacity: float = limits.BUCKET_CAPACITY, retry_after: str | None = AUTO) -> None:
        """Change one family's budget ('*' = all); both rates None removes the limit. The bucket starts full.

        retry_after "auto": seconds in the default mode, no header in bento_like.
        """
        resolved = self.config.resolve_retry_after(retry_after)
        self.limiter.set(family, RateLimit.of(per_minute, per_hour, capacity, resolved))
