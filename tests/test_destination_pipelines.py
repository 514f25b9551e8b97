"""The two reverse-ETL pipelines: runnable, credentials first, pending packages first, report printed, exit codes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dlt
import duckdb
import pandas as pd
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from bento_api.emulator import BentoEmulator, EmulatorConfig
from bento_destination import bento, last_report
from pipelines import dataframe_to_bento, warehouse_to_bento

from .destination_support import FAST, must_isolate

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("destination_env")


@pytest.fixture
def emu(monkeypatch: pytest.MonkeyPatch) -> Iterator[BentoEmulator]:
    config = EmulatorConfig(requests_per_minute=1e7, stats_requests_per_hour=1e9, bucket_capacity=1e6, subscribers=0)
    with BentoEmulator(config) as emulator:
        for key, value in emulator.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("BENTO_REQUESTS_PER_MINUTE", str(FAST))
        yield emulator


def test_warehouse_demo_with_emulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert warehouse_to_bento.main(["--emulator", "--pipelines-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "crm_contacts -> subscribers: received 300, sent 300, rejected 0, commands 6" in out
    assert "product_events -> events: received 600, sent 600" in out
    assert last_report("warehouse_to_bento", pipelines_dir=tmp_path) is not None


def test_dataframe_demo_runs_as_a_module(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipelines.dataframe_to_bento", "--emulator", "--pipelines-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if not must_isolate(k)},
    )
    assert done.returncode == 0, done.stderr
    assert "subscribers -> subscribers: received 500, sent 495, rejected 5 (invalid_email: 5)" in done.stdout


def test_exit_codes(emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--pipelines-dir", str(tmp_path), "--pipeline-name", f"codes_{uuid.uuid4().hex[:8]}"]
    assert dataframe_to_bento.main(["--input", str(tmp_path / "missing.parquet"), *base]) == 2

    rows = tmp_path / "rows.csv"
    pd.DataFrame({"email": [f"c{i}@example.com" if i % 2 else "nope" for i in range(40)]}).to_csv(rows, index=False)
    assert dataframe_to_bento.main(["--input", str(rows), *base]) == 3  # 50% rejected
    assert "20 of 40 rows rejected" in capsys.readouterr().err
    assert len(emu.store.subscribers) == 20

    good = tmp_path / "good.parquet"
    pd.DataFrame({"email": [f"g{i}@example.com" for i in range(10)], "tags": [["a", "b"]] * 10}).to_parquet(good)
    assert dataframe_to_bento.main(["--input", str(good), *base]) == 0  # the rejected run left nothing pending
    assert len(emu.store.subscribers) == 30

    monkeypatch.setenv("BENTO_SECRET_KEY", "sk_wrong_000000000000000000000000")
    emu.reset_log()
    assert dataframe_to_bento.main(["--input", str(good), *base]) == 1
    assert "401" in capsys.readouterr().err
    assert [r.path for r in emu.request_log] == ["/fetch/tags"]


def test_pending_package_is_loaded_before_new_data(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"pending_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("LOAD__RAISE_ON_MAX_RETRIES", "1")
    emu.set_rate_limit("batch", per_minute=0.1, capacity=1)  # 2nd request: 429 with a 10-minute Retry-After
    pipeline = dlt.pipeline(name, pipelines_dir=str(tmp_path), destination=bento())
    with pytest.raises(PipelineStepFailed):
        pipeline.run([{"email": f"old{i}@example.com"} for i in range(1500)], table_name="subscribers")
    assert pipeline.has_pending_data
    emu.set_rate_limit("batch", per_minute=1e7, capacity=1e6)

    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE subscribers AS SELECT 'new' || i || '@example.com' AS email FROM range(200) t(i)")
    reports = warehouse_to_bento.run(str(warehouse), ["subscribers"], pipeline_name=name, pipelines_dir=tmp_path)
    assert "loading the package left pending" in capsys.readouterr().out
    assert [r.tables["subscribers"].sent for r in reports] == [1500, 200]
    sent = [e for r in emu.requests(path="/batch/subscribers") if r.status == 200 for e in r.emails]
    assert len(sent) == 1700 and len(set(sent)) == 1700


def test_a_warehouse_table_is_diffed_in_duckdb_and_an_unchanged_rerun_reads_no_row(
    emu: BentoEmulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warehouse = tmp_path / "w.duckdb"
    with duckdb.connect(str(warehouse)) as con:
        con.execute("CREATE TABLE subscribers AS SELECT 'p' || i || '@example.com' AS email, i AS score "
                    "FROM range(250) t(i)")
    name = f"diffed_{uuid.uuid4().hex[:8]}"
    first = warehouse_to_bento.run(str(warehouse), ["subscribers"], pipeline_name=name, pipelines_dir=tmp_path)
    assert sum(r.tables["subscribers"].sent for r in first) == 250
    assert "0 unchanged rows found in duckdb and not read; 250 new or changed rows go on" in capsys.readouterr().out

    with duckdb.connect(str(warehouse)) as con:
        con.execute("UPDATE subscribers SET score = -1 WHERE email = 'p9@example.com'")
    emu.reset_log()
    again = warehouse_to_bento.run(str(warehouse), ["subscribers"], pipeline_name=name, pipelines_dir=tmp_path)
    assert "249 unchanged rows found in duckdb and not read; 1 new or changed rows go on" in capsys.readouterr().out
    assert [r.emails for r in emu.requests(path="/batch/subscribers")] == [["p9@example.com"]]
    assert sum(r.tables["subscribers"].unchanged for r in again) == 249


def test_any_sqlalchemy_url_through_sql_table(emu: BentoEmulator, tmp_path: Path) -> None:
    database = tmp_path / "crm.sqlite"
    with sqlite3.connect(database) as con:
        con.execute("CREATE TABLE contacts (email TEXT, first_name TEXT, tags TEXT, api_token TEXT)")
        con.executemany("INSERT INTO contacts VALUES (?, ?, ?, ?)",
                        [(f"s{i}@example.com", f"S{i}", "crm,sqlite", "secret") for i in range(1200)])
    reports = warehouse_to_bento.run(f"sqlite:///{database}", ["contacts"], pipeline_name=f"sql_{uuid.uuid4().hex[:6]}",
                                     pipelines_dir=tmp_path, table_operations={"contacts": "subscribers"},
                                     out=lambda _: None)
    table = reports[-1].tables["contacts"]
    assert (table.sent, table.dropped_secret_columns) == (1200, ["api_token"])
    sub = emu.store.subscribers["s7@example.com"]
    assert sub.fields == {"first_name": "S7"} and sorted(emu.store.tag_names(sub)) == ["crm", "sqlite"]


@pytest.mark.parametrize(("preset", "expected"), [(None, "system"), ("mimalloc", "mimalloc")])
def test_the_pipelines_use_arrows_system_allocator_unless_told_otherwise(preset: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    if preset is not None:
        env["ARROW_DEFAULT_MEMORY_POOL"] = preset
    probe = "import pipelines.dataframe_to_bento, pyarrow; print(pyarrow.default_memory_pool().backend_name)"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
