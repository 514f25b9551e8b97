"""Value and name rules shared by every operation: emails, field names, secrets, JSON encoding.

Every rule raises `RowError` with a short reason code and a sentence, so that a row Bento would
refuse is kept with its reason instead of being sent (docs/destination.md, the row contract). The email
rule and the timestamp rule themselves are Bento facts, in `bento_api.facts` and `bento_api.timestamps`.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final

from bento_api.facts import MAX_EMAIL_LENGTH, is_valid_email, normalise_email
from bento_api.timestamps import InvalidTimestamp, format_as_given

from .settings import MAX_ROW_BYTES, SECRET_EXEMPT_NAMES, SECRET_LAST_WORDS, SECRET_WORDS

_NON_ALNUM: Final = re.compile(r"[^a-z0-9]+")
_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
PATH_SEP: Final = "__"
Scalar = str | int | float | bool
#: how many distinct names the name rules remember: a table has a few dozen columns, JSON objects a few
#: hundred keys; the bound only keeps a stream of ever-new keys from growing memory
NAME_CACHE_SIZE: Final = 8192
#: the payload encoding as sent, compact (json.dumps would build a new encoder for every call)
_PAYLOAD_ENCODER: Final = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))


class RowError(Exception):
    """A row Bento would refuse: `reason` is a stable code, the message says what to fix."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@lru_cache(maxsize=NAME_CACHE_SIZE, typed=True)
def field_key(name: str) -> str:
    """A column name as a Bento field name: lowercase_underscored (`First Name`, `firstName` -> `first_name`).

    Remembered per name: every row of a table asks for the same few names.
    """
    return _NON_ALNUM.sub("_", _CAMEL.sub("_", str(name)).lower()).strip("_")


def split_path(name: str) -> list[str]:
    """`details__cart__total` -> ['details', 'cart', 'total'] (dlt's flattening separator)."""
    return [part for part in str(name).split(PATH_SEP) if part]


@lru_cache(maxsize=NAME_CACHE_SIZE, typed=True)
def looks_secret(name: str) -> bool:
    """True for names such as `password`, `api_key`, `AccessToken`, `stripe_key`, `Authorization` (remembered per name).

    Matched on whole words of the lowercase_underscored name, so `tokenized_at` and `secretariat` are ordinary
    names; the contract's own columns (`unique_key`, ...) are exempt.
    """
    key = field_key(name)
    if key in SECRET_EXEMPT_NAMES:
        return False
    words = key.split("_")
    return (words[-1] in SECRET_LAST_WORDS and len(words) > 1) or any(word in SECRET_WORDS for word in words)


def check_email(value: Any, column: str = "email") -> str:
    """The normalised email (trimmed, lower-cased), or RowError if Bento would refuse it."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowError("missing_email", f"`{column}` is missing or empty")
    if not isinstance(value, str):
        raise RowError("invalid_email", f"`{column}` must be text, got {type(value).__name__}")
    email = normalise_email(value)
    if len(email) > MAX_EMAIL_LENGTH:
        raise RowError("invalid_email", f"`{column}` is longer than {MAX_EMAIL_LENGTH} characters")
    if not is_valid_email(email):
        raise RowError("invalid_email", f"`{column}` {shorten(email)!r} is not a valid email address")
    return email


def shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_text(value: Any, column: str) -> str:
    if not isinstance(value, str):
        raise RowError("invalid_value", f"`{column}` must be text, got {type(value).__name__}")
    if value.isascii():  # O(1) in CPython, and ASCII always encodes
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise RowError("unencodable", f"`{column}` holds text that is not valid Unicode") from None
    return value


def iso_datetime(value: Any, column: str) -> str:
    """ISO 8601 with an offset (docs/bento-api.md, "Timestamps"): naive values are UTC, text must parse."""
    if not isinstance(value, str | dt.date):
        raise RowError(
            "invalid_date", f"`{column}` must be a date, timestamp or ISO 8601 text, got {type(value).__name__}"
        )
    try:
        return format_as_given(value)
    except InvalidTimestamp:
        raise RowError("invalid_date", f"`{column}` {shorten(str(value).strip())!r} is not an ISO 8601 date") from None


def scalar(value: Any, column: str) -> Scalar:
    """A flat value Bento can store as a field; dicts and lists are refused (fields must not nest)."""
    kind = type(value)
    if kind is str:
        return check_text(value, column)
    if kind is int or kind is bool:
        return value
    if kind is float:
        return json_value(value, column)
    if isinstance(value, Mapping | list | tuple):
        raise RowError("nested_value", f"`{column}` holds a nested value; Bento fields must be flat")
    out = json_value(value, column)
    if not isinstance(out, str | int | float | bool):
        raise RowError("nested_value", f"`{column}` holds a nested value; Bento fields must be flat")
    return out


def json_value(value: Any, column: str) -> Any:
    """`value` as plain JSON (dates as ISO 8601, nulls dropped), or RowError if it cannot be encoded."""
    if isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return check_text(value, column)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RowError("non_finite_number", f"`{column}` is {value} (NaN or infinity cannot be sent)")
        return value
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise RowError("non_finite_number", f"`{column}` is {value} (NaN or infinity cannot be sent)")
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date):
        return iso_datetime(value, column)
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if item is not None:
                out[check_text(str(key), column)] = json_value(item, f"{column}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [json_value(item, f"{column}[]") for item in value if item is not None]
    if isinstance(value, bytes | bytearray | memoryview):
        raise RowError("unencodable", f"`{column}` holds binary data, which JSON cannot carry")
    raise RowError("unencodable", f"`{column}` holds a {type(value).__name__}, which cannot be sent as JSON")


def parse_json_object(value: Any, column: str) -> dict[str, Any]:
    """A dict given as a dict or as a JSON string (how it arrives depends on dlt's type inference)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            raise RowError("invalid_json", f"`{column}` is text but not a JSON object: {shorten(text)!r}") from None
    if not isinstance(value, Mapping):
        raise RowError("invalid_value", f"`{column}` must be an object (dict or JSON text), got {type(value).__name__}")
    return dict(value)


def to_bool(value: Any, column: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "t", "yes", "y", "1", "false", "f", "no", "n", "0"):
        return value.strip().lower() in ("true", "t", "yes", "y", "1")
    raise RowError("invalid_value", f"`{column}` must be true or false, got {shorten(repr(value))}")


def encode_payload(payload: Any, column: str = "row") -> bytes:
    """The payload as sent (compact UTF-8 JSON); RowError if it holds NaN, infinity or text that is not Unicode."""
    try:
        return _PAYLOAD_ENCODER.encode(payload).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise RowError("unencodable", f"{column} cannot be encoded as JSON ({type(exc).__name__})") from None


def encoded_size(payload: Any, column: str = "row") -> int:
    """Bytes of the payload as sent; RowError if it cannot be encoded."""
    return len(encode_payload(payload, column))


def check_row_size(payload: Any) -> int:
    """Bytes of a row's payload as sent; RowError `row_too_large` past MAX_ROW_BYTES (or if it cannot be encoded)."""
    size = encoded_size(payload)
    if size > MAX_ROW_BYTES:
        raise RowError(
            "row_too_large",
            f"the row takes {size:,} bytes as JSON, more than the {MAX_ROW_BYTES:,} a row may take; "
            "send smaller fields or details",
        )
    return size


def safe_for_file(value: Any) -> Any:
    """A JSON-writable copy of a rejected row's value (kept as close to the original as possible)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): safe_for_file(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [safe_for_file(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    return str(value)
