"""Typed errors for every way a Bento call can fail.

Each error says what to check. None of them ever holds a key: messages pass through
`redact` (settings.py) before they are built, and the response body is cut short.
"""

from __future__ import annotations

from typing import Any


class BentoError(Exception):
    """Base of every error this package raises."""

    #: whether retrying the same request later can succeed
    transient: bool = False
    #: False only when the request certainly never reached Bento (no connection was made): a send
    #: that must happen at most once (an email) may then be tried again later
    may_have_arrived: bool = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        path: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.path = path
        self.body = body

    def __str__(self) -> str:
        return self.message


class BentoConfigError(BentoError):
    """Credentials or endpoint missing or unsafe; nothing was sent."""


class BentoRedirectError(BentoConfigError):
    """3xx: the base URL is not where Bento's API answers (moved host, http -> https hop). Never followed:
    the request would carry the keys to an address nobody configured."""


class BentoAuthError(BentoError):
    """401: the keys or the site_uuid are wrong."""


class BentoForbiddenError(BentoError):
    """403: Bento's edge refused the User-Agent, or the account lacks access (plan, approval)."""


class BentoNotFoundError(BentoError):
    """404: wrong path or method (or an id that does not exist)."""


class BentoInvalidRequestError(BentoError):
    """400/413/422: Bento refused the request as invalid; sending it again cannot help."""


class BentoRateLimitedError(BentoError):
    """429 after every retry was spent."""

    transient = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BentoServerError(BentoError):
    """5xx after every retry was spent (or one that must not be retried)."""

    transient = True


class BentoDeadlineError(BentoError):
    """The request did not complete within its wall-clock deadline."""

    transient = True


class BentoConnectionError(BentoError):
    """Bento could not be reached, or dropped the connection."""

    transient = True


class BentoResponseError(BentoError):
    """Bento answered, but not with the JSON we expected (an HTML page, cut JSON, an error in a 200)."""

    transient = True


class BentoPaginationError(BentoError):
    """A list did not end within the page cap: stopping rather than looping forever."""
