"""Row checks Bento applies: the email rule of docs/bento-api.md, flat custom values, tag strings."""

from __future__ import annotations

from typing import Any

from . import limits

FLAT_TYPES = (str, int, float, bool, type(None))


def normalize_email(value: Any) -> str | None:
    """The normalised email, or None if Bento would refuse it."""
    if not isinstance(value, str):
        return None
    email = value.strip().lower()
    if len(email) > limits.MAX_EMAIL_LENGTH or not limits.EMAIL_RE.match(email):
        return None
    return email


def is_flat(value: Any) -> bool:
    """Custom field values must not nest (no dict or list)."""
    return isinstance(value, FLAT_TYPES)


def is_flat_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and is_flat(v) for k, v in value.items())


def split_tags(value: Any) -> list[str] | None:
    """A comma string of tag names as a list (None if the value is not a string)."""
    if not isinstance(value, str):
        return None
    return [t.strip() for t in value.split(",") if t.strip()]
