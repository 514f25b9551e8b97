"""Sync ledger: what Bento last acknowledged, so reverse-ETL sends only what changed.

Reverse-ETL runs over whole tables on a schedule, and Bento allows about a request a second: resending a
1,000,000-row table costs 10 to 17 minutes every run. The ledger keeps, per (site, operation, key), the
fingerprint of the payload Bento last acknowledged, so a rerun sends only new and changed rows, and events
already acknowledged are not sent twice. It also remembers who is known to be unsubscribed (consent) and
which tags this connector added (tag ownership). See docs/ledger.md.

The package, one job per module: `keys` (canonical JSON, fingerprints, event keys and their versions),
`transaction` (the ops a commit writes), `lww` (the last-write-wins rule, the one place its SQL lives),
`segments` (the fsspec segment store), `postgres_store` (segments as rows of a Postgres schema), `replica`
(segments mirrored into the DuckDB cache), `database` (tables, caps, versions of a ledger file), `worker` (the
DuckDB thread), `classes`, `reads` and `store` (`SyncLedger`), `upgrade` (entries of an older fingerprint
version migrate as they are compared). The blast-radius rule
lives in `bento_destination.policy`; it is re-exported here for the callers that import it from here.
"""

from __future__ import annotations

from ..policy import DEFAULT_MAX_SHARE, BlastRadiusExceeded, check_blast_radius
from .classes import CHANGED, NEW, STALE, UNCHANGED
from .database import BULK_ROWS, DEFAULT_BULK_MEMORY_LIMIT, DEFAULT_MEMORY_LIMIT, DEFAULT_THREADS
from .errors import LedgerBusyError, LedgerError
from .keys import (
    EVENT_FINGERPRINT_VERSION,
    EVENT_KEY_VERSION,
    FORMAT_VERSION,
    SUBSCRIBER_FINGERPRINT_VERSION,
    VERSIONS,
    canonical_json,
    derive_event_key,
    event_ledger_key,
    fingerprint,
    fingerprint_version,
    subscriber_fingerprint_v1,
)
from .lww import ALL_OPERATIONS
from .segments import SEGMENT_PREFIX, SEGMENT_SCHEMA, SEGMENT_SUFFIX, TMP_PREFIX, SegmentStore
from .store import DEFAULT_COMPACT_AFTER, SyncLedger
from .transaction import TAGS_NS, UNSUBSCRIBED_NS, LedgerTransaction, Pairs
from .upgrade import OlderFingerprints, settle_stale

__all__ = [
    "ALL_OPERATIONS",
    "BULK_ROWS",
    "CHANGED",
    "DEFAULT_BULK_MEMORY_LIMIT",
    "DEFAULT_COMPACT_AFTER",
    "DEFAULT_MAX_SHARE",
    "DEFAULT_MEMORY_LIMIT",
    "DEFAULT_THREADS",
    "EVENT_FINGERPRINT_VERSION",
    "EVENT_KEY_VERSION",
    "FORMAT_VERSION",
    "NEW",
    "SEGMENT_PREFIX",
    "SEGMENT_SCHEMA",
    "SEGMENT_SUFFIX",
    "STALE",
    "SUBSCRIBER_FINGERPRINT_VERSION",
    "TAGS_NS",
    "TMP_PREFIX",
    "UNCHANGED",
    "UNSUBSCRIBED_NS",
    "VERSIONS",
    "BlastRadiusExceeded",
    "LedgerBusyError",
    "LedgerError",
    "LedgerTransaction",
    "OlderFingerprints",
    "Pairs",
    "SegmentStore",
    "SyncLedger",
    "canonical_json",
    "check_blast_radius",
    "derive_event_key",
    "event_ledger_key",
    "fingerprint",
    "fingerprint_version",
    "settle_stale",
    "subscriber_fingerprint_v1",
]
