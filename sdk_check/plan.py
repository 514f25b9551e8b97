"""Who and what the SDK check writes: emails, tags and fields, and the people set up before the SDK runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from bento_api.emulator import BentoEmulator

DOMAIN = "sdk-check.example.com"
AUTHOR = "author@example.com"  # the emulator's default allowed sender


def _email(name: str) -> str:
    return f"{name}@{DOMAIN}"


@dataclass(frozen=True)
class Plan:
    """Every name the Node script uses; passed to it as JSON, and read back by the checks."""

    emails: dict[str, str] = field(default_factory=lambda: {name: _email(name.replace("_", "-")) for name in (
        "unknown", "seeded", "created", "imported", "imported_second", "upserted", "evented", "tracked",
        "purchaser", "added", "tagged", "field_updated", "removed", "command_tagged", "untagged",
        "command_field", "field_removed", "resubscribed", "unsubscribed", "renamed_from", "renamed_to",
        "mailed", "mailed_second", "not_mailed", "refused", "within_budget", "over_budget")})
    author: str = AUTHOR
    new_tag: str = "sdk-created-tag"
    new_field: str = "sdkCreatedField"
    import_tags: tuple[str, str] = ("sdk-imported-a", "sdk-imported-b")
    event_tag: str = "sdk-event-tag"
    command_tag: str = "sdk-command-tag"
    preset_tag: str = "sdk-preset-tag"
    preset_field: str = "sdk_preset_field"

    def to_json(self, emulator: BentoEmulator) -> str:
        """The plan plus what only the running emulator knows (a segment id, the seeded person's uuid)."""
        store = emulator.store
        with store.lock:
            segment_id = str(min(store.segments))
            seeded = store.subscribers[self.emails["seeded"]]
            payload = {**asdict(self), "segment_id": segment_id,
                       "seeded": {"email": seeded.email, "uuid": seeded.uuid}}
        return json.dumps(payload)

    def set_up(self, emulator: BentoEmulator) -> dict[str, str]:
        """People the commands need to exist beforehand; returns the uuid of each, by plan key."""
        emails, store = self.emails, emulator.store
        store.add_subscriber(emails["seeded"], tags=[self.preset_tag], first_name="Seed")
        store.add_subscriber(emails["untagged"], tags=[self.preset_tag])
        store.add_subscriber(emails["field_removed"])
        store.touch_subscriber(emails["field_removed"], **{self.preset_field: "to be removed"})
        store.add_subscriber(emails["resubscribed"])
        store.unsubscribe(emails["resubscribed"])
        store.add_subscriber(emails["unsubscribed"])
        store.add_subscriber(emails["renamed_from"], first_name="Renamed")
        with store.lock:
            return {key: store.subscribers[email].uuid for key, email in emails.items() if email in store.subscribers}
