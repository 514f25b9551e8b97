#!/usr/bin/env bash
# Run one orchestrator's README example against the emulator, in its own venv so that it cannot move our
# pins (dlt, sqlglot):   orchestrators/run.sh dagster|airflow|prefect
# The venv (.venv-<name>) is made from the `[<name>]` extra and orchestrators/constraints-<name>.txt, and
# remade when either changes. After changing an extra, regenerate the constraints from a fresh venv:
#   .venv-<name>/bin/pip freeze --exclude-editable > orchestrators/constraints-<name>.txt
set -euo pipefail
name="${1:-}"
case "$name" in
    dagster | airflow | prefect) ;;
    *) echo "usage: orchestrators/run.sh dagster|airflow|prefect" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
venv=".venv-$name"
constraints="orchestrators/constraints-$name.txt"
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$constraints" -nt "$stamp" ]; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -e ".[$name]" pytest pytest-timeout -c "$constraints"
    touch "$stamp"
fi
exec "$venv/bin/python" -m pytest -q "orchestrators/tests/test_$name.py"
