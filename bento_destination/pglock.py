"""The run lock of a ledger kept in Postgres: a session advisory lock on the ledger's own database.

Postgres holds a session advisory lock for as long as the connection that took it lives, and frees it
when that connection ends, however the process dies; so, like a local flock, a dead run's lock needs no
cleanup. The key is a 64-bit hash of (schema, site, operation). The holder is told by the connection's
`application_name` (pid and host), read back from `pg_locks` when the lock is busy. If the connection
drops mid-run, the lock is gone (another run may take it): `verify` notices on its next check and the
run's breaker stops it before its next request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from .ledger.errors import LedgerError, first_line
from .ledger.postgres_store import connection_target, display_location, import_psycopg
from .runlock import POLL_SECONDS, BentoBusyError, holder_text

#: seconds between two checks that the lock's connection still lives (each is one `SELECT 1`)
CHECK_SECONDS: Final = 5.0
_HOLDER = re.compile(r"^bento-dlt pid (\d+) on (.*)$")
_KEY_SQL: Final = "hashtextextended(%s, 0)"


class PostgresAdvisoryLock:
    """A session advisory lock named by (schema, site, operation), held on a connection of its own."""

    def __init__(
        self, location: str, site: str, operation: str, *, on_lost: Callable[[str], None] | None = None
    ) -> None:
        self._url, schema = connection_target(location)
        self._name = f"bento-dlt:{schema}:{site}:{operation}"
        self.path = f"{display_location(location)}#{site}.{operation}"
        self.description = f"sync ledger {display_location(location)} (site {site}, {operation})"
        self.on_lost = on_lost
        self.lost: str | None = None
        self._con: Any = None
        self._checked_at = 0.0
        self._state = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresAdvisoryLock({self.path!r})"

    @property
    def held(self) -> bool:
        return self._con is not None and self.lost is None

    def _connect(self) -> Any:
        psycopg = import_psycopg()
        name = f"bento-dlt pid {os.getpid()} on {socket.gethostname()}"[:63]
        try:
            return psycopg.connect(self._url, autocommit=True, application_name=name, keepalives_idle=30)
        except psycopg.Error as exc:
            raise LedgerError(f"cannot reach the Postgres ledger for its lock ({first_line(exc)})") from exc

    def _holder(self, con: Any) -> dict[str, Any]:
        """Who holds the lock, from the holding session's application name and start (empty if unknown)."""
        row = con.execute(
            f"""SELECT a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
                  AND l.classid = ((({_KEY_SQL}) >> 32) & 4294967295)::oid
                  AND l.objid = (({_KEY_SQL}) & 4294967295)::oid""",
            [self._name, self._name],
        ).fetchone()
        if row is None:
            return {}
        match = _HOLDER.match(str(row[0] or ""))
        holder: dict[str, Any] = {"what": self.description}
        if match:
            holder.update(pid=int(match.group(1)), host=match.group(2))
        if isinstance(row[1], dt.datetime):
            holder["started_at"] = row[1].astimezone(dt.UTC).isoformat(timespec="seconds")
        return holder

    def acquire(self, wait: float | None = None) -> None:
        if self.held:
            return
        con = self._connect()
        deadline = time.monotonic() + (wait or 0.0)
        try:
            while not con.execute(f"SELECT pg_try_advisory_lock({_KEY_SQL})", [self._name]).fetchone()[0]:
                if time.monotonic() >= deadline:
                    holder = self._holder(con)
                    waited = f" after waiting {wait:g}s" if wait else ""
                    raise BentoBusyError(
                        f"busy: another run holds the {self.description} ({holder_text(holder)}){waited}; nothing "
                        "was sent. Wait for it (--wait SECONDS, or sync(wait=...)) or run later",
                        holder=holder,
                        path=self.path,
                    )
                time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        except BaseException:
            con.close()
            raise
        with self._state:
            self._con, self.lost, self._checked_at = con, None, time.monotonic()

    def verify(self) -> None:
        """Before a request: at most every CHECK_SECONDS, one round trip on the lock's connection. If it
        failed, the server has ended (or will end) the session and its lock: the run is told to stop."""
        with self._state:
            con = self._con
            if con is None or self.lost is not None or time.monotonic() - self._checked_at < CHECK_SECONDS:
                return
            self._checked_at = time.monotonic()
            try:
                con.execute("SELECT 1").fetchone()
                return
            except Exception as exc:  # psycopg's connection errors, or a closed connection
                self.lost = (f"the connection holding the lock on the {self.description} was lost "
                             f"({first_line(exc)}), so another run may take it over")
        if self.on_lost is not None:
            self.on_lost(self.lost)

    def release(self) -> None:
        with self._state:
            con, self._con = self._con, None
        if con is None:
            return
        with contextlib.suppress(Exception):  # already gone: so is the lock
            con.close()  # ending the session frees its advisory locks
