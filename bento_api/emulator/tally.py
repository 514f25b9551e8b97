"""What the counts mode keeps instead of records: counts, 64-bit hashes of emails, and digests of what arrived.

A test or a benchmark can still check "N distinct people, M upserts, the digest of exactly these payloads"
without the emulator holding ten million Subscriber objects (see docs/emulator.md, "Counts mode"). The digest
of a path is the sum modulo 2**64 of one hash per accepted item (its canonical JSON with the email
normalised), so it ignores the order of requests and of rows but counts every repeat; `digest_of` computes
the same figure for the items a test expects.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .codec import canonical
from .hashset import MASK64, Hashes, HashSet, hashes_of, wrapping_sum
from .store import Store


def text_hashes(emails: Iterable[str]) -> Hashes:
    """The hash of each text (a normalised email, an event marker), as HashSet keys."""
    return hashes_of(email.encode() for email in emails)


def digest_of(items: Iterable[Mapping[str, Any]]) -> str:
    """The digest the counts mode reports for a path that accepted exactly these items (emails normalised)."""
    return format_digest(wrapping_sum(hashes_of(canonical(dict(item)) for item in items)))


def format_digest(value: int) -> str:
    return f"{value:016x}"


@dataclass
class PathTally:
    """Items one API path accepted and applied, and their digest."""

    accepted: int = 0
    digest: int = 0


class Tally:
    """The counts mode's whole memory of one site; every change is made under the store's lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self.lock = lock
        self.people = HashSet()
        self.unsubscribed = HashSet()
        self.event_keys = HashSet()  # (email, type, details.unique.key) already stored
        self.events_stored = 0
        self.commands: Counter[str] = Counter()  # commands applied, by name
        self.paths: dict[str, PathTally] = {}

    def absorb(self, store: Store) -> None:
        """Take over the people a seeded store holds (as hashes), and drop their records from it."""
        with self.lock, store.lock:
            self.people.add(text_hashes(store.subscribers))
            self.unsubscribed.add(text_hashes(e for e, s in store.subscribers.items() if s.unsubscribed_at))
            store.drop_subscribers()

    def record(self, path: str, items: Sequence[Mapping[str, Any]]) -> None:
        """Count items `path` applied and add them to its digest."""
        with self.lock:
            tally = self.paths.setdefault(path, PathTally())
            tally.accepted += len(items)
            tally.digest = (tally.digest + wrapping_sum(hashes_of(canonical(item) for item in items))) & MASK64

    def add_people(self, emails: Iterable[str]) -> int:
        """Count these people as known (Bento creates the people its writes name); how many are new."""
        with self.lock:
            return self.people.add(text_hashes(emails))

    def set_unsubscribed(self, email: str, unsubscribed: bool) -> None:
        with self.lock:
            keys = text_hashes([email])
            if unsubscribed:
                self.unsubscribed.add(keys)
            else:
                self.unsubscribed.discard(keys)

    def knows(self, email: str) -> bool:
        with self.lock:
            return bool(self.people.contains(text_hashes([email]))[0])

    def forget(self, email: str) -> None:
        """A person left under this address (change_email)."""
        with self.lock:
            keys = text_hashes([email])
            self.people.discard(keys)
            self.unsubscribed.discard(keys)

    def digest(self, path: str) -> str:
        with self.lock:
            return format_digest(self.paths.get(path, PathTally()).digest)

    def accepted(self, path: str) -> int:
        with self.lock:
            return self.paths.get(path, PathTally()).accepted

    def counts(self) -> dict[str, Any]:
        """What the admin summary shows as objects in this mode."""
        with self.lock:
            return {
                "records": "counts",
                "subscribers": len(self.people),
                "unsubscribed": len(self.unsubscribed),
                "events": self.events_stored,
                "emails_sent": self.accepted("/batch/emails"),
                "commands_applied": dict(self.commands),
                "accepted_by_path": {p: t.accepted for p, t in sorted(self.paths.items())},
                "digest_by_path": {p: format_digest(t.digest) for p, t in sorted(self.paths.items())},
                "hash_bytes": self.people.nbytes + self.unsubscribed.nbytes + self.event_keys.nbytes,
            }
