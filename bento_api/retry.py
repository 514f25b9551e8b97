"""When to try a request again, and how long to wait first.

Reads, subscriber imports and commands are idempotent and events are at-least-once, so they retry on
429, 5xx, deadlines and connection errors. Transactional emails must never be sent twice: once the
request may have reached Bento they are not retried (only a 429 or a failure to connect is).
"""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass

#: seconds of the first back-off wait (doubling up to backoff_cap); lower it only against the emulator
ENV_RETRY_BACKOFF = "BENTO_RETRY_BACKOFF_SECONDS"


class RetryMode(enum.Enum):
    #: retry anything transient (the operation is idempotent or at-least-once)
    ALL_TRANSIENT = "all_transient"
    #: retry only when the request certainly did not reach Bento (connect failure, 429)
    NOT_AFTER_SEND = "not_after_send"


@dataclass(frozen=True)
class RetryPolicy:
    mode: RetryMode = RetryMode.ALL_TRANSIENT
    max_attempts: int = 6
    #: give up once this much time has passed since the first attempt
    max_total_seconds: float = 600.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    #: a Retry-After above this is not waited for: the error is raised instead
    max_retry_after: float = 300.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with full jitter; `attempt` counts from 1 for the first retry."""
        ceiling = min(self.backoff_cap, self.backoff_base * (2 ** (attempt - 1)))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


IDEMPOTENT = RetryPolicy()
NEVER_AFTER_SEND = RetryPolicy(mode=RetryMode.NOT_AFTER_SEND)


def resolve_retry_policy(env: Mapping[str, str] | None = None, base: RetryPolicy = IDEMPOTENT) -> RetryPolicy:
    """`base` with the back-off of BENTO_RETRY_BACKOFF_SECONDS if set (tests against the emulator lower it)."""
    text = (os.environ if env is None else env).get(ENV_RETRY_BACKOFF)
    if not text:
        return base
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError(f"{ENV_RETRY_BACKOFF} must be a number of seconds, got {text!r}") from None
    if not seconds > 0:
        raise ValueError(f"{ENV_RETRY_BACKOFF} must be positive, got {text!r}")
    return dataclasses.replace(base, backoff_base=seconds)


def parse_retry_after(value: str | None, now_epoch: float) -> float | None:
    """Seconds to wait from a Retry-After header: delay-seconds or an HTTP-date. None if absent or past."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now_epoch
    return seconds if seconds > 0 else None
