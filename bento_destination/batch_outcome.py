"""What one sink batch did (rows sent, rejected with their reasons, request stats), before it joins the report."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bento_api import RequestStats

from .sent_rows import row_identity

if TYPE_CHECKING:
    from .send import Item


@dataclass
class RejectRecord:
    reason: str
    detail: str
    row: dict[str, Any]
    batch: str | None = None


@dataclass
class BatchOutcome:
    """What one sink batch did; merged into the load report only once the batch has finished."""

    received: int = 0
    sent: int = 0
    commands_sent: int = 0
    already_sent: int = 0
    failed_by_bento: int = 0
    rows_in_partly_failed_batches: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    rejects: list[RejectRecord] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set)
    reserved: set[str] = field(default_factory=set)
    ignored: set[str] = field(default_factory=set)
    stats: RequestStats = field(default_factory=RequestStats)
    #: sync ledger counts (new, changed, unchanged, tags_not_owned), see changes.py
    ledger: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    #: False for rows counted outside a sink batch (rejected before extract, non_finite.py)
    sink_batch: bool = True
    #: (email, key) of each sent row, for the sync results (sent_rows.py); None: not recorded
    sent_rows: list[tuple[str | None, str | None]] | None = None

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def reject(self, reason: str, detail: str, row: dict[str, Any]) -> None:
        self.rejected_by_reason[reason] += 1
        self.rejects.append(RejectRecord(reason, detail, row))

    def record_sent(self, operation: str, items: list[Item], refused: set[int] | None = None) -> None:
        """Keep the identity of the rows of `items` Bento took (a row's derived commands are not rows)."""
        if self.sent_rows is None:
            return
        self.sent_rows.extend(
            row_identity(operation, item.payload, item.key)
            for item in items
            if item.counts_row and (refused is None or id(item.row) not in refused)
        )
