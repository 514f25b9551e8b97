"""What a `bento-dlt sync` send is told besides its rows (the demo builds one too), and the sync-ledger keywords
the user set, checked against what this build's destination accepts."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bento_api import BentoSettings, Budgets
from bento_destination import DEFAULT_REJECT_THRESHOLD, bento

from .cli_common import EXIT_USAGE, CliError


@dataclass
class SyncSettings:
    """Everything `push` needs besides the rows (the demo builds one too)."""

    operation: str
    settings: BentoSettings
    budgets: Budgets
    pipeline_name: str
    pipelines_dir: str | None = None
    reject_threshold: float = DEFAULT_REJECT_THRESHOLD
    allow_secret_columns: bool = False
    allow_email_sends: bool = False
    #: sync-ledger keywords the user set (see LEDGER_FLAGS); None = the destination's default
    ledger: dict[str, Any] = field(default_factory=dict)
    #: seconds to wait for another run holding the lock (None: exit 75 at once)
    wait: float | None = None
    #: sync results: True the local DuckDB file, False none, else a URL or path (bento_destination/results.py)
    results: Any = True
    results_dataset: str | None = None

    #: rejected rows' contents in the JSON summary (`--show-rows`)
    show_rows: bool = False


#: sync-ledger keywords of `bento(...)` and the flags that set them (absent from a destination without a ledger)
LEDGER_FLAGS: dict[str, str] = {
    "sync_ledger": "--no-ledger",
    "ledger_url": "--ledger-url",
    "full_resync": "--full-resync",
    "allow_events_for_unsubscribed": "--allow-events-for-unsubscribed",
    "max_blast_radius": "--max-blast-radius",
    "force": "--force",
    "tag_ownership": "--tag-ownership",
    "event_keys": "--no-event-keys",
}


def ledger_options(chosen: dict[str, Any], note: Callable[[str], None]) -> dict[str, Any]:
    """The ledger keywords the user set, if this build's destination has them (it keeps a sync ledger)."""
    supported = inspect.signature(bento).parameters
    out: dict[str, Any] = {}
    for keyword, value in chosen.items():
        if value is None:
            continue
        if keyword in supported:
            out[keyword] = value
        elif keyword == "full_resync":
            note("note: this destination keeps no sync ledger, so every row is sent on every run; "
                 "--full-resync changes nothing")
        else:
            raise CliError(f"{LEDGER_FLAGS[keyword]} needs a destination with the sync ledger; this one has none",
                           EXIT_USAGE)
    return out
