"""Credentials and endpoint: where they come from, checks on them, and redaction of secrets.

Precedence (README, "Credentials and configuration"): keyword argument > dlt config (`[sources.bento]` /
`[destination.bento]` and their `SOURCES__BENTO__*` / `DESTINATION__BENTO__*` variables, which dlt resolves
and passes in as the keyword arguments: the source's injected keywords, the destination's configspec) >
`BENTO_*` variables, read here. Nothing here reads dlt's own variables: that is dlt's job, done once.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .errors import BentoConfigError

DEFAULT_BASE_URL = "https://app.bentonow.com/api/v1"
KEYS = ("site_uuid", "publishable_key", "secret_key", "base_url")
REDACTED = "***"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: the only hosts a plain http:// base URL may name."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> str:
    """Refuse URLs that would send keys in clear text, except to this machine."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BentoConfigError(
            f"base_url must look like {DEFAULT_BASE_URL}, got {parts.scheme or '?'}://{parts.hostname or '?'}"
        )
    if parts.username or parts.password:
        raise BentoConfigError("base_url must not carry credentials; pass publishable_key and secret_key")
    try:
        port = parts.port  # urllib raises on a port past 65535 or not a number
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:
        # refused here, at once: a client would retry an impossible port as if the server were down
        raise BentoConfigError(
            f"base_url {parts.scheme}://{parts.netloc}: the port must be a number from 1 to 65535"
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise BentoConfigError(
            f"base_url uses plain http:// to {parts.hostname}: keys would travel in clear text. "
            "Use https://, or a loopback host (127.0.0.1, localhost) for the emulator."
        )
    return base_url.rstrip("/")


@dataclass(frozen=True)
class BentoSettings:
    """Resolved credentials and endpoint. The keys never show in repr."""

    site_uuid: str
    publishable_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    base_url: str = DEFAULT_BASE_URL

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every string that must never appear in a message, log or file."""
        pair = f"{self.publishable_key}:{self.secret_key}".encode()
        return (
            self.secret_key,
            self.publishable_key,
            base64.b64encode(pair).decode(),
            base64.urlsafe_b64encode(pair).decode(),
        )

    def redact(self, text: str) -> str:
        return redact(text, self.secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret (longest first, so a key inside a longer token goes too)."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _from_env(key: str, env: Mapping[str, str]) -> str | None:
    return env.get(f"BENTO_{key.upper()}") or None


def resolve_settings(
    site_uuid: str | None = None,
    publishable_key: str | None = None,
    secret_key: str | None = None,
    base_url: str | None = None,
    *,
    sections: Iterable[str] = ("sources", "destination"),
    env: Mapping[str, str] | None = None,
) -> BentoSettings:
    """Settings from keywords (dlt's resolved config), then BENTO_* env; one error names all that is missing.

    `sections` only names, in that error, the dlt config sections the keywords come from.
    """
    env = os.environ if env is None else env
    sections = tuple(sections)
    given = {
        "site_uuid": site_uuid,
        "publishable_key": publishable_key,
        "secret_key": secret_key,
        "base_url": base_url,
    }
    values = {key: (str(given[key]).strip() if given[key] else None) or _from_env(key, env) for key in KEYS}
    missing = [key for key in KEYS[:3] if not values[key]]
    if missing:
        where = "; ".join(
            f"{key}: keyword `{key}=`, "
            + ", ".join(
                f"[{s}.bento] {key} in .dlt/secrets.toml or {s.upper()}__BENTO__{key.upper()}" for s in sections
            )
            + f", or BENTO_{key.upper()}"
            for key in missing
        )
        raise BentoConfigError(f"Bento credentials missing: {', '.join(missing)}. Set {where}.")
    return BentoSettings(
        site_uuid=str(values["site_uuid"]),
        publishable_key=str(values["publishable_key"]),
        secret_key=str(values["secret_key"]),
        base_url=check_base_url(values["base_url"] or DEFAULT_BASE_URL),
    )
