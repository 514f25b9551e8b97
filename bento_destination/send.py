"""Send mapped rows to Bento in requests no larger than the operation's maximum, and account for each row.

Rules (DESIGN.md): a 400/413 on more than 100 rows applied nothing, so the batch is halved and sent
again; a smaller batch refused as invalid is recorded as rejected (never looped on). Bento's answer
counts `failed` rows without saying which: for subscribers (upserts, safe to send again) halves of the
request are sent again until exactly those rows are found (`_Bisection`, O(k log n) requests for k bad
rows); events and commands are not sent again, the count is recorded with the request's rows.
Emails are never sent twice: each emails request is marked in dlt's load package state before and
after it is sent, so a resumed load skips requests already sent and does not repeat one whose
outcome is unknown (those rows are rejected as `email_send_uncertain` for a person to review).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from bento_api import (
    NEVER_AFTER_SEND,
    BentoAttemptsSpentError,
    BentoCancelledError,
    BentoClient,
    BentoError,
    BentoInvalidRequestError,
    BentoRateLimitedError,
    RequestGate,
    RequestStats,
)

from .settings import ENDPOINTS, HALVE_ABOVE, REQUEST_MAXIMA

#: operations whose `failed` rows are found exactly by re-sending halves of the request: subscriber
#: imports are upserts by email, so sending a row again changes nothing. Events are not re-sent (each
#: send triggers automations), commands neither (`change_email` fails the second time it is applied).
BISECTABLE: Final = frozenset({"subscribers"})
#: errors that stop the run's sending: never a verdict on the rows
STOPPED: Final = (BentoCancelledError, BentoAttemptsSpentError)


def _failed_count(body: Any, size: int) -> int:
    """Bento's `failed` count in a batch answer, clamped to the request's size (0 when absent or unreadable)."""
    if not isinstance(body, dict):
        return 0
    try:
        return max(0, min(size, int(body.get("failed") or 0)))
    except (TypeError, ValueError):
        return 0


@dataclass
class Item:
    """One payload to send and the source row it came from (already redacted, for the reject file)."""

    payload: dict[str, Any]
    row: dict[str, Any]
    #: False for a command derived from a row whose own payload is counted already
    counts_row: bool = True


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
    ignored: set[str] = field(default_factory=set)
    stats: RequestStats = field(default_factory=RequestStats)
    #: sync ledger counts (new, changed, unchanged, tags_not_owned), see changes.py
    ledger: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    def reject(self, reason: str, detail: str, row: dict[str, Any]) -> None:
        self.rejected_by_reason[reason] += 1
        self.rejects.append(RejectRecord(reason, detail, row))


class EmailLedger:
    """Per-request send marks for emails, kept in dlt's load package state (survives a crash or retry)."""

    STATE_KEY = "bento_emails"

    def __init__(self, state: dict[str, Any], commit: Callable[[], None]) -> None:
        self._marks: dict[str, dict[str, str]] = state.setdefault(self.STATE_KEY, {})
        self._commit = commit

    def get(self, key: str) -> dict[str, str] | None:
        return self._marks.get(key)

    def mark(self, key: str, status: str | None, detail: str = "") -> None:
        if status is None:
            self._marks.pop(key, None)
        else:
            self._marks[key] = {"status": status, "detail": detail}
        self._commit()


def batch_digest(table: str, payloads: list[dict[str, Any]]) -> str:
    """Stable across retries: dlt re-sends a failed sink batch with the same rows in the same order."""
    text = json.dumps([table, payloads], sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


class Sender:
    """Sends the items of one sink batch for one table and records the outcome.

    `gates` gives each request its gate (the run's cancel flags and retry budget, keyed by the request's
    stable id); a request that spent its budget raises BentoAttemptsSpentError, a stopped run
    BentoCancelledError (its rows are then neither sent nor rejected: the package stays pending).
    """

    def __init__(
        self,
        client: BentoClient,
        outcome: BatchOutcome,
        ledger: EmailLedger | None = None,
        gates: Callable[[str], RequestGate] | None = None,
    ) -> None:
        self.client = client
        self.outcome = outcome
        self.ledger = ledger
        self.gates = gates

    def post(self, key: str, path: str, body: Any, **kwargs: Any) -> Any:
        """One request through its gate; a transient failure with no attempt left becomes final."""
        gate = None if self.gates is None else self.gates(key)
        try:
            return self.client.post(path, body, stats=self.outcome.stats, gate=gate, **kwargs)
        except BentoError as error:
            if error.transient and gate is not None and gate.attempts_left() <= 0:
                raise BentoAttemptsSpentError(error.message, status=error.status, path=error.path) from None
            raise

    def send(self, operation: str, items: list[Item], *, batch_id: str, derived: bool = False) -> None:
        """Send in requests of at most the operation's maximum; `derived`: commands made from other rows."""
        maximum = REQUEST_MAXIMA[operation]
        for index, start in enumerate(range(0, len(items), maximum)):
            chunk = items[start : start + maximum]
            if operation == "emails":
                self._send_emails(chunk, f"{batch_id}:{index}")
            else:
                self._send(operation, chunk, f"{batch_id}:{index}", derived)

    # -- idempotent operations ----------------------------------------------------------------

    def _send(self, operation: str, chunk: list[Item], batch: str, derived: bool = False) -> None:
        path, wrapper = ENDPOINTS[operation]
        try:
            body = self.post(batch, path, {wrapper: [i.payload for i in chunk]})
        except BentoInvalidRequestError as error:
            if error.status in (400, 413) and len(chunk) > HALVE_ABOVE:
                middle = len(chunk) // 2
                self._send(operation, chunk[:middle], f"{batch}a", derived)
                self._send(operation, chunk[middle:], f"{batch}b", derived)
                return
            self._refused(chunk, error)
            return
        except BentoError as error:
            if error.transient or error.status in (401, 403, 404, 405) or isinstance(error, STOPPED):
                raise
            self._refused(chunk, error)  # e.g. an error inside a 200: Bento did not take the batch
            return
        self._accepted(operation, chunk, body, batch, derived)

    def _refused(self, chunk: list[Item], error: BentoError) -> None:
        detail = f"Bento refused the request holding this row: {error.message}"
        for item in chunk:
            self.outcome.reject("refused_by_bento", detail, item.row)

    def _accepted(self, operation: str, chunk: list[Item], body: Any, batch: str, derived: bool = False) -> None:
        failed = _failed_count(body, len(chunk))
        if failed and operation in BISECTABLE:
            self.outcome.failed_by_bento += failed
            refused = _Bisection(self, operation, batch).isolate(chunk, failed)
            self.outcome.sent += sum(1 for i in chunk if i.counts_row) - refused
            return
        counting = sum(1 for i in chunk if i.counts_row)
        self.outcome.sent += max(0, counting - failed)
        if derived:
            self.outcome.commands_sent += len(chunk) - failed
        if failed:
            self.outcome.failed_by_bento += failed
            self.outcome.rejected_by_reason["bento_failed"] += failed
            self.outcome.rows_in_partly_failed_batches += len(chunk)
            detail = (
                f"Bento reported failed={failed} for a request of {len(chunk)} {operation} without saying which; "
                "this row was in that request (not re-sent). Check it and send the failed ones again."
            )
            self.outcome.rejects.extend(RejectRecord("bento_failed", detail, i.row, batch) for i in chunk)

    # -- emails: at most once -----------------------------------------------------------------

    def _send_emails(self, chunk: list[Item], key: str) -> None:
        if self.ledger is None:
            raise RuntimeError("emails need an EmailLedger (the load package state)")
        mark = self.ledger.get(key)
        status = mark["status"] if mark else None
        if status == "sent":
            self.outcome.already_sent += len(chunk)
            return
        if status in ("sending", "uncertain"):
            self.ledger.mark(key, "uncertain")
            detail = (
                "an earlier attempt to send this email may have reached Bento (no answer was received); "
                "not sent again so nobody gets it twice. Check in Bento and send it yourself if needed."
            )
            for item in chunk:
                self.outcome.reject("email_send_uncertain", detail, item.row)
            return
        if status == "refused":
            for item in chunk:
                self.outcome.reject("refused_by_bento", mark["detail"] if mark else "", item.row)
            return
        path, wrapper = ENDPOINTS["emails"]
        self.ledger.mark(key, "sending")
        try:
            body = self.post(key, path, {wrapper: [i.payload for i in chunk]}, retry=NEVER_AFTER_SEND)
        except (BentoRateLimitedError, BentoCancelledError):
            # a 429 applied nothing, and a stopped run sends nothing (only a retry of a request that surely
            # did not reach Bento can be stopped): safe to send on the next attempt
            self.ledger.mark(key, None)
            raise
        except BentoError as error:
            if error.transient or isinstance(error, BentoAttemptsSpentError):
                raise  # outcome unknown: the mark stays "sending", so a retry will not send it again
            if error.status in (401, 403, 404, 405):
                self.ledger.mark(key, None)
                raise
            detail = f"Bento refused the request holding this email: {error.message}"
            self.ledger.mark(key, "refused", detail)
            for item in chunk:
                self.outcome.reject("refused_by_bento", detail, item.row)
            return
        self.ledger.mark(key, "sent")
        self._accepted("emails", chunk, body, key)


class _Bisection:
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
                                    {wrapper: [i.payload for i in group]})
        except BentoError as error:
            if error.transient or error.status in (401, 403, 404, 405) or isinstance(error, STOPPED):
                raise  # dlt retries the whole sink batch: re-sending upserts is harmless
            self.sender._refused(group, error)
            return None
        return _failed_count(body, len(group))

    def _reject(self, group: list[Item], label: str) -> None:
        detail = (
            f"Bento refused this row: it counted it as failed (found by sending parts of a request of "
            f"{self.operation} again, which only upserts); fix the row and send it again"
        )
        for item in group:
            self.sender.outcome.rejected_by_reason["refused_by_bento"] += 1
            self.sender.outcome.rejects.append(RejectRecord("refused_by_bento", detail, item.row, self.batch + label))
