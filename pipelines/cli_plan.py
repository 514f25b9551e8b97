"""`bento-dlt sync --dry-run`: validate every row with the destination's own mapping and say what a sync would do.

The plan counts rows per operation, the rows that would be rejected (with reasons and a few examples),
the requests and the minutes they take at the budget, and which rows would start Bento automations
(events do; subscriber imports and commands other than `add_tag_via_event` do not). It sends nothing.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bento_api import Budgets
from bento_destination.duplicates import DUPLICATE_EMAIL, EmailCounts, candidate, choose, duplicate_detail
from bento_destination.keys import DEFAULT_EVENT_KEYS, IdenticalRows, base_event_key, explicit_event_key
from bento_destination.mapping import MappingOptions, map_row, redact_row
from bento_destination.report import two_shares
from bento_destination.rows import iter_rows
from bento_destination.settings import ENDPOINTS, REQUEST_MAXIMA, RESERVED_NOTE
from bento_destination.values import RowError, safe_for_file

from .cli_common import reject_example
from .cli_input import BATCH_ROWS, SyncInput

#: rejected rows shown as examples per reason
EXAMPLES_PER_REASON = 3
AUTOMATIONS = {
    "subscribers": "subscriber imports do not start automations, nor do the `unsubscribe` commands made "
                   "from `unsubscribed` rows",
    "events": "every event sent starts the automations and flows listening for its type",
    "commands": "only `add_tag_via_event` commands start automations",
    "emails": "emails start no automations, but every email sent reaches a person: it is never sent twice",
}


@dataclass
class Plan:
    """What a sync of one input as one operation would do."""

    operation: str
    table: str
    label: str
    rows: int = 0
    valid: int = 0
    commands: int = 0
    triggers_automations: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, Any]] = field(default_factory=list)
    requests_by_path: Counter[str] = field(default_factory=Counter)
    dropped_secret_columns: set[str] = field(default_factory=set)
    reserved_columns: set[str] = field(default_factory=set)
    ignored_columns: set[str] = field(default_factory=set)
    #: events that would get a key derived from their content, and of them the identical rows numbered `#n`
    derived_keys: int = 0
    identical_rows: int = 0
    #: valid rows a sync would not send, and why (the sync ledger's unchanged rows, emails already sent)
    not_sent: int = 0
    not_sent_why: str = ""
    #: row contents in the JSON examples (`--show-rows`); by default only reason and detail
    show_rows: bool = False

    @property
    def would_send(self) -> int:
        return max(self.valid - self.not_sent, 0)

    def skip(self, count: int, why: str) -> None:
        """Count valid rows a sync would not send (known from the ledger), and size the requests to the rest."""
        self.not_sent, self.not_sent_why = count, why
        main_path = ENDPOINTS[self.operation][0]
        if count and self.requests_by_path.get(main_path):
            self.requests_by_path[main_path] = _requests(self.would_send, self.operation)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def rejected_share(self) -> float:
        return self.rejected / self.rows if self.rows else 0.0

    def minutes(self, budgets: Budgets) -> float:
        """Minutes the requests take at the budget: each family is paced on its own, so the busiest one."""
        per_family: Counter[str] = Counter()
        for path, count in self.requests_by_path.items():
            per_family[path.strip("/").split("/", 1)[0]] += count
        busiest = max(per_family.values(), default=0)
        return busiest / budgets.requests_per_minute

    def to_dict(self, budgets: Budgets, threshold: float) -> dict[str, Any]:
        return {
            "table": self.table,
            "operation": self.operation,
            "input": self.label,
            "rows": self.rows,
            "valid": self.valid,
            "would_send": self.would_send,
            "not_sent_valid": self.not_sent,
            "extra_commands": self.commands,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "rejected_share": round(self.rejected_share, 6),
            "reject_threshold": threshold,
            "past_threshold": self.rejected_share > threshold,
            "reject_examples": [reject_example(example, self.show_rows) for example in self.examples],
            "requests": {"credentials_check": 1, **dict(self.requests_by_path)},
            "requests_per_minute": budgets.requests_per_minute,
            "minutes_at_budget": round(self.minutes(budgets), 2),
            "rows_triggering_automations": self.triggers_automations,
            **({"derived_keys": self.derived_keys, "identical_rows": self.identical_rows}
               if self.operation == "events" else {}),
            "automations": AUTOMATIONS[self.operation],
            "not_sent_secret_columns": sorted(self.dropped_secret_columns),
            "not_sent_reserved_columns": sorted(self.reserved_columns),
            "ignored_columns": sorted(self.ignored_columns),
        }

    def format(self, budgets: Budgets, threshold: float) -> str:
        total_requests = sum(self.requests_by_path.values())
        lines = [
            f"Dry run: {self.label} as {self.operation} (nothing was sent)",
            f"  rows read: {self.rows}",
            f"  would be sent: {self.would_send}"
            + (f" (plus {self.commands} unsubscribe commands)" if self.commands else "")
            + (f"; valid {self.valid}, of which {self.not_sent} {self.not_sent_why}" if self.not_sent else ""),
            f"  rejected: {self.rejected} ({self.rejected_share:.1%}; threshold {threshold:.1%})",
        ]
        for reason, count in sorted(self.rejected_by_reason.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"    {reason}: {count}")
        for example in self.examples:
            lines.append(f"      e.g. {example['reason']}: {example['detail']}")
        if self.derived_keys:
            lines.append(
                f"  event keys: {self.derived_keys} derived from the events' content"
                + (f", {self.identical_rows} identical rows numbered (each stays an event)" if self.identical_rows
                   else "")
            )
        lines.append(f"  requests: about {total_requests} + 1 credentials check")
        for path, count in sorted(self.requests_by_path.items()):
            lines.append(f"    POST {path}: {count}")
        minutes = self.minutes(budgets)
        took = f"{minutes:.1f} min" if minutes >= 1 else f"{minutes * 60:.0f} s"
        lines.append(f"  time at {budgets.requests_per_minute:g} requests/min: about {took}")
        lines.append(
            f"  automations: {self.triggers_automations} rows would start them ({AUTOMATIONS[self.operation]})"
        )
        if self.dropped_secret_columns:
            lines.append(f"  not sent (look like secrets): {', '.join(sorted(self.dropped_secret_columns))}")
        if self.reserved_columns:
            lines.append(f"  not sent ({RESERVED_NOTE}): {', '.join(sorted(self.reserved_columns))}")
        if self.ignored_columns:
            lines.append(f"  ignored (no meaning for {self.operation}): {', '.join(sorted(self.ignored_columns))}")
        if self.rejected_share > threshold:
            shown, limit = two_shares(self.rejected_share, threshold)
            lines.append(f"  PAST THRESHOLD: a real sync would exit 3 ({shown} > {limit})")
        return "\n".join(lines)


def _requests(count: int, operation: str) -> int:
    return math.ceil(count / REQUEST_MAXIMA[operation]) if count else 0


def build_plan(
    source: SyncInput, operation: str, *, allow_secret_columns: bool = False, event_keys: str = DEFAULT_EVENT_KEYS
) -> Plan:
    """Read every row once and map it as the destination would; count what each sink batch would send.

    Like a sync, events without their own key get derived keys, identical ones numbered over the whole
    input, and subscribers sharing an email keep one row (the input is read a second time if some do).
    """
    plan = Plan(operation=operation, table=source.table_name, label=source.label)
    options = MappingOptions(allow_secret_columns=allow_secret_columns)
    main_path, commands_path = ENDPOINTS[operation][0], ENDPOINTS["commands"][0]
    identical = IdenticalRows()
    emails = EmailCounts()
    for batch in source.batches(BATCH_ROWS):
        payloads = commands = 0
        bases: list[str] = []
        seen: list[str] = []
        for row in iter_rows(batch):
            plan.rows += 1
            try:
                mapped = map_row(operation, row, options)
            except RowError as error:
                plan.rejected_by_reason[error.reason] += 1
                if plan.rejected_by_reason[error.reason] <= EXAMPLES_PER_REASON:
                    plan.examples.append({"reason": error.reason, "detail": error.detail,
                                          "row": safe_for_file(redact_row(row))})
                continue
            plan.valid += 1
            plan.dropped_secret_columns |= mapped.dropped
            plan.reserved_columns |= mapped.reserved
            plan.ignored_columns |= mapped.ignored
            if operation == "subscribers":
                seen.append(str(mapped.payload["email"] if mapped.payload else mapped.commands[0]["email"]))
            elif (operation == "events" and event_keys == "derived" and mapped.payload is not None
                  and explicit_event_key(mapped.payload) is None):
                bases.append(base_event_key(mapped.payload))
            if mapped.payload is not None:
                payloads += 1
                if operation == "events" or (
                    operation == "commands" and mapped.payload.get("command") == "add_tag_via_event"
                ):
                    plan.triggers_automations += 1
            commands += len(mapped.commands)
        plan.commands += commands
        emails.add(seen)
        plan.derived_keys += len(bases)
        plan.identical_rows += int((identical.occurrences(bases) > 1).sum())
        if payloads:
            plan.requests_by_path[main_path] += _requests(payloads, operation)
        if commands:
            plan.requests_by_path[commands_path] += _requests(commands, "commands")
    if operation == "subscribers" and emails.repeated():
        _reject_duplicate_emails(plan, source, emails, options)
    return plan


def _reject_duplicate_emails(plan: Plan, source: SyncInput, emails: EmailCounts, options: MappingOptions) -> None:
    """Read the input again for the rows whose email another row shares; count the ones a sync would reject."""
    candidates = []
    rows: list[dict[str, Any]] = []
    for batch in source.batches(BATCH_ROWS):
        for row in iter_rows(batch):
            try:
                mapped = map_row("subscribers", row, options)
            except RowError:
                continue
            email = mapped.payload["email"] if mapped.payload else mapped.commands[0]["email"]
            if emails.may_repeat(str(email)):
                candidates.append(candidate(row, mapped, len(rows)))
                rows.append(row)
    for rejected, kept, count in choose(candidates):
        plan.valid -= 1
        plan.rejected_by_reason[DUPLICATE_EMAIL] += 1
        if plan.rejected_by_reason[DUPLICATE_EMAIL] <= EXAMPLES_PER_REASON:
            plan.examples.append({"reason": DUPLICATE_EMAIL, "detail": duplicate_detail(rejected, kept, count),
                                  "row": safe_for_file(redact_row(rows[rejected.where]))})
