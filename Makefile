# Two entry points for a fresh clone: `make demo` and `make test`. Each creates .venv and installs into it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench clean orchestrators orchestrator-dagster orchestrator-airflow orchestrator-prefect

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
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

check: lint typecheck test

bench: $(STAMP)
	$(BIN)/python -m bench.run_all

# Each orchestrator's README example against the emulator, in its own venv (.venv-<name>).
orchestrators: orchestrator-dagster orchestrator-airflow orchestrator-prefect

orchestrator-dagster orchestrator-airflow orchestrator-prefect:
	PYTHON=$(PYTHON) orchestrators/run.sh $(@:orchestrator-%=%)

clean:
	rm -rf $(VENV) .venv-dagster .venv-airflow .venv-prefect demo_output .mypy_cache .ruff_cache
