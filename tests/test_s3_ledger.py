"""The sync ledger at an `s3://` URL, on a real S3 API: moto in server mode on 127.0.0.1 (`s3_server` fixture).

Every sync is the `bento-dlt` command in a subprocess with `--ledger-url s3://<bucket>/ledger`, reaching the
S3 API through s3fs and botocore over HTTP with only the endpoint changed (AWS_ENDPOINT_URL), and with every
name lookup but loopback refused and logged (the network guard), so nothing reaches AWS. Bento is the
emulator. Covered: a first sync, an unchanged re-sync, a sync killed mid-load then rerun, and a second runner
(its own pipelines folder, as on an ephemeral CI worker) that shares the ledger. Two runners at the same
time meet the ledger's lease: tests/test_s3_lease.py. Run with `make test-s3` (its own CI step).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import pytest

from bento_api.emulator import BentoEmulator
from bento_destination.s3lease import ENV_LEASE_SECONDS
from bento_destination.sync import EXIT_FAILED, EXIT_OK

from .s3_server import S3Server, clean_aws_environ
from .test_cli import NETWORK_GUARD, REPO, as_json, cli, posts

pytestmark = pytest.mark.s3

SEGMENT_SUFFIX = ".parquet"


def contact(i: int, score: int = 0) -> tuple[str, str, int, str]:
    return f"person{i}@example.com", f"Person {i}", i + score, "s3-ledger,crm"


def write_contacts(path: Path, n: int, *, changed: frozenset[int] = frozenset()) -> None:
    """`n` contacts in a DuckDB table; rows in `changed` get another score (a change the ledger must see)."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE OR REPLACE TABLE contacts (email VARCHAR, first_name VARCHAR, score BIGINT, tags VARCHAR)")
        con.executemany("INSERT INTO contacts VALUES (?, ?, ?, ?)",
                        [contact(i, 1000 if i in changed else 0) for i in range(n)])


def assert_contacts_in_bento(emu: BentoEmulator, n: int, *, changed: frozenset[int] = frozenset()) -> None:
    assert len(emu.store.subscribers) == n
    for i in range(n):
        email, first_name, score, tags = contact(i, 1000 if i in changed else 0)
        sub = emu.store.subscribers[email]
        assert (sub.fields.get("first_name"), sub.fields.get("score")) == (first_name, score), (i, sub.fields)
        assert set(emu.store.tag_names(sub)) == set(tags.split(",")), i


class Runner:
    """One machine running `bento-dlt sync`: its own pipelines folder, the shared S3 ledger, loopback only."""

    def __init__(self, emu: BentoEmulator, s3: S3Server, folder: Path, ledger_url: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.ledger_url = ledger_url
        self.lookups = folder / "lookups.txt"
        self.env = {k: v for k, v in clean_aws_environ().items()
                    if not k.startswith(("BENTO_", "SOURCES__", "DESTINATION__", "RUNTIME__"))}
        self.env.update(**emu.env(), **s3.env(folder), BENTO_REQUESTS_PER_MINUTE="60000",
                        RUNTIME__DLTHUB_TELEMETRY="false", NETWORK_GUARD_LOG=str(self.lookups),
                        PYTHONPATH=os.pathsep.join((str(NETWORK_GUARD), str(REPO))))

    def argv(self, source: Path, *extra: str) -> list[str]:
        return ["sync", "--from", str(source), "--table", "contacts", "--as", "subscribers", "--yes", "--json",
                "--pipelines-dir", str(self.folder / "pipelines"), "--ledger-url", self.ledger_url, *extra]

    def sync(self, source: Path, *extra: str, expect: int = EXIT_OK) -> dict[str, Any]:
        result = cli(*self.argv(source, *extra), env=self.env, cwd=self.folder)
        assert result.returncode == expect, result.stdout + result.stderr
        self.assert_loopback_only()
        return as_json(result) if expect == EXIT_OK else {"stderr": result.stderr}

    def assert_loopback_only(self) -> None:
        assert not self.lookups.exists(), f"looked up {self.lookups.read_text().split()}"


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


def segments(s3: S3Server, bucket: str, site: str) -> list[str]:
    fs = s3.filesystem()
    folder = f"{bucket}/ledger/{site}"
    return sorted(p for p in fs.find(folder) if p.endswith(SEGMENT_SUFFIX)) if fs.exists(folder) else []


def test_first_sync_then_an_unchanged_resync_sends_no_batch(
    emu: BentoEmulator, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "crm.duckdb"
    write_contacts(source, 1500)
    runner = Runner(emu, s3_server, tmp_path / "runner", f"s3://{bucket}/ledger")

    first = runner.sync(source)
    assert first["rows"] == 1500
    assert_contacts_in_bento(emu, 1500)
    assert sum(r.rows for r in emu.requests("/batch/subscribers")) == 1500
    assert segments(s3_server, bucket, emu.site_uuid)  # the acknowledgements are in the bucket
    assert not list((tmp_path / "runner").rglob("bento_ledger.duckdb"))  # and not in a local ledger file

    emu.reset_log()
    runner.sync(source)
    assert posts(emu) == []

    write_contacts(source, 1500, changed=frozenset({3, 1400}))
    emu.reset_log()
    runner.sync(source)
    assert sorted(e for r in emu.requests("/batch/subscribers") for e in r.emails) == [
        "person1400@example.com", "person3@example.com"]
    assert_contacts_in_bento(emu, 1500, changed=frozenset({3, 1400}))


def test_a_second_runner_with_its_own_folder_shares_the_ledger(
    emu: BentoEmulator, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """Runner A syncs; runner B (a fresh machine: no pipelines folder) finds everything already acknowledged."""
    source = tmp_path / "crm.duckdb"
    write_contacts(source, 1200)
    ledger_url = f"s3://{bucket}/ledger"
    runner_a = Runner(emu, s3_server, tmp_path / "a", ledger_url)
    runner_b = Runner(emu, s3_server, tmp_path / "b", ledger_url)

    runner_a.sync(source)
    assert_contacts_in_bento(emu, 1200)

    emu.reset_log()
    plan = runner_b.sync(source, "--dry-run")
    assert plan["ledger"]["unchanged"] == 1200  # the dry run read A's acknowledgements from the bucket
    runner_b.sync(source)
    assert posts(emu) == []

    write_contacts(source, 1200, changed=frozenset({5}))
    runner_b.sync(source)
    assert [e for r in emu.requests("/batch/subscribers") for e in r.emails] == ["person5@example.com"]
    emu.reset_log()
    runner_a.sync(source)  # B's acknowledgement reached A through the bucket
    assert posts(emu) == []
    assert_contacts_in_bento(emu, 1200, changed=frozenset({5}))


def test_a_sync_killed_mid_load_reruns_to_every_subscriber_once(
    emu: BentoEmulator, s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    n = 6_000
    source = tmp_path / "crm.duckdb"
    write_contacts(source, n)
    runner = Runner(emu, s3_server, tmp_path / "runner", f"s3://{bucket}/ledger")
    # a batch a second: time to kill it mid-load; a short lease, which the rerun waits out (no cleanup)
    slow = dict(runner.env, BENTO_REQUESTS_PER_MINUTE="60", **{ENV_LEASE_SECONDS: "2"})
    child = subprocess.Popen([sys.executable, "-m", "pipelines.cli", *runner.argv(source)], env=slow,
                             cwd=runner.folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (len([r for r in emu.requests("/batch/subscribers") if r.status == 200]) >= 2
                   and segments(s3_server, bucket, emu.site_uuid)):
            assert child.poll() is None, "the sync finished before it could be killed"
            assert time.monotonic() < deadline, "no acknowledged batch reached the ledger in time"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    runner.assert_loopback_only()
    before = [r for r in emu.requests("/batch/subscribers") if r.status == 200]
    acknowledged_before = {e for r in before for e in r.emails}
    assert 0 < len(acknowledged_before) < n

    emu.reset_log()
    rerun = runner.sync(source, "--wait", "60")
    assert rerun["rows"] == n
    resent = Counter(e for r in emu.requests("/batch/subscribers") if r.status == 200 for e in r.emails)
    assert max(resent.values()) == 1
    assert set(resent) | acknowledged_before == {contact(i)[0] for i in range(n)}  # nothing lost
    assert len(set(resent) & acknowledged_before) < len(acknowledged_before)  # the bucket remembered acks
    assert_contacts_in_bento(emu, n)

    emu.reset_log()
    runner.sync(source)
    assert posts(emu) == []
    print(f"acknowledged before the kill {len(acknowledged_before)}, sent by the rerun {len(resent)}, "
          f"sent twice {len(set(resent) & acknowledged_before)}")


def test_a_missing_bucket_fails_before_anything_is_sent(
    emu: BentoEmulator, s3_server: S3Server, tmp_path: Path
) -> None:
    source = tmp_path / "crm.duckdb"
    write_contacts(source, 10)
    runner = Runner(emu, s3_server, tmp_path / "runner", "s3://no-such-bucket-here/ledger")
    failed = runner.sync(source, expect=EXIT_FAILED)
    assert "the ledger's bucket 'no-such-bucket-here' does not exist" in failed["stderr"]
    assert posts(emu) == []  # refused before sending, not after (a run that cannot record must not send)
    assert emu.store.subscribers == {}
