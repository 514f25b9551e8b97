"""dlt source for Bento (bentonow.com): lists, subscribers (incremental) and stats snapshots.

    from bento_source import bento_source
    pipeline.run(bento_source())                          # keys from [sources.bento] or BENTO_* env
    pipeline.run(bento_source().with_resources("tags", "subscribers"))

Every call goes through `bento_api.BentoClient` (pacing, retries, page walk); creating the source
calls nothing. See docs/source.md for the resources table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import dlt
from dlt.common.typing import TSecretStrValue
from dlt.extract.resource import DltResource
from dlt.extract.source import DltSource

from bento_api.facts import BROADCASTS_PATH, FIELDS_PATH, SEARCH_PAGE_SIZE, SEQUENCES_PATH, WORKFLOWS_PATH
from bento_api.timestamps import format_bento, parse_utc

from .helpers import (
    BentoContext,
    Row,
    SearchUnavailableError,
    announce_stats_time,
    flatten_page,
    iter_search_pages,
    list_rows,
    logger,
    lookup_subscriber,
    normalize_emails,
    read_templates,
    segment_stats_row,
    site_stats_row,
    subscriber_row,
    template_refs,
)
from .settings import (
    ALL_RESOURCES,
    BROADCAST_STATUSES,
    COLUMNS,
    LIST_RESOURCES,
    STATS_RESOURCES,
    SUBSCRIBERS_OVERLAP,
    SUBSCRIBERS_OVERLAP_SECONDS,
    TEMPLATE_WORKERS,
)

__all__ = [
    "ALL_RESOURCES",
    "BROADCAST_STATUSES",
    "LIST_RESOURCES",
    "STATS_RESOURCES",
    "SUBSCRIBERS_OVERLAP",
    "SearchUnavailableError",
    "apply_parquet_hints",
    "bento_source",
    "subscribers_by_email",
]

#: key in the subscribers resource state: {id: updated_at} of rows loaded inside the overlap window
RECENT_KEY = "recent_updates"


@dlt.source(name="bento")
def bento_source(
    site_uuid: TSecretStrValue | None = dlt.secrets.value,
    publishable_key: TSecretStrValue | None = dlt.secrets.value,
    secret_key: TSecretStrValue | None = dlt.secrets.value,
    base_url: str | None = dlt.config.value,
    requests_per_minute: float | None = None,
    stats_requests_per_hour: float | None = None,
    subscribers_initial_updated_at: str | None = None,
    segment_ids: list[str] | None = None,
    broadcast_statuses: list[str] | None = None,
) -> Sequence[DltResource]:
    """Bento's lists, subscribers and stats as dlt resources.

    Args:
        site_uuid, publishable_key, secret_key, base_url: keyword > `[sources.bento]` (or
            `SOURCES__BENTO__*`) > `BENTO_*` environment variables; resolved on the first request.
        requests_per_minute, stats_requests_per_hour: pacing budgets (defaults 60/min and 30/hour).
        subscribers_initial_updated_at: ISO 8601; the first incremental run loads people changed after it
            (default: everyone).
        segment_ids: the segments `segment_stats` reads (default: every segment; each costs one stats
            request, and the stats budget is 30 an hour unless raised).
        broadcast_statuses: which statuses `broadcasts` walks (default: all six).
    """
    ctx = BentoContext(
        site_uuid=site_uuid,
        publishable_key=publishable_key,
        secret_key=secret_key,
        base_url=base_url,
        requests_per_minute=requests_per_minute,
        stats_requests_per_hour=stats_requests_per_hour,
    )
    statuses = tuple(broadcast_statuses or BROADCAST_STATUSES)
    initial = parse_utc(subscribers_initial_updated_at) if subscribers_initial_updated_at else None
    if subscribers_initial_updated_at and initial is None:
        raise ValueError(f"subscribers_initial_updated_at must be ISO 8601, got {subscribers_initial_updated_at!r}")

    @dlt.resource(name="tags", primary_key="id", write_disposition="merge", columns=COLUMNS["tags"])
    def tags() -> Iterator[list[Row]]:
        """All tags (one unpaginated list), read once per run and shared with subscribers' tag names."""
        rows = [dict(row) for row in ctx.tags()]
        if rows:
            yield rows

    @dlt.resource(name="fields", primary_key="id", write_disposition="merge", columns=COLUMNS["fields"])
    def fields() -> Iterator[list[Row]]:
        """Custom field definitions (one unpaginated list)."""
        rows = list_rows(ctx.client, FIELDS_PATH)
        if rows:
            yield rows

    @dlt.resource(name="segments", primary_key="id", write_disposition="merge", columns=COLUMNS["segments"])
    def segments() -> Iterator[list[Row]]:
        """Saved segments (one unpaginated list), shared with segment_stats."""
        rows = [dict(row) for row in ctx.segments()]
        if rows:
            yield rows

    @dlt.resource(name="broadcasts", primary_key="id", write_disposition="merge", columns=COLUMNS["broadcasts"])
    def broadcasts() -> Iterator[list[Row]]:
        """Every broadcast: Bento lists only `sent` unless asked, so one walk per status, kept as `status`."""
        seen: set[str] = set()
        for status in statuses:
            for page in ctx.client.iter_pages(BROADCASTS_PATH, {"status": status}):
                rows = []
                for row in flatten_page(page):
                    # a broadcast that changes status during the walk shows up twice: keep the first
                    if row.get("id") in seen:
                        continue
                    seen.add(row["id"])
                    row["status"] = status
                    rows.append(row)
                if rows:
                    yield rows

    @dlt.resource(name="automations", selected=False)
    def automations() -> Iterator[dict[str, Any]]:
        """Internal: one walk of sequences and of workflows, feeding their tables and email_templates."""
        for kind, path in (("sequences", SEQUENCES_PATH), ("workflows", WORKFLOWS_PATH)):
            for page in ctx.client.iter_pages(path):
                yield {"kind": kind, "rows": page}

    @dlt.transformer(
        name="sequences", data_from=automations, primary_key="id", write_disposition="merge",
        columns=COLUMNS["sequences"],
    )
    def sequences(page: dict[str, Any]) -> Iterator[list[Row]]:
        if page["kind"] == "sequences":
            yield flatten_page(page["rows"])

    @dlt.transformer(
        name="workflows", data_from=automations, primary_key="id", write_disposition="merge",
        columns=COLUMNS["workflows"],
    )
    def workflows(page: dict[str, Any]) -> Iterator[list[Row]]:
        if page["kind"] == "workflows":
            yield flatten_page(page["rows"])

    @dlt.transformer(
        name="email_templates", data_from=automations, primary_key="id", write_disposition="merge",
        columns=COLUMNS["email_templates"], parallelized=True,
    )
    def email_templates(page: dict[str, Any]) -> list[Row]:
        """Each template a sequence or workflow names, read once by id; `parent_type`/`parent_id` say whose."""
        return read_templates(ctx, template_refs(page["kind"], page["rows"]))

    @dlt.resource(name="subscribers", primary_key="id", write_disposition="merge", columns=COLUMNS["subscribers"])
    def subscribers(
        updated_at: dlt.sources.incremental[Any] = dlt.sources.incremental(  # noqa: B008
            "updated_at",
            initial_value=initial,
            lag=SUBSCRIBERS_OVERLAP_SECONDS,
            on_cursor_value_missing="include",
        ),
    ) -> Iterator[list[Row]]:
        """People from `/fetch/search`, changed since the cursor minus the overlap; unchanged ones skipped."""
        yield from _subscribers(ctx, updated_at)

    @dlt.resource(name="site_stats", write_disposition="append", columns=COLUMNS["site_stats"])
    def site_stats() -> Iterator[Row]:
        """One snapshot of the account's counts per run."""
        yield site_stats_row(ctx)

    @dlt.resource(name="segment_stats", write_disposition="append", columns=COLUMNS["segment_stats"])
    def segment_stats() -> Iterator[list[Row]]:
        """One snapshot per segment per run (each is one stats request, paced to the stats budget)."""
        listed = segment_ids is None
        ids = [str(row["id"]) for row in ctx.segments()] if segment_ids is None else [str(s) for s in segment_ids]
        announce_stats_time(len(ids), ctx.budgets)
        for segment_id in ids:
            row = segment_stats_row(ctx, segment_id, listed=listed)
            if row is not None:
                yield [row]

    return (
        tags, fields, segments, broadcasts, sequences, workflows, email_templates, subscribers,
        site_stats, segment_stats,
    )


def _subscribers(ctx: BentoContext, updated_at: dlt.sources.incremental[Any]) -> Iterator[list[Row]]:
    """The search walk behind `subscribers` (kept out of the source body so it reads top to bottom).

    dlt's `lag` widens the cursor filter by the overlap but then no longer deduplicates, so the rows
    loaded inside the overlap window are remembered in resource state as {id: updated_at} and skipped
    when they come back unchanged. Rows without `updated_at` are always kept (a full load, merged on id).
    """
    tag_names = ctx.tag_names()
    body: dict[str, Any] = {}
    start, end = updated_at.start_value, updated_at.end_value
    window: dict[str, str] = {}
    if start is not None:
        window["gt"] = format_bento(start)
    if end is not None:
        window["lt"] = format_bento(end)
    if window:
        body["updated_at"] = window
    state = dlt.current.resource_state()
    recent: dict[str, str] = dict(state.get(RECENT_KEY) or {})
    seen: dict[str, str] = {}
    stamps = [parsed for parsed in map(parse_utc, recent.values()) if parsed is not None]
    newest: datetime | None = max(stamps, default=None)
    loaded = skipped = 0
    for page in iter_search_pages(ctx.client, body):
        rows = []
        for row in (subscriber_row(item, tag_names) for item in page):
            changed_at = row.get("updated_at")
            if isinstance(changed_at, datetime):
                key, stamp = str(row["id"]), format_bento(changed_at)
                if recent.get(key) == stamp:
                    skipped += 1
                    continue
                seen[key] = stamp
                newest = changed_at if newest is None else max(newest, changed_at)
            rows.append(row)
        loaded += len(rows)
        if rows:
            yield rows
    if newest is not None:
        cutoff = newest - SUBSCRIBERS_OVERLAP
        merged = {**recent, **seen}
        state[RECENT_KEY] = {
            key: stamp for key, stamp in merged.items() if (parse_utc(stamp) or cutoff) >= cutoff
        }
    logger.info("subscribers: %d changed rows loaded, %d unchanged in the overlap skipped", loaded, skipped)


def apply_parquet_hints(source: DltSource) -> DltSource:
    """Make a Bento source fit plain files (dlt's filesystem destination without a table format).

    Plain Parquet cannot merge: the lists are replaced each run, subscribers are appended (only the rows
    that changed since the cursor, so a person's history accumulates; take the newest `updated_at` per
    `id`), and stats snapshots are appended as always. Returns the same source, for chaining.
    """
    for name, resource in source.resources.items():
        if name in LIST_RESOURCES:
            resource.apply_hints(write_disposition="replace")
        elif name == "subscribers" or name in STATS_RESOURCES:
            resource.apply_hints(write_disposition="append")
    return source


@dlt.resource(
    name="subscribers", primary_key="id", write_disposition="merge", columns=COLUMNS["subscribers"],
    standalone=True, section="bento",
)
def subscribers_by_email(
    emails: list[str],
    site_uuid: TSecretStrValue | None = dlt.secrets.value,
    publishable_key: TSecretStrValue | None = dlt.secrets.value,
    secret_key: TSecretStrValue | None = dlt.secrets.value,
    base_url: str | None = dlt.config.value,
    requests_per_minute: float | None = None,
) -> Iterator[list[Row]]:
    """The lookup path for accounts without search: each email via `GET /fetch/subscribers?email=`.

    Loads into the same `subscribers` table (merge on `id`); people Bento does not know are logged.
    """
    from concurrent.futures import ThreadPoolExecutor

    ctx = BentoContext(
        site_uuid=site_uuid, publishable_key=publishable_key, secret_key=secret_key, base_url=base_url,
        requests_per_minute=requests_per_minute,
    )
    wanted = normalize_emails(emails)
    if not wanted:
        return
    tag_names = ctx.tag_names()
    client = ctx.client
    workers = max(1, min(TEMPLATE_WORKERS, client.budgets.max_in_flight, len(wanted)))
    missing = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bento-lookup") as pool:
        # pages as large as a search page, so both ways of reading subscribers yield alike
        for start in range(0, len(wanted), SEARCH_PAGE_SIZE):
            chunk = wanted[start:start + SEARCH_PAGE_SIZE]
            found = list(pool.map(lambda email: lookup_subscriber(client, email, tag_names), chunk))
            rows = [row for row in found if row is not None]
            missing += len(chunk) - len(rows)
            if rows:
                yield rows
    if missing:
        logger.warning("subscribers_by_email: Bento knows no subscriber for %d of %d emails", missing, len(wanted))
