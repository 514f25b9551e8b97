"""`/batch/emails` rows: to, from (an Author), subject, html_body; optional transactional, personalizations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..values import RowError, check_email, check_text, field_key, split_path, to_bool
from .common import MappedRow, MappingOptions, by_key, nested_object

EMAIL_TEXT = ("subject", "html_body")


def map_email(row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """`/batch/emails` row: to, from (an Author), subject, html_body; optional transactional, personalizations."""
    result = MappedRow(payload=None)
    columns = by_key(row)
    payload: dict[str, Any] = {}
    for key in ("to", "from"):
        if key not in columns:
            raise RowError(f"missing_{key}", f"`{key}` is missing or empty")
        payload[key] = check_email(columns[key][1], columns[key][0])
    for key in EMAIL_TEXT:
        if key in columns:
            text = check_text(columns[key][1], columns[key][0])
            if text.strip():
                payload[key] = text
    if "subject" not in payload:
        raise RowError("missing_subject", "`subject` is missing or empty")
    if "html_body" not in payload:
        raise RowError("missing_body", "`html_body` is missing or empty")
    if "transactional" in columns:
        payload["transactional"] = to_bool(columns["transactional"][1], columns["transactional"][0])
    personalizations = nested_object(row, "personalizations", options, result)
    if personalizations:
        payload["personalizations"] = personalizations
    # unique_key / idempotency_key name the email for the sync ledger (email_identity.py); not sent
    known = {"to", "from", "transactional", "personalizations", "unique_key", "idempotency_key", *EMAIL_TEXT}
    for key, (column, _) in columns.items():
        if key not in known and field_key((split_path(column) or [""])[0]) != "personalizations":
            result.ignored.add(column)
    result.payload = payload
    return result
