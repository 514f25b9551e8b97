"""JSON encoding and decoding, once per request; orjson when present (dlt installs it), else stdlib."""

from __future__ import annotations

import json
from typing import Any

try:  # orjson is a dependency of dlt, so it is normally present; the stdlib path keeps us standalone.
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised only without dlt installed
    _orjson = None  # type: ignore[assignment]


class InvalidJSON(ValueError):
    """The request body is not valid JSON (answered with 400)."""


def loads(data: bytes) -> Any:
    """Parse a request body; raises InvalidJSON with a short reason."""
    try:
        if _orjson is not None:
            return _orjson.loads(data)
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJSON(str(exc)) from exc


def dumps(obj: Any) -> bytes:
    """Serialise a response body to compact UTF-8 JSON."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def canonical(obj: Any) -> bytes:
    """One byte string per JSON value whatever its key order (keys sorted, compact): what the counts mode hashes.

    orjson and the stdlib agree on it for strings, integers, booleans, null and plain decimals; they may write
    very large or small floats differently, so compare digests made by the same installation.
    """
    if _orjson is not None:
        return _orjson.dumps(obj, option=_orjson.OPT_SORT_KEYS)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
