"""The destination's one configspec (bento_destination/config.py): where each value comes from, what a bad
value says, and that `sync()`, the command line and the load itself all see the same resolved values."""

from __future__ import annotations

import base64
import inspect
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import dlt
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from bento_api import BentoConfigError, BentoSettings
from bento_api.emulator import BentoEmulator
from bento_destination import bento
from bento_destination.config import KEYWORDS, LEDGER_FILENAME, LedgerOptions, resolve_destination_config
from bento_destination.sync import sync

from .destination_support import ENV_PREFIXES, FAST

pytestmark = pytest.mark.usefixtures("destination_env")

REPO = Path(__file__).resolve().parents[1]


def set_dlt_credentials(monkeypatch: pytest.MonkeyPatch, emu: BentoEmulator, prefix: str = "") -> None:
    for key, value in emu.credentials.items():
        monkeypatch.setenv(f"{prefix}DESTINATION__BENTO__{key.upper()}", value)


def secrets_of(emu: BentoEmulator) -> list[str]:
    """The strings no output may hold: both keys and the Basic auth pair they make."""
    pair = f"{emu.publishable_key}:{emu.secret_key}".encode()
    return [emu.publishable_key, emu.secret_key, base64.b64encode(pair).decode()]


def test_the_sink_takes_every_field_of_the_spec_as_a_keyword() -> None:
    """`bento(...)`'s keywords (typed by dlt from the sink's signature) and the spec's fields cannot drift apart."""
    parameters = set(inspect.signature(bento).parameters) - {"items", "table", "config"}
    assert parameters == set(KEYWORDS)
    assert {"site_uuid", "secret_key", "ledger_url", "max_blast_radius", "record_sent_rows"} <= parameters


def test_values_come_from_dlt_variables_and_a_pipeline_prefix_wins_for_its_pipeline(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_dlt_credentials(monkeypatch, emu)
    monkeypatch.setenv("DESTINATION__BENTO__REQUESTS_PER_MINUTE", "1234")
    monkeypatch.setenv("DESTINATION__BENTO__TABLE_OPERATIONS", '{"people": "subscribers"}')
    monkeypatch.setenv("DESTINATION__BENTO__LEDGER_URL", str(tmp_path / "ledger.duckdb"))
    monkeypatch.setenv("DESTINATION__BENTO__TAG_OWNERSHIP", "true")
    monkeypatch.setenv("CRM__DESTINATION__BENTO__REQUESTS_PER_MINUTE", "99")

    config = resolve_destination_config()
    assert config.settings() == BentoSettings(**emu.credentials)
    assert config.budgets().requests_per_minute == 1234
    assert config.table_operations == {"people": "subscribers"}
    assert config.ledger_options() == LedgerOptions(ledger_url=str(tmp_path / "ledger.duckdb"), tag_ownership=True)
    assert resolve_destination_config("crm").budgets().requests_per_minute == 99  # CRM__DESTINATION__BENTO__*
    assert resolve_destination_config("other").budgets().requests_per_minute == 1234


def test_keywords_win_over_dlt_config_which_wins_over_bento_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENTO_SITE_UUID", "from-bento-env")
    monkeypatch.setenv("BENTO_PUBLISHABLE_KEY", "pk_from_bento_env")
    monkeypatch.setenv("BENTO_SECRET_KEY", "sk_from_bento_env")
    monkeypatch.setenv("BENTO_REQUESTS_PER_MINUTE", "77")
    monkeypatch.setenv("DESTINATION__BENTO__SITE_UUID", "from-dlt-env")

    assert resolve_destination_config().settings().site_uuid == "from-dlt-env"
    assert resolve_destination_config().settings().secret_key == "sk_from_bento_env"  # BENTO_*: the fallback
    assert resolve_destination_config().budgets().requests_per_minute == 77
    assert resolve_destination_config(None, None, site_uuid="kw").settings().site_uuid == "kw"
    # a pipeline's factory: its keywords are the explicit values of the load's resolution, and so of this one
    assert resolve_destination_config("p", bento(site_uuid="factory")).settings().site_uuid == "factory"
    assert resolve_destination_config("p", bento()).settings().site_uuid == "from-dlt-env"
    monkeypatch.delenv("DESTINATION__BENTO__SITE_UUID")
    assert resolve_destination_config().settings().site_uuid == "from-bento-env"


def test_a_bad_value_names_its_key_and_never_a_secret(emu: BentoEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    set_dlt_credentials(monkeypatch, emu)
    for key, value, expected in (
        ("MAX_BLAST_RADIUS", "2", "max_blast_radius"),
        ("REJECT_THRESHOLD", "-0.5", "reject_threshold"),
        ("REQUESTS_PER_MINUTE", "fast", "requests_per_minute"),
        ("EMAILS_PER_MINUTE", "0", "emails_per_minute"),
        ("TABLE_OPERATIONS", '{"people": "persons"}', "table_operations"),
        ("EVENT_KEYS", "sometimes", "event_keys"),
        ("SYNC_LEDGER", "maybe", "sync_ledger"),
        ("BASE_URL", f"https://{emu.publishable_key}:{emu.secret_key}@app.bentonow.com/api/v1", "base_url"),
        ("BASE_URL", "http://bento.example.com/api/v1", "base_url"),
    ):
        monkeypatch.setenv(f"DESTINATION__BENTO__{key}", value)
        with pytest.raises(BentoConfigError) as caught:
            resolve_destination_config()
        message = str(caught.value)
        assert expected in message, message
        assert not any(secret in message for secret in secrets_of(emu)), message
        monkeypatch.delenv(f"DESTINATION__BENTO__{key}")
    with pytest.raises(BentoConfigError, match=r"unknown keywords of bento\(\.\.\.\): sync_leger"):
        resolve_destination_config(None, None, sync_leger=False)


def test_missing_credentials_name_every_place_to_set_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATION__BENTO__SITE_UUID", "site-1")
    with pytest.raises(BentoConfigError) as caught:
        resolve_destination_config().settings()
    message = str(caught.value)
    for place in ("secret_key", "DESTINATION__BENTO__SECRET_KEY", "[destination.bento] secret_key", "BENTO_SECRET_KEY"):
        assert place in message
    assert "site_uuid:" not in message  # set: not listed as missing


def test_sync_refuses_a_bad_value_before_anything_is_extracted_or_sent(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_dlt_credentials(monkeypatch, emu)
    monkeypatch.setenv("DESTINATION__BENTO__MAX_BLAST_RADIUS", "1.5")
    with pytest.raises(BentoConfigError, match="max_blast_radius"):
        sync([{"email": "a@example.com"}], pipeline_name="badcfg", pipelines_dir=tmp_path, table_name="subscribers",
             requests_per_minute=FAST, out=lambda _: None, results=False)
    assert emu.request_log == []
    assert not (tmp_path / "badcfg").exists()  # not even a pipeline folder


def test_a_plain_run_with_a_bad_value_fails_naming_the_key_before_extracting(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlt resolves the spec when the run starts (on_resolved checks it): a bad value stops it before extract."""
    set_dlt_credentials(monkeypatch, emu)
    monkeypatch.setenv("DESTINATION__BENTO__REJECT_THRESHOLD", "3")
    pipeline = dlt.pipeline(f"plainbad_{uuid.uuid4().hex[:8]}", pipelines_dir=str(tmp_path),
                            destination=bento(requests_per_minute=FAST))
    with pytest.raises(PipelineStepFailed) as caught:
        pipeline.run([{"email": "a@example.com"}], table_name="subscribers")
    assert "reject_threshold" in str(caught.value) and isinstance(caught.value.__cause__, BentoConfigError)
    assert emu.request_log == [] and not pipeline.has_pending_data
    monkeypatch.delenv("DESTINATION__BENTO__REJECT_THRESHOLD")
    pipeline.run([{"email": "a@example.com"}], table_name="subscribers")
    assert "a@example.com" in emu.store.subscribers and not pipeline.has_pending_data


def test_sync_and_its_load_see_the_same_values_from_dlt_variables(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials, User-Agent, budget and ledger location only in DESTINATION__BENTO__*: sync() checks the keys
    with them before extracting, locks and reads the ledger there, and the load sends with the same ones."""
    set_dlt_credentials(monkeypatch, emu)
    monkeypatch.setenv("DESTINATION__BENTO__USER_AGENT", "config-test/1.0")
    monkeypatch.setenv("DESTINATION__BENTO__REQUESTS_PER_MINUTE", str(FAST))
    monkeypatch.setenv("DESTINATION__BENTO__LEDGER_URL", str(tmp_path / "shared_ledger.duckdb"))
    rows = [{"email": f"same{i}@example.com", "plan": "pro"} for i in range(5)]

    def run() -> int:
        reports = sync(rows, pipeline_name="samecfg", pipelines_dir=tmp_path / "p", table_name="subscribers",
                       out=lambda _: None, results=False)
        return sum(table.sent for report in reports for table in report.tables.values())

    assert run() == 5
    assert {r.user_agent for r in emu.request_log} == {"config-test/1.0"}  # the check and the load alike
    assert len(emu.requests(path="/fetch/tags")) == 1  # the load trusted the run's proof: same settings
    assert (tmp_path / "shared_ledger.duckdb").is_file()
    assert not (tmp_path / "p" / "samecfg" / LEDGER_FILENAME).exists()
    assert run() == 0  # the pre-pass and the sink read the ledger where the first run's load wrote it
    assert len(emu.requests(path="/batch/subscribers")) == 1


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith((*ENV_PREFIXES, "RUNTIME__"))}
    env.update(PYTHONPATH=str(REPO), RUNTIME__DLTHUB_TELEMETRY="false", **extra)
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], env=env, cwd=cwd, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=120)


PLAIN_RUN = """
import dlt
from bento_destination import bento, check_run
pipeline = dlt.pipeline("plain_toml", pipelines_dir="plain", destination=bento())
check_run(pipeline, pipeline.run([{"email": "plain@example.com"}], table_name="subscribers"))
"""


def test_dlt_toml_files_reach_the_cli_and_a_plain_load_alike(emu: BentoEmulator, tmp_path: Path) -> None:
    """Keys in .dlt/secrets.toml, budget and User-Agent in .dlt/config.toml, nothing in the environment."""
    (tmp_path / ".dlt").mkdir()
    secrets = "".join(f'{key} = "{value}"\n' for key, value in emu.credentials.items() if key != "base_url")
    (tmp_path / ".dlt" / "secrets.toml").write_text(f"[destination.bento]\n{secrets}")
    (tmp_path / ".dlt" / "config.toml").write_text(
        f'[destination.bento]\nbase_url = "{emu.base_url}"\nrequests_per_minute = {FAST}\n'
        'user_agent = "toml-agent/1.0"\n'
    )
    (tmp_path / "people.csv").write_text("email,plan\nann@example.com,pro\nbea@example.com,team\n")
    env = cli_env()

    dry = run_cli("sync", "--from", "people.csv", "--as", "subscribers", "--dry-run", "--json",
                  "--pipelines-dir", "p", cwd=tmp_path, env=env)
    assert dry.returncode == 0, dry.stderr
    summary = json.loads(dry.stdout)
    assert summary["credentials"] == "ok" and summary["requests_per_minute"] == FAST
    real = run_cli("sync", "--from", "people.csv", "--as", "subscribers", "--json", "--pipelines-dir", "p",
                   cwd=tmp_path, env=env)
    assert real.returncode == 0, real.stderr
    assert {"ann@example.com", "bea@example.com"} <= set(emu.store.subscribers)
    plain = subprocess.run([sys.executable, "-c", PLAIN_RUN], env=env, cwd=tmp_path, text=True, capture_output=True,
                           timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert "plain@example.com" in emu.store.subscribers
    assert {r.user_agent for r in emu.request_log} == {"toml-agent/1.0"}  # CLI checks, CLI load, plain load


def test_no_key_reaches_the_output_logs_or_any_file_of_the_run(emu: BentoEmulator, tmp_path: Path) -> None:
    """Keys only in DESTINATION__BENTO__*, dlt logging at INFO, a rejected row: the CLI's output, dlt's log, the
    report, the rejects, the results tables, dlt's state and trace hold no key."""
    env = cli_env(**{f"DESTINATION__BENTO__{k.upper()}": v for k, v in emu.credentials.items()},
                  DESTINATION__BENTO__REQUESTS_PER_MINUTE=str(FAST), RUNTIME__LOG_LEVEL="INFO", LOG_LEVEL="INFO")
    (tmp_path / "people.csv").write_text("email,plan\nann@example.com,pro\nnot-an-email,team\n")
    result = run_cli("sync", "--from", "people.csv", "--as", "subscribers", "--json", "--reject-threshold", "0.9",
                     "--pipelines-dir", "p", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["totals"]["rejected"] == 1
    files = [path for path in (tmp_path / "p").rglob("*") if path.is_file()]
    assert any(path.name.endswith(".rejects.jsonl") for path in files)
    assert any(path.name == "bento_results.duckdb" for path in files)
    for secret in secrets_of(emu):
        assert secret not in result.stdout and secret not in result.stderr
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
    wrong = run_cli("sync", "--from", "people.csv", "--as", "subscribers", "--json", "--pipelines-dir", "p",
                    cwd=tmp_path, env={**env, "DESTINATION__BENTO__SECRET_KEY": "sk_wrong_value_123"})
    assert wrong.returncode == 1 and "sk_wrong_value_123" not in wrong.stdout + wrong.stderr
