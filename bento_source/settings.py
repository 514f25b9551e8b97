"""Constants of the Bento source: the incremental overlap, workers, resource names, column hints.

Kept apart from the resources so that tests, docs and the parquet helper read the same table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from dlt.common.schema.typing import TTableSchemaColumns

# Bento's broadcast statuses are a fact kept in bento_api.facts (with the paths the resources read)
from bento_api.facts import BROADCAST_STATUSES as BROADCAST_STATUSES

#: each incremental subscribers run asks from the cursor minus this, so that a change committed with a
#: slightly older `updated_at` after the previous run read its page is still seen; unchanged rows in
#: the window are skipped by id and `updated_at`, so nothing is loaded twice
SUBSCRIBERS_OVERLAP: Final = timedelta(minutes=5)
SUBSCRIBERS_OVERLAP_SECONDS: Final = SUBSCRIBERS_OVERLAP.total_seconds()

#: how many template reads the `email_templates` transformer keeps in flight at most (the client also
#: caps in-flight requests and paces them to the budget)
TEMPLATE_WORKERS: Final = 8

#: the resources that are plain lists (merge on `id` by default, `replace` for plain files)
LIST_RESOURCES: Final[tuple[str, ...]] = (
    "tags",
    "fields",
    "segments",
    "broadcasts",
    "sequences",
    "workflows",
    "email_templates",
)
STATS_RESOURCES: Final[tuple[str, ...]] = ("site_stats", "segment_stats")
ALL_RESOURCES: Final[tuple[str, ...]] = (*LIST_RESOURCES, "subscribers", *STATS_RESOURCES)


def timestamps(*names: str) -> TTableSchemaColumns:
    """Column hints typing these columns as UTC timestamps even when a first page holds only nulls."""
    return {name: {"name": name, "data_type": "timestamp", "timezone": True, "nullable": True} for name in names}


def with_json(columns: TTableSchemaColumns, *names: str) -> TTableSchemaColumns:
    """Add JSON columns: free-form objects (a segment's query) stay one value instead of many columns."""
    return {**columns, **{name: {"name": name, "data_type": "json", "nullable": True} for name in names}}


COLUMNS: Final[dict[str, TTableSchemaColumns]] = {
    "tags": timestamps("created_at", "discarded_at"),
    "fields": timestamps("created_at"),
    "segments": with_json(timestamps("created_at", "updated_at"), "visitor_event_query"),
    "broadcasts": timestamps("created_at", "send_at", "sent_final_batch_at"),
    "sequences": timestamps("created_at"),
    "workflows": timestamps("created_at"),
    "email_templates": timestamps("created_at"),
    # `tag_names` stays one JSON list on the row; `tags` (the same names) nests as `subscribers__tags`
    "subscribers": with_json(timestamps("created_at", "updated_at", "unsubscribed_at"), "tag_names"),
    "site_stats": timestamps("snapshot_at"),
    "segment_stats": timestamps("snapshot_at"),
}
