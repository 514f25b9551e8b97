"""Issue 17 through the command line, in real processes: `sync --as emails`, its dry run, a SIGKILL between the
request and its answer, `emails uncertain | release`, and two overlapping runs.

The emulator runs in this process (its store of sent emails is what the tests assert on); `bento-dlt` runs in
subprocesses with the emulator's credentials and raised budgets (BENTO_REQUESTS_PER_MINUTE,
BENTO_EMAILS_PER_MINUTE), so nothing waits on Bento's real pace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bento_api.emulator import BentoEmulator, Fault

from .test_cli import as_json, base_env, cli

AUTHOR = "author@example.com"


def write_emails(path: Path, n: int, *, changed: int | None = None, emoji: bool = False) -> Path:
    """An `emails_to_send` table of n receipts; `changed`: that row's body differs."""
    with duckdb.connect(str(path)) as con:
        con.execute("DROP TABLE IF EXISTS emails_to_send")
        con.execute(
            """
            CREATE TABLE emails_to_send AS
            SELECT 'r' || i || '@example.com' AS "to", ? AS "from", 'Receipt ' || i AS subject,
                   CASE WHEN i = ? THEN '<p>corrected</p>' ELSE '<p>thanks</p>' END AS html_body
            FROM range(?) t(i)
            """,
            [AUTHOR, -1 if changed is None else changed, n],
        )
        if emoji:  # one risky-looking message
            con.execute("""UPDATE emails_to_send SET subject = subject || ' 🎉🎉🎉🎉🎉'
                           WHERE "to" = 'r0@example.com'""")
    return path


@pytest.fixture
def env(emu: BentoEmulator) -> dict[str, str]:
    return base_env(**emu.env(), BENTO_REQUESTS_PER_MINUTE="60000", BENTO_EMAILS_PER_MINUTE="60000")


def sync_args(table: Path, *extra: str, json_output: bool = True) -> list[str]:
    return ["sync", "--from", str(table), "--table", "emails_to_send", "--as", "emails", "--allow-email-sends",
            "--pipelines-dir", "p", *(["--json"] if json_output else []), *extra]


def stored(emu: BentoEmulator) -> Counter[str]:
    return Counter(e.to for e in emu.store.emails_sent)


def table_of(summary: dict[str, Any]) -> dict[str, Any]:
    """The `emails_to_send` table report of a sync's newest load."""
    table: dict[str, Any] = summary["loads"][-1]["tables"]["emails_to_send"]
    return table


def test_dry_run_counts_what_would_go_out(emu: BentoEmulator, env: dict[str, str], tmp_path: Path) -> None:
    table = write_emails(tmp_path / "mail.duckdb", 130, emoji=True)
    plan = as_json(cli(*sync_args(table, "--dry-run"), env=env, cwd=tmp_path))["emails"]
    assert plan["would_send"] == 130 and plan["recipients"] == 130 and plan["risky_looking"] == 1
    assert plan["ledger_read"] is False and emu.store.emails_sent == []
    default_pace = {k: v for k, v in env.items() if k != "BENTO_EMAILS_PER_MINUTE"}
    text = cli(*sync_args(table, "--dry-run", json_output=False), env=default_pace, cwd=tmp_path).stdout
    assert "60 emails/min, about 2.2 min" in text and "look risky" in text

    assert cli(*sync_args(table), env=env, cwd=tmp_path).returncode == 0
    write_emails(table, 131, changed=5, emoji=True)
    plan = as_json(cli(*sync_args(table, "--dry-run"), env=env, cwd=tmp_path))
    assert plan["emails"]["would_send"] == 2 and plan["emails"]["already_sent"] == 129
    assert plan["requests"]["/batch/emails"] == 1 and plan["emails"]["ledger_read"] is True
    assert len(emu.requests(path="/batch/emails")) == 3  # 60 + 60 + 10 from the one real sync


def test_sigkill_between_request_and_answer_then_rerun_sends_nothing(
    emu: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    table = write_emails(tmp_path / "mail.duckdb", 40)
    # Bento takes the request, then answers one byte a second: the run is killed while it waits
    emu.add_fault(Fault(kind="trickle", seconds=600, path_prefix="/batch/emails"))
    child = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *sync_args(table)], env=env, cwd=tmp_path,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not emu.requests(path="/batch/emails"):
            assert child.poll() is None, "the sync ended before its email request reached the emulator"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    emu.clear_faults()
    assert len(emu.store.emails_sent) == 40  # Bento applied the request; the run never learnt it

    emu.reset_log()
    rerun = cli(*sync_args(table), env=env, cwd=tmp_path)
    assert rerun.returncode == 3, rerun.stderr  # 40 of 40 uncertain: past the threshold, a person must look
    assert emu.requests(path="/batch/emails") == []
    assert table_of(as_json(rerun))["rejected_by_reason"] == {"email_send_uncertain": 40}
    assert stored(emu) == Counter({f"r{i}@example.com": 1 for i in range(40)})

    listing = as_json(cli("emails", "uncertain", "--pipelines-dir", "p", "--json", env=env, cwd=tmp_path))
    assert listing["count"] == 40 and len(listing["runs"]) == 1
    assert {e["to"] for e in listing["emails"]} == {f"r{i}@example.com" for i in range(40)}
    # a scheduled run with --yes never releases them
    assert cli(*sync_args(table, "--yes"), env=env, cwd=tmp_path).returncode == 3
    assert emu.requests(path="/batch/emails") == []


def test_release_then_rerun_sends_exactly_the_released(emu: BentoEmulator, env: dict[str, str], tmp_path: Path) -> None:
    table = write_emails(tmp_path / "mail.duckdb", 100)
    emu.add_fault(Fault(kind="server_error", status=502, count=1, path_prefix="/batch/emails"))  # applied nothing
    first = cli(*sync_args(table), env=env, cwd=tmp_path)
    assert first.returncode == 3 and len(emu.store.emails_sent) == 40
    listing = as_json(cli("emails", "uncertain", "--pipelines-dir", "p", "--json", env=env, cwd=tmp_path))
    assert listing["count"] == 60
    run_id = listing["runs"][0]

    refused = cli("emails", "release", "--run", run_id, "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "--yes" in refused.stderr  # no terminal, no --yes: nothing released
    assert cli("emails", "release", "--pipelines-dir", "p", "--yes", env=env, cwd=tmp_path).returncode == 2
    released = as_json(cli("emails", "release", "--run", run_id, "--pipelines-dir", "p", "--yes", "--json",
                           env=env, cwd=tmp_path))
    assert released["count"] == 60

    emu.reset_log()
    after = cli(*sync_args(table), env=env, cwd=tmp_path)
    assert after.returncode == 0, after.stderr
    assert sum(r.rows for r in emu.requests(path="/batch/emails")) == 60
    assert stored(emu) == Counter({f"r{i}@example.com": 1 for i in range(100)})
    report = table_of(as_json(after))
    assert (report["sent"], report["already_sent"]) == (60, 40)


OVERLAP_ROWS = 150


def _overlapping_runs(emu: BentoEmulator, env: dict[str, str], tmp_path: Path, first: list[str],
                      second: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Start `first`; once its first email request is in (its answer held back 10 s, long enough for a second
    process to start, read the table and claim), start `second`."""
    emu.add_fault(Fault(kind="trickle", seconds=10, count=1, path_prefix="/batch/emails"))
    procs = [subprocess.Popen([sys.executable, "-m", "pipelines.cli", *first], env=env, cwd=tmp_path, text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    deadline = time.monotonic() + 120
    while not emu.requests(path="/batch/emails"):
        assert procs[0].poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    procs.append(subprocess.Popen([sys.executable, "-m", "pipelines.cli", *second], env=env, cwd=tmp_path,
                                  text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE))
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


@pytest.mark.parametrize("ledger", ["folder", "duckdb"])
def test_two_overlapping_runs_on_two_runners_send_each_email_once(
    emu: BentoEmulator, env: dict[str, str], tmp_path: Path, ledger: str
) -> None:
    """Two runners (their own pipeline folders) share one ledger, a folder or a DuckDB file: the run lock on the
    ledger's (site, emails) stops the second before it sends anything (exit 75, naming the holder). The folder
    ledger's claims (test_destination_emails.py) stay as a second line of defence."""
    table = write_emails(tmp_path / "mail.duckdb", OVERLAP_ROWS)
    url = str(tmp_path / ("ledger" if ledger == "folder" else "ledger.duckdb"))
    first = sync_args(table, "--ledger-url", url)
    second = [a if a != "p" else "p2" for a in first]
    results = _overlapping_runs(emu, env, tmp_path, first, second)
    assert results[0].returncode in (0, 3), results[0].stderr
    assert stored(emu) == Counter({f"r{i}@example.com": 1 for i in range(OVERLAP_ROWS)}), [
        r.stderr[-400:] for r in results]
    assert results[1].returncode == 75, results[1].stderr
    assert re.search(r"pid \d+", results[1].stderr) and "nothing was sent" in results[1].stderr
    sent = [sum(t["sent"] for load in json.loads(results[0].stdout)["loads"] for t in load["tables"].values())]
    print(f"OVERLAP sent by each run: {[*sent, 0]}")  # for RELIABILITY.md
    assert sent == [OVERLAP_ROWS]


def test_two_overlapping_runs_of_one_pipeline_send_each_email_once(
    emu: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    """The same scheduled sync started twice (one pipeline folder, its default DuckDB ledger file).

    The run lock on the pipeline folder stops the second at the start (exit 75), so it neither opens the
    ledger nor picks up the first's dlt package.
    """
    table = write_emails(tmp_path / "mail.duckdb", OVERLAP_ROWS)
    results = _overlapping_runs(emu, env, tmp_path, sync_args(table), sync_args(table))
    assert stored(emu) == Counter({f"r{i}@example.com": 1 for i in range(OVERLAP_ROWS)}), [
        r.stderr[-400:] for r in results]
    assert results[1].returncode == 75, results[1].stderr  # busy: the run lock stopped it before sending
    assert "nothing was sent" in results[1].stderr

