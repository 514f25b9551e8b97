"""The Bento REST API v1 client shared by bento_source and bento_destination (no dlt import here)."""

from .client import DEFAULT_USER_AGENT, BentoClient, RequestStats
from .errors import (
    BentoAuthError,
    BentoConfigError,
    BentoConnectionError,
    BentoDeadlineError,
    BentoError,
    BentoForbiddenError,
    BentoInvalidRequestError,
    BentoNotFoundError,
    BentoPaginationError,
    BentoRateLimitedError,
    BentoResponseError,
    BentoServerError,
)
from .gate import BentoAttemptsSpentError, BentoCancelledError, RequestGate
from .limits import BATCH_MAXIMA, Budgets, family_of, resolve_budgets
from .retry import IDEMPOTENT, NEVER_AFTER_SEND, RetryMode, RetryPolicy
from .settings import DEFAULT_BASE_URL, BentoSettings, redact, resolve_settings
from .version import __version__

__all__ = [
    "BATCH_MAXIMA",
    "DEFAULT_BASE_URL",
    "DEFAULT_USER_AGENT",
    "IDEMPOTENT",
    "NEVER_AFTER_SEND",
    "BentoAttemptsSpentError",
    "BentoAuthError",
    "BentoCancelledError",
    "BentoClient",
    "BentoConfigError",
    "BentoConnectionError",
    "BentoDeadlineError",
    "BentoError",
    "BentoForbiddenError",
    "BentoInvalidRequestError",
    "BentoNotFoundError",
    "BentoPaginationError",
    "BentoRateLimitedError",
    "BentoResponseError",
    "BentoServerError",
    "BentoSettings",
    "Budgets",
    "RequestGate",
    "RequestStats",
    "RetryMode",
    "RetryPolicy",
    "__version__",
    "family_of",
    "redact",
    "resolve_budgets",
    "resolve_settings",
]
