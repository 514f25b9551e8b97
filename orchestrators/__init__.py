"""Orchestrator examples (Dagster, Airflow, Prefect): the exact code the README shows, run by orchestrators/tests.

Each needs its orchestrator, installed in its own venv by `orchestrators/run.sh <name>`.
"""
