"""The emulator's data: plain dataclasses behind one re-entrant lock.

Handlers take `store.lock` for a whole batch so that a batch is applied atomically, as a client
would expect from one request. Tests read the public dicts and lists directly (after their requests
have finished) or through the snapshot helpers.
"""

from __future__ import annotations

import random
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .timeutil import MonotonicUTC


@dataclass(slots=True)
class Subscriber:
    id: int
    uuid: str
    email: str
    fields: dict[str, Any]
    tag_ids: list[int]
    unsubscribed_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class Event:
    id: int
    email: str
    type: str
    fields: dict[str, Any] | None
    details: dict[str, Any] | None
    date: str | None  # as sent (ISO 8601), None when Bento would use the arrival time
    received_at: datetime


@dataclass
class Tag:
    id: int
    name: str
    created_at: datetime
    discarded_at: datetime | None = None


@dataclass
class FieldDef:
    id: int
    key: str
    name: str
    created_at: datetime
    whitelisted: bool | None = None


@dataclass
class Segment:
    id: int
    name: str
    description: str
    visitor_event_query: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass
class EmailTemplate:
    id: int
    name: str
    subject: str
    html: str
    created_at: datetime
    stats: dict[str, Any] | None


@dataclass
class Broadcast:
    id: int
    name: str
    status: str
    template_id: int
    to: str
    share_url: str
    created_at: datetime
    send_at: datetime | None
    sent_final_batch_at: datetime | None
    open_rate: float | None


@dataclass
class Sequence:
    id: int
    prefix_id: str
    name: str
    created_at: datetime
    template_ids: list[int]


@dataclass
class Workflow:
    id: int
    name: str
    status: str  # live | draft
    created_at: datetime
    template_ids: list[int]


@dataclass(slots=True)
class SentEmail:
    to: str
    from_: str
    subject: str
    html_body: str
    transactional: bool
    personalizations: dict[str, Any] | None
    received_at: datetime


_WORD_SPLIT = re.compile(r"[\s_\-]+|(?<=[a-z0-9])(?=[A-Z])")


def field_name_for_key(key: str) -> str:
    """Bento derives a field's display name from its key: thisIsAKey / this-is-a-key -> This Is A Key."""
    return " ".join(w.capitalize() for w in _WORD_SPLIT.split(key) if w)


class Store:
    """All objects of one emulated Bento site."""

    SITE_ID = 1

    def __init__(self, seed: int = 1) -> None:
        self.lock = threading.RLock()
        self.clock = MonotonicUTC()
        self._rng = random.Random(f"store:{seed}")  # uuids of people created at run time
        self.subscribers: dict[str, Subscriber] = {}
        self._by_uuid: dict[str, Subscriber] = {}
        self.events: list[Event] = []
        self._unique_events: set[tuple[str, str, str]] = set()
        self.tags: dict[int, Tag] = {}
        self._tag_by_name: dict[str, Tag] = {}
        self.fields: dict[int, FieldDef] = {}
        self._field_by_key: dict[str, FieldDef] = {}
        self.segments: dict[int, Segment] = {}
        self.templates: dict[int, EmailTemplate] = {}
        self.broadcasts: list[Broadcast] = []
        self.sequences: list[Sequence] = []
        self.workflows: list[Workflow] = []
        self.emails_sent: list[SentEmail] = []
        self._next_subscriber_id = 1
        self._next_event_id = 1
        self._next_tag_id = 1
        self._next_field_id = 1

    # ----- time and ids
    def now(self) -> datetime:
        return self.clock.now()

    def new_uuid(self) -> str:
        with self.lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # ----- subscribers
    def insert_subscriber(self, sub: Subscriber) -> Subscriber:
        """Add a fully built subscriber (seeding); ids keep increasing."""
        with self.lock:
            self.subscribers[sub.email] = sub
            self._by_uuid[sub.uuid] = sub
            self._next_subscriber_id = max(self._next_subscriber_id, sub.id + 1)
            return sub

    def get_or_create(self, email: str) -> tuple[Subscriber, bool]:
        """The subscriber with this (normalised) email, created if missing."""
        with self.lock:
            sub = self.subscribers.get(email)
            if sub is not None:
                return sub, False
            now = self.now()
            sub = Subscriber(self._next_subscriber_id, self.new_uuid(), email, {}, [], None, now, now)
            return self.insert_subscriber(sub), True

    def drop_subscribers(self) -> None:
        """Forget every subscriber record (the counts mode keeps hashes of them instead, tally.py)."""
        with self.lock:
            self.subscribers.clear()
            self._by_uuid.clear()

    def by_uuid(self, value: str) -> Subscriber | None:
        with self.lock:
            return self._by_uuid.get(value)

    def apply_fields(self, sub: Subscriber, values: dict[str, Any]) -> None:
        """Merge flat fields (None sets the field to null) and register unseen keys as field definitions."""
        with self.lock:
            for key, value in values.items():
                sub.fields[key] = value
                self.field_for_key(key)

    def bump(self, sub: Subscriber, now: datetime | None = None) -> None:
        """Set updated_at; a batch passes one `now` for all its rows (one transaction, one timestamp)."""
        sub.updated_at = now if now is not None else self.now()

    def add_tags(self, sub: Subscriber, names: list[str]) -> None:
        with self.lock:
            for name in names:
                tag = self.tag_for_name(name)
                if tag.id not in sub.tag_ids:
                    sub.tag_ids.append(tag.id)

    def remove_tags(self, sub: Subscriber, names: list[str]) -> None:
        with self.lock:
            for name in names:
                tag = self._tag_by_name.get(name)
                if tag is not None and tag.id in sub.tag_ids:
                    sub.tag_ids.remove(tag.id)

    def tag_names(self, sub: Subscriber) -> list[str]:
        with self.lock:
            return [self.tags[t].name for t in sub.tag_ids if t in self.tags]

    def add_subscriber(self, email: str, tags: list[str] | None = None, **fields: Any) -> Subscriber:
        """Create or update a subscriber directly (test setup); bumps updated_at."""
        with self.lock:
            sub, _ = self.get_or_create(email.strip().lower())
            self.apply_fields(sub, fields)
            self.add_tags(sub, tags or [])
            self.bump(sub)
            return sub

    def touch_subscriber(self, email: str, **fields: Any) -> Subscriber:
        """Change fields of an existing subscriber and bump updated_at (incremental-load tests)."""
        with self.lock:
            sub = self.subscribers[email.strip().lower()]
            self.apply_fields(sub, fields)
            self.bump(sub)
            return sub

    def unsubscribe(self, email: str) -> Subscriber:
        """Unsubscribe, creating the person if missing (as Bento's command does)."""
        with self.lock:
            sub, _ = self.get_or_create(email.strip().lower())
            if sub.unsubscribed_at is None:
                sub.unsubscribed_at = self.now()
            self.bump(sub)
            return sub

    def subscribe(self, email: str) -> Subscriber:
        with self.lock:
            sub, _ = self.get_or_create(email.strip().lower())
            sub.unsubscribed_at = None
            self.bump(sub)
            return sub

    def change_email(self, old: str, new: str) -> bool:
        """Move a subscriber to a new address; False if the old one is unknown or the new one is taken."""
        with self.lock:
            sub = self.subscribers.get(old)
            if sub is None or (new in self.subscribers and new != old):
                return False
            del self.subscribers[old]
            sub.email = new
            self.subscribers[new] = sub
            self.bump(sub)
            return True

    def subscribers_by_id(self) -> list[Subscriber]:
        with self.lock:
            return sorted(self.subscribers.values(), key=lambda s: s.id)

    # ----- events
    def add_event(
        self,
        email: str,
        type_: str,
        fields: dict[str, Any] | None,
        details: dict[str, Any] | None,
        date: str | None,
        received_at: datetime | None = None,
    ) -> bool:
        """Store an event; False (not stored again) if its details.unique.key was already seen."""
        with self.lock:
            unique = details.get("unique") if isinstance(details, dict) else None
            if isinstance(unique, dict) and unique.get("key") is not None:
                marker = (email, type_, str(unique["key"]))
                if marker in self._unique_events:
                    return False
                self._unique_events.add(marker)
            self.events.append(Event(self._next_event_id, email, type_, fields, details, date,
                                     received_at or self.now()))
            self._next_event_id += 1
            return True

    # ----- tags and fields
    def insert_tag(self, tag: Tag) -> Tag:
        with self.lock:
            self.tags[tag.id] = tag
            self._tag_by_name[tag.name] = tag
            self._next_tag_id = max(self._next_tag_id, tag.id + 1)
            return tag

    def tag_for_name(self, name: str) -> Tag:
        """The tag with this name, created if missing."""
        with self.lock:
            tag = self._tag_by_name.get(name)
            if tag is None:
                tag = self.insert_tag(Tag(self._next_tag_id, name, self.now()))
            return tag

    def insert_field(self, fdef: FieldDef) -> FieldDef:
        with self.lock:
            self.fields[fdef.id] = fdef
            self._field_by_key[fdef.key] = fdef
            self._next_field_id = max(self._next_field_id, fdef.id + 1)
            return fdef

    def field_for_key(self, key: str) -> FieldDef:
        """The field definition for this key, created if missing."""
        with self.lock:
            fdef = self._field_by_key.get(key)
            if fdef is None:
                fdef = FieldDef(self._next_field_id, key, field_name_for_key(key), self.now())
                self.insert_field(fdef)
            return fdef

    # ----- counts
    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "subscribers": len(self.subscribers),
                "unsubscribed": sum(1 for s in self.subscribers.values() if s.unsubscribed_at is not None),
                "events": len(self.events),
                "tags": len(self.tags),
                "fields": len(self.fields),
                "segments": len(self.segments),
                "broadcasts": len(self.broadcasts),
                "sequences": len(self.sequences),
                "workflows": len(self.workflows),
                "templates": len(self.templates),
                "emails_sent": len(self.emails_sent),
            }
