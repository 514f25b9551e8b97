"""The sync ledger: what Bento acknowledged survives restarts, crashes, threads and lost working folders."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import fsspec  # type: ignore[import-untyped]  # fsspec ships no type hints
import pyarrow as pa
import pytest

from bento_destination import ledger as ledger_module
from bento_destination.ledger import (
    BlastRadiusExceeded,
    LedgerError,
    SegmentStore,
    SyncLedger,
    check_blast_radius,
    derive_event_key,
    event_ledger_key,
    fingerprint,
)

SITE = "site-uuid-1"
REPO = Path(__file__).resolve().parent.parent

Opener = Callable[[], SyncLedger]


@pytest.fixture
def memory_url() -> Iterator[str]:
    """A fresh memory:// folder; fsspec's memory store is process-global, so clean it afterwards."""
    url = f"memory://ledger-{uuid.uuid4().hex}"
    yield url
    fs = fsspec.filesystem("memory")
    path = url[len("memory://") :]
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.fixture(params=["duckdb", "file_url", "plain_dir", "memory"])
def location(request: pytest.FixtureRequest, tmp_path: Path, memory_url: str) -> str:
    """Every storage kind the ledger supports."""
    kind = request.param
    if kind == "duckdb":
        return str(tmp_path / "work" / "bento_ledger.duckdb")
    if kind == "file_url":
        return (tmp_path / "ledger").as_uri()
    if kind == "plain_dir":
        return str(tmp_path / "ledger")
    return memory_url


@pytest.fixture
def reopen(location: str) -> Iterator[Opener]:
    """Open the ledger at ``location``; every ledger opened is closed at the end."""
    opened: list[SyncLedger] = []

    def _open() -> SyncLedger:
        ledger = SyncLedger.open(location, site=SITE)
        opened.append(ledger)
        return ledger

    yield _open
    for ledger in opened:
        ledger.close()


def pairs(n: int, start: int = 0, version: str = "v1") -> list[tuple[str, str]]:
    return [
        (f"user{i}@example.com", fingerprint({"email": f"user{i}@example.com", "v": version}))
        for i in range(start, start + n)
    ]


# --------------------------------------------------------------------------- fingerprints and keys


def test_fingerprint_is_canonical() -> None:
    a = fingerprint({"email": "a@x.com", "fields": {"b": 1, "a": [1, 2]}})
    b = fingerprint({"fields": {"a": [1, 2], "b": 1}, "email": "a@x.com"})
    assert a == b
    assert len(a) == 32 and int(a, 16) >= 0
    assert fingerprint({"email": "a@x.com", "fields": {"b": 2, "a": [1, 2]}}) != a
    assert fingerprint({"name": "Zoë"}) == fingerprint({"name": "Zo\u00eb"})
    assert SyncLedger.fingerprint({"x": 1}) == fingerprint({"x": 1})
    with pytest.raises(TypeError, match="cannot fingerprint"):
        fingerprint({"x": object()})


def test_derived_event_key_depends_on_content_only() -> None:
    key = derive_event_key("A@X.com ", "$purchase", "2024-05-01T10:00:00Z", {"value": 10, "sku": "a"})
    assert key == derive_event_key("a@x.com", "$purchase", "2024-05-01T10:00:00+00:00", {"sku": "a", "value": 10})
    assert key == derive_event_key("a@x.com", "$purchase", "2024-05-01T12:00:00+02:00", '{"sku": "a", "value": 10}')
    assert key == derive_event_key(
        "a@x.com", "$purchase", "2024-05-01T10:00:00Z", {"sku": "a", "value": 10, "unique": {"key": "x"}}
    )
    assert key != derive_event_key("a@x.com", "$purchase", "2024-05-01T10:00:01Z", {"sku": "a", "value": 10})
    assert key != derive_event_key("b@x.com", "$purchase", "2024-05-01T10:00:00Z", {"sku": "a", "value": 10})
    assert key != derive_event_key("a@x.com", "$refund", "2024-05-01T10:00:00Z", {"sku": "a", "value": 10})
    assert derive_event_key("a@x.com", "$login") == derive_event_key("a@x.com", "$login", None, None)


def test_event_ledger_key_is_scoped_like_bento() -> None:
    """Bento keeps one event per (email, type, key): the same key for two people is two events."""
    assert event_ledger_key("a@x.com", "t", "order-1") != event_ledger_key("b@x.com", "t", "order-1")
    assert event_ledger_key("a@x.com", "t", "order-1") != event_ledger_key("a@x.com", "u", "order-1")
    assert event_ledger_key(" A@x.com", "t", "order-1") == event_ledger_key("a@x.com", "t", "order-1")


# --------------------------------------------------------------------------- partition, durability


def test_partition_new_changed_unchanged(reopen: Opener) -> None:
    ledger = reopen()
    first = pairs(5)
    assert ledger.partition("subscribers", first) == ([0, 1, 2, 3, 4], [], [])
    ledger.acknowledge("subscribers", first)
    batch = [first[0], (first[1][0], fingerprint({"changed": True})), ("new@example.com", "f"), first[3]]
    assert ledger.partition("subscribers", batch) == ([2], [1], [0, 3])
    assert ledger.partition("events", first) == ([0, 1, 2, 3, 4], [], [])
    assert ledger.partition("subscribers", []) == ([], [], [])
    assert ledger.known_audience() == 5


def test_acknowledge_is_durable_across_reopen(reopen: Opener) -> None:
    ledger = reopen()
    ledger.acknowledge("subscribers", pairs(100))
    ledger.acknowledge("subscribers", pairs(10, version="v2"))
    ledger.acknowledge("events", [("evt-1", "f1"), ("evt-2", "f2")])
    ledger.close()
    again = reopen()
    new, changed, unchanged = again.partition(
        "subscribers", pairs(10, version="v2") + pairs(90, start=10) + pairs(1, 500)
    )
    assert (new, changed, unchanged) == ([100], [], list(range(100)))
    assert again.seen("events", ["evt-1", "evt-3", "evt-2"]) == {"evt-1", "evt-2"}
    assert again.known_audience() == 100
    assert again.known_audience("events") == 2


def test_last_pair_wins_within_one_batch(reopen: Opener) -> None:
    ledger = reopen()
    ledger.acknowledge("subscribers", [("a@x.com", "one"), ("a@x.com", "two")])
    assert ledger.partition("subscribers", [("a@x.com", "two"), ("a@x.com", "one")]) == ([], [1], [0])
    assert ledger.known_audience() == 1


def test_arrow_table_of_pairs_is_accepted(reopen: Opener) -> None:
    ledger = reopen()
    ledger.acknowledge("subscribers", pa.table({"k": ["a@x.com", "b@x.com"], "f": ["1", "2"]}))
    assert ledger.partition("subscribers", pa.table({"k": ["a@x.com", "b@x.com"], "f": ["1", "3"]})) == ([], [1], [0])


def test_transaction_commits_all_or_nothing(reopen: Opener) -> None:
    ledger = reopen()
    with pytest.raises(RuntimeError), ledger.transaction() as tx:
        tx.acknowledge("subscribers", pairs(3))
        tx.add_owned_tags([("user0@example.com", "vip")])
        raise RuntimeError("Bento answered 500")
    assert ledger.known_audience() == 0
    assert ledger.owned_tags(["user0@example.com"]) == {"user0@example.com": set()}
    with ledger.transaction() as tx:
        tx.acknowledge("subscribers", pairs(3))
        tx.add_owned_tags([("user0@example.com", "vip")])
        tx.mark_unsubscribed(["user2@example.com"])
    ledger.close()
    again = reopen()
    assert again.known_audience() == 3
    assert again.owned_tags(["user0@example.com"]) == {"user0@example.com": {"vip"}}
    assert again.unsubscribed(["user2@example.com", "user1@example.com"]) == {"user2@example.com"}


def test_sites_are_kept_apart(location: str) -> None:
    with SyncLedger.open(location, site="site-a") as a:
        a.acknowledge("subscribers", pairs(3))
    with SyncLedger.open(location, site="site-b") as b:
        assert b.partition("subscribers", pairs(3)) == ([0, 1, 2], [], [])
        assert b.known_audience() == 0


def test_full_resync_ignores_fingerprints_but_still_records(reopen: Opener, location: str) -> None:
    ledger = reopen()
    ledger.acknowledge("subscribers", pairs(3))
    ledger.acknowledge("events", [("e1", "f")])
    ledger.mark_unsubscribed(["user1@example.com"])
    ledger.close()
    with SyncLedger.open(location, site=SITE, full_resync=True) as resync:
        assert resync.partition("subscribers", pairs(3)) == ([0, 1, 2], [], [])
        assert resync.seen("events", ["e1"]) == set()
        assert resync.unsubscribed(["user1@example.com"]) == {"user1@example.com"}  # consent is never ignored
        resync.acknowledge("subscribers", pairs(4, version="v2"))
    assert reopen().partition("subscribers", pairs(4, version="v2")) == ([], [], [0, 1, 2, 3])


def test_concurrent_acknowledge_loses_nothing(reopen: Opener) -> None:
    ledger = reopen()
    errors: list[BaseException] = []

    def worker(thread: int) -> None:
        try:
            for batch in range(6):
                start = thread * 1000 + batch * 50
                ledger.acknowledge("subscribers", pairs(50, start=start))
                ledger.partition("subscribers", pairs(50, start=start))
        except BaseException as exc:  # surfaced below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ledger.close()
    again = reopen()
    assert again.known_audience() == 8 * 6 * 50
    everything = [p for t in range(8) for p in pairs(300, start=t * 1000)]
    assert again.partition("subscribers", everything)[2] == list(range(2400))


def test_a_million_keys_partition_correctly(tmp_path: Path) -> None:
    """Bulk path: one join, not a million lookups. Timing belongs to bench/, only correctness here."""
    n = 1_000_000
    keys = pa.array([f"user{i}@example.com" for i in range(n)])
    fps = pa.array([f"{i:032x}" for i in range(n)])
    with SyncLedger.open(tmp_path / "ledger.duckdb", site=SITE) as ledger:
        ledger.acknowledge("subscribers", pa.table({"k": keys, "f": fps}))
        assert ledger.known_audience() == n
        assert ledger.partition("subscribers", pa.table({"k": keys, "f": fps})) == ([], [], list(range(n)))
        changed = [f"{i:032x}" if i % 100 else "changed" for i in range(n)]
        batch = pa.table({"k": pa.concat_arrays([keys, pa.array(["new@example.com"])]), "f": [*changed, "x"]})
        new, changed_idx, unchanged = ledger.partition("subscribers", batch)
        assert new == [n]
        assert changed_idx == list(range(0, n, 100))
        assert len(unchanged) == n - n // 100
        # the acceptance arithmetic: 1% changed means ceil(10,000 / 1000) full batches
        assert math.ceil(len(changed_idx) / 1000) == 10


# --------------------------------------------------------------------------- where it lives


def test_folder_url_survives_deleting_the_pipeline_working_folder(tmp_path: Path) -> None:
    working = tmp_path / "pipelines" / "crm_to_bento"
    working.mkdir(parents=True)
    url = (tmp_path / "shared" / "bento-ledger").as_uri()
    with SyncLedger.open(url, site=SITE, default_path=working / "bento_ledger.duckdb") as ledger:
        ledger.acknowledge("subscribers", pairs(200))
    shutil.rmtree(tmp_path / "pipelines")
    with SyncLedger.open(url, site=SITE, default_path=working / "bento_ledger.duckdb") as ledger:
        assert ledger.partition("subscribers", pairs(200)) == ([], [], list(range(200)))
    assert not working.exists()  # the folder ledger never wrote to the working folder


def test_default_path_is_a_local_duckdb_file(tmp_path: Path) -> None:
    default = tmp_path / "pipelines" / "p" / "bento_ledger.duckdb"
    with SyncLedger.open(None, site=SITE, default_path=default) as ledger:
        ledger.acknowledge("subscribers", pairs(2))
        assert ledger.segment_count() == 0
    assert default.exists()
    with pytest.raises(ValueError, match="no ledger location"):
        SyncLedger.open(None, site=SITE)


def test_segment_layout_on_a_folder(tmp_path: Path) -> None:
    with SyncLedger.open(str(tmp_path / "l"), site=SITE) as ledger:
        ledger.acknowledge("subscribers", pairs(2))
        ledger.acknowledge("events", [("e", "f")])
        assert ledger.segment_count() == 2
    names = sorted(os.listdir(tmp_path / "l" / SITE))
    assert len(names) == 2
    assert all(n.startswith("segment-") and n.endswith(".parquet") for n in names)


def test_bad_locations_and_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="must be local"):
        SyncLedger.open("s3://bucket/ledger.duckdb", site=SITE)
    with pytest.raises(ValueError, match="site"):
        SyncLedger.open(str(tmp_path), site="../etc")
    with SyncLedger.open(tmp_path / "l.duckdb", site=SITE) as ledger:
        with pytest.raises(ValueError, match="operation"):
            ledger.partition("_tags", [])
        with pytest.raises(ValueError, match="missing"):
            ledger.acknowledge("subscribers", [("a@x.com", None)])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="string"):
            ledger.acknowledge("subscribers", [(1, "f")])  # type: ignore[list-item]
    with pytest.raises(LedgerError, match="closed"):
        ledger.partition("subscribers", [])


def test_a_duckdb_ledger_in_use_by_another_process_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "l.duckdb"
    code = (
        "import sys, time; from bento_destination.ledger import SyncLedger;"
        f"l = SyncLedger.open({str(path)!r}, site={SITE!r}); print('ready', flush=True); time.sleep(30)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(LedgerError, match="Another process"):
            SyncLedger.open(path, site=SITE)
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- crashes


def test_crash_before_the_segment_is_published_keeps_the_ledger_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, memory_url: str
) -> None:
    for url in ((tmp_path / "l").as_uri(), memory_url):
        with SyncLedger.open(url, site=SITE) as ledger:
            ledger.acknowledge("subscribers", pairs(10))

            def crash(self: SegmentStore, tmp: str, final: str) -> None:
                raise OSError("killed between writing the temporary segment and renaming it")

            with monkeypatch.context() as patch:
                patch.setattr(SegmentStore, "_rename", crash)
                with pytest.raises(LedgerError, match="sent again next run"):
                    ledger.acknowledge("subscribers", pairs(10, start=10) + pairs(5, version="v2"))
            # nothing of the failed batch is visible, in this process or after a restart
            assert ledger.partition("subscribers", pairs(10) + pairs(1, start=10)) == ([10], [], list(range(10)))
        with SyncLedger.open(url, site=SITE) as ledger:
            assert ledger.partition("subscribers", pairs(15)) == (list(range(10, 15)), [], list(range(10)))
            assert ledger.segment_count() == 1  # the leftover .tmp- file is not a segment
            ledger.acknowledge("subscribers", pairs(15, version="v3"))
        with SyncLedger.open(url, site=SITE) as ledger:
            assert ledger.partition("subscribers", pairs(15, version="v3"))[2] == list(range(15))


def test_duckdb_file_is_durable_when_acknowledge_returns(tmp_path: Path) -> None:
    """The process dies (no close, no atexit) right after acknowledge: the rows are there."""
    path = tmp_path / "l.duckdb"
    code = (
        "import os; from bento_destination.ledger import SyncLedger;"
        f"l = SyncLedger.open({str(path)!r}, site={SITE!r});"
        "l.acknowledge('subscribers', [('u%d@x.com' % i, 'f') for i in range(1000)]);"
        "os._exit(0)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
    with SyncLedger.open(path, site=SITE) as ledger:
        assert ledger.known_audience() == 1000


def test_compaction_replaces_many_segments_and_survives_a_crash_mid_delete(
    memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SyncLedger.open(memory_url, site=SITE) as ledger:
        for i in range(12):
            ledger.acknowledge("subscribers", pairs(5, start=i * 5))
        ledger.add_owned_tags([("user1@example.com", "vip"), ("user1@example.com", "beta")])
        ledger.remove_owned_tags([("user1@example.com", "beta")])
        ledger.mark_unsubscribed(["user2@example.com", "user3@example.com"])
        ledger.clear_unsubscribed(["user3@example.com"])
        ledger.reset("events")
        assert ledger.segment_count() == 17

    def expect_state(led: SyncLedger) -> None:
        assert led.partition("subscribers", pairs(60)) == ([], [], list(range(60)))
        assert led.owned_tags(["user1@example.com"]) == {"user1@example.com": {"vip"}}
        assert led.unsubscribed(["user2@example.com", "user3@example.com"]) == {"user2@example.com"}

    # a crash after the compacted segment is published but before the old ones are deleted
    with monkeypatch.context() as patch:
        patch.setattr(SegmentStore, "delete", lambda self, paths: None)
        with SyncLedger.open(memory_url, site=SITE, compact_after=4) as ledger:
            expect_state(ledger)
            assert ledger.segment_count() == 18
    with SyncLedger.open(memory_url, site=SITE) as ledger:
        expect_state(ledger)
    # a completed compaction: one segment, same state; tombstones keep old segments overruled
    with SyncLedger.open(memory_url, site=SITE, compact_after=4) as ledger:
        expect_state(ledger)
        assert ledger.segment_count() == 1
    with SyncLedger.open(memory_url, site=SITE) as ledger:
        expect_state(ledger)
        ledger.compact()
        assert ledger.segment_count() == 1


# --------------------------------------------------------------------------- reset, consent, tags


def test_reset(reopen: Opener) -> None:
    ledger = reopen()
    ledger.acknowledge("subscribers", pairs(3))
    ledger.acknowledge("events", [("e1", "f")])
    ledger.mark_unsubscribed(["user0@example.com"])
    ledger.add_owned_tags([("user0@example.com", "vip")])
    ledger.reset("events")
    assert ledger.seen("events", ["e1"]) == set()
    assert ledger.known_audience() == 3
    ledger.reset()
    assert ledger.known_audience() == 0
    assert ledger.unsubscribed(["user0@example.com"]) == {"user0@example.com"}  # consent survives a reset
    assert ledger.owned_tags(["user0@example.com"])["user0@example.com"] == {"vip"}
    with ledger.transaction() as tx:  # a reset followed by an acknowledgement in one commit keeps the latter
        tx.reset("subscribers")
        tx.acknowledge("subscribers", pairs(1))
    ledger.close()
    again = reopen()
    assert again.known_audience() == 1
    assert again.seen("events", ["e1"]) == set()
    assert again.unsubscribed(["user0@example.com"]) == {"user0@example.com"}
    again.reset(consent=True, tags=True)
    assert again.unsubscribed(["user0@example.com"]) == set()
    assert again.owned_tags(["user0@example.com"])["user0@example.com"] == set()
    again.close()
    assert reopen().known_audience() == 0


def test_tag_ownership(reopen: Opener) -> None:
    ledger = reopen()
    ledger.add_owned_tags([(" User1@Example.com", "vip"), ("user1@example.com", "trial"), ("user2@example.com", "vip")])
    ledger.remove_owned_tags([("user1@example.com", "trial"), ("user2@example.com", "never-added")])
    ledger.close()
    again = reopen()
    assert again.owned_tags(["user1@example.com", "USER2@example.com", "user3@example.com"]) == {
        "user1@example.com": {"vip"},
        "user2@example.com": {"vip"},
        "user3@example.com": set(),
    }
    assert again.owned_tags("user1@example.com") == {"user1@example.com": {"vip"}}
    assert again.known_audience() == 0  # tags are not audience


def test_consent_memory(reopen: Opener) -> None:
    ledger = reopen()
    ledger.mark_unsubscribed(["A@x.com", "b@x.com"])
    ledger.mark_unsubscribed("c@x.com")
    ledger.clear_unsubscribed(["b@x.com"])
    ledger.close()
    again = reopen()
    assert again.unsubscribed(["a@x.com", "B@x.com", "c@x.com", "d@x.com"]) == {"a@x.com", "c@x.com"}
    assert again.unsubscribed([]) == set()


# --------------------------------------------------------------------------- blast radius


def test_blast_radius() -> None:
    check_blast_radius(would_unsubscribe=100, would_remove_tags=100, known_audience=1000, max_share=0.1)
    with pytest.raises(BlastRadiusExceeded, match=r"unsubscribe 101 people \(10.1% of 1,000 known\)") as info:
        check_blast_radius(would_unsubscribe=101, would_remove_tags=0, known_audience=1000, max_share=0.1)
    assert "nothing" in str(info.value) and "force=True" in str(info.value)
    assert info.value.would_unsubscribe == 101 and info.value.known_audience == 1000
    with pytest.raises(BlastRadiusExceeded, match="remove tags from 500 people"):
        check_blast_radius(would_unsubscribe=0, would_remove_tags=500, known_audience=1000, max_share=0.1)
    with pytest.raises(BlastRadiusExceeded, match="all of 0 known"):
        check_blast_radius(would_unsubscribe=1, would_remove_tags=0, known_audience=0, max_share=0.5)
    check_blast_radius(would_unsubscribe=0, would_remove_tags=0, known_audience=0, max_share=0.0)
    check_blast_radius(would_unsubscribe=1000, would_remove_tags=1000, known_audience=1000, max_share=0.1, force=True)
    with pytest.raises(ValueError, match="max_share"):
        check_blast_radius(would_unsubscribe=0, would_remove_tags=0, known_audience=10, max_share=1.5)


def test_module_exports_what_the_sink_needs() -> None:
    for name in ledger_module.__all__:
        assert hasattr(ledger_module, name), name
