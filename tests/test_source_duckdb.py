"""bento_source into DuckDB over real HTTP against the emulator (issue 4 acceptance).

Budgets are raised on both sides (emulator and client) so the tests run in seconds; the defaults stay
Bento's safe 60/min and stats 30/hour.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dlt
import duckdb
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed

from bento_api.emulator import BentoEmulator, EmulatorConfig, Fault
from bento_api.emulator import api as emulator_api
from bento_api.emulator import views as emulator_views
from bento_api.emulator.records import RequestRecord
from bento_api.emulator.store import Store
from bento_api.timestamps import format_bento
from bento_source import SUBSCRIBERS_OVERLAP, SearchUnavailableError, subscribers_by_email
from bento_source.settings import BROADCAST_STATUSES
from pipelines import bento_to_duckdb
from pipelines.bento_to_duckdb import explain

FAST: dict[str, float] = {"requests_per_minute": 60_000.0, "stats_requests_per_hour": 100_000.0}
PAGE_SIZE = 25


def emulator_config(**overrides: Any) -> EmulatorConfig:
    settings: dict[str, Any] = {
        "seed": 11, "page_size": PAGE_SIZE, "broadcasts": 500, "subscribers": 260, "sequences": 30,
        "workflows": 27, "requests_per_minute": 600_000.0, "stats_requests_per_hour": 1e9,
        "bucket_capacity": 1000.0, **overrides,
    }
    return EmulatorConfig(**settings)


def run_duckdb(emu: BentoEmulator, base: Path, name: str, **kwargs: Any) -> dlt.Pipeline:
    return bento_to_duckdb.run(
        duckdb_path=base / f"{name}.duckdb", pipelines_dir=base / "pipelines", pipeline_name=name,
        **emu.credentials, **FAST, **kwargs,
    )


def query(pipeline: dlt.Pipeline, sql: str) -> list[tuple[Any, ...]]:
    """Run SQL where `{t}` placeholders name tables of the pipeline's dataset."""
    with pipeline.sql_client() as client:
        qualified = client.make_qualified_table_name
        tables = {"tags", "fields", "segments", "broadcasts", "sequences", "workflows", "email_templates",
                  "subscribers", "site_stats", "segment_stats", "subscribers__tags", "sequences__email_templates"}
        return [tuple(row) for row in client.execute_sql(sql.format(**{t: qualified(t) for t in tables}))]


def ids(pipeline: dlt.Pipeline, table: str) -> list[str]:
    return sorted(row[0] for row in query(pipeline, f"select id from {{{table}}}"))


def expected(store: Store) -> dict[str, Any]:
    """What the emulator holds, as the source should load it."""
    templates = {tid for seq in store.sequences for tid in seq.template_ids}
    templates |= {tid for wf in store.workflows for tid in wf.template_ids}
    return {
        "tags": sorted(str(t) for t in store.tags),
        "fields": sorted(str(f) for f in store.fields),
        "segments": sorted(str(s) for s in store.segments),
        "broadcasts": sorted((str(b.id), b.status) for b in store.broadcasts),
        "sequences": sorted((str(s.id), s.prefix_id) for s in store.sequences),
        "workflows": sorted(str(w.id) for w in store.workflows),
        "email_templates": sorted(str(t) for t in templates),
        "subscribers": sorted((str(s.id), s.email, s.updated_at) for s in store.subscribers.values()),
    }


def assert_matches_store(pipeline: dlt.Pipeline, store: Store) -> None:
    want = expected(store)
    for table in ("tags", "fields", "segments", "workflows", "email_templates"):
        assert ids(pipeline, table) == want[table], table
    assert sorted(query(pipeline, "select id, status from {broadcasts}")) == want["broadcasts"]
    assert sorted(query(pipeline, "select id, prefix_id from {sequences}")) == want["sequences"]
    assert sorted(query(pipeline, "select id, email, updated_at from {subscribers}")) == want["subscribers"]


def pages(records: list[RequestRecord], path: str, **query_filter: str) -> list[int]:
    """Page numbers answered 200 for a list path, in request order (page in the query or the body)."""
    out = []
    for r in records:
        if r.path != path or r.status != 200 or any(r.query.get(k) != v for k, v in query_filter.items()):
            continue
        out.append(int(r.body["page"]) if isinstance(r.body, dict) and "page" in r.body else int(r.query["page"]))
    return out


def assert_walked_once(records: list[RequestRecord], path: str, rows: int, page_size: int, **q: str) -> None:
    """page=1..k+1 exactly once each: k full-or-short pages of data, then one empty page."""
    k = math.ceil(rows / page_size)
    assert pages(records, path, **q) == list(range(1, k + 2)), (path, q)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """Run 1, change one subscriber in the emulator, run 2; keep what each run asked and loaded."""
    base = tmp_path_factory.mktemp("duckdb")
    with BentoEmulator(emulator_config()) as emu:
        pipeline = run_duckdb(emu, base, "acceptance")
        first = SimpleNamespace(
            log=emu.request_log,
            counts=dict(pipeline.last_trace.last_normalize_info.row_counts),
            expected=expected(emu.store),
        )
        cursor = max(s.updated_at for s in emu.store.subscribers.values())
        changed = sorted(emu.store.subscribers)[7]
        emu.store.touch_subscriber(changed, first_name="Changed")
        emu.reset_log()
        pipeline = run_duckdb(emu, base, "acceptance")
        yield SimpleNamespace(
            emu=emu, pipeline=pipeline, first=first, cursor=cursor, changed=changed,
            second_log=emu.request_log, second_counts=dict(pipeline.last_trace.last_normalize_info.row_counts),
        )


def test_first_run_loads_exactly_the_emulators_rows(two_runs: SimpleNamespace) -> None:
    counts = two_runs.first.counts
    want = two_runs.first.expected
    assert counts["broadcasts"] == 500 and {s for _, s in want["broadcasts"]} == set(BROADCAST_STATUSES)
    for table in ("tags", "fields", "segments", "broadcasts", "sequences", "workflows", "email_templates",
                  "subscribers"):
        assert counts[table] == len(want[table]), table
    assert counts["site_stats"] == 1 and counts["segment_stats"] == len(want["segments"])


def test_each_list_is_walked_once_to_exactly_one_empty_page(two_runs: SimpleNamespace) -> None:
    log, store = two_runs.first.log, two_runs.emu.store
    for status in BROADCAST_STATUSES:
        count = sum(1 for b in store.broadcasts if b.status == status)
        assert_walked_once(log, "/fetch/broadcasts", count, PAGE_SIZE, status=status)
    # one walk each, although sequences, workflows and email_templates all read them
    assert_walked_once(log, "/fetch/sequences", len(store.sequences), PAGE_SIZE)
    assert_walked_once(log, "/fetch/workflows", len(store.workflows), PAGE_SIZE)
    assert_walked_once(log, "/fetch/search", len(store.subscribers), 100)
    search = [r for r in log if r.path == "/fetch/search"]
    assert {r.method for r in search} == {"GET"} and all("updated_at" not in r.body for r in search)
    # tags read once although both `tags` and subscribers' tag names need them; each template once
    assert len([r for r in log if r.path == "/fetch/tags"]) == 1
    template_paths = [r.path for r in log if r.path.startswith("/fetch/emails/templates/")]
    assert len(template_paths) == len(set(template_paths)) == len(two_runs.first.expected["email_templates"])


def test_second_run_adds_no_duplicates_and_updates_the_changed_subscriber(two_runs: SimpleNamespace) -> None:
    pipeline, first = two_runs.pipeline, two_runs.first
    for table in ("tags", "fields", "segments", "broadcasts", "sequences", "workflows", "email_templates",
                  "subscribers"):
        total, distinct = query(pipeline, f"select count(*), count(distinct id) from {{{table}}}")[0]
        assert total == distinct == first.counts[table], table
    for child in ("subscribers__tags", "sequences__email_templates"):
        assert query(pipeline, f"select count(*) from {{{child}}}")[0][0] == first.counts[child]
    # stats are snapshots: one more row per run
    assert query(pipeline, "select count(*), count(distinct snapshot_at) from {site_stats}")[0] == (2, 2)
    segments = len(first.expected["segments"])
    assert query(pipeline, "select count(*) from {segment_stats}")[0][0] == 2 * segments
    # only the changed subscriber was loaded again, and it now holds the new values
    assert two_runs.second_counts["subscribers"] == 1
    sub = two_runs.emu.store.subscribers[two_runs.changed]
    row = query(pipeline, f"select fields__first_name, updated_at from {{subscribers}} where id = '{sub.id}'")
    assert row == [("Changed", sub.updated_at)]
    assert_matches_store(pipeline, two_runs.emu.store)


def test_tag_names_sit_on_each_subscriber_row_and_the_child_table_remains(two_runs: SimpleNamespace) -> None:
    pipeline, store = two_runs.pipeline, two_runs.emu.store
    rows = query(pipeline, "select id, tag_names, typeof(tag_names) from {subscribers}")
    assert {kind for _, _, kind in rows} == {"JSON"}
    loaded = {row_id: json.loads(names) for row_id, names, _ in rows}
    want = {str(sub.id): store.tag_names(sub) for sub in store.subscribers.values()}
    assert loaded == want and any(want.values())
    # the same names as the child table joined on _dlt_parent_id, which existing users keep reading
    joined = query(pipeline, "select s.id, c.value from {subscribers} s join {subscribers__tags} c "
                             "on c._dlt_parent_id = s._dlt_id order by s.id, c._dlt_list_idx")
    from_child: dict[str, list[str]] = {}
    for row_id, name in joined:
        from_child.setdefault(row_id, []).append(name)
    assert from_child == {row_id: names for row_id, names in want.items() if names}
    # DuckDB reads the JSON list as a list directly
    tagged = query(pipeline, "select count(*) from {subscribers} where len(tag_names::varchar[]) > 0")[0][0]
    assert tagged == len(from_child)


def test_second_search_starts_at_the_cursor_minus_the_overlap(two_runs: SimpleNamespace) -> None:
    search = [r for r in two_runs.second_log if r.path == "/fetch/search"]
    gt = format_bento(two_runs.cursor - SUBSCRIBERS_OVERLAP)
    assert [r.body for r in search] == [{"page": 1, "updated_at": {"gt": gt}}, {"page": 2, "updated_at": {"gt": gt}}]


def test_load_completes_with_the_same_rows_under_429s_and_5xx(tmp_path: Path) -> None:
    faults = (
        # few: each costs the client's real wait (5xx: backoff 0.5-1 s; 429: Retry-After, whole seconds)
        Fault(kind="server_error", probability=0.1, count=3),
        Fault(kind="rate_limit", probability=0.1, count=3),
        Fault(kind="html_error", probability=0.05, count=1),
    )
    with BentoEmulator(emulator_config(faults=faults)) as emu:
        pipeline = run_duckdb(emu, tmp_path, "faults")
        statuses = [r.status for r in emu.request_log]
        assert_matches_store(pipeline, emu.store)
        store = emu.store
        for status in BROADCAST_STATUSES:
            count = sum(1 for b in store.broadcasts if b.status == status)
            assert_walked_once(emu.request_log, "/fetch/broadcasts", count, PAGE_SIZE, status=status)
    assert statuses.count(429) >= 1 and sum(1 for s in statuses if s >= 500) >= 1


def test_wrong_credentials_fail_fast_and_write_no_table(tmp_path: Path) -> None:
    with BentoEmulator(emulator_config()) as emu:
        creds = {**emu.credentials, "secret_key": "sk_wrong_0000000000000000000000000"}
        with pytest.raises(PipelineStepFailed) as failure:
            bento_to_duckdb.run(duckdb_path=tmp_path / "x.duckdb", pipelines_dir=tmp_path / "p",
                                pipeline_name="wrong", **creds, **FAST)
        log = emu.request_log
    message = explain(failure.value)
    assert "401" in message and "publishable_key, secret_key and site_uuid" in message
    assert "sk_wrong" not in message
    assert 1 <= len(log) <= 4 and {r.status for r in log} == {401}  # no retries, no walk past the first answer
    if (tmp_path / "x.duckdb").exists():
        with duckdb.connect(str(tmp_path / "x.duckdb")) as db:
            tables = db.execute("select table_name from information_schema.tables where table_schema = 'bento'")
            assert tables.fetchall() == []


def test_command_line_exits_1_with_the_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with BentoEmulator(emulator_config()) as emu:
        for key, value in emu.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("BENTO_PUBLISHABLE_KEY", "pk_wrong_000000000000000000000000")
        code = bento_to_duckdb.main(["--resources", "tags", "--pipelines-dir", str(tmp_path / "p"),
                                     "--out", str(tmp_path / "cli.duckdb"), "--pipeline-name", "cli"])
    assert code == 1
    assert "401" in capsys.readouterr().err


def test_missing_credentials_name_every_missing_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SITE_UUID", "PUBLISHABLE_KEY", "SECRET_KEY", "BASE_URL"):
        monkeypatch.delenv(f"BENTO_{key}", raising=False)
        monkeypatch.delenv(f"SOURCES__BENTO__{key}", raising=False)
    with pytest.raises(PipelineStepFailed) as failure:
        bento_to_duckdb.run(duckdb_path=tmp_path / "m.duckdb", pipelines_dir=tmp_path / "p", pipeline_name="m",
                            resources=["tags"])
    message = explain(failure.value)
    assert "site_uuid" in message and "publishable_key" in message and "secret_key" in message


def test_templates_are_read_side_by_side_within_the_in_flight_cap(tmp_path: Path) -> None:
    latency = Fault(kind="latency", seconds=0.05, path_prefix="/fetch/emails/templates")
    with BentoEmulator(emulator_config(faults=(latency,))) as emu:
        run_duckdb(emu, tmp_path, "templates", resources=["email_templates"])
        reads = [r for r in emu.request_log if r.path.startswith("/fetch/emails/templates/")]
        other = {r.path for r in emu.request_log} - {r.path for r in reads}
    assert other == {"/fetch/sequences", "/fetch/workflows"}
    spans = [(r.t, r.t + r.duration) for r in reads]
    peak = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    assert 2 <= peak <= 8


def test_selecting_one_resource_loads_only_its_table(tmp_path: Path) -> None:
    with BentoEmulator(emulator_config()) as emu:
        pipeline = run_duckdb(emu, tmp_path, "only_sequences", resources=["sequences"])
        counts = pipeline.last_trace.last_normalize_info.row_counts
    assert {name for name in counts if not name.startswith("_dlt")} == {"sequences", "sequences__email_templates"}
    assert counts["sequences"] == 30


def test_a_relative_duckdb_path_lands_in_the_current_folder_on_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dlt records a run's DuckDB path in the pipeline and reuses it for a relative path on later runs."""
    with BentoEmulator(emulator_config()) as emu:
        for folder in ("first", "second"):
            (tmp_path / folder).mkdir()
            monkeypatch.chdir(tmp_path / folder)
            bento_to_duckdb.run(duckdb_path="bento_data.duckdb", pipelines_dir=tmp_path / "pipelines",
                                pipeline_name="moved", resources=["tags"], **emu.credentials, **FAST)
            if folder == "first":
                before = (tmp_path / "first" / "bento_data.duckdb").stat().st_mtime_ns
    assert (tmp_path / "second" / "bento_data.duckdb").is_file()
    assert (tmp_path / "first" / "bento_data.duckdb").stat().st_mtime_ns == before


def test_search_falls_back_to_post_when_get_with_a_body_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(emulator_api.ROUTES, ("GET", "/fetch/search"))  # this server answers GET with 404
    with BentoEmulator(emulator_config()) as emu:
        pipeline = run_duckdb(emu, tmp_path, "post", resources=["subscribers"])
        search = [(r.method, r.status) for r in emu.request_log if r.path == "/fetch/search"]
        assert len(ids(pipeline, "subscribers")) == len(emu.store.subscribers)
    assert search == [("GET", 404), ("POST", 200), ("POST", 200), ("POST", 200), ("POST", 200)]


def test_account_without_search_gets_the_lookup_path(tmp_path: Path) -> None:
    with BentoEmulator(emulator_config(enterprise=False)) as emu:
        with pytest.raises(PipelineStepFailed) as failure:
            run_duckdb(emu, tmp_path, "no_search", resources=["subscribers"])
        assert isinstance(failure.value.exception.__cause__, SearchUnavailableError)
        message = explain(failure.value)
        assert "Enterprise" in message and "subscribers_by_email" in message
        assert "/fetch/subscribers?email=" in message

        people = sorted(emu.store.subscribers)[:3]
        pipeline = dlt.pipeline("lookup", pipelines_dir=str(tmp_path / "p"),
                                destination=dlt.destinations.duckdb(str(tmp_path / "lookup.duckdb")),
                                dataset_name="bento")
        emails = [people[0].upper(), *people, "nobody@example.com", "not-an-email"]
        pipeline.run(subscribers_by_email(emails, **emu.credentials, requests_per_minute=60_000))
        lookups = [r.query["email"] for r in emu.request_log if r.path == "/fetch/subscribers"]
        rows = query(pipeline, "select email from {subscribers}")
        tag_names = {t.name for t in emu.store.tags.values()}
        named = {row[0] for row in query(pipeline, "select value from {subscribers__tags}")}
    assert sorted(lookups) == sorted([*people, "nobody@example.com"])  # each address once, normalised
    assert sorted(r[0] for r in rows) == people
    assert named <= tag_names
    with_names = query(pipeline, "select tag_names from {subscribers}")
    assert all(set(json.loads(names)) <= tag_names for (names,) in with_names)


def test_rows_without_updated_at_fall_back_to_a_full_load_merged_on_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = emulator_views.visitor

    def without_updated_at(sub: Any) -> dict[str, Any]:
        item = original(sub)
        del item["attributes"]["updated_at"]
        return item

    monkeypatch.setattr(emulator_views, "visitor", without_updated_at)  # a server that omits updated_at
    with BentoEmulator(emulator_config(subscribers=120)) as emu:
        for _ in range(2):
            pipeline = run_duckdb(emu, tmp_path, "no_cursor", resources=["subscribers"])
            assert pipeline.last_trace.last_normalize_info.row_counts["subscribers"] == 120
        bodies = [r.body for r in emu.request_log if r.path == "/fetch/search"]
    assert bodies == [{"page": n} for n in (1, 2, 3)] * 2  # no cursor, so no filter: two full walks
    assert query(pipeline, "select count(*), count(distinct id) from {subscribers}") == [(120, 120)]


def test_initial_updated_at_bounds_the_first_run(tmp_path: Path) -> None:
    with BentoEmulator(emulator_config(subscribers=150)) as emu:
        pipeline = run_duckdb(emu, tmp_path, "initial", resources=["subscribers"],
                              subscribers_initial_updated_at="2024-06-01T00:00:00Z")
        body = next(r.body for r in emu.request_log if r.path == "/fetch/search")
        after = sorted(str(s.id) for s in emu.store.subscribers.values()
                       if s.updated_at > datetime(2024, 6, 1, tzinfo=UTC))
    assert body == {"page": 1, "updated_at": {"gt": "2024-06-01T00:00:00.000Z"}}
    assert ids(pipeline, "subscribers") == after and 0 < len(after) < 150


def test_command_line_demo_against_the_emulator(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = bento_to_duckdb.main(["--emulator", "--pipelines-dir", str(tmp_path / "p"),
                                 "--out", str(tmp_path / "demo.duckdb"), "--pipeline-name", "demo"])
    out = capsys.readouterr().out
    assert code == 0
    assert "broadcasts: 500" in out and "subscribers: 1000" in out
