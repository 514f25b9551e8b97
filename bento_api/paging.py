"""Bento's page walk: page=1, 2, ... until the first empty `data`.

Bento returns no total and documents no page size, so a short page proves nothing: we stop only on an
empty page. Two guards keep a misbehaving server from looping us forever: a page whose ids repeat the
previous page's ends the walk (with a warning), and a hard cap on pages raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .errors import BentoPaginationError
from .facts import data_list

if TYPE_CHECKING:
    from .client import BentoClient, RequestStats

logger = logging.getLogger("bento_api")


def _ids(rows: list[dict[str, Any]]) -> tuple[Any, ...]:
    return tuple(row.get("id") for row in rows if isinstance(row, dict))


def iter_pages(
    client: BentoClient,
    path: str,
    params: Mapping[str, Any] | None = None,
    *,
    method: str = "GET",
    body: Mapping[str, Any] | None = None,
    page_in_body: bool = False,
    first_page: int = 1,
    max_pages: int = 10_000,
    stats: RequestStats | None = None,
) -> Iterator[list[dict[str, Any]]]:
    previous: tuple[Any, ...] | None = None
    for page in range(first_page, first_page + max_pages):
        query = dict(params or {})
        payload = dict(body) if body is not None else None
        if page_in_body:
            payload = {**(payload or {}), "page": page}
        else:
            query["page"] = page
        answer = client.request(method, path, params=query, json_body=payload, stats=stats)
        rows = data_list(answer, path)
        if not rows:
            return
        ids = _ids(rows)
        if previous is not None and ids and ids == previous:
            logger.warning("Bento %s: page %d repeats page %d's ids; stopping the walk there", path, page, page - 1)
            return
        previous = ids
        yield rows
    raise BentoPaginationError(
        f"Bento {path}: still not at an empty page after {max_pages} pages; stopping. "
        "Raise max_pages if the account really holds that many."
    )
