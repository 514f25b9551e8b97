"""Bento's request budgets per endpoint family, and how users raise them.

The defaults are the safe reading of Bento's own material (docs/bento-api.md, "Rate limits"): its newest
text says about 60 requests a minute for fetch and batch and about 30 an hour for stats; older docs say
100/min and 60/hour. Users with a higher limit raise the budgets with `requests_per_minute` and
`stats_requests_per_hour` (or BENTO_REQUESTS_PER_MINUTE / BENTO_STATS_REQUESTS_PER_HOUR).
Batch maxima and the families themselves are facts of the API, in `bento_api.facts`.

Emails have a budget of their own, counted in emails rather than requests: Bento sends transactional
emails at about 60 a minute whatever is queued (docs/bento-api.md), so `/batch/emails` requests are
also paced to `emails_per_minute` (BENTO_EMAILS_PER_MINUTE), weighted by the emails they carry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import BentoConfigError

DEFAULT_REQUESTS_PER_MINUTE = 60.0
DEFAULT_STATS_REQUESTS_PER_HOUR = 30.0
DEFAULT_EMAILS_PER_MINUTE = 60.0
#: the pacing timeline of email sends (not an endpoint family: /batch/emails is paced as batch too)
EMAILS_PACE = "emails"
#: requests one client keeps in flight at most, whatever the budget
DEFAULT_MAX_IN_FLIGHT = 8

ENV_REQUESTS_PER_MINUTE = "BENTO_REQUESTS_PER_MINUTE"
ENV_STATS_REQUESTS_PER_HOUR = "BENTO_STATS_REQUESTS_PER_HOUR"
ENV_EMAILS_PER_MINUTE = "BENTO_EMAILS_PER_MINUTE"


@dataclass(frozen=True)
class Budgets:
    """Requests per second allowed per family."""

    requests_per_minute: float = DEFAULT_REQUESTS_PER_MINUTE
    stats_requests_per_hour: float = DEFAULT_STATS_REQUESTS_PER_HOUR
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    #: emails (not requests) a minute on /batch/emails
    emails_per_minute: float = DEFAULT_EMAILS_PER_MINUTE

    def per_second(self, family: str) -> float:
        if family == "stats":
            return self.stats_requests_per_hour / 3600.0
        if family == EMAILS_PACE:
            return self.emails_per_minute / 60.0
        return self.requests_per_minute / 60.0

    def interval(self, family: str) -> float:
        """Seconds between two requests of a family when they are spaced evenly."""
        return 1.0 / self.per_second(family)


def _positive(name: str, value: float | str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BentoConfigError(f"{name} must be a positive number, got {value!r}") from None
    if number <= 0:
        raise BentoConfigError(f"{name} must be a positive number, got {value!r}")
    return number


def resolve_budgets(
    requests_per_minute: float | None = None,
    stats_requests_per_hour: float | None = None,
    *,
    max_in_flight: int | None = None,
    emails_per_minute: float | None = None,
    env: Mapping[str, str] | None = None,
) -> Budgets:
    """Budgets from keywords, then BENTO_* environment variables, then the safe defaults."""
    env = os.environ if env is None else env
    rpm = _positive("requests_per_minute", requests_per_minute) or _positive(
        ENV_REQUESTS_PER_MINUTE, env.get(ENV_REQUESTS_PER_MINUTE)
    )
    rph = _positive("stats_requests_per_hour", stats_requests_per_hour) or _positive(
        ENV_STATS_REQUESTS_PER_HOUR, env.get(ENV_STATS_REQUESTS_PER_HOUR)
    )
    epm = _positive("emails_per_minute", emails_per_minute) or _positive(
        ENV_EMAILS_PER_MINUTE, env.get(ENV_EMAILS_PER_MINUTE)
    )
    return Budgets(
        requests_per_minute=rpm or DEFAULT_REQUESTS_PER_MINUTE,
        stats_requests_per_hour=rph or DEFAULT_STATS_REQUESTS_PER_HOUR,
        max_in_flight=max_in_flight or DEFAULT_MAX_IN_FLIGHT,
        emails_per_minute=epm or DEFAULT_EMAILS_PER_MINUTE,
    )
