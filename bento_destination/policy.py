"""Pure decisions of the destination: unchanged, consent, tag ownership, blast radius.

No I/O here: the callers (changes.py, the pre-pass) read the ledger and pass in what it knows, so each
rule is one function a test can call with plain values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import numpy

from bento_api.errors import BentoError

#: default share of the known audience a run may unsubscribe or strip tags from before it stops
DEFAULT_MAX_SHARE: Final = 0.10
#: classes of the ledger's classify (ledger.reads); repeated here so this module imports nothing of the ledger
NEW, CHANGED, UNCHANGED = 0, 1, 2
SUBSCRIBE_EVENT, UNSUBSCRIBE_EVENT = "$subscribe", "$unsubscribe"
#: reject reasons of the consent and tag-ownership rules
UNSUBSCRIBED_PERSON: Final = "unsubscribed_person"
WOULD_RESUBSCRIBE: Final = "would_resubscribe"
TAG_NOT_OWNED: Final = "tag_not_owned"


# --------------------------------------------------------------------------- unchanged


def not_sent(operation: str, klass: numpy.ndarray[Any, numpy.dtype[numpy.int8]]) -> numpy.ndarray[Any, Any]:
    """Which classified rows are not sent: unchanged subscribers; events whose key was acknowledged at all.

    An event is stored once per key by Bento, so a key already acknowledged is never sent again, whatever
    its payload; a subscriber upsert is sent again when it changed.
    """
    if operation == "events":
        return numpy.asarray(klass != NEW)
    return numpy.asarray(klass == UNCHANGED)


# --------------------------------------------------------------------------- consent


def event_consent(event_type: str, known_unsubscribed: bool, allow_events_for_unsubscribed: bool) -> str | None:
    """None if an event may be sent, else the reject reason (a sync never resubscribes anyone)."""
    if not known_unsubscribed:
        return None
    if event_type == SUBSCRIBE_EVENT:
        return WOULD_RESUBSCRIBE
    if not allow_events_for_unsubscribed and event_type != UNSUBSCRIBE_EVENT:
        return UNSUBSCRIBED_PERSON
    return None


def command_consent(command: str, known_unsubscribed: bool) -> str | None:
    """None if a command may be sent, else the reject reason: `subscribe` of a known-unsubscribed person."""
    return WOULD_RESUBSCRIBE if command == "subscribe" and known_unsubscribed else None


# --------------------------------------------------------------------------- tag ownership


def owned_removals(wanted: list[str], owned: Collection[str]) -> list[str]:
    """The tags of ``wanted`` this connector may remove (it added them), in their order."""
    return [tag for tag in wanted if tag in owned]


def may_remove_tag(tag: str, owned: Collection[str]) -> bool:
    """With tag ownership, a `remove_tag` command only removes a tag this connector added."""
    return tag.strip() in owned


# --------------------------------------------------------------------------- blast radius


def removal_people(
    removals: Iterable[tuple[str, bool, list[str]]],
    known_unsubscribed: Collection[str],
    owned: Mapping[str, Collection[str]] | None,
) -> tuple[set[str], set[str]]:
    """The people rows would unsubscribe, and strip tags from: what the blast radius counts.

    ``removals`` are (email, unsubscribes?, tags removed) of the rows that will be sent. Someone already
    known to be unsubscribed is not counted again. With tag ownership (``owned`` not None) only owned
    tags count, and `*` (a `$remove_tag` event, whose tag is in its details) always does.
    """
    unsubscribing: set[str] = set()
    untagging: set[str] = set()
    for email, unsubscribes, tags in removals:
        if unsubscribes and email not in known_unsubscribed:
            unsubscribing.add(email)
        if tags and (owned is None or "*" in tags or set(tags) & set(owned.get(email, ()))):
            untagging.add(email)
    return unsubscribing, untagging


class BlastRadiusExceeded(BentoError):
    """A run would unsubscribe people or remove tags for too large a share of the audience.

    Raised before anything is sent, so a wrong source table cannot strip a whole list.
    """

    def __init__(
        self, message: str, *, would_unsubscribe: int, would_remove_tags: int, known_audience: int, max_share: float
    ) -> None:
        super().__init__(message)
        self.would_unsubscribe = would_unsubscribe
        self.would_remove_tags = would_remove_tags
        self.known_audience = known_audience
        self.max_share = max_share


def check_blast_radius(
    would_unsubscribe: int,
    would_remove_tags: int,
    known_audience: int,
    max_share: float = DEFAULT_MAX_SHARE,
    force: bool = False,
) -> None:
    """Stop a run, before anything is sent, that would unsubscribe or untag too many people.

    ``would_unsubscribe`` and ``would_remove_tags`` count people (distinct emails); each is compared with
    ``max_share * known_audience`` on its own. With no known audience (a first run) any removal exceeds
    the share: pass ``max(ledger.known_audience(), people in this run)`` to size the first run instead.
    """
    if not 0.0 <= max_share <= 1.0:
        raise ValueError(f"max_share must be between 0 and 1, got {max_share!r}")
    if min(would_unsubscribe, would_remove_tags, known_audience) < 0:
        raise ValueError("counts must not be negative")
    if force:
        return
    limit = max_share * known_audience
    problems = []
    for count, what in ((would_unsubscribe, "unsubscribe"), (would_remove_tags, "remove tags from")):
        if count > 0 and count > limit:
            share = f"{count / known_audience:.1%}" if known_audience else "all"
            problems.append(f"{what} {count:,} people ({share} of {known_audience:,} known)")
    if problems:
        raise BlastRadiusExceeded(
            f"nothing was sent: this run would {' and '.join(problems)}, more than the allowed "
            f"{max_share:.1%}. Check the source table; if this is intended, rerun with force=True "
            f"or raise max_share.",
            would_unsubscribe=would_unsubscribe,
            would_remove_tags=would_remove_tags,
            known_audience=known_audience,
            max_share=max_share,
        )
