"""Deterministic seed data: the same seed and sizes give byte-identical objects.

Everything comes from one random.Random(seed) drawn in a fixed order, and every date is an offset
from a fixed epoch (2024-01-01), never from the clock. Ids start at distinct bases per object type so
a client that mixes up ids of different objects is caught.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

from . import limits
from .config import EmulatorConfig
from .store import (
    Broadcast,
    EmailTemplate,
    FieldDef,
    Segment,
    Sequence,
    Store,
    Subscriber,
    Tag,
    Workflow,
)
from .timeutil import SEED_EPOCH

ID_BASE = {
    "tag": 1001,
    "field": 2001,
    "segment": 3001,
    "template": 4001,
    "broadcast": 5001,
    "sequence": 6001,
    "workflow": 7001,
    "subscriber": 10001,
}

TAG_WORDS = ("customer", "lead", "mql", "vip", "newsletter", "trial", "churned", "beta", "partner", "webinar")
FIELD_KEYS = ("first_name", "last_name", "company", "plan", "city", "country", "phone", "lifetime_value",
              "signup_source", "seats", "is_admin", "referral_code")
FIRST = ("ada", "grace", "alan", "linus", "margaret", "dennis", "barbara", "ken", "frances", "edsger")
LAST = ("lovelace", "hopper", "turing", "torvalds", "hamilton", "ritchie", "liskov", "thompson", "allen")
DOMAINS = ("example.com", "example.org", "example.net", "mail.example.io")
SEGMENT_WORDS = ("Active buyers", "Dormant", "Trial users", "Newsletter readers", "High value", "Europe")
SUBJECTS = ("Welcome!", "Your weekly digest", "We miss you", "New feature", "Last chance", "Tips")


def _at(rng: random.Random, start_days: int = 0, span_days: int = 365) -> datetime:
    """A seeded timestamp with millisecond precision, after the fixed epoch."""
    offset_ms = rng.randrange(start_days * 86_400_000, (start_days + span_days) * 86_400_000)
    return SEED_EPOCH + timedelta(milliseconds=offset_ms)


def _numbered(words: tuple[str, ...], i: int) -> str:
    word = words[i % len(words)]
    return word if i < len(words) else f"{word}-{i // len(words) + 1}"


def seed_store(store: Store, cfg: EmulatorConfig) -> None:
    """Fill an empty store from cfg.seed and the size options."""
    rng = random.Random(cfg.seed)
    with store.lock:
        for i in range(cfg.tags):
            store.insert_tag(Tag(ID_BASE["tag"] + i, _numbered(TAG_WORDS, i), _at(rng)))
        for i in range(cfg.fields):
            key = _numbered(FIELD_KEYS, i).replace("-", "_")
            store.insert_field(FieldDef(ID_BASE["field"] + i, key, _field_name(key), _at(rng),
                                        whitelisted=rng.choice((True, None))))
        for i in range(cfg.segments):
            created = _at(rng)
            name = _numbered(SEGMENT_WORDS, i)
            query = {"tags": {"any": [_numbered(TAG_WORDS, rng.randrange(max(cfg.tags, 1)))]},
                     "events": [{"type": "$purchase", "within_days": rng.randrange(7, 90)}]}
            store.segments[ID_BASE["segment"] + i] = Segment(
                ID_BASE["segment"] + i, name, f"People in {name.lower()}", query, created,
                created + timedelta(days=rng.randrange(0, 30)))
        next_template = [ID_BASE["template"]]

        def template(name: str, with_stats: bool) -> int:
            tid = next_template[0]
            next_template[0] += 1
            subject = rng.choice(SUBJECTS)
            stats = ({"open_rate": round(rng.random(), 3), "click_rate": round(rng.random() / 4, 3)}
                     if with_stats else None)
            store.templates[tid] = EmailTemplate(
                tid, name, subject, f"<p>{subject}</p><p>Hi {{{{ visitor.first_name }}}}, #{tid}.</p>",
                _at(rng), stats)
            return tid

        for i in range(cfg.broadcasts):
            status = _broadcast_status(i)
            bid = ID_BASE["broadcast"] + i
            created = _at(rng)
            sent = status in ("sent", "sending", "paused", "canceled")
            store.broadcasts.append(Broadcast(
                id=bid, name=f"Broadcast {i + 1} ({status})", status=status,
                template_id=template(f"Broadcast {i + 1}", sent),
                to=rng.choice(("all subscribers", "tag:customer", "segment:Active buyers")),
                share_url=f"https://app.bentonow.com/broadcasts/share/{rng.getrandbits(48):012x}",
                created_at=created,
                send_at=created + timedelta(hours=rng.randrange(1, 96)) if status != "draft" else None,
                sent_final_batch_at=created + timedelta(days=4) if status == "sent" else None,
                open_rate=round(rng.random(), 3) if sent else None))
        for i in range(cfg.sequences):
            tids = [template(f"Sequence {i + 1} email {k + 1}", rng.random() < 0.7)
                    for k in range(rng.randrange(1, 4))]
            store.sequences.append(Sequence(ID_BASE["sequence"] + i, f"sequence_{rng.getrandbits(48):012x}",
                                            f"Sequence {i + 1}", _at(rng), tids))
        for i in range(cfg.workflows):
            tids = [template(f"Workflow {i + 1} email {k + 1}", rng.random() < 0.7)
                    for k in range(rng.randrange(1, 4))]
            store.workflows.append(Workflow(ID_BASE["workflow"] + i, f"Workflow {i + 1}",
                                            "live" if i % 3 else "draft", _at(rng), tids))
        field_keys = [f.key for f in store.fields.values() if f.key not in ("first_name", "last_name")]
        tag_ids = list(store.tags)
        for i in range(cfg.subscribers):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            fields: dict[str, object] = {"first_name": first.capitalize(), "last_name": last.capitalize()}
            for key in rng.sample(field_keys, k=rng.randrange(0, min(3, len(field_keys)) + 1)):
                fields[key] = _field_value(rng, key)
            if i % 17 == 5:
                fields = {}  # some people have no fields at all: Bento then answers fields: null
            created = _at(rng)
            store.insert_subscriber(Subscriber(
                id=ID_BASE["subscriber"] + i,
                uuid=_uuid(rng),
                email=f"{first}.{last}.{i}@{rng.choice(DOMAINS)}",
                fields=fields,
                tag_ids=sorted(rng.sample(tag_ids, k=rng.randrange(0, min(3, len(tag_ids)) + 1))),
                unsubscribed_at=created + timedelta(days=1) if i % 10 == 9 else None,
                created_at=created,
                updated_at=created + timedelta(milliseconds=rng.randrange(0, 90 * 86_400_000)),
            ))


def _broadcast_status(i: int) -> str:
    """Half sent (so 'sent' spans several pages), the rest spread over the other statuses."""
    others = limits.BROADCAST_STATUSES[1:]
    return "sent" if i % 2 == 0 else others[(i // 2) % len(others)]


def _field_name(key: str) -> str:
    return " ".join(w.capitalize() for w in key.split("_"))


def _field_value(rng: random.Random, key: str) -> object:
    if key in ("lifetime_value", "seats"):
        return rng.randrange(0, 10_000)
    if key == "is_admin":
        return rng.random() < 0.2
    return f"{key}-{rng.randrange(1000)}"


def _uuid(rng: random.Random) -> str:
    n = rng.getrandbits(128)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"
