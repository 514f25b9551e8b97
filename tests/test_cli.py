"""The `bento-dlt` command line, run for real in a subprocess against an emulator started in this process.

Each test passes the emulator's credentials through the environment (BENTO_*) or flags, with raised
budgets (BENTO_REQUESTS_PER_MINUTE) so nothing waits on Bento's real 60/min; the emulator's request log
shows what the command sent. Exit codes are README's: 0 done, 1 failed, 2 usage/input, 3 rejects.
"""

from __future__ import annotations

import base64
import inspect
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bento_api.emulator import BentoEmulator, Fault
from bento_api.emulator.config import MODE_ENV, mode_from_env
from bento_destination import bento
from pipelines.demo import BAD_CONTACTS, BAD_EVENTS, SEEDED_SUBSCRIBERS, write_crm

REPO = Path(__file__).resolve().parents[1]
NETWORK_GUARD = Path(__file__).resolve().parent / "network_guard"  # its sitecustomize logs and refuses lookups
RESOURCES = ("tags", "fields", "segments", "broadcasts", "sequences", "workflows", "email_templates",
             "subscribers", "site_stats", "segment_stats")
CONTACTS = 300
EVENTS = 300


def base_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Bento or dlt settings (but the emulator's mode), plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BENTO_", "SOURCES__", "DESTINATION__", "RUNTIME__")) or k == MODE_ENV}
    env.update(PYTHONPATH=str(REPO), RUNTIME__DLTHUB_TELEMETRY="false", **extra)
    return env


def without_network(env: dict[str, str], lookups: Path) -> dict[str, str]:
    """`env` with dlt's telemetry left as a user's would be, and every name lookup but loopback refused and
    written to `lookups` (the network guard's sitecustomize): for commands that promise loopback only."""
    guarded = {k: v for k, v in env.items() if k != "RUNTIME__DLTHUB_TELEMETRY"}
    guarded.update(PYTHONPATH=os.pathsep.join((str(NETWORK_GUARD), str(REPO))), NETWORK_GUARD_LOG=str(lookups))
    return guarded


def cli(*args: str, env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=cwd, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout)


def as_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def env(emulator: BentoEmulator) -> dict[str, str]:
    return base_env(**emulator.env(), BENTO_REQUESTS_PER_MINUTE="60000", BENTO_STATS_REQUESTS_PER_HOUR="1000000")


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's sample CRM, small: crm_contacts and product_events, each with a few bad rows."""
    path = tmp_path_factory.mktemp("crm") / "crm.duckdb"
    write_crm(path, CONTACTS, EVENTS)
    return path


def posts(emulator: BentoEmulator) -> list[str]:
    return [r.path for r in emulator.request_log if r.method == "POST"]


# -- demo --------------------------------------------------------------------------------------------


def test_demo_pushes_and_extracts_every_resource_ignoring_bento_env(tmp_path: Path) -> None:
    # BENTO_* points at a real-looking account: the demo must ignore it and use its own emulator
    env = base_env(BENTO_BASE_URL="https://example.invalid/api/v1", BENTO_SITE_UUID="real-site",
                   BENTO_PUBLISHABLE_KEY="pk_real_account_key", BENTO_SECRET_KEY="sk_real_account_key")
    lookups = tmp_path / "lookups.txt"
    result = cli("demo", "--output", "out", "--contacts", "400", "--events", "400", "--json",
                 env=without_network(env, lookups), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not lookups.exists(), f"the demo looked up {lookups.read_text().split()}"
    summary = as_json(result)
    assert summary["ok"] and summary["budgets"]["raised_for_emulator"]
    assert summary["emulator_mode"] == mode_from_env()  # BENTO_EMULATOR_MODE reaches the demo's emulator
    assert "Budgets raised" in result.stderr
    pushed = {p["operation"]: p for p in summary["pushed"]}
    assert pushed["subscribers"]["totals"]["sent"] == 400
    assert pushed["subscribers"]["totals"]["rejected"] == len(BAD_CONTACTS)
    assert pushed["events"]["totals"]["sent"] == 400
    assert pushed["events"]["totals"]["rejected"] == len(BAD_EVENTS)
    reasons = {r["reason"] for p in summary["pushed"] for r in p["reject_examples"]}
    assert {"invalid_email", "missing_email", "missing_type", "nested_fields"} <= reasons
    for to in ("duckdb", "parquet"):
        tables = summary["extracted"][to]["tables"]
        assert all(tables.get(resource, 0) > 0 for resource in RESOURCES), (to, tables)
        assert tables["subscribers"] >= SEEDED_SUBSCRIBERS + 400  # the pushed contacts came back
    assert (tmp_path / "out" / "bento_data.duckdb").is_file()
    assert list((tmp_path / "out" / "parquet" / "bento" / "subscribers").glob("*.parquet"))
    assert "sk_real_account_key" not in result.stdout + result.stderr


# -- sync --------------------------------------------------------------------------------------------


def test_dry_run_validates_and_sends_nothing(emulator: BentoEmulator, env: dict[str, str], crm: Path,
                                             tmp_path: Path) -> None:
    result = cli("sync", "--from", str(crm), "--table", "crm_contacts", "--as", "subscribers", "--dry-run",
                 "--json", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = as_json(result)
    assert plan["dry_run"] and plan["credentials"] == "ok"
    assert plan["rows"] == CONTACTS + len(BAD_CONTACTS)
    assert plan["valid"] == CONTACTS
    assert plan["rejected_by_reason"] == {"invalid_email": 3, "missing_email": 1}
    assert plan["requests"]["/batch/subscribers"] == 1
    assert plan["rows_triggering_automations"] == 0
    assert posts(emulator) == []  # not one batch request; only the credentials GET
    assert [(r.method, r.path) for r in emulator.request_log] == [("GET", "/fetch/tags")]

    events = cli("sync", "--from", str(crm), "--table", "product_events", "--as", "events", "--dry-run",
                 env=env, cwd=tmp_path)
    assert events.returncode == 0, events.stderr
    assert "nothing was sent" in events.stdout
    assert f"automations: {EVENTS} rows would start them" in events.stdout
    assert "missing_type: 2" in events.stdout
    assert posts(emulator) == []


def test_sync_then_rejects_and_report(emulator: BentoEmulator, env: dict[str, str], crm: Path,
                                      tmp_path: Path) -> None:
    result = cli("sync", "--from", str(crm), "--table", "crm_contacts", "--as", "subscribers",
                 "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "received 304, sent 300, rejected 4" in result.stdout
    sent = sum(r.rows for r in emulator.requests("/batch/subscribers", "POST"))
    assert sent == CONTACTS
    assert len(emulator.store.subscribers) >= CONTACTS

    rejects = cli("rejects", "--pipelines-dir", "p", "--json", env=env, cwd=tmp_path)
    assert rejects.returncode == 0, rejects.stderr
    listed = as_json(rejects)
    assert listed["pipeline_name"] == "bento_sync_subscribers"
    assert sorted(r["reason"] for r in listed["rejects"]) == ["invalid_email"] * 3 + ["missing_email"]
    text = cli("rejects", "--pipelines-dir", "p", "--pipeline-name", "bento_sync_subscribers",
               "--load-id", listed["load_id"], env=env, cwd=tmp_path)
    assert text.returncode == 0 and "not-an-email" in text.stdout and "[missing_email]" in text.stdout

    report = cli("report", "--pipelines-dir", "p", "--json", env=env, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    (load,) = as_json(report)["reports"]
    assert load["tables"]["crm_contacts"]["sent"] == CONTACTS
    assert load["totals"]["rejected"] == len(BAD_CONTACTS)
    human = cli("report", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert "crm_contacts -> subscribers" in human.stdout


def test_rejects_past_threshold_exit_3(emulator: BentoEmulator, env: dict[str, str], crm: Path,
                                       tmp_path: Path) -> None:
    result = cli("sync", "--from", str(crm), "--table", "product_events", "--as", "events",
                 "--reject-threshold", "0.001", "--json", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    summary = as_json(result)
    assert summary["exit_code"] == 3 and not summary["ok"]
    assert summary["totals"]["sent"] == EVENTS  # the good rows went; the load finished
    assert any("rows rejected" in p for p in summary["problems"])
    assert sum(r.rows for r in emulator.requests("/batch/events", "POST")) == EVENTS

    # a dry run predicts the same exit code, without sending
    emulator.reset_log()
    dry = cli("sync", "--from", str(crm), "--table", "product_events", "--as", "events", "--dry-run",
              "--reject-threshold", "0.001", env=env, cwd=tmp_path)
    assert dry.returncode == 3 and "PAST THRESHOLD" in dry.stdout
    assert posts(emulator) == []


def test_wrong_credentials_exit_1_without_sending_or_printing_the_key(
    emulator: BentoEmulator, env: dict[str, str], crm: Path, tmp_path: Path
) -> None:
    result = cli("sync", "--from", str(crm), "--table", "crm_contacts", "--as", "subscribers",
                 "--secret-key", "sk_wrong_key_123456", "--pipelines-dir", "p", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 1
    assert "401" in result.stderr and "secret_key" in result.stderr
    assert as_json(result)["exit_code"] == 1
    assert "sk_wrong_key_123456" not in result.stdout + result.stderr
    assert posts(emulator) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "missing.duckdb", "--as", "subscribers"], "input not found"),
        (["--from", "{crm}", "--query", "SELEC email FROM crm_contacts", "--as", "subscribers"], "Parser Error"),
        (["--from", "{crm}", "--table", "no_such_table", "--as", "subscribers"], "no_such_table"),
        (["--from", "{crm}", "--as", "subscribers"], "name one with --table"),
        (["--from", "{crm}", "--table", "crm_contacts", "--as", "broadcasts"], "invalid choice"),
        (["--from", "{crm}", "--table", "crm_contacts", "--as", "emails"], "add --allow-email-sends"),
        (["--from", "{crm}", "--table", "crm_contacts", "--as", "emails", "--allow-email-sends", "--no-ledger"],
         "needs the sync ledger"),
    ],
)
def test_unreadable_input_or_usage_exit_2(emulator: BentoEmulator, env: dict[str, str], crm: Path, tmp_path: Path,
                                          args: list[str], message: str) -> None:
    result = cli("sync", *[a.replace("{crm}", str(crm)) for a in args], "--pipelines-dir", "p",
                 env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert emulator.request_log == []


def test_real_account_without_yes_and_without_a_terminal_is_refused(crm: Path, tmp_path: Path) -> None:
    env = base_env(BENTO_BASE_URL="https://example.invalid/api/v1", BENTO_SITE_UUID="site-1234-abcd",
                   BENTO_PUBLISHABLE_KEY="pk_some_key_0001", BENTO_SECRET_KEY="sk_some_key_0001")
    result = cli("sync", "--from", str(crm), "--table", "crm_contacts", "--as", "subscribers",
                 "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "--yes" in result.stderr and "stdin is not a terminal" in result.stderr
    assert "sk_some_key_0001" not in result.stderr


def test_csv_parquet_and_sqlalchemy_inputs(emulator: BentoEmulator, env: dict[str, str], tmp_path: Path) -> None:
    import sqlite3

    import duckdb

    (tmp_path / "people.csv").write_text('email,first_name,tags\nann@example.com,Ann,"vip,beta"\nbad,Bob,x\n')
    duckdb.sql("COPY (SELECT 'p' || i || '@example.com' AS email, 'signed_in' AS type FROM range(5) t(i)) "
               f"TO '{tmp_path / 'events.parquet'}'")
    with sqlite3.connect(tmp_path / "crm.sqlite") as con:
        con.execute("CREATE TABLE contacts (email TEXT, plan TEXT)")
        con.executemany("INSERT INTO contacts VALUES (?, ?)", [(f"s{i}@example.com", "pro") for i in range(7)])

    csv = cli("sync", "--from", "people.csv", "--query", "SELECT * FROM input WHERE email LIKE '%@%'",
              "--as", "subscribers", "--pipelines-dir", "p", "--quiet", env=env, cwd=tmp_path)
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout == ""  # --quiet: nothing but errors
    assert emulator.store.subscribers["ann@example.com"] is not None
    parquet = cli("sync", "--from", "events.parquet", "--as", "events", "--pipelines-dir", "p", "--json",
                  env=env, cwd=tmp_path)
    assert parquet.returncode == 0, parquet.stderr
    assert as_json(parquet)["totals"]["sent"] == 5
    sqlalchemy = cli("sync", "--from", f"sqlite:///{tmp_path / 'crm.sqlite'}", "--table", "contacts",
                     "--as", "subscribers", "--pipelines-dir", "p", "--json", env=env, cwd=tmp_path)
    assert sqlalchemy.returncode == 0, sqlalchemy.stderr
    assert as_json(sqlalchemy)["totals"]["sent"] == 7


def test_progress_goes_to_stderr(emulator: BentoEmulator, env: dict[str, str], crm: Path, tmp_path: Path) -> None:
    # the batches load in parallel: a latency longer than the 2 s progress period leaves time for a line
    emulator.add_fault(Fault(kind="latency", seconds=3.0, path_prefix="/batch", method="POST"))
    result = cli("sync", "--from", str(crm), "--query", "SELECT * FROM product_events, range(5)",
                 "--as", "events", "--pipelines-dir", "p", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "progress:" in result.stderr and "requests/min" in result.stderr
    as_json(result)  # stdout stays one JSON document


# -- extract -----------------------------------------------------------------------------------------


def test_extract_to_duckdb_and_parquet(emulator: BentoEmulator, env: dict[str, str], tmp_path: Path) -> None:
    result = cli("extract", "--resources", "tags", "subscribers", "--output", "bento_data.duckdb",
                 "--pipelines-dir", "p", "--json", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = as_json(result)
    assert summary["tables"]["tags"] == len(emulator.store.tags)
    assert summary["tables"]["subscribers"] == len(emulator.store.subscribers)
    assert Path(summary["output"]) == tmp_path / "bento_data.duckdb"
    assert not posts(emulator) or set(posts(emulator)) == {"/fetch/search"}  # read-only

    parquet = cli("extract", "--to", "parquet", "--output", "pq", "--resources", "broadcasts", "site_stats",
                  "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert parquet.returncode == 0, parquet.stderr
    assert "broadcasts" in parquet.stdout and "site_stats" in parquet.stdout
    assert list((tmp_path / "pq" / "bento" / "broadcasts").glob("*.parquet"))

    bad = cli("extract", "--resources", "tags", "--secret-key", "sk_wrong_key_123456", "--pipelines-dir", "p",
              "--output", "x.duckdb", env=env, cwd=tmp_path)
    assert bad.returncode == 1 and "401" in bad.stderr
    assert "sk_wrong_key_123456" not in bad.stdout + bad.stderr


# -- doctor and emulator -----------------------------------------------------------------------------


def secret_strings(emulator: BentoEmulator) -> list[str]:
    pair = f"{emulator.publishable_key}:{emulator.secret_key}".encode()
    return [emulator.publishable_key, emulator.secret_key, base64.b64encode(pair).decode()]


def test_doctor_checks_and_never_prints_keys(emulator: BentoEmulator, env: dict[str, str], tmp_path: Path) -> None:
    text = cli("doctor", env=env, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "credentials, site_uuid and User-Agent" in text.stdout and "accepted" in text.stdout
    assert "subscriber search" in text.stdout and "60000 requests/min" in text.stdout
    assert "BENTO_SECRET_KEY" in text.stdout  # where the key comes from, not what it is
    report = cli("doctor", "--json", env=env, cwd=tmp_path)
    data = as_json(report)
    assert data["ok"] and data["limits"]["batch_maxima"]["subscribers"] == 1000
    for secret in secret_strings(emulator):
        assert secret not in text.stdout + text.stderr + report.stdout + report.stderr
    assert all(r.user_agent and r.user_agent.startswith("bento-dlt/") for r in emulator.request_log)

    wrong = cli("doctor", "--secret-key", "sk_wrong_key_123456", env=env, cwd=tmp_path)
    assert wrong.returncode == 1 and "401" in wrong.stdout
    assert "sk_wrong_key_123456" not in wrong.stdout + wrong.stderr


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "emulator", "--port", "0"],
                            env=without_network(base_env(), tmp_path / "emulator_lookups.txt"), cwd=tmp_path,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []], daemon=True).start()
    exported: dict[str, str] = {}
    try:
        while "BENTO_SECRET_KEY" not in exported:
            line = lines.get(timeout=30)
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                exported[key] = value
        yield proc, exported
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)


def test_emulator_subcommand_serves_until_sigterm(
    emulator_process: tuple[subprocess.Popen[str], dict[str, str]], tmp_path: Path
) -> None:
    proc, exported = emulator_process
    doctor = cli("doctor", "--json", env=base_env(**exported), cwd=tmp_path)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert as_json(doctor)["sides"]["destination"]["base_url"] == exported["BENTO_BASE_URL"]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert not (tmp_path / "emulator_lookups.txt").exists(), "the emulator command looked up a name"


def test_help_names_every_subcommand_and_the_exit_codes(tmp_path: Path) -> None:
    result = cli("--help", env=base_env(), cwd=tmp_path)
    assert result.returncode == 0
    for command in ("demo", "extract", "sync", "rejects", "report", "doctor", "emulator"):
        assert command in result.stdout
    assert "3 done, but rows were rejected past the threshold" in result.stdout


@pytest.mark.skipif("full_resync" not in inspect.signature(bento).parameters, reason="no sync ledger in this build")
def test_rerun_sends_only_changes_and_dry_run_counts_them(emulator: BentoEmulator, env: dict[str, str], crm: Path,
                                                          tmp_path: Path) -> None:
    args = ("sync", "--from", str(crm), "--table", "crm_contacts", "--as", "subscribers", "--pipelines-dir", "p")
    assert cli(*args, env=env, cwd=tmp_path).returncode == 0
    sent = sum(r.rows for r in emulator.requests("/batch/subscribers", "POST"))
    dry = cli(*args, "--dry-run", "--json", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert as_json(dry)["ledger"]["unchanged"] == CONTACTS
    assert as_json(dry)["would_send"] == 0  # the headline counts what would go out, not the valid rows
    rerun = cli(*args, "--json", env=env, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert sum(r.rows for r in emulator.requests("/batch/subscribers", "POST")) == sent  # nothing new sent
    full = cli(*args, "--full-resync", env=env, cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    assert sum(r.rows for r in emulator.requests("/batch/subscribers", "POST")) == sent + CONTACTS
