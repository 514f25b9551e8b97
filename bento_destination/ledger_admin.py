"""A person's changes to a sync ledger outside a run: forget fingerprints (reset), forget unsubscribes.

Each opens the ledger on its own, after closing the handle a run of this process may hold on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bento_api import BentoConfigError

from .config import LedgerOptions, resolve_destination_config
from .ledger import SyncLedger
from .runcontext import close_ledger_location


def location_or_fail(options: LedgerOptions, working_dir: str | Path | None) -> str:
    """The ledger's location: `ledger_url` given here, else the destination's config (config.py), else the file."""
    ledger_url = options.ledger_url or resolve_destination_config().ledger_url
    if working_dir is None and not ledger_url:
        raise BentoConfigError("give ledger_url or the pipeline's working folder (where bento_ledger.duckdb lives)")
    return ledger_url or options.location(working_dir or ".")


def reset_ledger(
    site_uuid: str,
    *,
    ledger_url: str | None = None,
    working_dir: str | Path | None = None,
    operation: str | None = None,
    consent: bool = False,
    tags: bool = False,
) -> str:
    """Forget the fingerprints of `operation` (None: all), so the next run sends everything; returns the location.

    Consent memory (unsubscribes) and tag ownership are kept unless `consent` / `tags` say otherwise.
    """
    location = location_or_fail(LedgerOptions(ledger_url=ledger_url), working_dir)
    close_ledger_location(location, site_uuid)
    with SyncLedger.open(location, site=site_uuid) as ledger:
        ledger.reset(operation, consent=consent, tags=tags)
    return location


def forget_unsubscribes(
    emails: Iterable[str], site_uuid: str, *, ledger_url: str | None = None, working_dir: str | Path | None = None
) -> None:
    """Forget that these people are unsubscribed: only after they asked to be resubscribed (done in Bento)."""
    location = location_or_fail(LedgerOptions(ledger_url=ledger_url), working_dir)
    close_ledger_location(location, site_uuid)
    with SyncLedger.open(location, site=site_uuid) as ledger:
        ledger.clear_unsubscribed(list(emails))
