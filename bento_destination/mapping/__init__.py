"""Row -> Bento payload, one function per operation, with the reason when a row cannot be sent.

The row contract is docs/destination.md, "What each table becomes". Each mapper returns the payload for the
operation's endpoint plus any extra commands (an `unsubscribed` subscriber becomes an `unsubscribe`
command: imports never change subscription state), and the columns it dropped or ignored so the
run report can say so. A row that Bento would refuse raises `RowError` and is never sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..values import check_row_size
from .commands import map_command
from .common import MappedRow, Mapper, MappingOptions, redact_row
from .emails import EMAIL_TEXT, map_email
from .events import map_event
from .subscribers import map_subscriber, parse_json_list

__all__ = [
    "EMAIL_TEXT", "MAPPERS", "MappedRow", "Mapper", "MappingOptions", "map_command", "map_email", "map_event",
    "map_row", "map_subscriber", "parse_json_list", "redact_row",
]

MAPPERS: dict[str, Mapper] = {
    "subscribers": map_subscriber,
    "events": map_event,
    "commands": map_command,
    "emails": map_email,
}


def map_row(operation: str, row: Mapping[str, Any], options: MappingOptions) -> MappedRow:
    """Map one row; RowError if Bento would refuse it (including values JSON cannot carry, or too large a row)."""
    result = MAPPERS[operation](row, options)
    if result.payload is not None:
        check_row_size(result.payload)
    return result
