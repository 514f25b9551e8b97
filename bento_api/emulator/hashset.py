"""A compact set of 64-bit hashes in sorted numpy arrays: the counts mode's memory of who it has seen.

Ten million emails as Python strings in a set take gigabytes; as uint64 in a sorted array they take 80 MB, and
a membership test is a binary search. New hashes go into a small sorted array first (an insert moves only that
array), which is merged into the large one once it holds an eighth of it, so the large array is rewritten a few
dozen times over ten million inserts, not once per batch. Peak memory is about twice the large array, during a
merge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

Hashes = npt.NDArray[np.uint64]
#: the small array is merged into the large one at this size at least (then at an eighth of the large one)
MERGE_AT = 1 << 16
MASK64 = (1 << 64) - 1


def hash64(data: bytes) -> int:
    """A 64-bit hash of bytes, the same in every process (Python's own hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def hashes_of(items: Iterable[bytes]) -> Hashes:
    """hash64 of each item, as a uint64 array in the items' order."""
    joined = b"".join(hashlib.blake2b(item, digest_size=8).digest() for item in items)
    return np.frombuffer(joined, dtype="<u8").astype(np.uint64)


def wrapping_sum(hashes: Hashes) -> int:
    """The sum of the hashes modulo 2**64: an order-independent digest of a multiset of items."""
    return int(hashes.sum(dtype=np.uint64)) & MASK64


def _members(sorted_hashes: Hashes, keys: Hashes) -> npt.NDArray[np.bool_]:
    if sorted_hashes.size == 0:
        return np.zeros(keys.shape, dtype=bool)
    at = np.searchsorted(sorted_hashes, keys)
    inside = at < sorted_hashes.size
    found = np.zeros(keys.shape, dtype=bool)
    found[inside] = sorted_hashes[at[inside]] == keys[inside]
    return found


class HashSet:
    """A set of uint64 hashes: add, discard and test many at once; len() is the number of distinct hashes."""

    def __init__(self, merge_at: int = MERGE_AT) -> None:
        self._large: Hashes = np.empty(0, dtype=np.uint64)
        self._small: Hashes = np.empty(0, dtype=np.uint64)
        self._merge_at = merge_at

    def __len__(self) -> int:
        return int(self._large.size + self._small.size)

    @property
    def nbytes(self) -> int:
        return int(self._large.nbytes + self._small.nbytes)

    def contains(self, keys: Hashes) -> npt.NDArray[np.bool_]:
        """For each key, whether it is in the set."""
        return _members(self._large, keys) | _members(self._small, keys)

    def add(self, keys: Hashes) -> int:
        """Add the keys; returns how many distinct keys were not in the set before."""
        candidates = np.unique(keys)
        new = candidates[~self.contains(candidates)]
        if new.size:
            self._small = np.insert(self._small, np.searchsorted(self._small, new), new)
        if self._small.size >= max(self._merge_at, self._large.size >> 3):
            self._large = np.insert(self._large, np.searchsorted(self._large, self._small), self._small)
            self._small = np.empty(0, dtype=np.uint64)
        return int(new.size)

    def discard(self, keys: Hashes) -> int:
        """Remove the keys that are present; returns how many were removed (each removal copies an array: rare
        operations such as unsubscribes only)."""
        candidates = np.unique(keys)
        removed = 0
        for name in ("_large", "_small"):
            held: Hashes = getattr(self, name)
            if held.size == 0:
                continue
            at = np.searchsorted(held, candidates)
            inside = at < held.size
            hit = at[inside][held[at[inside]] == candidates[inside]]
            if hit.size:
                removed += int(hit.size)
                setattr(self, name, np.delete(held, hit))
        return removed
