"""Consent: a table's own `command` column never reaches Bento's import (it could resubscribe people).

An old Bento page documents a per-row `command` ("subscribe" / "unsubscribe") on `/batch/subscribers`, and the
emulator honours it (the pessimistic reading, docs/bento-api.md). A CRM export with such a column must not
resubscribe anyone: the column is listed as not sent, in the dry run and in the run's report, and subscription
changes happen only through `unsubscribed` and commands.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from bento_api.emulator import BentoEmulator

from .test_cli import base_env, cli

PEOPLE = 30

#: both emulator modes, whatever BENTO_EMULATOR_MODE says: in bento_like the import is queued, and inspecting the
#: store applies the queue first (what Bento would eventually hold)
pytestmark = pytest.mark.parametrize(
    "mode", [pytest.param("default", marks=pytest.mark.emulator_mode("default")),
             pytest.param("bento_like", marks=pytest.mark.emulator_mode("bento_like"))],
)


def _unsubscribed_people(emulator: BentoEmulator) -> list[str]:
    emails = [f"person{i}@example.com" for i in range(PEOPLE)]
    for email in emails:
        emulator.store.unsubscribe(email)
    return emails


def _write_contacts(path: Path, emails: list[str]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Email", "First Name", "COMMAND"])  # any spelling of `command` counts
        writer.writerows([email.upper(), f"Name {i}", "subscribe"] for i, email in enumerate(emails))


def test_the_emulator_honours_the_documented_import_command(emulator: BentoEmulator, mode: str) -> None:
    # the stand-in must be able to catch a leak: a raw import with `command: subscribe` resubscribes
    import httpx

    emulator.store.unsubscribe("raw@example.com")
    answer = httpx.post(f"{emulator.base_url}/batch/subscribers", params={"site_uuid": emulator.site_uuid},
                        auth=(emulator.publishable_key, emulator.secret_key), headers={"User-Agent": "consent-test/1"},
                        json={"subscribers": [{"email": "raw@example.com", "command": "subscribe"}]})
    assert answer.status_code == 200
    assert emulator.config.mode == mode
    assert emulator.store.subscribers["raw@example.com"].unsubscribed_at is None


def test_a_command_column_never_resubscribes_anyone(emulator: BentoEmulator, tmp_path: Path, mode: str) -> None:
    emails = _unsubscribed_people(emulator)
    contacts = tmp_path / "contacts.csv"
    _write_contacts(contacts, emails)
    env = base_env(**emulator.env(), BENTO_REQUESTS_PER_MINUTE="60000")
    common = ("--from", str(contacts), "--as", "subscribers", "--pipelines-dir", str(tmp_path / "p"), "--json")

    plan = cli("sync", *common, "--dry-run", env=env, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    summary = json.loads(plan.stdout)
    assert summary["not_sent_reserved_columns"] == ["COMMAND"]
    assert summary["valid"] == PEOPLE

    result = cli("sync", *common, "--yes", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert emulator.config.mode == mode

    sent = [row for record in emulator.requests("/batch/subscribers") for row in record.body["subscribers"]]
    assert len(sent) == PEOPLE
    assert not [row for row in sent if "command" in row], "a `command` key reached Bento's import"
    still_unsubscribed = [e for e in emails if emulator.store.subscribers[e].unsubscribed_at is not None]
    assert len(still_unsubscribed) == PEOPLE, f"resubscribed: {PEOPLE - len(still_unsubscribed)}"
    assert emulator.store.subscribers[emails[0]].fields["first_name"] == "Name 0"  # the rest of the row was sent
    assert "command" not in emulator.store.subscribers[emails[0]].fields

    report = cli("report", "--pipelines-dir", str(tmp_path / "p"), "--last", "1", env=env, cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "Bento's import would read them as instructions): COMMAND" in report.stdout
