"""Packing items into batch requests: at most the operation's maximum of rows and MAX_REQUEST_BYTES of body."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from bento_api import EncodedBody

from .settings import MAX_REQUEST_BYTES
from .values import encode_payload

if TYPE_CHECKING:
    from .send import Item


def request_body(wrapper: str, items: list[Item]) -> EncodedBody:
    """`{"<wrapper>":[payload,...]}`, encoded in one go (compact UTF-8, as the row sizes are measured)."""
    return EncodedBody(b'{"' + wrapper.encode() + b'":' + encode_payload([i.payload for i in items]) + b"}")


def pack(
    wrapper: str, items: list[Item], maximum: int, max_bytes: int = MAX_REQUEST_BYTES
) -> Iterator[tuple[list[Item], EncodedBody]]:
    """Consecutive requests of at most `maximum` items and `max_bytes` of body (a larger item goes alone).

    A request of `maximum` items is encoded once and sent as is when it fits, the common case; only one over
    `max_bytes` is cut by its rows' sizes, which costs a second encoding of its rows.
    """
    for start in range(0, len(items), maximum):
        chunk = items[start : start + maximum]
        body = request_body(wrapper, chunk)
        if len(body.content) <= max_bytes or len(chunk) == 1:
            yield chunk, body
        else:
            yield from _pack_by_bytes(wrapper, chunk, max_bytes)


def _pack_by_bytes(wrapper: str, items: list[Item], max_bytes: int) -> Iterator[tuple[list[Item], EncodedBody]]:
    envelope = len(wrapper) + 6  # {"<wrapper>":[ and ]}
    chunk: list[Item] = []
    size = envelope
    for item in items:
        cost = len(encode_payload(item.payload)) + 1  # and its comma
        if chunk and size + cost > max_bytes:
            yield chunk, request_body(wrapper, chunk)
            chunk, size = [], envelope
        chunk.append(item)
        size += cost
    if chunk:
        yield chunk, request_body(wrapper, chunk)
