# Two entry points for a fresh clone: `make demo` and `make test`. Each creates .venv and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench sdk-check clean orchestrators orchestrator-dagster orchestrator-airflow \
	orchestrator-prefect

# The venv keeps its own pip, not upgraded: the install must work with Python 3.11's bundled pip (23.2).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/bento-dlt demo

test: $(STAMP)
	$(BIN)/pytest -q

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

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# Each orchestrator's README example against the emulator, in its own venv (.venv-<name>).
orchestrators: orchestrator-dagster orchestrator-airflow orchestrator-prefect

orchestrator-dagster orchestrator-airflow orchestrator-prefect:
	PYTHON=$(PYTHON) orchestrators/run.sh $(@:orchestrator-%=%)

clean:
	rm -rf $(VENV) .venv-dagster .venv-airflow .venv-prefect demo_output .mypy_cache .ruff_cache $(SDK_NODE)/node_modules
