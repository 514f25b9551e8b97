"""What each Node SDK call must have returned, and what the emulator must hold afterwards.

A check gets the SDK's answer and the emulator (after queued writes were applied) and returns a short
description of what it verified, or raises CheckFailed. Every call of a phase has exactly one check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from bento_api.emulator import BentoEmulator
from bento_api.emulator.store import Event, Subscriber

from .node_client import SdkCall
from .plan import Plan


class CheckFailed(AssertionError):
    """The SDK's answer or the emulator's state is not what Bento's API promises."""


@dataclass(frozen=True)
class Context:
    emulator: BentoEmulator
    plan: Plan
    uuids: dict[str, str]  # plan key -> uuid of the people set up before the SDK ran
    writes_may_be_queued: bool  # a read right after a write may not see it (as on the real Bento)


Check = Callable[[SdkCall, Context], str]


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def returned(call: SdkCall) -> Any:
    """The call's result; a raised error fails the check."""
    if call.failed:
        raise CheckFailed(f"raised {call.error_name}: {call.error_message}")
    return call.result


def raised(call: SdkCall, error_name: str) -> str:
    expect(call.error_name == error_name,
           f"expected {error_name}, got " + (f"{call.error_name}: {call.error_message}" if call.failed
                                             else f"a result {str(call.result)[:200]}"))
    return f"raised {error_name}"


def person(ctx: Context, key: str) -> Subscriber:
    email = ctx.plan.emails[key]
    sub = ctx.emulator.store.subscribers.get(email)
    if sub is None:
        raise CheckFailed(f"the emulator holds no subscriber {email}")
    return sub


def absent(ctx: Context, key: str) -> None:
    email = ctx.plan.emails[key]
    expect(email not in ctx.emulator.store.subscribers, f"{email} exists, but the request should have done nothing")


def tag_names(ctx: Context, sub: Subscriber) -> set[str]:
    return set(ctx.emulator.store.tag_names(sub))


def events(ctx: Context, key: str, type_: str) -> list[Event]:
    email = ctx.plan.emails[key]
    found = [e for e in ctx.emulator.store.events if e.email == email and e.type == type_]
    expect(len(found) == 1, f"expected one {type_} event of {email}, the emulator holds {len(found)}")
    return found


def attributes(result: Any) -> dict[str, Any]:
    expect(isinstance(result, dict) and isinstance(result.get("attributes"), dict),
           f"not a JSON:API object: {str(result)[:200]}")
    attrs: dict[str, Any] = result["attributes"]
    return attrs


def last_status(ctx: Context, path: str) -> int:
    records = ctx.emulator.requests(path)
    expect(bool(records), f"the emulator logged no request to {path}")
    return records[-1].status


# ---------------------------------------------------------------- reads
def tags_listed(call: SdkCall, ctx: Context) -> str:
    names = [attributes(t)["name"] for t in returned(call)]
    expected = sorted(t.name for t in ctx.emulator.store.tags.values())
    expect(sorted(names) == expected, f"tags {sorted(names)} != the emulator's {expected}")
    return f"{len(names)} tags, as stored"


def fields_listed(call: SdkCall, ctx: Context) -> str:
    keys = sorted(attributes(f)["key"] for f in returned(call))
    expected = sorted(f.key for f in ctx.emulator.store.fields.values())
    expect(keys == expected, f"field keys {keys} != the emulator's {expected}")
    return f"{len(keys)} fields, as stored"


def broadcasts_listed(call: SdkCall, ctx: Context) -> str:
    ids = [b["id"] for b in returned(call)]
    sent = [str(b.id) for b in ctx.emulator.store.broadcasts if b.status == "sent"]
    expected = sent[: ctx.emulator.config.page_size]
    expect(ids == expected, f"broadcast ids {ids} != the first page of sent broadcasts {expected}")
    return f"first page: {len(ids)} sent broadcasts, in order"


def site_stats(call: SdkCall, ctx: Context) -> str:
    result = returned(call)
    subs = list(ctx.emulator.store.subscribers.values())
    unsub = sum(1 for s in subs if s.unsubscribed_at is not None)
    expected = {"user_count": len(subs), "subscriber_count": len(subs) - unsub, "unsubscriber_count": unsub}
    expect(result == expected, f"{result} != {expected}")
    return f"counts match the store: {expected}"


def segment_stats(call: SdkCall, ctx: Context) -> str:
    result = returned(call)
    counts = [result.get(k) for k in ("user_count", "subscriber_count", "unsubscriber_count")]
    expect(all(isinstance(c, int) for c in counts), f"not three counts: {result}")
    expect(counts[0] == counts[1] + counts[2], f"users != subscribers + unsubscribers: {result}")
    record = ctx.emulator.requests("/stats/segment")[-1]
    segment_id = str(min(ctx.emulator.store.segments))
    expect(record.query.get("segment_id") == segment_id and record.status == 200,
           f"asked {record.query} and got {record.status}, expected segment_id={segment_id} and 200")
    return f"segment {segment_id}: {result}"


def seeded_by_email(call: SdkCall, ctx: Context) -> str:
    attrs = attributes(returned(call))
    sub = person(ctx, "seeded")
    expect(attrs["email"] == sub.email and attrs["uuid"] == sub.uuid, f"got {attrs['email']} / {attrs['uuid']}")
    expect(attrs["cached_tag_ids"] == [str(t) for t in sub.tag_ids], f"tag ids {attrs['cached_tag_ids']}")
    expect(attrs["fields"] == {"first_name": "Seed"}, f"fields {attrs['fields']}")
    return f"{sub.email}: uuid, tags and fields as stored"


def seeded_by_uuid(call: SdkCall, ctx: Context) -> str:
    attrs = attributes(returned(call))
    expect(attrs["uuid"] == ctx.uuids["seeded"] and attrs["email"] == ctx.plan.emails["seeded"], f"got {attrs}")
    return f"uuid {attrs['uuid']} -> {attrs['email']}"


def unknown_is_null(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) is None, f"expected null for an unknown email, got {str(call.result)[:200]}")
    return "null for an unknown email"


def email_valid(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) is True, f"expected valid: true, got {call.result!r}")
    return f"{ctx.plan.emails['unknown']} is valid"


# ---------------------------------------------------------------- writes
def tag_created(call: SdkCall, ctx: Context) -> str:
    name = attributes(returned(call))["name"]
    expect(name == ctx.plan.new_tag, f"created {name!r}")
    expect(ctx.plan.new_tag in {t.name for t in ctx.emulator.store.tags.values()}, "the tag is not stored")
    return f"tag {name!r} stored"


def field_created(call: SdkCall, ctx: Context) -> str:
    key = attributes(returned(call))["key"]
    expect(key == ctx.plan.new_field, f"created {key!r}")
    expect(key in {f.key for f in ctx.emulator.store.fields.values()}, "the field is not stored")
    return f"field {key!r} stored"


def subscriber_created(call: SdkCall, ctx: Context) -> str:
    attrs = attributes(returned(call))
    sub = person(ctx, "created")
    expect(attrs["email"] == sub.email and attrs["uuid"] == sub.uuid, f"answered {attrs}")
    return f"{sub.email} stored"


def subscribers_imported(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) == 2, f"results {call.result!r}, expected 2")
    sub = person(ctx, "imported")
    expect(sub.fields.get("first_name") == "Ada" and sub.fields.get("plan") == "pro", f"fields {sub.fields}")
    expect(set(ctx.plan.import_tags) <= tag_names(ctx, sub), f"tags {tag_names(ctx, sub)}")
    expect(person(ctx, "imported_second").fields.get("first_name") == "Grace", "second row's field missing")
    return "2 rows: fields and comma-separated tags stored"


def subscriber_upserted(call: SdkCall, ctx: Context) -> str:
    result = returned(call)
    if result is None:
        expect(ctx.writes_may_be_queued, "returned null, but writes are applied at once in this mode")
    else:
        expect(attributes(result)["email"] == ctx.plan.emails["upserted"], f"returned {attributes(result)}")
    sub = person(ctx, "upserted")
    expect(sub.fields.get("company") == "Analytical Engines", f"fields {sub.fields}")
    expect(ctx.plan.import_tags[0] in tag_names(ctx, sub), f"tags {tag_names(ctx, sub)}")
    return f"{sub.email} stored with field and tag" + (", read back" if result is not None else "")


def events_imported(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) == 1, f"results {call.result!r}, expected 1")
    event = events(ctx, "evented", "$sdk_check")[0]
    expect(event.fields == {"plan": "team"} and event.details == {"step": 1}, f"stored {event}")
    expect(person(ctx, "evented").fields.get("plan") == "team", "the event's fields did not reach the person")
    return "event stored with fields and details; person created"


def event_tracked(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) is True, f"returned {call.result!r}")
    event = events(ctx, "tracked", "$signed_up")[0]
    expect(event.details == {"source": "sdk"}, f"details {event.details}")
    return "$signed_up stored"


def purchase_tracked(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) is True, f"returned {call.result!r}")
    event = events(ctx, "purchaser", "$purchase")[0]
    details = event.details or {}
    expect(details.get("unique") == {"key": "order-1"} and details.get("value", {}).get("amount") == 1999,
           f"details {details}")
    return "$purchase stored with its unique key and value"


def subscriber_added(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) is True, f"returned {call.result!r}")
    events(ctx, "added", "$subscribe")
    sub = person(ctx, "added")
    expect(sub.fields.get("source") == "sdk" and sub.unsubscribed_at is None, f"stored {sub}")
    return "$subscribe stored; subscribed with its field"


def subscriber_tagged(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) is True, f"returned {call.result!r}")
    events(ctx, "tagged", "$tag")
    expect(ctx.plan.event_tag in tag_names(ctx, person(ctx, "tagged")), "the $tag event did not tag the person")
    return f"$tag stored; tagged {ctx.plan.event_tag!r}"


def fields_updated(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) is True, f"returned {call.result!r}")
    events(ctx, "field_updated", "$update_fields")
    expect(person(ctx, "field_updated").fields.get("tier") == "gold", "the field was not set")
    return "$update_fields stored; tier = gold"


def subscriber_removed(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) is True, f"returned {call.result!r}")
    events(ctx, "removed", "$unsubscribe")
    expect(person(ctx, "removed").unsubscribed_at is not None, "not unsubscribed")
    return "$unsubscribe stored; unsubscribed"


def command_result(call: SdkCall) -> None:
    expect(returned(call) == 1, f"results {call.result!r}, expected 1")


def command_tag_added(call: SdkCall, ctx: Context) -> str:
    command_result(call)
    expect(ctx.plan.command_tag in tag_names(ctx, person(ctx, "command_tagged")), "the tag was not added")
    return f"add_tag: {ctx.plan.command_tag!r} added"


def command_tag_removed(call: SdkCall, ctx: Context) -> str:
    command_result(call)
    expect(ctx.plan.preset_tag not in tag_names(ctx, person(ctx, "untagged")), "the tag is still there")
    return f"remove_tag: {ctx.plan.preset_tag!r} removed"


def command_field_added(call: SdkCall, ctx: Context) -> str:
    command_result(call)
    expect(person(ctx, "command_field").fields.get("favourite_colour") == "teal", "the field was not set")
    return "add_field: favourite_colour = teal"


def command_field_removed(call: SdkCall, ctx: Context) -> str:
    command_result(call)
    fields = person(ctx, "field_removed").fields
    expect(ctx.plan.preset_field not in fields, f"the field is still there: {fields}")
    return f"remove_field: {ctx.plan.preset_field} removed"


def command_subscribed(call: SdkCall, ctx: Context) -> str:
    command_result(call)
    expect(person(ctx, "resubscribed").unsubscribed_at is None, "still unsubscribed")
    return "subscribe: resubscribed"


def command_unsubscribed(call: SdkCall, ctx: Context) -> str:
    command_result(call)
    expect(person(ctx, "unsubscribed").unsubscribed_at is not None, "still subscribed")
    return "unsubscribe: unsubscribed"


def command_email_changed(call: SdkCall, ctx: Context) -> str:
    command_result(call)
    absent(ctx, "renamed_from")
    sub = person(ctx, "renamed_to")
    expect(sub.uuid == ctx.uuids["renamed_from"], "the new email is a different person")
    return "change_email: same person, new email"


def _sent_to(ctx: Context, key: str) -> list[Any]:
    return [m for m in ctx.emulator.store.emails_sent if m.to == ctx.plan.emails[key]]


def transactional_sent(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) == 1, f"results {call.result!r}, expected 1")
    sent = _sent_to(ctx, "mailed")
    expect(len(sent) == 1, f"{len(sent)} emails stored")
    expect(sent[0].transactional and sent[0].personalizations == {"name": "Ada"} and sent[0].from_ == ctx.plan.author,
           f"stored {sent[0]}")
    return "1 transactional email stored with its personalizations"


def emails_created(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) == 1, f"results {call.result!r}, expected 1")
    expect(len(_sent_to(ctx, "mailed_second")) == 1, "no email stored")
    return "1 email stored"


def unknown_author_refused(call: SdkCall, ctx: Context) -> str:
    outcome = raised(call, "AuthorNotAuthorizedError")
    expect(not _sent_to(ctx, "not_mailed"), "the email was stored")
    absent(ctx, "not_mailed")
    return outcome + "; nothing stored"


# ---------------------------------------------------------------- reads after writes
def imported_read_back(call: SdkCall, ctx: Context) -> str:
    attrs = attributes(returned(call))
    sub = person(ctx, "imported")
    expect(attrs["fields"] == sub.fields, f"fields {attrs['fields']} != stored {sub.fields}")
    expect(sorted(attrs["cached_tag_ids"]) == sorted(str(t) for t in sub.tag_ids), f"tags {attrs['cached_tag_ids']}")
    return "fields and tag ids as imported"


def tags_after_writes(call: SdkCall, ctx: Context) -> str:
    names = {attributes(t)["name"] for t in returned(call)}
    wanted = {ctx.plan.new_tag, ctx.plan.event_tag, ctx.plan.command_tag, *ctx.plan.import_tags}
    expect(wanted <= names, f"missing tags {sorted(wanted - names)}")
    return f"lists the {len(wanted)} tags the SDK created"


# ---------------------------------------------------------------- 401 and 429
def unauthorized_read(call: SdkCall, ctx: Context) -> str:
    outcome = raised(call, "NotAuthorizedError")
    expect(last_status(ctx, "/fetch/tags") == 401, "the emulator did not answer 401")
    return outcome + " on 401"


def unauthorized_write(call: SdkCall, ctx: Context) -> str:
    outcome = raised(call, "NotAuthorizedError")
    expect(last_status(ctx, "/batch/subscribers") == 401, "the emulator did not answer 401")
    absent(ctx, "refused")
    return outcome + " on 401; nothing stored"


def within_budget_read(call: SdkCall, ctx: Context) -> str:
    expect(bool(returned(call)), "no tags")
    return "answered"


def over_budget_read(call: SdkCall, ctx: Context) -> str:
    outcome = raised(call, "RateLimitedError")
    expect(last_status(ctx, "/fetch/tags") == 429, "the emulator did not answer 429")
    return outcome + " on 429"


def within_budget_write(call: SdkCall, ctx: Context) -> str:
    expect(returned(call) == 1, f"results {call.result!r}, expected 1")
    events(ctx, "within_budget", "$sdk_check")
    return "event stored"


def over_budget_write(call: SdkCall, ctx: Context) -> str:
    outcome = raised(call, "RateLimitedError")
    expect(last_status(ctx, "/batch/events") == 429, "the emulator did not answer 429")
    absent(ctx, "over_budget")
    return outcome + " on 429; nothing stored"


PHASES: Final[tuple[tuple[str, tuple[tuple[str, Check], ...]], ...]] = (
    ("read", (
        ("Tags.getTags", tags_listed),
        ("Fields.getFields", fields_listed),
        ("Broadcasts.getBroadcasts", broadcasts_listed),
        ("Stats.getSiteStats", site_stats),
        ("Stats.getSegmentStats", segment_stats),
        ("Subscribers.getSubscribers(email)", seeded_by_email),
        ("Subscribers.getSubscribers(uuid)", seeded_by_uuid),
        ("Subscribers.getSubscribers(unknown)", unknown_is_null),
        ("Experimental.validateEmail", email_valid),
    )),
    ("write", (
        ("Tags.createTag", tag_created),
        ("Fields.createField", field_created),
        ("Subscribers.createSubscriber", subscriber_created),
        ("Batch.importSubscribers", subscribers_imported),
        ("upsertSubscriber", subscriber_upserted),
        ("Batch.importEvents", events_imported),
        ("track", event_tracked),
        ("trackPurchase", purchase_tracked),
        ("addSubscriber", subscriber_added),
        ("tagSubscriber", subscriber_tagged),
        ("updateFields", fields_updated),
        ("removeSubscriber", subscriber_removed),
        ("Commands.addTag", command_tag_added),
        ("Commands.removeTag", command_tag_removed),
        ("Commands.addField", command_field_added),
        ("Commands.removeField", command_field_removed),
        ("Commands.subscribe", command_subscribed),
        ("Commands.unsubscribe", command_unsubscribed),
        ("Commands.changeEmail", command_email_changed),
        ("Batch.sendTransactionalEmails", transactional_sent),
        ("Broadcasts.createEmails", emails_created),
        ("Batch.sendTransactionalEmails(unknown author)", unknown_author_refused),
    )),
    ("readback", (
        ("Subscribers.getSubscribers(imported)", imported_read_back),
        ("Tags.getTags(after writes)", tags_after_writes),
    )),
    ("unauthorized", (
        ("Tags.getTags(wrong keys)", unauthorized_read),
        ("Batch.importSubscribers(wrong keys)", unauthorized_write),
    )),
    ("rate_limited", (
        ("Tags.getTags(within budget)", within_budget_read),
        ("Tags.getTags(over budget)", over_budget_read),
        ("Batch.importEvents(within budget)", within_budget_write),
        ("Batch.importEvents(over budget)", over_budget_write),
    )),
)
