"""Issue 8 acceptance: lost answers and a killed loader leave no duplicate keyed events.

The emulator applies some event batches and then drops the connection (`drop_after_apply`), the
loader runs in a subprocess and is SIGKILLed mid-run, then the same sync runs again. Every event
carries a key (half given as `unique_key`, half derived, as by default, identical rows numbered); the emulator's
store must then hold each event exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bento_api.emulator import BentoEmulator, EmulatorConfig, Fault
from bento_destination import close_clients
from bento_destination.changes import close_ledgers
from bento_destination.sync import sync

N = 8_000
CHILD = """
import json, sys
from bento_destination.sync import sync
rows = json.load(open(sys.argv[2]))
sync(rows, pipeline_name="crash", pipelines_dir=sys.argv[1], table_name="events", file_max_items=2000,
     requests_per_minute=float(sys.argv[3]), out=lambda _: None)
"""


@pytest.fixture
def emu() -> Iterator[BentoEmulator]:
    config = EmulatorConfig(requests_per_minute=1e7, stats_requests_per_hour=1e9, bucket_capacity=1e6, subscribers=0)
    with BentoEmulator(config) as emulator:
        yield emulator
    close_ledgers()
    close_clients()


def event_rows() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(N):
        # rows without unique_key come in identical pairs (i and i + 2): the second is numbered `key#2`
        n = i if i % 2 else i // 4 * 4
        row: dict[str, Any] = {
            "email": f"user{n % 400}@example.com", "type": "$purchase",
            "date": f"2024-05-01T{n // 3600:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z", "details": {"order": n},
        }
        if i % 2:
            row["unique_key"] = f"order-{i}"
        rows.append(row)
    return rows


def test_drop_after_apply_and_sigkill_leave_no_duplicate_keyed_events(
    emu: BentoEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = event_rows()
    data = tmp_path / "rows.json"
    data.write_text(json.dumps(rows))
    emu.add_fault(Fault("drop_after_apply", path_prefix="/batch/events", probability=0.3))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BENTO_", "DESTINATION__"))}
    env.update(emu.env())
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "pipelines"), str(data), "240"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len([r for r in emu.requests(path="/batch/events") if r.status == 200]) < 3:
            assert child.poll() is None, "the loader finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    before_rerun = len(emu.store.events)
    assert 0 < before_rerun < N

    for key in list(os.environ):
        if key.startswith(("BENTO_", "DESTINATION__", "DATA_WRITER__")):
            monkeypatch.delenv(key)
    sync(rows, pipeline_name="crash", pipelines_dir=tmp_path / "pipelines", table_name="events", file_max_items=2000,
         requests_per_minute=60_000.0, out=lambda _: None, **emu.credentials,
         reject_threshold=1.0)

    markers = Counter(
        (e.email, e.type, str((e.details or {}).get("unique", {}).get("key"))) for e in emu.store.events
    )
    assert all(e.details and e.details.get("unique", {}).get("key") for e in emu.store.events)
    assert max(markers.values()) == 1  # zero duplicates among keyed events
    assert len(emu.store.events) == N  # and none lost
    dropped = [r for r in emu.requests(path="/batch/events") if r.dropped]
    assert dropped  # the fault did fire: some batches were applied and their answers lost
    sent = sum(r.rows for r in emu.requests(path="/batch/events"))
    print(f"events stored before the rerun {before_rerun}, answers dropped {len(dropped)}, event rows sent {sent}, "
          f"stored {len(emu.store.events)}, max copies per key {max(markers.values())}")
