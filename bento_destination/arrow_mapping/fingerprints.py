"""Version 2 fingerprints of a whole batch: the canonical text built with Arrow's string functions, hashed per row.

The text is `subscriber_fingerprint.canonical_text`'s, part for part: `s2`, the email, one `<name>=<length>:<text>`
part per field sent (ascending names, length in characters), and `!unsubscribe` for a row that unsubscribes.
Only the sha256 runs per row, straight on the Arrow buffer (no Python string per row).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
import pyarrow as pa

from ..subscriber_fingerprint import PREFIX, SEPARATOR, UNSUBSCRIBE_PART
from .columns import Mask, pc


def field_part(name: str, text: pa.Array) -> pa.Array:
    """`<name>=<length>:<text>` per row, null where the field is not sent."""
    length = pc.cast(pc.utf8_length(text), pa.string())
    return pc.binary_join_element_wise(f"{name}=", length, ":", text, "")


def canonical_texts(emails: pa.Array, fields: Sequence[tuple[str, pa.Array]], unsubscribes: Mask) -> pa.Array:
    """The version 2 text of every row (null where the email is null); `fields` are (name, text), any order."""
    parts = [field_part(name, text) for name, text in sorted(fields, key=lambda field: field[0])]
    ending = pc.if_else(pa.array(unsubscribes, pa.bool_()), UNSUBSCRIBE_PART, pa.scalar(None, pa.string()))
    joined = pc.binary_join_element_wise("s2", emails, *parts, ending, SEPARATOR, null_handling="skip")
    return pc.if_else(emails.is_valid(), joined, pa.scalar(None, pa.string()))


def hash_texts(texts: pa.Array) -> list[str | None]:
    """`subscriber_fingerprint.hash_text` of each row's text (None for null rows), read from the Arrow buffer."""
    texts = pc.cast(texts, pa.large_string())  # 64-bit offsets whatever the batch's size
    size = len(texts)
    if size == 0:
        return []
    _, offsets_buffer, data_buffer = texts.buffers()
    assert offsets_buffer is not None  # a string array always has its offsets
    offsets = np.frombuffer(memoryview(offsets_buffer), np.int64, size + 1, texts.offset * 8).tolist()
    data = memoryview(data_buffer) if data_buffer is not None else memoryview(b"")
    sha256 = hashlib.sha256
    out: list[str | None] = [
        PREFIX + sha256(data[start:end]).hexdigest()[:32] for start, end in pairwise(offsets)
    ]
    if texts.null_count:
        for i, valid in enumerate(texts.is_valid().to_pylist()):
            if not valid:
                out[i] = None
    return out
