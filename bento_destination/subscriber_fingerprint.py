"""A subscriber row's fingerprint, version 2: a text any SQL engine can build, so the diff can run where the data is.

Version 1 (`ledger.fingerprint` of `{"p": payload, "c": commands}`) hashes canonical JSON, which DuckDB and
Postgres cannot reproduce byte for byte. Version 2 hashes a flat text made only of operations both engines
and Python share (concatenation, length in characters, sha256):

    s2 \x1f <email> \x1f <name>=<length>:<text> \x1f ... [\x1f !unsubscribe]

- one `<name>=<length>:<text>` part per field of the mapped upsert other than `email`, in ascending order of
  name (`tags` and `remove_tags` are fields here too), a field whose value is None left out;
- `<length>` is the text's length in characters: the parts stay unambiguous whatever the values hold;
- `<text>` of a value is `value_text(value)`;
- `!unsubscribe` ends the text of a row that unsubscribes its person.

The fingerprint is `s2:` and the first 32 hex digits of the text's sha256 (UTF-8). A ledger entry without the
prefix was written by version 1 (see `fingerprint_version`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

VERSION: Final = 2
PREFIX: Final = "s2:"
SEPARATOR: Final = "\x1f"
UNSUBSCRIBE_PART: Final = "!unsubscribe"


def value_text(value: Any) -> str:
    """One mapped field value as text: booleans `true`/`false`, integers in decimal, floats as Python's repr,
    text as it is (mapping already made dates ISO 8601 text)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    raise TypeError(f"a mapped subscriber field holds a {type(value).__name__}; mapping makes every value flat")


def field_part(name: str, text: str) -> str:
    """`<name>=<length>:<text>`: the length makes the part unambiguous whatever the text holds."""
    return f"{name}={len(text)}:{text}"


def canonical_text(email: str, fields: Mapping[str, Any], unsubscribes: bool) -> str:
    """The version 2 text of one subscriber row: its email, its fields but `email`, and whether it unsubscribes."""
    parts = ["s2", email]
    parts.extend(field_part(name, value_text(fields[name])) for name in sorted(fields)
                 if name != "email" and fields[name] is not None)
    if unsubscribes:
        parts.append(UNSUBSCRIBE_PART)
    return SEPARATOR.join(parts)


def hash_text(text: str) -> str:
    """`s2:` + the first 32 hex digits of the text's sha256 (128 bits, as version 1)."""
    return PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def subscriber_fingerprint_v2(payload: Mapping[str, Any] | None, commands: Sequence[Mapping[str, Any]]) -> str:
    """The version 2 fingerprint of a mapped subscriber row (its upsert payload and its commands)."""
    unsubscribes = any(command.get("command") == "unsubscribe" for command in commands)
    if payload is not None:
        email = str(payload["email"])
    elif commands:
        email = str(commands[0]["email"])
    else:
        raise ValueError("a mapped subscriber row has an upsert or a command")
    return hash_text(canonical_text(email, payload or {}, unsubscribes))


def fingerprint_version(fingerprint: str) -> int:
    """2 for a version 2 fingerprint (`s2:` prefix), 1 for the bare hex digits version 1 wrote."""
    return VERSION if fingerprint.startswith(PREFIX) else 1
