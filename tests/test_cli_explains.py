"""The command line explains itself: each message a user meets says what happened and what to do, with the
exit code README's "The command line" gives (0 done, 1 failed, 2 usage or unreadable input, 3 rejects past
the threshold).

Every test runs `bento-dlt` in a subprocess against an emulator started in this process, with small inputs
and raised budgets, and asserts the message and the exit code.
"""

from __future__ import annotations

import csv
import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from dlt.common.pipeline import get_dlt_pipelines_dir

from bento_api import Budgets
from bento_api.emulator import BentoEmulator
from bento_destination import LoadReport
from bento_destination.report import TableReport
from pipelines.cli import build_parser
from pipelines.cli_progress import sync_line

from .test_cli import as_json, base_env, cli


@pytest.fixture
def env(emulator: BentoEmulator) -> dict[str, str]:
    return base_env(**emulator.env(), BENTO_REQUESTS_PER_MINUTE="60000", BENTO_STATS_REQUESTS_PER_HOUR="1000000",
                    BENTO_RETRY_BACKOFF_SECONDS="0.01")


def write_csv(path: Path, rows: list[dict[str, Any]], encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def events(count: int, bad: int = 0) -> list[dict[str, Any]]:
    """`count` valid events, then `bad` rows without a type (rejected as missing_type)."""
    rows = [{"email": f"user{i}@example.com", "type": "signed_up", "plan": f"p{i}"} for i in range(count)]
    return rows + [{"email": f"bad{i}@example.com", "type": "", "plan": "x"} for i in range(bad)]


def progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("progress:")]


# -- errors keep their cause; --encoding -------------------------------------------------------------


def test_latin1_csv_error_keeps_the_cause_and_encoding_reads_it(
    emulator: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    write_csv(tmp_path / "people.csv", [{"email": "jerome@example.com", "name": "Jérôme"}], encoding="latin-1")
    failed = cli("sync", "--from", "people.csv", "--as", "subscribers", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert failed.returncode == 2, failed.stderr
    assert "CSV Error on Line" in failed.stderr and "not utf-8 encoded" in failed.stderr  # past the first line
    assert "--encoding latin-1" in failed.stderr
    assert "delimiter = " not in failed.stderr  # DuckDB's sniffer dump is left out
    assert emulator.requests() == []

    read = cli("sync", "--from", "people.csv", "--encoding", "latin-1", "--as", "subscribers", "--pipelines-dir",
               "p", env=env, cwd=tmp_path)
    assert read.returncode == 0, read.stderr
    assert emulator.store.subscribers["jerome@example.com"].fields["name"] == "Jérôme"

    wrong = cli("sync", "--from", "people.csv", "--encoding", "cp1252", "--as", "subscribers", "--dry-run",
                env=env, cwd=tmp_path)
    assert wrong.returncode == 2 and "the CSV reader knows utf-8, utf-16, latin-1" in wrong.stderr


# -- a missing required column is a usage error --------------------------------------------------------


def test_missing_required_column_is_exit_2_naming_the_columns_found(
    emulator: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    write_csv(tmp_path / "leads.csv", [{"mail": "a@example.com", "name": "Ann"}])
    result = cli("sync", "--from", "leads.csv", "--as", "events", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "--as events needs the columns email, type; leads.csv has: mail, name" in result.stderr
    assert emulator.requests() == []  # refused before any request, the credentials check included

    # the destination's name normalisation: `Email` and `Type` are the columns it needs
    write_csv(tmp_path / "cased.csv", [{"Email": "a@example.com", "Type": "signed_up"}])
    dry = cli("sync", "--from", "cased.csv", "--as", "events", "--dry-run", "--json", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert as_json(dry)["would_send"] == 1


# -- connection errors name the URL; impossible ports are refused at once --------------------------------


def test_connection_error_names_the_url_and_an_impossible_port_is_a_config_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    write_csv(tmp_path / "people.csv", [{"email": "a@example.com"}])
    url = f"http://127.0.0.1:{closed}/api/v1"
    down = cli("doctor", env={**env, "BENTO_BASE_URL": url}, cwd=tmp_path)
    assert down.returncode == 1
    assert f"could not connect to Bento at {url}" in down.stdout
    assert env["BENTO_SECRET_KEY"] not in down.stdout + down.stderr

    impossible = cli("sync", "--from", "people.csv", "--as", "subscribers", "--pipelines-dir", "p",
                     env={**env, "BENTO_BASE_URL": "http://127.0.0.1:99999/api/v1"}, cwd=tmp_path)
    assert impossible.returncode == 1
    assert "configuration: base_url http://127.0.0.1:99999: the port must be a number from 1 to 65535" \
        in impossible.stderr
    assert "retrying" not in impossible.stderr  # refused, not retried as if the server were down


# -- progress: from the budget, ending at 100% ----------------------------------------------------------


def test_sync_progress_ends_at_100_percent(emulator: BentoEmulator, env: dict[str, str], tmp_path: Path) -> None:
    write_csv(tmp_path / "events.csv", events(1500, bad=2))
    result = cli("sync", "--from", "events.csv", "--as", "events", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = progress_lines(result.stderr)
    assert lines and lines[-1] == "progress: 1502 of 1502 rows done (100%): sent 1500, rejected 2"


def test_time_left_is_the_rows_left_at_the_budget() -> None:
    report = LoadReport(load_id="1", pipeline_name="p", reject_threshold=0.1)
    report.tables["t"] = TableReport(table="t", operation="events", received=1000, sent=990, rejected=10)
    # 2000 events left = 2 requests of 1000; at 60 requests/min that is 2 s, whatever the run's rate so far
    assert sync_line(report, 3000, "events", Budgets(requests_per_minute=60)) == (
        "progress: 1000 of 3000 rows done (33%): sent 990, rejected 10; about 2s left at 60 requests/min"
    )
    # emails go at the emails pace: 2000 emails at 60 a minute
    assert sync_line(report, 3000, "emails", Budgets(emails_per_minute=60)).endswith(
        "about 33m20s left at 60 emails/min"
    )


def test_sync_announces_a_long_wait_for_the_budget(
    emulator: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    # 1001 events are two /batch/events requests; at 10 requests a minute the second waits about 6 s
    write_csv(tmp_path / "events.csv", events(1001))
    slow = {**env, "BENTO_REQUESTS_PER_MINUTE": "10"}
    result = cli("sync", "--from", "events.csv", "--as", "events", "--pipelines-dir", "p", env=slow, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^waiting for the batch budget: next request in [67]s$", result.stderr, re.MULTILINE), \
        result.stderr
    assert progress_lines(result.stderr)[-1].startswith("progress: 1001 of 1001 rows done (100%)")


# -- the dry run's headline; the per-table reject warning --------------------------------------------------


def test_dry_run_headline_counts_only_rows_that_would_be_sent(
    emulator: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    rows = [{"email": f"user{i}@example.com", "name": f"U{i}"} for i in range(5)]
    write_csv(tmp_path / "people.csv", rows)
    args = ("sync", "--from", "people.csv", "--as", "subscribers", "--pipelines-dir", "p")
    assert cli(*args, env=env, cwd=tmp_path).returncode == 0
    write_csv(tmp_path / "people.csv", [*rows[:4], {"email": "user4@example.com", "name": "Changed"}])
    dry = cli(*args, "--dry-run", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "  would be sent: 1; valid 5, of which 4 unchanged since Bento last acknowledged them" in dry.stdout
    assert "POST /batch/subscribers: 1" in dry.stdout


def test_reject_warning_uses_the_share_of_the_whole_load(
    emulator: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    # three rejects among 2003 rows (0.15%), alone in the last load file (files of 1000 rows): their batch,
    # all rejected and sending nothing, ends first; the share of the load is what counts: no warning, exit 0
    write_csv(tmp_path / "events.csv", events(2000, bad=3))
    fine = cli("sync", "--from", "events.csv", "--as", "events", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert fine.returncode == 0, fine.stderr
    assert "rows rejected" not in fine.stderr and "check_run raises" not in fine.stderr

    # three rejects among four rows: past the threshold over the whole load, said once, and exit 3
    write_csv(tmp_path / "half.csv", events(1, bad=3))
    past = cli("sync", "--from", "half.csv", "--as", "events", "--pipelines-dir", "p", env=env, cwd=tmp_path)
    assert past.returncode == 3, past.stderr
    assert "table `half`: 3 of the load's 4 rows rejected (75.0% at least, threshold 10.0%" in past.stderr
    assert past.stderr.count("check_run raises on this") == 1


# -- --quiet past the threshold; rejects and report agree ------------------------------------------------


def test_quiet_past_the_threshold_prints_one_line(emulator: BentoEmulator, env: dict[str, str],
                                                  tmp_path: Path) -> None:
    write_csv(tmp_path / "half.csv", events(1, bad=3))
    result = cli("sync", "--from", "half.csv", "--as", "events", "--pipelines-dir", "p", "--quiet",
                 env=env, cwd=tmp_path)
    assert result.returncode == 3
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "bento-dlt sync: table `half`: 3 of 4 rows rejected (75.0%, threshold 10.0%; missing_type: 3) (exit 3)"
    ]
    dry = cli("sync", "--from", "half.csv", "--as", "events", "--dry-run", "--quiet", env=env, cwd=tmp_path)
    assert dry.returncode == 3
    assert dry.stderr.splitlines() == ["bento-dlt sync: a real sync would exit 3: 75.0% of the rows rejected, "
                                       "past the threshold 10.0% (exit 3)"]


def test_rejects_and_report_agree_on_an_empty_folder(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    rejects = cli("rejects", "--pipelines-dir", "empty", env=env, cwd=tmp_path)
    report = cli("report", "--pipelines-dir", "empty", env=env, cwd=tmp_path)
    assert (rejects.returncode, report.returncode) == (0, 0), rejects.stderr + report.stderr
    assert rejects.stdout.startswith("no Bento loads found for any pipeline under empty")
    assert report.stdout.startswith("no Bento loads under empty")
    listed = cli("rejects", "--pipelines-dir", "empty", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0 and as_json(listed)["count"] == 0


# -- help: the real default folder; every subcommand described ---------------------------------------------


def test_help_names_dlts_real_pipelines_folder_and_every_subcommand_has_a_description(
    env: dict[str, str], tmp_path: Path
) -> None:
    result = cli("sync", "--help", env=env, cwd=tmp_path)
    assert result.returncode == 0
    assert get_dlt_pipelines_dir() in " ".join(result.stdout.split())  # argparse wraps the line
    emulator_help = cli("emulator", "--help", env=env, cwd=tmp_path)
    assert emulator_help.returncode == 0
    assert "run a local Bento-compatible server" in emulator_help.stdout.split("\n\n")[1]
    commands = next(a for a in build_parser()._actions if a.dest == "command")
    choices: dict[str, Any] = commands.choices  # type: ignore[assignment]
    assert not [name for name, sub in choices.items() if not sub.description]


# -- extract shows progress like sync ---------------------------------------------------------------------


def test_extract_prints_progress_lines_like_sync(emulator: BentoEmulator, env: dict[str, str],
                                                 tmp_path: Path) -> None:
    result = cli("extract", "--resources", "tags", "fields", "--pipelines-dir", "p", "--output", "out.duckdb",
                 env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = progress_lines(result.stderr)
    assert any(re.match(r"progress: extract done in [\d.]+s: \d+ rows read \(fields \d+, tags \d+\)$", line)
               for line in lines), result.stderr
    assert any(line.startswith("progress: load done in ") for line in lines)
    assert "Resources" not in result.stderr and "-----" not in result.stderr  # no dlt progress block
    quiet = cli("extract", "--resources", "tags", "--pipelines-dir", "p", "--output", "out.duckdb", "--quiet",
                env=env, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == ""


# -- --json: reasons and counts; rows only on request --------------------------------------------------------


def test_json_carries_reasons_and_counts_and_rows_only_with_show_rows(
    emulator: BentoEmulator, env: dict[str, str], tmp_path: Path
) -> None:
    rows = [{"email": "ann.lee@example.com", "name": "Ann", "phone": "555-0100"},
            {"email": "ANN.LEE@example.com", "name": "Ann Lee", "phone": "555-0101"},
            {"email": "not-an-email", "name": "Bob", "phone": "555-0102"},
            {"email": "cat@example.com", "name": "Cat", "phone": "555-0103"}]
    write_csv(tmp_path / "people.csv", rows)
    args = ("sync", "--from", "people.csv", "--as", "subscribers", "--pipelines-dir", "p", "--reject-threshold",
            "1", "--json")
    result = cli(*args, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = as_json(result)
    assert summary["rejected_by_reason"] == {"duplicate_email": 1, "invalid_email": 1}
    examples = summary["reject_examples"]
    assert {e["reason"] for e in examples} == {"duplicate_email", "invalid_email"}
    assert all("row" not in e for e in examples)
    assert "ann.lee@example.com" not in result.stdout.lower() and "555-01" not in result.stdout
    assert any("a***@example.com" in e["detail"] for e in examples)  # which domain, not whose address
    assert any("'not-an-email' is not a valid email address" in e["detail"] for e in examples)

    shown = as_json(cli(*args, "--show-rows", "--full-resync", env=env, cwd=tmp_path))
    assert sorted(e["row"]["phone"] for e in shown["reject_examples"]) in (["555-0100", "555-0102"],
                                                                         ["555-0101", "555-0102"])
    dry = as_json(cli(*args, "--dry-run", env=env, cwd=tmp_path))
    assert dry["reject_examples"] and all("row" not in e for e in dry["reject_examples"])
    assert json.dumps(dry).lower().count("ann.lee@example.com") == 0
