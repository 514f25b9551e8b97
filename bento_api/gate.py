"""What a caller can impose on each attempt of a request: stop (cancelled, or the run gave up) and a budget.

The client knows nothing of dlt or of runs; a caller that does (the destination's run context) passes a
`RequestGate` to `BentoClient.request`, which asks it before every attempt and waits through it between
attempts, so that a cancel stops a run between two requests and during a back-off wait, and a batch's
attempts are counted across the caller's own retries too.
"""

from __future__ import annotations

from typing import Protocol

from .errors import BentoError


class BentoCancelledError(BentoError):
    """The caller stopped the work (a signal, or another request of the run failed for good); nothing new sent."""


class RequestGate(Protocol):
    def attempts_left(self) -> int:
        """How many more attempts this request may make (0: none; the client raises without sending)."""

    def before_attempt(self) -> bool:
        """Called right before each attempt is sent; raises BentoCancelledError to send nothing; counts it.

        Returns True if this request was attempted before (by an earlier call of the caller's), so the
        attempt is counted as a retry although it is the first of this call.
        """

    def pause(self, seconds: float) -> None:
        """Wait `seconds` before the next attempt; raises BentoCancelledError as soon as the work is stopped."""


class BentoAttemptsSpentError(BentoError):
    """A request failed on every attempt the caller allowed it (the caller's budget, not the client's)."""
