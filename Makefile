# Two entry points for a fresh clone: `make demo` and `make test`. Each creates .venv and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench sdk-check clean orchestrators orchestrator-dagster orchestrator-airflow \
	orchestrator-prefect \
	postgres-server test-postgres test-s3 test-dlt-versions

# The venv keeps its own pip, not upgraded: the install must work with Python 3.11's bundled pip (23.2).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bento-dlt demo

# Three test processes on two cores: most tests wait on subprocesses and the emulator, not the CPU
# (668 tests: 9 min 32 s in one process, 3 min 53 s and 3 min 57 s with three, in two runs each green)
test: $(STAMP)
	$(BIN)/pytest -q -n 3

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test sdk-check

# Bento's official Node SDK (pinned by sdk_check/node/package-lock.json) against the emulator, in each mode.
SDK_MODES ?= default
SDK_NODE := sdk_check/node
$(SDK_NODE)/node_modules/.package-lock.json: $(SDK_NODE)/package-lock.json
	cd $(SDK_NODE) && npm ci --no-audit --no-fund

sdk-check: $(STAMP) $(SDK_NODE)/node_modules/.package-lock.json
	$(BIN)/python -m sdk_check.run $(SDK_MODES)

# Postgres both ways and the S3 ledger run against real servers their tests start; `make test` leaves them out.
# Debian's postgresql package brings the server binaries (the tests make their own cluster, on a free port).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
postgres-server:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then echo "postgres: $$(ls -d /usr/lib/postgresql/*/bin | tail -1)"; \
	else $(SUDO) apt-get update && $(SUDO) apt-get install -y postgresql; fi

$(VENV)/.installed-postgres: pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	touch $@

$(VENV)/.installed-s3: pyproject.toml $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,s3,s3-test]'
	touch $@

test-postgres: postgres-server $(VENV)/.installed-postgres
	$(BIN)/pytest -q -m postgres tests/test_postgres.py tests/test_sync_results.py tests/test_engine_cli.py \
		tests/test_engine_fingerprint.py tests/test_engine_event_keys.py tests/test_postgres_ledger.py

test-s3: $(VENV)/.installed-s3
	$(BIN)/pytest -q -m s3 tests/test_s3_ledger.py tests/test_s3_lease.py

# dlt versions: pyproject allows dlt>=1.31,<2, so .venv (and `make test`) gets the newest dlt the registry serves;
# this adds a smoke run on the oldest allowed (1.31.0) in its own venv.
DLT_OLDEST := 1.31.0
DLT_EXTRAS := duckdb,parquet,sql-database
DLT_SMOKE := tests/test_destination_behaviour.py tests/test_source_duckdb.py tests/test_cli.py \
	tests/test_destination_load_resume.py tests/test_destination_pending_v1.py tests/test_destination_file_sink.py
test-dlt-versions: $(STAMP)
	$(BIN)/python -c 'import dlt; print("dlt", dlt.__version__, "in .venv: the newest served, which make test ran on")'
	$(PYTHON) -m venv .venv-dlt-$(DLT_OLDEST)
	.venv-dlt-$(DLT_OLDEST)/bin/pip install --quiet -e '.[dev]' 'dlt[$(DLT_EXTRAS)]==$(DLT_OLDEST)'
	.venv-dlt-$(DLT_OLDEST)/bin/python -c 'import dlt; print("dlt", dlt.__version__, "(oldest allowed)")'
	.venv-dlt-$(DLT_OLDEST)/bin/pytest -q -n 3 $(DLT_SMOKE)

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# Each orchestrator's README example against the emulator, in its own venv (.venv-<name>).
orchestrators: orchestrator-dagster orchestrator-airflow orchestrator-prefect

orchestrator-dagster orchestrator-airflow orchestrator-prefect:
	PYTHON=$(PYTHON) orchestrators/run.sh $(@:orchestrator-%=%)

clean:
	rm -rf $(VENV) .venv-dagster .venv-airflow .venv-prefect .venv-dlt-* demo_output .mypy_cache .ruff_cache $(SDK_NODE)/node_modules
