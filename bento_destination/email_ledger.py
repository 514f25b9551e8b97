"""Each email row sent at most once, across lost answers, reruns and overlapping runs (GitHub issue 17).

Bento sends every email it receives, so a request repeated after a lost answer, or a rerun of the same
table, reaches people twice. The sync ledger keeps, per email key (email_identity.py), what became of
it, in the reserved namespace ``_emails`` (a reset of the ledger never forgets it):

- **intent before send**: the key is *claimed* (state ``sending``) in a durable ledger commit before the
  request leaves; a key someone already holds is not claimed;
- **outcome after**: ``sent`` (Bento answered 200), ``refused`` (Bento answered that it will not send it),
  or ``uncertain`` (no answer, a deadline, a 5xx after the body may have arrived). A 429 or a failure
  to connect applied nothing, so the claim is withdrawn and a later attempt may send it;
- a key ``sent`` is never sent again (``already_sent``); a key ``sending`` or ``uncertain`` is never sent
  again either (``email_send_uncertain``: a crash between the two commits leaves ``sending``) until a
  person *releases* it after checking Bento's logs (:func:`release_uncertain`, ``bento-dlt emails
  release``); a key ``refused`` stays refused: change the row (a new key) to send it again.

Overlapping runs: a DuckDB ledger file is held by one process at a time, so the second run cannot open
it and sends nothing. A folder or object-store ledger is shared, so a claim is checked after it is
published: a key another run claimed meanwhile is withdrawn (not sent) by one of the two, or by both,
never sent by both; a key both withdrew is sent by the next run.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from .config import LedgerOptions
from .keys import number_identical
from .ledger import SyncLedger
from .ledger_admin import location_or_fail
from .runcontext import close_ledger_location

#: the ledger namespace of email states (reserved: a leading underscore)
EMAILS_NS: Final = "_emails"

SENDING, SENT, UNCERTAIN, REFUSED = "sending", "sent", "uncertain", "refused"
RELEASED, WITHDRAWN = "released", "withdrawn"
#: states a person may release (the request may or may not have reached Bento)
RELEASABLE: Final = frozenset({SENDING, UNCERTAIN})

#: what a claim decided for one key
CLAIMED, ALREADY_SENT, SEND_UNCERTAIN, ALREADY_REFUSED = "claimed", "already_sent", "send_uncertain", "refused"
#: subject text kept in the ledger for the listing of uncertain emails
SUBJECT_KEPT: Final = 120


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class EmailRecord:
    """One run's record of one email key: its state and enough to recognise the email in Bento's logs."""

    key: str
    sub: str
    state: str
    run: str = ""
    pipeline: str = ""
    at: str = ""
    to: str = ""
    subject: str = ""
    detail: str = ""
    seq: int = 0

    @classmethod
    def parse(cls, key: str, sub: str, value: str | None, seq: int) -> EmailRecord:
        try:
            data = json.loads(value or "{}")
        except json.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        known = {name: str(data[name]) for name in ("run", "pipeline", "at", "to", "subject", "detail") if name in data}
        return cls(key=key, sub=sub, state=str(data.get("state", UNCERTAIN)), seq=seq, **known)

    def value(self) -> str:
        return json.dumps(
            {"state": self.state, "run": self.run, "pipeline": self.pipeline, "at": self.at, "to": self.to,
             "subject": self.subject, "detail": self.detail},
            sort_keys=True, ensure_ascii=False,
        )

    def moved_to(self, state: str, detail: str = "") -> EmailRecord:
        return EmailRecord(self.key, self.sub, state, self.run, self.pipeline, _now(), self.to, self.subject,
                           detail or self.detail)

    @property
    def uncertain(self) -> bool:
        return self.state in RELEASABLE

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "state": UNCERTAIN if self.uncertain else self.state, "run": self.run,
                "pipeline": self.pipeline, "at": self.at, "to": self.to, "subject": self.subject,
                "detail": self.detail}


def key_verdict(records: Sequence[EmailRecord]) -> tuple[str, EmailRecord | None]:
    """What the records of one key (from any runs) allow: claim it, or why not (and the deciding record)."""
    for wanted, verdict in ((SENT, ALREADY_SENT), (UNCERTAIN, SEND_UNCERTAIN), (SENDING, SEND_UNCERTAIN),
                            (REFUSED, ALREADY_REFUSED)):
        found = [r for r in records if r.state == wanted]
        if found:
            return verdict, found[-1]
    return CLAIMED, None


def _by_key(rows: Iterable[tuple[str, str, str | None, int]]) -> dict[str, list[EmailRecord]]:
    out: dict[str, list[EmailRecord]] = {}
    for key, sub, value, seq in rows:
        out.setdefault(key, []).append(EmailRecord.parse(key, sub, value, seq))
    return out


@dataclass
class EmailToSend:
    """What the ledger needs of one email: its key and how a person recognises it."""

    key: str
    to: str
    subject: str


class EmailStates:
    """The email states of one run (a load) in the sync ledger: claim before sending, settle after."""

    def __init__(self, ledger: SyncLedger, run: str, pipeline: str = "") -> None:
        self.ledger = ledger
        self.run = run
        self.pipeline = pipeline
        #: the records of this object share one `sub` (run + random): its outcome overrules its own intent,
        #: never another run's (or another batch's) record of the same key
        self.sub = f"{run}:{uuid.uuid4().hex[:12]}"
        self._records: dict[str, EmailRecord] = {}
        self._lock = threading.Lock()

    def claim(self, emails: Sequence[EmailToSend]) -> dict[str, tuple[str, EmailRecord | None]]:
        """Claim the keys nobody holds, durably, before anything is sent; the verdict of every key.

        The claimed keys are the only ones the caller may send: :meth:`intend`, then :meth:`confirm`.
        """
        if self.ledger.shared:
            self.ledger.refresh(EMAILS_NS)  # spares claims of keys other runs hold already
        return self.confirm(self.intend(emails))

    def intend(self, emails: Sequence[EmailToSend]) -> dict[str, tuple[str, EmailRecord | None]]:
        """Write `sending` for every key no record holds (as this ledger sees it), in one durable commit."""

        def claim_free(held: SyncLedger) -> dict[str, tuple[str, EmailRecord | None]]:
            existing = _by_key(held.entries(EMAILS_NS, [e.key for e in emails]))
            verdicts: dict[str, tuple[str, EmailRecord | None]] = {}
            mine: list[EmailRecord] = []
            for email in emails:
                if email.key in verdicts:
                    continue
                verdicts[email.key] = key_verdict(existing.get(email.key, []))
                if verdicts[email.key][0] == CLAIMED:
                    mine.append(EmailRecord(email.key, self.sub, SENDING, self.run, self.pipeline, _now(),
                                            email.to, email.subject[:SUBJECT_KEPT]))
            if mine:
                held.record(lambda tx: tx.put_entries(EMAILS_NS, [(r.key, r.sub, r.value()) for r in mine]))
            with self._lock:
                self._records.update((r.key, r) for r in mine)
            return verdicts

        return self.ledger.exclusive(claim_free)

    def confirm(
        self, verdicts: dict[str, tuple[str, EmailRecord | None]]
    ) -> dict[str, tuple[str, EmailRecord | None]]:
        """On a shared (folder) ledger: re-read it after our claims were published; keys another run
        claimed too are withdrawn, not sent (both runs may step back: at most once, never twice).

        A DuckDB ledger file is one process's at a time, so there is nothing to check.
        """
        claimed = [key for key, (verdict, _) in verdicts.items() if verdict == CLAIMED]
        if not self.ledger.shared or not claimed:
            return verdicts
        self.ledger.refresh(EMAILS_NS)
        existing = _by_key(self.ledger.entries(EMAILS_NS, claimed))
        lost: dict[str, tuple[str, EmailRecord | None]] = {}
        for key in claimed:
            verdict, record = key_verdict([r for r in existing.get(key, []) if r.sub != self.sub])
            if verdict != CLAIMED:
                lost[key] = (verdict, record)
        if lost:
            self.settle(list(lost), WITHDRAWN, "another run claimed this email at the same time; not sent by this run")
        return {**verdicts, **lost}

    def settle(self, keys: Sequence[str], state: str, detail: str = "") -> None:
        """Record the outcome of claimed keys (sent, refused, uncertain, or withdrawn: not sent), durably."""
        with self._lock:
            records = [self._records[key].moved_to(state, detail) for key in keys if key in self._records]
            self._records.update((r.key, r) for r in records)
        if records:
            self.ledger.record(lambda tx: tx.put_entries(EMAILS_NS, [(r.key, r.sub, r.value()) for r in records]))


def number_email_keys(keys: Sequence[tuple[str, bool]]) -> list[str]:
    """Number the derived keys of one input (identical rows are `key#2`, ...); explicit keys stay as given."""
    numbered = iter(number_identical(key for key, is_derived in keys if is_derived))
    return [next(numbered) if is_derived else key for key, is_derived in keys]


#: one lock for the package-state numbering of every load in the process (dlt's load jobs are threads)
NUMBERING_LOCK = threading.Lock()


class KeyNumbering:
    """Numbers identical derived keys across the sink batches of one load, stable when dlt retries a batch.

    Numbers are handed out in the order batches arrive; which of two identical rows gets `#2` does not
    matter (they are the same email), only that a load of N identical rows uses `key` .. `key#N`, as a
    rerun of the same input does. A batch keeps its keys until it has finished, so dlt's retry of a
    failed batch (or the resume of a pending package by another process: the numbering lives in dlt's
    load package state) gets the keys it had, and a later batch of the same content gets new numbers.
    """

    STATE_KEY = "bento_email_keys"

    def __init__(self, state: dict[str, Any], commit: Callable[[], None]) -> None:
        self._state: dict[str, Any] = state.setdefault(self.STATE_KEY, {"counts": {}, "open": {}})
        self._commit = commit

    def assign(self, table: str, batch: str, keys: Sequence[tuple[str, bool]]) -> list[str]:
        """The numbered keys of one sink batch: those it had if it is being retried, else new ones."""
        with NUMBERING_LOCK:
            unfinished: dict[str, list[str]] = self._state["open"]
            again = unfinished.get(f"{table}:{batch}")
            if again is not None and len(again) == len(keys):
                return list(again)
            counts: dict[str, int] = self._state["counts"].setdefault(table, {})
            out: list[str] = []
            for key, is_derived in keys:
                if not is_derived:
                    out.append(key)
                    continue
                counts[key] = counts.get(key, 0) + 1
                out.append(key if counts[key] == 1 else f"{key}#{counts[key]}")
            unfinished[f"{table}:{batch}"] = out
            self._commit()
            return out

    def finished(self, table: str, batch: str) -> None:
        """The batch completed: a later batch with the same content is another batch, numbered anew."""
        with NUMBERING_LOCK:
            if self._state["open"].pop(f"{table}:{batch}", None) is not None:
                self._commit()


# --------------------------------------------------------------------------- for people: list and release


def uncertain_emails(ledger: SyncLedger, run: str | None = None) -> list[EmailRecord]:
    """Emails whose send may or may not have reached Bento (state sending or uncertain), oldest first."""
    if ledger.shared:
        ledger.refresh(EMAILS_NS)
    held = _by_key(ledger.entries(EMAILS_NS))
    out = []
    for records in held.values():
        verdict, record = key_verdict(records)
        if verdict == SEND_UNCERTAIN and record is not None and (run is None or record.run == run):
            out.append(record)
    return sorted(out, key=lambda r: r.seq)


def email_verdicts(ledger: SyncLedger, keys: Sequence[str]) -> dict[str, str]:
    """What a run would do with each of `keys` (claim and send, or already_sent, send_uncertain, refused)."""
    if ledger.shared:
        ledger.refresh(EMAILS_NS)
    held = _by_key(ledger.entries(EMAILS_NS, list(keys))) if keys else {}
    return {key: key_verdict(held.get(key, []))[0] for key in keys}


def release(ledger: SyncLedger, *, run: str | None = None, keys: Iterable[str] | None = None) -> list[EmailRecord]:
    """Mark uncertain emails (of one run, or these keys) as not sent, so the next run may send them.

    Only for a person who checked Bento's logs and found the email was not delivered; nothing calls it
    on its own. Returns the released records.
    """
    wanted = set(keys) if keys is not None else None
    if run is None and wanted is None:
        raise ValueError("release needs a run id or keys: releasing every uncertain email at once is refused")

    def work(held: SyncLedger) -> list[EmailRecord]:
        chosen = [r for r in uncertain_emails(held, run)
                  if wanted is None or r.key in wanted]
        every = _by_key(held.entries(EMAILS_NS, [r.key for r in chosen])) if chosen else {}
        # every uncertain record of the key is released (two runs may have left one each)
        released = [r.moved_to(RELEASED, f"released by a person at {_now()}")
                    for key in {c.key for c in chosen} for r in every.get(key, []) if r.state in RELEASABLE]
        if released:
            held.record(lambda tx: tx.put_entries(EMAILS_NS, [(r.key, r.sub, r.value()) for r in released]))
        return chosen

    return ledger.exclusive(work)


def open_email_ledger(
    site_uuid: str, *, ledger_url: str | None = None, working_dir: str | Path | None = None
) -> SyncLedger:
    """The sync ledger of a pipeline (its DuckDB file in `working_dir`, or `ledger_url`), for listing and release."""
    location = location_or_fail(LedgerOptions(ledger_url=ledger_url), working_dir)
    close_ledger_location(location, site_uuid)
    return SyncLedger.open(location, site=site_uuid)


def list_uncertain(
    site_uuid: str, *, ledger_url: str | None = None, working_dir: str | Path | None = None, run: str | None = None
) -> list[EmailRecord]:
    """The uncertain emails of a pipeline's ledger (Python's `bento-dlt emails uncertain`)."""
    with open_email_ledger(site_uuid, ledger_url=ledger_url, working_dir=working_dir) as ledger:
        return uncertain_emails(ledger, run)


def release_uncertain(
    site_uuid: str, *, run: str | None = None, keys: Iterable[str] | None = None, ledger_url: str | None = None,
    working_dir: str | Path | None = None,
) -> list[EmailRecord]:
    """Release uncertain emails of one run (or these keys) so the next run sends them (`bento-dlt emails release`).

    Check in Bento's logs first that they were not delivered: a released email that did arrive is sent twice.
    """
    with open_email_ledger(site_uuid, ledger_url=ledger_url, working_dir=working_dir) as ledger:
        return release(ledger, run=run, keys=keys)
