"""The destination's pure decisions (bento_destination/policy.py), called with plain values."""

from __future__ import annotations

import numpy

from bento_destination import ledger
from bento_destination.policy import (
    CHANGED,
    NEW,
    TAG_NOT_OWNED,
    UNCHANGED,
    UNSUBSCRIBED_PERSON,
    WOULD_RESUBSCRIBE,
    BlastRadiusExceeded,
    check_blast_radius,
    command_consent,
    event_consent,
    may_remove_tag,
    not_sent,
    owned_removals,
    removal_people,
)


def test_the_classes_are_the_ledgers() -> None:
    assert (NEW, CHANGED, UNCHANGED) == (ledger.NEW, ledger.CHANGED, ledger.UNCHANGED)
    assert ledger.BlastRadiusExceeded is BlastRadiusExceeded and ledger.check_blast_radius is check_blast_radius


def test_unchanged_subscribers_and_acknowledged_events_are_not_sent() -> None:
    klass = numpy.array([NEW, CHANGED, UNCHANGED, NEW], numpy.int8)
    assert not_sent("subscribers", klass).tolist() == [False, False, True, False]
    # Bento keeps one event per key: a key acknowledged at all is not sent again, whatever its payload
    assert not_sent("events", klass).tolist() == [False, True, True, False]


def test_consent() -> None:
    assert event_consent("$purchase", known_unsubscribed=False, allow_events_for_unsubscribed=False) is None
    assert event_consent("$purchase", True, False) == UNSUBSCRIBED_PERSON
    assert event_consent("$purchase", True, True) is None
    assert event_consent("$subscribe", True, True) == WOULD_RESUBSCRIBE  # never, even when events are allowed
    assert event_consent("$subscribe", False, False) is None
    assert event_consent("$unsubscribe", True, False) is None
    assert command_consent("subscribe", known_unsubscribed=True) == WOULD_RESUBSCRIBE
    assert command_consent("subscribe", known_unsubscribed=False) is None
    assert command_consent("unsubscribe", known_unsubscribed=True) is None


def test_tag_ownership() -> None:
    assert owned_removals(["vip", "trial", "beta"], {"beta", "vip"}) == ["vip", "beta"]
    assert owned_removals(["vip"], set()) == []
    assert may_remove_tag(" vip ", {"vip"}) and not may_remove_tag("trial", {"vip"})
    assert TAG_NOT_OWNED == "tag_not_owned"


def test_removal_people_counts_people_not_rows() -> None:
    removals = [
        ("a@x.io", True, []), ("a@x.io", True, ["vip"]), ("b@x.io", True, []),  # b is known unsubscribed
        ("c@x.io", False, ["trial"]), ("d@x.io", False, ["*"]), ("e@x.io", False, []),
    ]
    assert removal_people(removals, {"b@x.io"}, None) == ({"a@x.io"}, {"a@x.io", "c@x.io", "d@x.io"})
    # with tag ownership only owned tags count; `*` (a $remove_tag event) always does
    owned = {"a@x.io": {"vip"}, "c@x.io": {"other"}}
    assert removal_people(removals, {"b@x.io"}, owned) == ({"a@x.io"}, {"a@x.io", "d@x.io"})
