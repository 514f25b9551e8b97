"""What Bento's answer to a batch request means for its rows, and finding the rows it counted as `failed`.

A 413 or an over-limit 400 applied nothing, so the request is sent again in halves (`split`); an answer
with `failed > 0` does not say which rows failed, so for subscribers (upserts) halves are re-sent until
exactly those rows are found (`Bisection`). The sender (send.py) applies these rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from bento_api import (
    BentoAttemptsSpentError,
    BentoCancelledError,
    BentoConfigError,
    BentoError,
    BentoInvalidRequestError,
)

from .batch_outcome import RejectRecord
from .request_packing import request_body
from .settings import ENDPOINTS, HALVE_ABOVE

if TYPE_CHECKING:
    from .send import Item, Sender

#: errors that stop the run's sending: never a verdict on the rows
STOPPED: Final = (BentoCancelledError, BentoAttemptsSpentError)


def failed_count(body: Any, size: int) -> int:
    """Bento's `failed` count in a batch answer, clamped to the request's size (0 when absent or unreadable)."""
    if not isinstance(body, dict):
        return 0
    try:
        return max(0, min(size, int(body.get("failed") or 0)))
    except (TypeError, ValueError):
        return 0


def stops_the_load(error: BentoError) -> bool:
    """Errors no row is to blame for: raised to dlt (retried, or a person must fix them), never rejects."""
    return (
        error.transient or error.status in (401, 403, 404, 405) or isinstance(error, (BentoConfigError, *STOPPED))
    )


def split(error: BentoInvalidRequestError, chunk: list[Item]) -> bool:
    """Whether a refused request applied nothing and is sent again in halves: a 413 down to single rows (only
    the row too large for Bento is then rejected), a 400 or 422 down to HALVE_ABOVE rows (Bento may answer an
    over-limit batch either way: docs/bento-api.md, "Batch writes")."""
    if error.status == 413:
        return len(chunk) > 1
    return error.status in (400, 422) and len(chunk) > HALVE_ABOVE


class Bisection:
    """Finds exactly which rows of a subscribers request Bento counted as `failed`, by re-sending halves.

    The request already applied its other rows (an upsert by email), so a half is sent again only to
    learn its own count. The other half's count is then the parent's minus it: it is not sent at all
    when that is 0 (its rows are in) or its size (all refused). So one bad row in 1000 costs
    ceil(log2(1000)) = 10 requests, and k bad rows about k*log2(n/k) + k, instead of n. If the counts
    contradict each other (a half reporting more failures than its parent, i.e. Bento's refusals are
    not a property of the rows), nothing is inferred any more: every half is sent and counted.
    """

    def __init__(self, sender: Sender, operation: str, batch: str) -> None:
        self.sender = sender
        self.operation = operation
        self.batch = batch
        self.trust_counts = True

    def isolate(self, group: list[Item], failed: int, label: str = "") -> int:
        """`failed` rows of `group` failed at Bento, the rest were applied; reject those rows, return how many."""
        if failed >= len(group):
            self._reject(group, label)
            return len(group)
        middle = len(group) // 2  # failed < len(group), so the group has at least 2 rows
        first, second = group[:middle], group[middle:]
        refused = 0
        second_failed: int | None
        first_failed = self._resend(first)
        if first_failed is None:
            refused += len(first)
            second_failed = self._resend(second)
        else:
            if first_failed > failed:
                self.trust_counts = False
            if first_failed:
                refused += self.isolate(first, first_failed, label + "a")
            if self.trust_counts:
                inferred = failed - first_failed
                return refused + (self.isolate(second, inferred, label + "b") if inferred else 0)
            second_failed = self._resend(second)
        if second_failed is None:
            refused += len(second)
        elif second_failed:
            refused += self.isolate(second, second_failed, label + "b")
        return refused

    def _resend(self, group: list[Item]) -> int | None:
        """Send `group` again; its `failed` count, or None if Bento refused the whole request (rows recorded)."""
        path, wrapper = ENDPOINTS[self.operation]
        try:
            body = self.sender.post(f"{self.batch}:bisect:{len(group)}:{id(group[0])}", path,
                                    request_body(wrapper, group))
        except BentoError as error:
            if stops_the_load(error):
                raise  # dlt retries the whole sink batch: re-sending upserts is harmless
            self.sender._refused(group, error)
            return None
        return failed_count(body, len(group))

    def _reject(self, group: list[Item], label: str) -> None:
        detail = (
            f"Bento refused this row: it counted it as failed (found by sending parts of a request of "
            f"{self.operation} again, which only upserts); fix the row and send it again"
        )
        for item in group:
            self.sender.outcome.rejected_by_reason["refused_by_bento"] += 1
            self.sender.outcome.rejects.append(RejectRecord("refused_by_bento", detail, item.row, self.batch + label))
