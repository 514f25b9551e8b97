"""The classes `SyncLedger.classify` gives a (key, fingerprint) pair."""

from __future__ import annotations

from typing import Final

#: NEW: no fingerprint stored; CHANGED: a different one; UNCHANGED: the same, so not sent; STALE: the stored
#: fingerprint was written by an older version than the one given, so the two cannot be compared: the
#: caller compares the row's older fingerprint (`upgrade.settle_stale`)
NEW: Final = 0
CHANGED: Final = 1
UNCHANGED: Final = 2
STALE: Final = 3
CLASS_NAMES: Final = ("new", "changed", "unchanged", "stale")
