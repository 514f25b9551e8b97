"""What Bento's answer means: its JSON body, or the typed error for its status, with what to check.

Kept apart from client.py (which sends and retries) so the rules that read an answer fit on a page.
Every message goes through the settings' redaction: an answer may echo a key or the site_uuid.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from .errors import (
    BentoAuthError,
    BentoError,
    BentoForbiddenError,
    BentoInvalidRequestError,
    BentoNotFoundError,
    BentoRateLimitedError,
    BentoRedirectError,
    BentoResponseError,
    BentoServerError,
)
from .facts import AUTHOR_NOT_AUTHORIZED
from .retry import parse_retry_after
from .settings import BentoSettings

#: a response larger than this is refused (a hostile or broken server must not exhaust memory)
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
#: how much of an error body goes into a message
ERROR_BODY_CHARS = 300


class Transient(Exception):
    """One failed attempt that may be retried; carries the error to raise if it is not."""

    def __init__(self, error: BentoError, *, reached: bool, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.reached = reached
        self.retry_after = retry_after


def answer_message(settings: BentoSettings, text: str, path: str, status: int | None = None) -> str:
    """`Bento <path> answered <status>: <text>`, redacted."""
    head = f"Bento {path}" + (f" answered {status}" if status is not None else "")
    return settings.redact(f"{head}: {text}")


def _redirected(response: httpx.Response, path: str, status: int, settings: BentoSettings) -> str:
    """Where a 3xx points (scheme and host, no query: it may hold the site_uuid), and what to fix."""
    location = response.headers.get("location")
    if not location:
        where = "without saying where (no Location header)"
    else:
        target = response.url.join(location)
        origin = f"{target.scheme}://{target.host}" + (f":{target.port}" if target.port else "")
        ours = httpx.URL(settings.base_url)
        same_host = (target.scheme, target.host, target.port) == (ours.scheme, ours.host, ours.port)
        where = f"redirecting to {origin}{target.path if same_host else ''}"
    return settings.redact(
        f"Bento answered {status} on {path}, {where}: check base_url (now {settings.base_url}); "
        "redirects are not followed, so nothing was sent there"
    )

def interpret_answer(
response: httpx.Response, raw: bytes, path: str, settings: BentoSettings, user_agent: str
) -> Any:
    """Bento's answer as its JSON body, or the typed error it means (Transient: worth another attempt)."""
    status = response.status_code
    text = raw.decode("utf-8", errors="replace")
    content_type = response.headers.get("content-type", "")
    body: Any = None
    parsed = False
    if raw.strip():
        try:
            body = json.loads(text)
            parsed = True
        except ValueError:
            body = settings.redact(text[:ERROR_BODY_CHARS])
    else:
        parsed = True
    shown = settings.redact(json.dumps(body)[:ERROR_BODY_CHARS] if parsed else str(body))

    if 200 <= status < 300:
        if not parsed:
            kind = "an HTML page" if "html" in content_type or text.lstrip().startswith("<") else "invalid JSON"
            raise Transient(
                BentoResponseError(
                    answer_message(
                        settings, f"{kind} instead of JSON (often a proxy or an outage): {shown}", path, status
                    ),
                    status=status, path=path, body=body,
                ),
                reached=True,
            )
        if isinstance(body, dict) and "error" in body and not ({"data", "results", "result"} & body.keys()):
            error = BentoResponseError(
                answer_message(settings, f"success status carrying an error: {shown}", path, status),
                status=status, path=path, body=body,
            )
            error.transient = False
            raise error
        return body

    if 300 <= status < 400:
        raise BentoRedirectError(_redirected(response, path, status, settings), status=status, path=path)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"), time.time())
        raise Transient(
            BentoRateLimitedError(
                answer_message(
                    settings,
                    "rate limited (429): too many requests for this budget; the client slows down and "
                    "retries. Lower requests_per_minute if this persists",
                    path, status,
                ),
                status=status, path=path, body=body, retry_after=retry_after,
            ),
            reached=False,
            retry_after=retry_after,
        )
    if status == 401:
        raise BentoAuthError(
            answer_message(
                settings,
                "unauthorized (401): check publishable_key, secret_key and site_uuid "
                f"(Bento's answer: {shown})",
                path, status,
            ),
            status=status, path=path, body=body,
        )
    if status == 403:
        raise BentoForbiddenError(
            answer_message(
                settings,
                f"forbidden (403): Bento's edge refused the User-Agent {user_agent!r}, or the account "
                f"lacks access to this endpoint (plan or approval). Bento's answer: {shown}",
                path, status,
            ),
            status=status, path=path, body=body,
        )
    if status in (404, 405):
        raise BentoNotFoundError(
            answer_message(
                settings,
                f"not found ({status}): check base_url and the path. Bento's answer: {shown}", path, status
            ),
            status=status, path=path, body=body,
        )
    if status >= 500:
        if isinstance(body, dict) and body.get("error") == AUTHOR_NOT_AUTHORIZED:
            raise BentoInvalidRequestError(
                answer_message(
                    settings,
                    f"{AUTHOR_NOT_AUTHORIZED}: the `from` address must be an Author of this Bento account",
                    path, status,
                ),
                status=status, path=path, body=body,
            )
        raise Transient(
            BentoServerError(
                answer_message(
                    settings, f"server error ({status}); Bento may be having trouble: {shown}", path, status
                ),
                status=status, path=path, body=body,
            ),
            reached=True,
        )
    raise BentoInvalidRequestError(
        answer_message(settings, f"request refused as invalid ({status}): {shown}", path, status),
        status=status, path=path, body=body,
    )
