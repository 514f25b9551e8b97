"""The ledger's own errors: each message says what to check."""

from __future__ import annotations

from bento_api.errors import BentoError


class LedgerError(BentoError):
    """The ledger cannot be opened, read or written; the message says what to check."""


class LedgerBusyError(LedgerError):
    """Another process holds the DuckDB ledger file: this run stops before sending anything."""


def first_line(error: BaseException) -> str:
    """The first line of an error's text (DuckDB's messages run over several)."""
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
