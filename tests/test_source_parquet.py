"""bento_source into Parquet files (dlt filesystem destination, local folder), read back with pyarrow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from bento_api.emulator import BentoEmulator, EmulatorConfig
from pipelines import bento_to_parquet

FAST: dict[str, float] = {"requests_per_minute": 60_000.0, "stats_requests_per_hour": 100_000.0}


def rows_per_table(folder: Path) -> dict[str, int]:
    """Rows in every table folder of the dataset, counted by pyarrow from the files alone."""
    return {
        table.name: sum(pq.read_metadata(f).num_rows for f in table.glob("*.parquet"))
        for table in sorted(folder.iterdir())
        if table.is_dir() and not table.name.startswith("_dlt")
    }


def test_parquet_files_hold_the_same_rows_and_append_only_changes(tmp_path: Path) -> None:
    cfg = EmulatorConfig(seed=5, page_size=20, broadcasts=500, subscribers=230, requests_per_minute=600_000.0,
                         stats_requests_per_hour=1e9, bucket_capacity=1000.0)
    out = tmp_path / "files"
    with BentoEmulator(cfg) as emu:
        kwargs: dict[str, Any] = {"out_dir": out, "pipelines_dir": tmp_path / "p", "pipeline_name": "pq",
                                  **emu.credentials, **FAST}
        pipeline = bento_to_parquet.run(**kwargs)
        loaded = dict(pipeline.last_trace.last_normalize_info.row_counts)
        first = rows_per_table(out / "bento")
        store = emu.store
        templates = {t for s in store.sequences for t in s.template_ids} | {
            t for w in store.workflows for t in w.template_ids}
        want = {"tags": len(store.tags), "fields": len(store.fields), "segments": len(store.segments),
                "broadcasts": 500, "sequences": len(store.sequences), "workflows": len(store.workflows),
                "email_templates": len(templates), "subscribers": 230, "site_stats": 1,
                "segment_stats": len(store.segments)}
        assert {name: first[name] for name in want} == want
        assert all(first[name] == count for name, count in loaded.items() if not name.startswith("_dlt"))
        emails = pq.read_table(out / "bento" / "subscribers").column("email").to_pylist()
        assert sorted(emails) == sorted(store.subscribers)

        changed = sorted(store.subscribers)[3]
        emu.store.touch_subscriber(changed, plan="enterprise")
        bento_to_parquet.run(**kwargs)
        second = rows_per_table(out / "bento")
    # lists replaced (same rows), stats and the one changed subscriber appended
    assert {name: second[name] for name in want} == {**want, "subscribers": 231, "site_stats": 2,
                                                     "segment_stats": 2 * len(store.segments)}
    table = pq.read_table(out / "bento" / "subscribers").to_pandas()
    latest = table.sort_values("updated_at").groupby("id").tail(1)
    assert len(latest) == 230
    assert latest.loc[latest["email"] == changed, "fields__plan"].item() == "enterprise"


def test_command_line_demo_writes_parquet(tmp_path: Path) -> None:
    code = bento_to_parquet.main(["--emulator", "--resources", "tags", "broadcasts", "--out", str(tmp_path / "out"),
                                  "--pipelines-dir", str(tmp_path / "p"), "--pipeline-name", "pq_demo"])
    assert code == 0
    assert rows_per_table(tmp_path / "out" / "bento") == {"broadcasts": 500, "tags": 12}
