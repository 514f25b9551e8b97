"""Glue between Bento's answers and dlt: flattening, typed timestamps, the lazy client, search and lookups.

Nothing here talks HTTP directly: every call goes through `bento_api.BentoClient`, which paces,
retries and pages. Nothing here runs when the source is created either: `BentoContext` builds its
client on first use, so creating `bento_source()` (which schedulers do often) never calls Bento.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from bento_api import (
    BentoAuthError,
    BentoClient,
    BentoError,
    BentoForbiddenError,
    BentoNotFoundError,
    BentoSettings,
    Budgets,
    resolve_budgets,
    resolve_settings,
)
from bento_api.facts import (
    EMAIL_TEMPLATE_PATH,
    SEARCH_PATH,
    SEGMENT_STATS_PATH,
    SEGMENTS_PATH,
    SITE_STATS_PATH,
    SUBSCRIBER_PATH,
    TAGS_PATH,
    data_list,
    data_object,
    is_valid_email,
    normalise_email,
)
from bento_api.pacing import LONG_WAIT_SECONDS, SAFETY_MARGIN, format_wait
from bento_api.timestamps import parse_utc

from .settings import TEMPLATE_WORKERS

logger = logging.getLogger("bento_source")

Row = dict[str, Any]


class SearchUnavailableError(BentoError):
    """`/fetch/search` is not open to this account (Enterprise only): say so, and name the lookup path."""


# -- timestamps (the rule is bento_api.timestamps; docs/bento-api.md, "Timestamps") ---------------------


def type_timestamps(row: Row) -> Row:
    """Turn top-level `*_at` strings into datetimes, so every destination gets a real timestamp type."""
    for key, value in row.items():
        if key.endswith("_at") and isinstance(value, str):
            parsed = parse_utc(value)
            if parsed is not None:
                row[key] = parsed
    return row


# -- flattening ---------------------------------------------------------------------------------------


def flatten(item: Mapping[str, Any]) -> Row:
    """One JSON:API object as one row (docs/source.md): top-level `id` is the key, `attributes` become columns.

    `attributes.id` (a sequence's `sequence_...` id) becomes `prefix_id`; an attribute whose name would
    overwrite a top-level member (`type`) is kept as `attributes_<name>`. Nested objects are left for dlt
    to nest as usual (`template__subject`, child tables for lists).
    """
    row: Row = {key: value for key, value in item.items() if key != "attributes"}
    if "id" in row and row["id"] is not None:
        row["id"] = str(row["id"])
    attributes = item.get("attributes")
    if isinstance(attributes, Mapping):
        for key, value in attributes.items():
            if key == "id":
                if attributes.get("prefix_id") in (None, value):
                    row["prefix_id"] = value
                else:
                    row["attributes_id"] = value
            elif key in row and key != "prefix_id":
                row[f"attributes_{key}"] = value
            else:
                row[key] = value
    # a missing key loads as null (merge replaces whole rows); a null object would only make dlt warn that
    # it cannot type the column (`fields`, `stats`)
    return type_timestamps({key: _drop_nulls(value) for key, value in row.items() if value is not None})


def _drop_nulls(value: Any) -> Any:
    """Null members of objects inside lists go too (a sequence's `email_templates[].stats`)."""
    if isinstance(value, list):
        return [
            {k: v for k, v in item.items() if v is not None} if isinstance(item, Mapping) else item for item in value
        ]
    return value


def flatten_page(page: Iterable[Mapping[str, Any]]) -> list[Row]:
    return [flatten(item) for item in page if isinstance(item, Mapping)]


def subscriber_row(item: Mapping[str, Any], tag_names: Mapping[str, str] | None) -> Row:
    """A visitor as a row, with its tag names next to `cached_tag_ids` when the tag list is known.

    The names come twice: `tag_names`, a JSON list kept on the row (a notebook reads it without a join),
    and `tags`, which dlt nests as the child table `subscribers__tags` (kept for existing users).
    """
    row = flatten(item)
    ids = row.get("cached_tag_ids")
    if tag_names is not None and isinstance(ids, list):
        names = [tag_names[str(tag_id)] for tag_id in ids if str(tag_id) in tag_names]
        row["tags"] = names
        row["tag_names"] = list(names)
    return row


# -- the lazy client and what one run reads once ------------------------------------------------------


class BentoContext:
    """What the resources of one `bento_source(...)` share: the client (made on first use) and lists
    read once per source instance (tags for subscribers' tag names, segments for segment stats)."""

    def __init__(
        self,
        *,
        site_uuid: str | None = None,
        publishable_key: str | None = None,
        secret_key: str | None = None,
        base_url: str | None = None,
        requests_per_minute: float | None = None,
        stats_requests_per_hour: float | None = None,
    ) -> None:
        self._credentials = {
            "site_uuid": site_uuid,
            "publishable_key": publishable_key,
            "secret_key": secret_key,
            "base_url": base_url,
        }
        self._budget_args = (requests_per_minute, stats_requests_per_hour)
        self._lock = threading.Lock()  # the per-key locks and template ids
        self._client_lock = threading.Lock()  # apart, so a slow first read never holds up other resources
        self._client: BentoClient | None = None
        self._memo: dict[str, Any] = {}
        self._key_locks: dict[str, threading.Lock] = {}
        self._template_ids: set[str] = set()

    def __repr__(self) -> str:  # never shows the keys
        return f"BentoContext(base_url={self._credentials['base_url']!r}, client={self._client!r})"

    @property
    def settings(self) -> BentoSettings:
        return self.client.settings

    @property
    def budgets(self) -> Budgets:
        return self.client.budgets

    @property
    def client(self) -> BentoClient:
        """The one client of this source, made on first use (raises BentoConfigError if keys are missing)."""
        with self._client_lock:
            if self._client is None:
                credentials = self._credentials
                settings = resolve_settings(
                    site_uuid=credentials["site_uuid"],
                    publishable_key=credentials["publishable_key"],
                    secret_key=credentials["secret_key"],
                    base_url=credentials["base_url"],
                    sections=("sources",),
                )
                budgets = resolve_budgets(*self._budget_args)
                client = BentoClient(settings, budgets)
                weakref.finalize(self, client.close)
                self._client = client
            return self._client

    def once(self, key: str, read: Callable[[], Any]) -> Any:
        """Read something at most once per source instance, even when resources run in threads."""
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # one lock per key: reading tags never waits for segments
            if key not in self._memo:
                self._memo[key] = read()
            return self._memo[key]

    def snapshot_at(self) -> datetime:
        """One timestamp for every stats row of this run, so site and segment snapshots join."""
        return self.once("snapshot_at", lambda: datetime.now(UTC))

    def tags(self) -> list[Row]:
        return self.once("tags", lambda: list_rows(self.client, TAGS_PATH))

    def segments(self) -> list[Row]:
        return self.once("segments", lambda: list_rows(self.client, SEGMENTS_PATH))

    def tag_names(self) -> dict[str, str] | None:
        """Tag id to name, or None if this account may not list tags (names then stay unresolved)."""
        try:
            tags = self.tags()
        except (BentoForbiddenError, BentoNotFoundError) as error:
            logger.warning("Bento tags unavailable (%s); subscribers keep cached_tag_ids without names", error)
            return None
        return {str(tag["id"]): str(tag["name"]) for tag in tags if tag.get("id") is not None and tag.get("name")}

    def claim_template(self, template_id: str) -> bool:
        """True the first time an email template id is seen in this run (several automations may share one)."""
        with self._lock:
            if template_id in self._template_ids:
                return False
            self._template_ids.add(template_id)
            return True


def list_rows(client: BentoClient, path: str) -> list[Row]:
    """An unpaginated list (`/fetch/tags`, `/fetch/fields`, `/fetch/segments`) as flat rows."""
    return flatten_page(data_list(client.get(path), path))


# -- email templates ----------------------------------------------------------------------------------


def template_refs(kind: str, items: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(template id, parent type, parent id) for every template a page of sequences or workflows names."""
    parent_type = kind.rstrip("s")
    refs = []
    for item in items:
        attributes = item.get("attributes")
        templates = attributes.get("email_templates") if isinstance(attributes, Mapping) else None
        for template in templates or ():
            if isinstance(template, Mapping) and template.get("id") is not None:
                refs.append((str(template["id"]), parent_type, str(item.get("id"))))
    return refs


def read_template(client: BentoClient, template_id: str, parent_type: str, parent_id: str) -> Row | None:
    """One email template with the automation that references it; None (logged) if Bento no longer has it."""
    try:
        body = client.get(EMAIL_TEMPLATE_PATH.format(id=template_id))
    except BentoNotFoundError:
        logger.warning("Bento email template %s (from %s %s) is gone; skipped", template_id, parent_type, parent_id)
        return None
    data = data_object(body)
    if data is None:
        logger.warning("Bento email template %s answered without data; skipped", template_id)
        return None
    row = flatten(data)
    row["parent_type"] = parent_type
    row["parent_id"] = parent_id
    return row


def read_templates(ctx: BentoContext, refs: Sequence[tuple[str, str, str]]) -> list[Row]:
    """The templates not yet read in this run, read side by side (the client paces and caps in-flight)."""
    fresh = [ref for ref in refs if ctx.claim_template(ref[0])]
    if not fresh:
        return []
    client = ctx.client
    workers = max(1, min(TEMPLATE_WORKERS, client.budgets.max_in_flight, len(fresh)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bento-templates") as pool:
        rows = list(pool.map(lambda ref: read_template(client, *ref), fresh))
    return [row for row in rows if row is not None]


# -- subscribers --------------------------------------------------------------------------------------

SEARCH_HELP = (
    "Bento's subscriber search (/fetch/search) is not available to this account: it is an Enterprise "
    "feature, and Bento has no other way to list subscribers. Deselect the `subscribers` resource "
    "(bento_source(...).with_resources(...)) and look people up one by one with "
    "`subscribers_by_email(emails)` (GET /fetch/subscribers?email=), or ask Bento support for search access."
)


def iter_search_pages(client: BentoClient, body: Mapping[str, Any]) -> Iterator[list[dict[str, Any]]]:
    """Walk `/fetch/search` pages: GET with a JSON body as documented; POST if GET answers 404/405.

    An account without search (401/403/404 on it, while other endpoints work) gets SearchUnavailableError
    with the lookup path; later pages' errors pass through unchanged.
    """
    for method in ("GET", "POST"):
        pages = client.iter_pages(SEARCH_PATH, method=method, body=body, page_in_body=True)
        try:
            first = next(pages, None)
        except BentoNotFoundError as error:
            if method == "GET":
                logger.info("Bento %s answered %s to GET with a body; trying POST", SEARCH_PATH, error.status)
                continue
            raise SearchUnavailableError(f"{SEARCH_HELP} ({error.message})", status=error.status,
                                         path=SEARCH_PATH) from None
        except (BentoAuthError, BentoForbiddenError) as error:
            raise SearchUnavailableError(f"{SEARCH_HELP} ({error.message})", status=error.status,
                                         path=SEARCH_PATH) from None
        if first is None:
            return
        yield first
        yield from pages
        return


def normalize_emails(emails: Iterable[str]) -> list[str]:
    """Normalised, de-duplicated emails in first order; ones failing Bento's email rule are logged and left out."""
    seen: dict[str, None] = {}
    bad = []
    for email in emails:
        text = normalise_email(str(email))
        if not is_valid_email(text):
            bad.append(email)
        elif text not in seen:
            seen[text] = None
    if bad:
        logger.warning("Skipping %d value(s) that are not email addresses: %r", len(bad), bad[:5])
    return list(seen)


def lookup_subscriber(client: BentoClient, email: str, tag_names: Mapping[str, str] | None) -> Row | None:
    data = data_object(client.get(SUBSCRIBER_PATH, {"email": email}))
    if data is None:
        return None
    return subscriber_row(data, tag_names)


# -- stats --------------------------------------------------------------------------------------------


def counts(body: Any) -> Row:
    """The counters of a stats answer (bare, or wrapped in `data`)."""
    if isinstance(body, Mapping) and isinstance(body.get("data"), Mapping):
        body = body["data"]
    if not isinstance(body, Mapping):
        raise BentoError(f"Bento stats: expected an object of counts, got {str(body)[:200]}")
    return dict(body)


def announce_stats_time(segments: int, budgets: Budgets) -> None:
    """Say up front how long `segment_stats` may take: one stats request per segment, spaced to the budget.

    A warning when that is long (so a plain script shows it), with the way out; the client then
    announces each wait as it starts.
    """
    rate = budgets.stats_requests_per_hour
    seconds = segments * budgets.interval("stats") * SAFETY_MARGIN
    if seconds > LONG_WAIT_SECONDS:
        logger.warning(
            "segment_stats: %d segment(s), one stats request each at %g stats requests an hour: up to %s "
            "(pass segment_ids, raise stats_requests_per_hour if Bento allows it, or leave the stats "
            "resources out of frequent runs)", segments, rate, format_wait(seconds),
        )
    elif segments:
        logger.info("segment_stats: %d segment(s) at %g stats requests an hour", segments, rate)


def site_stats_row(ctx: BentoContext) -> Row:
    return {"snapshot_at": ctx.snapshot_at(), **counts(ctx.client.get(SITE_STATS_PATH))}


def segment_stats_row(ctx: BentoContext, segment_id: str, *, listed: bool) -> Row | None:
    """One segment's counts; a listed segment deleted since the listing is skipped, a named one raises."""
    try:
        body = ctx.client.get(SEGMENT_STATS_PATH, {"segment_id": segment_id})
    except BentoNotFoundError as error:
        if not listed:
            raise BentoNotFoundError(
                f"Bento has no segment {segment_id!r} (from segment_ids): {error.message}",
                status=error.status, path=error.path,
            ) from None
        logger.warning("Bento segment %s is gone since it was listed; no stats row", segment_id)
        return None
    return {"segment_id": segment_id, "snapshot_at": ctx.snapshot_at(), **counts(body)}
