"""What an /api/v1 handler takes and gives: a Call (already authenticated, rate-limited and parsed) and a Response,
with Bento's two error shapes. Shared by the handlers (writes.py, reads.py), the counts mode and the HTTP server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import EmulatorConfig
from .faults import FaultPlan
from .store import Store
from .writequeue import Apply

JSON_TYPE = "application/json; charset=utf-8"


@dataclass
class Response:
    """An answer: a JSON payload, or raw bytes with their own content type."""

    status: int
    payload: Any = None
    raw: bytes | None = None
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Call:
    """One authenticated API request, its parsed body and what the faults decided for it."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    store: Store
    cfg: EmulatorConfig
    #: applies a write now or queues it (bento_like); handlers never change the store for a write otherwise
    submit: Callable[[Apply], None]
    plan: FaultPlan = field(default_factory=FaultPlan)


Handler = Callable[[Call], Response]


def error(status: int, message: str) -> Response:
    return Response(status, {"error": message})


def field_errors(status: int, *pairs: tuple[str, str]) -> Response:
    """The other error shape Bento documents: {"errors": [{"field", "message"}]}."""
    return Response(status, {"errors": [{"field": f, "message": m} for f, m in pairs]})
