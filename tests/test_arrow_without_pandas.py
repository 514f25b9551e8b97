"""`bento-dlt sync` keeps pandas out of its process (pipelines/arrow_without_pandas.py), and pandas still works
there for whoever really needs it. Each check runs in a fresh interpreter: an import is once per process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb

from bento_api.emulator import BentoEmulator

from .test_cli import REPO, base_env, cli

SCRIPT = """
import sys
from pipelines.arrow_without_pandas import arrow_without_pandas
import pyarrow as pa, pyarrow.compute as pc

assert arrow_without_pandas() is True
# what the sink does to a window: scalars, fills, tables from Python values
pc.fill_null(pa.array([True, None]), False)
pa.scalar(False, pa.bool_())
pa.table({"email": ["a@example.com"]}).to_pylist()
pa.RecordBatch.from_pylist([{"n": 1}])
print("pandas imported by pyarrow:", "pandas" in sys.modules)

frame = pa.table({"n": [1, 2]}).to_pandas()  # a caller that needs pandas gets it
import pandas as pd
series = pa.array(pd.Series([1.0, None]))  # and pyarrow knows pandas objects again
print("to_pandas:", type(frame).__name__, "series nulls:", series.null_count)
print("second call:", arrow_without_pandas())
"""


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=base_env(), text=True, capture_output=True,
                          timeout=120)


def test_pyarrow_leaves_pandas_unimported_until_a_caller_needs_it() -> None:
    result = run_python(SCRIPT)
    assert result.returncode == 0, result.stderr
    assert "pandas imported by pyarrow: False" in result.stdout
    # pandas Series are recognised once pandas is in: NaN of a Series became a null, as pyarrow does for pandas
    assert "to_pandas: DataFrame series nulls: 1" in result.stdout
    assert "second call: False" in result.stdout


def test_without_the_call_pyarrow_imports_pandas_on_its_first_array() -> None:
    # the control: the call above is what keeps pandas out, not the operations chosen
    result = run_python("import sys, pyarrow as pa\npa.array([0])\nprint('pandas' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_a_sync_from_duckdb_sends_every_row_without_importing_pandas(emulator: BentoEmulator, tmp_path: Path) -> None:
    source = tmp_path / "crm.duckdb"
    with duckdb.connect(str(source)) as con:
        con.execute("CREATE TABLE contacts AS SELECT 'person' || i || '@example.com' AS email, "
                    "'plan' || (i % 3) AS plan FROM range(250) t(i)")
    env = base_env(**emulator.env(), BENTO_REQUESTS_PER_MINUTE="60000", PYTHONPROFILEIMPORTTIME="1")
    result = cli("sync", "--from", str(source), "--table", "contacts", "--as", "subscribers", "--yes", "--json",
                 "--pipelines-dir", str(tmp_path / "pipelines"), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    imported = [line.rsplit("|", 1)[-1].strip() for line in log]
    assert "pyarrow" in imported and "duckdb" in imported  # the import log is there to read
    # a refused import is logged too (a line `pandas` alone); pandas really imported brings its submodules
    assert not [name for name in imported if name.startswith("pandas.")]
    summary = json.loads(result.stdout)
    assert summary["totals"]["sent"] == 250 and summary["totals"]["rejected"] == 0
    assert sum(1 for r in emulator.request_log if r.method == "POST" and "batch/subscribers" in r.path) == 1
