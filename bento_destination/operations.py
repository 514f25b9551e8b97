"""Which Bento operation a table is: the one rule the sink, the pre-pass and `sync()` all apply.

Kept apart from the sink so the modules that read load packages can ask it without importing the sink.
"""

from __future__ import annotations

from bento_api import BentoConfigError

from .settings import OPERATIONS


def resolve_operation(table_name: str, table_operations: dict[str, str] | None) -> str | None:
    """The Bento operation of a table: `table_operations[name]`, else the name itself if it is one."""
    mapping = dict(table_operations or {})
    bad = {t: op for t, op in mapping.items() if op not in OPERATIONS}
    if bad:
        raise BentoConfigError(
            f"table_operations maps {bad} to unknown operations; use one of {', '.join(OPERATIONS)}"
        )
    operation = mapping.get(table_name, table_name)
    return operation if operation in OPERATIONS else None
