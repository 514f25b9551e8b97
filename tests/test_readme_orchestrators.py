"""The README's Dagster, Airflow and Prefect blocks are the files CI runs, and CI runs each of them.

The examples themselves run in their own venvs (orchestrators/run.sh, a step of .ci/run each); this suite
only holds the README and .ci/run to them, so that the documented code cannot drift from the tested code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATORS = ("dagster", "airflow", "prefect")


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", markdown, flags=re.S | re.M)


@pytest.mark.parametrize("name", ORCHESTRATORS)
def test_readme_shows_the_tested_example_whole(name: str) -> None:
    example = (ROOT / "orchestrators" / f"{name}_example.py").read_text()
    assert example in python_blocks((ROOT / "README.md").read_text())


@pytest.mark.parametrize("name", ORCHESTRATORS)
def test_ci_runs_each_orchestrator_test(name: str) -> None:
    assert (ROOT / "orchestrators" / "tests" / f"test_{name}.py").is_file()
    steps = re.findall(r"^orchestrator (\w+) (\d+)$", (ROOT / ".ci" / "run").read_text(), flags=re.M)
    assert name in {step for step, _budget in steps}
