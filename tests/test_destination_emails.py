"""Issue 17: each email row is sent at most once, across lost answers, reruns and overlapping claims.

Real HTTP against the emulator on 127.0.0.1; assertions are on the emulator's store of sent emails
(`emu.store.emails_sent`) and its request log. Budgets are raised for the emulator (requests and emails
per minute), so nothing waits on Bento's real pace.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import dlt
import pytest

from bento_api.emulator import BentoEmulator, Fault
from bento_destination import BentoRejectsExceeded, bento, last_report, list_rejects
from bento_destination.changes import reset_ledger
from bento_destination.email_identity import DERIVED_PREFIX, base_key, derive_email_key
from bento_destination.email_ledger import (
    ALREADY_SENT,
    CLAIMED,
    SEND_UNCERTAIN,
    SENT,
    EmailStates,
    EmailToSend,
    list_uncertain,
    release_uncertain,
)
from bento_destination.keys import number_identical
from bento_destination.ledger import SyncLedger
from bento_destination.report import LoadReport, TableReport
from bento_destination.sync import sync

from .destination_support import FAST

pytestmark = pytest.mark.usefixtures("destination_env")

AUTHOR = "author@example.com"


def emails(n: int, subject: str = "Your receipt", **extra: Any) -> list[dict[str, Any]]:
    return [{"to": f"r{i}@example.com", "from": AUTHOR, "subject": subject, "html_body": f"<p>order {i}</p>",
             **extra} for i in range(n)]


def run(emu: BentoEmulator, tmp: Path, rows: Any, name: str = "mail", **kw: Any) -> TableReport:
    """One sync of `rows` as the table `emails`; its table report (rejects past the threshold are fine here)."""
    reports: list[LoadReport] = []
    kw = {"allow_email_sends": True, **kw}
    try:
        reports = sync(rows, pipeline_name=name, pipelines_dir=tmp, table_name="emails", out=lambda _: None,
                       **emu.credentials, requests_per_minute=FAST, emails_per_minute=FAST, **kw)
    except BentoRejectsExceeded as error:
        reports = error.reports
    return reports[-1].tables["emails"]


def stored(emu: BentoEmulator) -> Counter[tuple[str, str, str]]:
    """Emails Bento received, counted per (to, subject, body)."""
    return Counter((e.to, e.subject, e.html_body) for e in emu.store.emails_sent)


def email_requests(emu: BentoEmulator) -> int:
    return len(emu.requests(path="/batch/emails"))


# --------------------------------------------------------------------------- identity


def test_keys_numbered_derived_versioned_and_explicit() -> None:
    assert number_identical(["a", "b", "a", "a"]) == ["a", "b", "a#2", "a#3"]
    payload = {"to": "a@x.io", "from": AUTHOR, "subject": "Hi", "html_body": "<p>x</p>"}
    key = derive_email_key(payload)
    assert key.startswith(DERIVED_PREFIX) and key == derive_email_key({**payload, "transactional": False})
    assert key == derive_email_key({**payload, "to": " A@X.io "})
    assert key != derive_email_key({**payload, "personalizations": {"n": 1}})
    assert key != derive_email_key({**payload, "transactional": True})
    assert base_key({"Unique Key": "order-7"}, payload) == ("key:order-7", False)
    assert base_key({"idempotency_key": " "}, payload) == (key, True)


# --------------------------------------------------------------------------- the acceptance


def test_lost_answer_then_two_reruns_store_each_email_once(emu: BentoEmulator, tmp_path: Path) -> None:
    emu.add_fault(Fault(kind="drop_after_apply", count=1, path_prefix="/batch/emails"))
    first = run(emu, tmp_path, emails(10))
    assert first.rejected_by_reason == {"email_send_uncertain": 10} and first.sent == 0
    for _ in range(2):
        again = run(emu, tmp_path, emails(10))
        assert again.rejected_by_reason == {"email_send_uncertain": 10} and again.sent == 0
    assert email_requests(emu) == 1
    assert len(emu.store.emails_sent) == 10 and set(stored(emu).values()) == {1}
    detail = list_rejects(tmp_path / "mail")[0]["detail"]
    assert "bento-dlt emails release --run" in detail


def test_unchanged_rerun_sends_nothing_and_one_changed_row_sends_one(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = emails(200)
    first = run(emu, tmp_path, rows)
    assert first.sent == 200 and email_requests(emu) == 4
    emu.reset_log()
    again = run(emu, tmp_path, rows)
    assert email_requests(emu) == 0 and (again.sent, again.already_sent, again.rejected) == (0, 200, 0)
    rows[17] = {**rows[17], "html_body": "<p>order 17, corrected</p>"}
    changed = run(emu, tmp_path, rows)
    assert (changed.sent, changed.already_sent) == (1, 199)
    assert [r.rows for r in emu.requests(path="/batch/emails")] == [1]
    assert len(emu.store.emails_sent) == 201
    assert emu.store.emails_sent[-1].html_body == "<p>order 17, corrected</p>"


def test_a_plain_pipeline_run_keeps_the_same_promise(emu: BentoEmulator, tmp_path: Path) -> None:
    """Without sync(): dlt's own pipeline.run, twice, then with one more row."""
    pipeline = dlt.pipeline("plain_mail", pipelines_dir=str(tmp_path), destination=bento(
        allow_email_sends=True, requests_per_minute=FAST, emails_per_minute=FAST, **emu.credentials))
    pipeline.run(emails(70), table_name="emails")
    pipeline.run(emails(70), table_name="emails")
    pipeline.run(emails(71), table_name="emails")
    assert [r.rows for r in emu.requests(path="/batch/emails")] == [60, 10, 1]
    assert len(emu.store.emails_sent) == 71 and set(stored(emu).values()) == {1}
    report = last_report(pipeline)
    assert report is not None and (report.tables["emails"].sent, report.tables["emails"].already_sent) == (1, 70)


def test_identical_rows_are_two_emails_and_a_rerun_sends_neither(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = emails(3) + emails(1) + emails(1)  # r0's email three times
    first = run(emu, tmp_path, rows)
    assert first.sent == 5 and stored(emu)[("r0@example.com", "Your receipt", "<p>order 0</p>")] == 3
    again = run(emu, tmp_path, rows + emails(1))  # a fourth copy is a new email, the first three are not
    assert (again.sent, again.already_sent) == (1, 5)
    assert stored(emu)[("r0@example.com", "Your receipt", "<p>order 0</p>")] == 4


def test_identical_rows_in_different_sink_batches_keep_their_numbers(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = emails(1) * 1500  # two sink batches (1000 rows each) of the same email
    assert run(emu, tmp_path, rows).sent == 1500
    again = run(emu, tmp_path, rows)
    assert (again.sent, again.already_sent) == (0, 1500) and len(emu.store.emails_sent) == 1500


def test_an_explicit_key_names_the_email(emu: BentoEmulator, tmp_path: Path) -> None:
    rows = [{**row, "idempotency_key": f"order-{i}"} for i, row in enumerate(emails(5))]
    assert run(emu, tmp_path, rows).sent == 5
    assert emu.requests(path="/batch/emails")[0].body["emails"][0].keys() == {"to", "from", "subject", "html_body"}
    reworded = [{**row, "subject": "Your receipt (v2)"} for row in rows]  # same keys: the same emails
    again = run(emu, tmp_path, reworded)
    assert (again.sent, again.already_sent) == (0, 5) and len(emu.store.emails_sent) == 5
    report = run(emu, tmp_path, [*rows, {**rows[0]}])  # one key on two rows is one email
    assert (report.sent, report.already_sent) == (0, 6) and not report.ignored_columns


def test_a_refused_email_is_sent_again_only_once_the_row_changes(emu: BentoEmulator, tmp_path: Path) -> None:
    stranger = [{**row, "from": "stranger@example.com"} for row in emails(3)]  # Bento refuses the sender
    first = run(emu, tmp_path, stranger)
    assert first.sent == 0 and email_requests(emu) == 1 and emu.store.emails_sent == []
    again = run(emu, tmp_path, stranger)
    assert email_requests(emu) == 1 and again.rejected_by_reason == {"refused_by_bento": 3}
    fixed = run(emu, tmp_path, emails(3))  # the author fixed: new rows, new keys
    assert fixed.sent == 3 and len(emu.store.emails_sent) == 3


def test_without_the_ledger_emails_are_refused(emu: BentoEmulator, tmp_path: Path) -> None:
    report = run(emu, tmp_path, emails(4), sync_ledger=False)
    assert report.rejected_by_reason == {"email_needs_ledger": 4} and email_requests(emu) == 0
    with pytest.raises(BentoRejectsExceeded, match="sync ledger off"):
        sync(emails(4), pipeline_name="off", pipelines_dir=tmp_path, table_name="emails", out=lambda _: None,
             **emu.credentials, requests_per_minute=FAST, allow_email_sends=True, sync_ledger=False)


def test_full_resync_and_ledger_reset_never_resend_emails(emu: BentoEmulator, tmp_path: Path) -> None:
    run(emu, tmp_path, emails(6))
    assert run(emu, tmp_path, emails(6), full_resync=True).already_sent == 6
    reset_ledger(emu.credentials["site_uuid"], working_dir=tmp_path / "mail")
    assert run(emu, tmp_path, emails(6)).already_sent == 6
    assert len(emu.store.emails_sent) == 6


@pytest.mark.parametrize("folder", [False, True], ids=["duckdb", "folder"])
def test_release_then_rerun_sends_exactly_the_released(emu: BentoEmulator, tmp_path: Path, folder: bool) -> None:
    ledger_url = str(tmp_path / "ledger") if folder else None
    site = emu.credentials["site_uuid"]
    where: dict[str, Any] = {"ledger_url": ledger_url, "working_dir": tmp_path / "mail"}
    emu.add_fault(Fault(kind="server_error", status=502, count=1, path_prefix="/batch/emails"))  # nothing applied
    first = run(emu, tmp_path, emails(90), ledger_url=ledger_url)  # 60 uncertain (the 502), 30 sent
    assert (first.sent, first.rejected_by_reason) == (30, {"email_send_uncertain": 60})
    assert len(emu.store.emails_sent) == 30
    uncertain = list_uncertain(site, **where)
    assert len(uncertain) == 60 and {r.run for r in uncertain} == {uncertain[0].run}
    assert {r.to for r in uncertain} == {f"r{i}@example.com" for i in range(60)}
    with pytest.raises(ValueError, match="run id or keys"):
        release_uncertain(site, **where)
    assert run(emu, tmp_path, emails(90), ledger_url=ledger_url).sent == 0  # nothing releases them on its own
    released = release_uncertain(site, run=uncertain[0].run, **where)
    assert len(released) == 60 and list_uncertain(site, **where) == []
    emu.reset_log()
    after = run(emu, tmp_path, emails(90), ledger_url=ledger_url)
    assert (after.sent, after.already_sent) == (60, 30) and sum(r.rows for r in emu.requests()) == 60
    assert len(emu.store.emails_sent) == 90 and set(stored(emu).values()) == {1}


# --------------------------------------------------------------------------- claims


def _to_send(n: int) -> list[EmailToSend]:
    return [EmailToSend(f"k{i}", f"r{i}@example.com", "Hi") for i in range(n)]


def test_a_folder_ledger_lets_only_one_of_two_overlapping_claims_send(tmp_path: Path) -> None:
    """Two processes = two ledgers opened on one folder (each its own cache); their claims overlap."""
    url = str(tmp_path / "ledger")
    with SyncLedger.open(url, site="site-1") as one, SyncLedger.open(url, site="site-1") as two:
        first = EmailStates(one, "load-1").claim(_to_send(5))  # before `two` claims: `two` sees it
        second = EmailStates(two, "load-2").claim(_to_send(8))
        assert {v for v, _ in first.values()} == {CLAIMED}
        assert [second[f"k{i}"][0] for i in range(8)] == [SEND_UNCERTAIN] * 5 + [CLAIMED] * 3

    # both publish their intent before either checks (each saw a stale folder): the first to check sees the
    # other's claim and steps back; the second then sees a withdrawn claim and sends. Never both.
    with SyncLedger.open(url, site="site-2") as one, SyncLedger.open(url, site="site-2") as two:
        a, b = EmailStates(one, "load-a"), EmailStates(two, "load-b")
        intent_a, intent_b = a.intend(_to_send(4)), b.intend(_to_send(4))
        assert {v for v, _ in intent_a.values()} == {v for v, _ in intent_b.values()} == {CLAIMED}
        final_a, final_b = a.confirm(intent_a), b.confirm(intent_b)
        assert [final_a[f"k{i}"][0] for i in range(4)] == [SEND_UNCERTAIN] * 4
        assert [final_b[f"k{i}"][0] for i in range(4)] == [CLAIMED] * 4


def test_a_settled_claim_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    with SyncLedger.open(path, site="s") as ledger:
        states = EmailStates(ledger, "load-1")
        states.claim(_to_send(3))
        states.settle(["k0"], SENT)  # k1, k2 stay "sending": as after a SIGKILL
    with SyncLedger.open(path, site="s") as ledger:
        verdicts = EmailStates(ledger, "load-2").claim(_to_send(4))
    assert [verdicts[f"k{i}"][0] for i in range(4)] == [ALREADY_SENT, SEND_UNCERTAIN, SEND_UNCERTAIN, CLAIMED]


def test_a_busy_duckdb_ledger_stops_another_process_before_it_sends(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    code = (
        "import sys\n"
        "from bento_destination.ledger import LedgerBusyError, SyncLedger\n"
        "try:\n"
        f"    SyncLedger.open({str(path)!r}, site='s').close()\n"
        "except LedgerBusyError as error:\n"
        "    print(error); sys.exit(75)\n"
    )
    with SyncLedger.open(path, site="s"):
        held = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert held.returncode == 75 and "in use by another run" in held.stdout, held.stderr
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert free.returncode == 0, free.stderr
