"""Which lock guards a sync ledger: a lock file beside a local ledger, a lease object on S3, an advisory
lock in a Postgres ledger's database, none elsewhere.

Kept apart from runlock.py (the lock file) and s3lease.py (the lease, which reuses runlock's errors), so
neither of those imports the other's chooser.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .ledger.postgres_store import is_postgres_location
from .pglock import PostgresAdvisoryLock
from .runlock import LOCKS_DIRNAME, FileRunLock
from .s3lease import LEASE_PROTOCOLS, S3LeaseLock


def _local_path(location: str) -> Path | None:
    if location.startswith("file://"):
        return Path(location[len("file://") :])
    if "://" in location:
        return None
    return Path(location).expanduser()


def lock_for_ledger(
    location: str, site: str, operation: str, *, on_lost: Callable[[str], None] | None = None
) -> FileRunLock | S3LeaseLock | PostgresAdvisoryLock | None:
    """The lock of (ledger location, site, operation), or None where none can serve (non-S3 object stores).

    A DuckDB ledger file `x.duckdb` is locked through `x.duckdb.<site>.<operation>.lock` beside it; a
    folder ledger through `<folder>/.bento-locks/<site>.<operation>.lock` (outside its segment folders);
    an `s3://` ledger through the lease object `<ledger>/.bento-locks/<site>.<operation>.lease`, whose
    loss (another run took it over) is reported to `on_lost` (the run context's breaker); a `postgresql://`
    ledger through a session advisory lock, whose loss (its connection dropped) is reported the same way.
    """
    if is_postgres_location(location):
        return PostgresAdvisoryLock(location, site, operation, on_lost=on_lost)
    path = _local_path(location)
    if path is None:
        protocol = location.split("://", 1)[0].lower()
        if protocol not in LEASE_PROTOCOLS:
            return None
        return S3LeaseLock(
            f"{location.rstrip('/')}/{LOCKS_DIRNAME}/{site}.{operation}.lease",
            f"sync ledger {location} (site {site}, {operation})",
            on_lost=on_lost,
        )
    name = f"{site}.{operation}.lock"
    description = f"sync ledger {path} (site {site}, {operation})"
    if str(path).endswith(".duckdb"):
        return FileRunLock(path.with_name(f"{path.name}.{name}"), description)
    return FileRunLock(path / LOCKS_DIRNAME / name, description)
