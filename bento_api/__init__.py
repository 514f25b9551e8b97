"""The Bento REST API v1 client shared by bento_source and bento_destination (no dlt import here)."""

from .client import DEFAULT_USER_AGENT, BentoClient, EncodedBody, RequestStats
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
    BentoRedirectError,
    BentoResponseError,
    BentoServerError,
)
from .facts import BATCH_MAXIMA, family_of
from .gate import BentoAttemptsSpentError, BentoCancelledError, RequestGate
from .limits import Budgets, resolve_budgets
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
    "BentoRedirectError",
    "BentoResponseError",
    "BentoServerError",
    "BentoSettings",
    "Budgets",
    "EncodedBody",
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
