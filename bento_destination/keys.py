"""Numbering of identical keys, so two identical rows of one input stay two sends and a rerun sends neither."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


def number_identical(keys: Iterable[str]) -> list[str]:
    """The keys in order, the n-th repeat of a key (n >= 2) written `key#n`; the first stays plain."""
    seen: Counter[str] = Counter()
    out: list[str] = []
    for key in keys:
        seen[key] += 1
        out.append(key if seen[key] == 1 else f"{key}#{seen[key]}")
    return out
