"""The sync ledgers a run holds: opened once per load and shared, closed when the run ends (no process registry).

Real DuckDB ledger files in a temporary folder; a closed handle is seen by using it (LedgerError).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bento_destination.changes import close_ledgers, forget_unsubscribes
from bento_destination.ledger import LedgerError, SyncLedger
from bento_destination.run_ledgers import RunLedgers
from bento_destination.runcontext import bento_run, current_run, end_plain_runs

SITE = "site-0001"

pytestmark = pytest.mark.usefixtures("destination_env")


def test_one_handle_per_load_and_a_new_load_reopens_it_closing_the_old(tmp_path: Path) -> None:
    location = str(tmp_path / "ledger.duckdb")
    ledgers = RunLedgers()
    try:
        first = ledgers.ledger(location, SITE, "load-1")
        assert ledgers.ledger(location, SITE, "load-1") is first
        first.mark_unsubscribed(["gone@example.com"])
        second = ledgers.ledger(location, SITE, "load-2")
        assert second is not first and len(ledgers) == 1
        with pytest.raises(LedgerError):
            first.unsubscribed(["gone@example.com"])
        assert second.unsubscribed(["gone@example.com"]) == {"gone@example.com"}  # committed before the reopen
        other_site = ledgers.ledger(location, "site-0002", "load-2")
        assert other_site is not second and len(ledgers) == 2
    finally:
        ledgers.close()
    assert len(ledgers) == 0
    with pytest.raises(LedgerError):
        second.unsubscribed(["gone@example.com"])


def test_a_bento_run_closes_its_ledgers_when_it_ends(tmp_path: Path) -> None:
    location = str(tmp_path / "ledger.duckdb")
    with bento_run(tmp_path / "pipeline") as run:
        ledger = run.ledgers.ledger(location, SITE, "load-1")
        ledger.mark_unsubscribed(["gone@example.com"])
        assert current_run(tmp_path / "pipeline") is run  # what the sink finds
    with pytest.raises(LedgerError):
        ledger.unsubscribed(["gone@example.com"])
    with SyncLedger.open(location, site=SITE) as again:  # the file is free again, and holds what the run wrote
        assert again.unsubscribed(["gone@example.com"]) == {"gone@example.com"}


def test_forgetting_an_unsubscribe_closes_a_plain_runs_handle_and_the_next_load_sees_it(tmp_path: Path) -> None:
    location = str(tmp_path / "ledger.duckdb")
    run = current_run(tmp_path / "pipeline")  # a plain pipeline.run's context: it lives on after its load
    try:
        held = run.ledgers.ledger(location, SITE, "load-1")
        held.mark_unsubscribed(["back@example.com", "gone@example.com"])
        forget_unsubscribes(["back@example.com"], SITE, ledger_url=location)
        with pytest.raises(LedgerError):
            held.unsubscribed(["back@example.com"])
        fresh = run.ledgers.ledger(location, SITE, "load-1")
        assert fresh.unsubscribed(["back@example.com", "gone@example.com"]) == {"gone@example.com"}
    finally:
        end_plain_runs()
    with pytest.raises(LedgerError):
        fresh.unsubscribed(["gone@example.com"])


def test_close_ledgers_closes_every_runs_handles_and_keeps_the_runs(tmp_path: Path) -> None:
    plain = current_run(tmp_path / "a")
    try:
        with bento_run(tmp_path / "b") as explicit:
            one = plain.ledgers.ledger(str(tmp_path / "a.duckdb"), SITE, "load-1")
            two = explicit.ledgers.ledger(str(tmp_path / "b.duckdb"), SITE, "load-1")
            close_ledgers()
            for ledger in (one, two):
                with pytest.raises(LedgerError):
                    ledger.known_audience()
            assert len(plain.ledgers) == len(explicit.ledgers) == 0
            assert current_run(tmp_path / "a") is plain and current_run(tmp_path / "b") is explicit
    finally:
        end_plain_runs()
