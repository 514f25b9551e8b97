"""Send mapped rows to Bento in requests no larger than the operation's maximum, and account for each row.

Rules: requests hold at most the operation's maximum of rows and MAX_REQUEST_BYTES of body
(request_packing.py). A 400 on more than HALVE_ABOVE rows applied nothing, so the request is halved and
sent again; a smaller one refused as invalid is recorded as rejected (never looped on). A 413 (body too
large) is split down to single rows, so only a row Bento refuses on its own is rejected, as
`row_too_large`. Bento's answer counts `failed` rows without saying which: for subscribers (upserts, safe
to send again) halves of the request are sent again until exactly those rows are found (bisection.py,
O(k log n) requests for k bad rows); events and commands are not sent again, the count is recorded with
the request's rows.
Emails are never sent twice: each email's key is claimed in the sync ledger before its request
leaves and its outcome recorded after (email_ledger.py), so a retried batch, a resumed load or a
later run skips emails already sent and never repeats one whose outcome is unknown (those rows are
rejected as `email_send_uncertain` until a person releases them).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bento_api import (
    NEVER_AFTER_SEND,
    BentoAttemptsSpentError,
    BentoCancelledError,
    BentoClient,
    BentoError,
    BentoInvalidRequestError,
    BentoRateLimitedError,
    EncodedBody,
    RequestGate,
)

from .batch_outcome import BatchOutcome as BatchOutcome  # imported from here by callers
from .batch_outcome import RejectRecord
from .bisection import STOPPED as STOPPED
from .bisection import Bisection as _Bisection
from .bisection import failed_count as _failed_count
from .bisection import split as _split
from .bisection import stops_the_load as _stops_the_load
from .email_ledger import (
    ALREADY_SENT,
    CLAIMED,
    REFUSED,
    SEND_UNCERTAIN,
    SENT,
    UNCERTAIN,
    WITHDRAWN,
    EmailRecord,
    EmailStates,
    EmailToSend,
)
from .mapping import MappedRow
from .request_packing import pack as pack
from .request_packing import request_body
from .settings import ENDPOINTS, REQUEST_MAXIMA
from .values import encode_payload

#: operations whose `failed` rows are found exactly by re-sending halves of the request: subscriber
#: imports are upserts by email, so sending a row again changes nothing. Events are not re-sent (each
#: send triggers automations), commands neither (`change_email` fails the second time it is applied).
BISECTABLE: Final = frozenset({"subscribers"})


@dataclass
class Item:
    """One payload to send and the source row it came from (already redacted, for the reject file)."""

    payload: dict[str, Any]
    row: dict[str, Any]
    #: False for a command derived from a row whose own payload is counted already
    counts_row: bool = True
    #: emails: the email's key in the sync ledger (email_identity.py), numbered within the load
    key: str | None = None


def add_mapped(
    outcome: BatchOutcome, row: dict[str, Any], mapped: MappedRow, main: list[Item], derived: list[Item]
) -> bool:
    """One mapped row into the items to send: its payload into `main`, its commands into `derived`, its notes
    (dropped, reserved, ignored columns) into the outcome. True if it has a payload of its own."""
    outcome.dropped |= mapped.dropped
    outcome.reserved |= mapped.reserved
    outcome.ignored |= mapped.ignored
    if mapped.payload is not None:
        main.append(Item(mapped.payload, row))
    if mapped.commands:
        derived.extend(Item(command, row, counts_row=mapped.payload is None) for command in mapped.commands)
    return mapped.payload is not None


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
        emails: EmailStates | None = None,
        gates: Callable[[str], RequestGate] | None = None,
    ) -> None:
        self.client = client
        self.outcome = outcome
        self.emails = emails
        self.gates = gates

    def gate(self, key: str) -> RequestGate | None:
        return None if self.gates is None else self.gates(key)

    def post(self, key: str, path: str, body: Any, **kwargs: Any) -> Any:
        """One request through its gate; a transient failure with no attempt left becomes final."""
        gate = self.gate(key)
        try:
            return self.client.post(path, body, stats=self.outcome.stats, gate=gate, **kwargs)
        except BentoError as error:
            if error.transient and gate is not None and gate.attempts_left() <= 0:
                spent = BentoAttemptsSpentError(error.message, status=error.status, path=error.path)
                spent.may_have_arrived = error.may_have_arrived
                raise spent from None
            raise

    def send(self, operation: str, items: list[Item], *, batch_id: str, derived: bool = False) -> None:
        """Send in requests packed by the operation's maximum and by bytes; `derived`: commands made from rows."""
        wrapper = ENDPOINTS[operation][1]
        for index, (chunk, body) in enumerate(pack(wrapper, items, REQUEST_MAXIMA[operation])):
            if operation == "emails":
                self._send_emails(chunk, f"{batch_id}:{index}", body)
            else:
                self._send(operation, chunk, f"{batch_id}:{index}", derived, body)

    def send_request(
        self, operation: str, chunk: list[Item], batch: str, derived: bool = False, body: EncodedBody | None = None
    ) -> None:
        """Send one request already packed (its rows fixed by the file's plan, file_progress.py)."""
        self._send(operation, chunk, batch, derived, body)

    # -- idempotent operations ----------------------------------------------------------------

    def _send(
        self, operation: str, chunk: list[Item], batch: str, derived: bool = False, body: EncodedBody | None = None
    ) -> None:
        path, wrapper = ENDPOINTS[operation]
        try:
            answer = self.post(batch, path, body or request_body(wrapper, chunk))
        except BentoInvalidRequestError as error:
            if _split(error, chunk):
                middle = len(chunk) // 2
                self._send(operation, chunk[:middle], f"{batch}a", derived)
                self._send(operation, chunk[middle:], f"{batch}b", derived)
                return
            self._refused(chunk, error)
            return
        except BentoError as error:
            if _stops_the_load(error):
                raise
            self._refused(chunk, error)  # e.g. an error inside a 200: Bento did not take the batch
            return
        self._accepted(operation, chunk, answer, batch, derived)

    def _refused(self, chunk: list[Item], error: BentoError) -> None:
        if error.status == 413 and len(chunk) == 1:  # _split stops at one row
            reason, detail = "row_too_large", (
                f"Bento refused a request holding only this row as too large (413); the row takes "
                f"{len(encode_payload(chunk[0].payload)):,} bytes as JSON. Send smaller fields or details"
            )
        else:
            reason, detail = "refused_by_bento", f"Bento refused the request holding this row: {error.message}"
        for item in chunk:
            self.outcome.reject(reason, detail, item.row)

    def _accepted(self, operation: str, chunk: list[Item], body: Any, batch: str, derived: bool = False) -> None:
        failed = _failed_count(body, len(chunk))
        if failed and operation in BISECTABLE:
            self.outcome.failed_by_bento += failed
            refused = _Bisection(self, operation, batch).isolate(chunk, failed)
            self.outcome.sent += sum(1 for i in chunk if i.counts_row) - refused
            if self.outcome.sent_rows is not None:
                self.outcome.record_sent(operation, chunk, {id(r.row) for r in self.outcome.rejects})
            return
        counting = sum(1 for i in chunk if i.counts_row)
        self.outcome.sent += max(0, counting - failed)
        if not failed:  # with `failed` rows Bento does not say which: all of them are in the rejects file
            self.outcome.record_sent(operation, chunk)
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

    def _send_emails(self, chunk: list[Item], batch: str, body: EncodedBody | None = None) -> None:
        """Claim the chunk's email keys in the ledger, send only the claimed ones, then record the outcome."""
        if self.emails is None:
            raise RuntimeError("emails need the sync ledger's email states (EmailStates)")
        self.client.wait_for_emails(len(chunk), self.outcome.stats, self.gate(batch))  # before the claim: holds no key
        verdicts = self.emails.claim(
            [EmailToSend(str(i.key), str(i.payload.get("to", "")), str(i.payload.get("subject", ""))) for i in chunk]
        )
        going: list[Item] = []
        claimed: set[str] = set()
        for item in chunk:
            key = str(item.key)
            verdict, record = verdicts[key]
            if verdict == CLAIMED and key not in claimed:
                claimed.add(key)
                going.append(item)
            elif verdict in (CLAIMED, ALREADY_SENT):  # CLAIMED twice: one explicit key on two rows, one email
                self.outcome.already_sent += 1
            elif verdict == SEND_UNCERTAIN:
                self.outcome.reject("email_send_uncertain", uncertain_detail(record), item.row)
            else:
                detail = record.detail if record is not None else ""
                self.outcome.reject(
                    "refused_by_bento",
                    f"{detail} (refused in run {record.run if record else '?'}; a changed row, or a new "
                    "unique_key, is a new email and will be sent)",
                    item.row,
                )
        if not going:
            return
        keys = [str(i.key) for i in going]
        path, wrapper = ENDPOINTS["emails"]
        try:
            answer = self.post(
                batch, path, body if body is not None and len(going) == len(chunk) else request_body(wrapper, going),
                retry=NEVER_AFTER_SEND, pace_emails=False,
            )
        except (BentoRateLimitedError, BentoCancelledError):
            # a 429 applied nothing, and a stopped run sends nothing (only a retry of a request that surely
            # did not reach Bento can be stopped): a later attempt may send them
            self.emails.settle(keys, WITHDRAWN, "not taken by Bento (429, or the run was stopped)")
            raise
        except BentoError as error:
            if (error.transient or isinstance(error, BentoAttemptsSpentError)) and error.may_have_arrived:
                # outcome unknown: never sent again until a person releases them (the retry rejects them)
                self.emails.settle(keys, UNCERTAIN, error.message)
                raise
            if _stops_the_load(error):
                self.emails.settle(keys, WITHDRAWN, error.message)
                raise
            if error.status == 413 and len(going) > 1:  # too large a body applied nothing: send the halves
                self.emails.settle(keys, WITHDRAWN, "413: Bento took nothing; sent again in halves")
                middle = len(going) // 2
                self._send_emails(going[:middle], f"{batch}a")
                self._send_emails(going[middle:], f"{batch}b")
                return
            if error.status == 413:
                reason = "row_too_large"
                detail = f"Bento refused a request holding only this email as too large (413): {error.message}"
            else:
                reason = "refused_by_bento"
                detail = f"Bento refused the request holding this email: {error.message}"
            self.emails.settle(keys, REFUSED, detail)
            for item in going:
                self.outcome.reject(reason, detail, item.row)
            return
        self.emails.settle(keys, SENT)
        self._accepted("emails", going, answer, batch)


def uncertain_detail(record: EmailRecord | None) -> str:
    """Why an email is not sent: an earlier attempt may have reached Bento, and how a person releases it."""
    run = record.run if record is not None and record.run else "?"
    when = f" at {record.at}" if record is not None and record.at else ""
    return (
        f"an earlier attempt to send this email (run {run}{when}) may have reached Bento: no answer was received, "
        "so it is not sent again and nobody gets it twice. Check Bento's logs; if it was not delivered, release it "
        f"(bento-dlt emails release --run {run} --yes) and run again."
    )
