"""EmulatorConfig: every knob of the emulator, and the mode that decides what it does where Bento is unknown."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Final

from . import limits
from .faults import Fault
from .ratelimit import RETRY_AFTER_MODES, RateLimit

DEFAULT_SITE_UUID = "emulator-site-0000-4000-8000-00000001"
DEFAULT_PUBLISHABLE_KEY = "pk_emulator_0000000000000000000000"
DEFAULT_SECRET_KEY = "sk_emulator_0000000000000000000000"
DEFAULT_AUTHORS = ("author@example.com",)

#: the two modes (docs/emulator.md): "default" follows what is known of Bento and applies writes at once;
#: "bento_like" takes the reading of each open question that is hardest on a client (queued writes,
#: 429 without Retry-After, 413/422 on oversized requests, library User-Agents blocked)
DEFAULT_MODE: Final = "default"
BENTO_LIKE: Final = "bento_like"
MODES: Final = (DEFAULT_MODE, BENTO_LIKE)
#: the environment variable that picks the mode when none is given (so a whole test run can switch)
MODE_ENV: Final = "BENTO_EMULATOR_MODE"
#: seconds a queued write waits in bento_like mode: long enough that a test or a pipeline that reads its
#: own writes at once fails every time instead of now and then (Bento itself may take up to 5 minutes)
BENTO_LIKE_WRITE_DELAY: Final = 60.0
#: the default of `retry_after`: a Retry-After in seconds in the default mode, none in bento_like
AUTO: Final = "auto"
#: what the emulator keeps of writes: "full" records (Subscriber objects, the request log), or "counts": counts,
#: 64-bit hashes of emails and digests of payloads, so ten million upserts fit in a few hundred MB (tally.py)
FULL_RECORDS: Final = "full"
COUNTS: Final = "counts"
RECORDS: Final = (FULL_RECORDS, COUNTS)
#: the environment variable that picks `records` when none is given
RECORDS_ENV: Final = "BENTO_EMULATOR_RECORDS"


def normalize_mode(value: str) -> str:
    """'default' or 'bento_like' ('bento-like' and any case accepted); ValueError for anything else."""
    mode = value.strip().lower().replace("-", "_")
    if mode not in MODES:
        raise ValueError(f"unknown emulator mode {value!r}: expected 'default' or 'bento_like' (or 'bento-like')")
    return mode


def mode_from_env() -> str:
    """The mode named by BENTO_EMULATOR_MODE, or 'default' when it is unset or empty."""
    raw = os.environ.get(MODE_ENV, "").strip()
    if not raw:
        return DEFAULT_MODE
    try:
        return normalize_mode(raw)
    except ValueError as exc:
        raise ValueError(f"{MODE_ENV}={raw!r}: {exc}") from None


def records_from_env() -> str:
    """The records setting named by BENTO_EMULATOR_RECORDS, or 'full' when it is unset or empty."""
    raw = os.environ.get(RECORDS_ENV, "").strip().lower()
    if not raw:
        return FULL_RECORDS
    if raw not in RECORDS:
        raise ValueError(f"{RECORDS_ENV}={raw!r}: expected 'full' or 'counts'")
    return raw


@dataclass
class EmulatorConfig:
    """Options of a BentoEmulator. Rate limits default to Bento's real budget (docs/bento-api.md).

    `mode` defaults to BENTO_EMULATOR_MODE (else "default"); `retry_after="auto"` and
    `blocked_user_agents=None` take the mode's value (see `effective_retry_after`, `user_agent_blocklist`).
    """

    mode: str = field(default_factory=mode_from_env)
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    seed: int = 1  # seeds the data and the fault RNG
    site_uuid: str = DEFAULT_SITE_UUID
    publishable_key: str = DEFAULT_PUBLISHABLE_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    page_size: int = limits.DEFAULT_LIST_PAGE_SIZE  # broadcasts, sequences, workflows
    search_page_size: int = limits.SEARCH_PAGE_SIZE
    # Seed sizes.
    tags: int = 12
    fields: int = 8
    segments: int = 5
    broadcasts: int = 60
    sequences: int = 8
    workflows: int = 6
    subscribers: int = 250
    enterprise: bool = True  # False: /fetch/search answers 403 like a non-Enterprise account
    # Rate limits (token bucket per family).
    rate_limits_enabled: bool = True
    requests_per_minute: float = limits.REQUESTS_PER_MINUTE  # fetch, batch, experimental
    stats_requests_per_hour: float = limits.STATS_REQUESTS_PER_HOUR
    bucket_capacity: float = limits.BUCKET_CAPACITY
    retry_after: str | None = AUTO  # "seconds", "http-date", None (no header) or "auto" (by mode)
    # Per-family overrides of the above, e.g. {"stats": RateLimit.of(per_hour=60)}; RateLimit(None) = unlimited.
    family_limits: dict[str, RateLimit] = field(default_factory=dict)
    log_bodies: bool = True  # False keeps only counts and emails (million-row benchmarks)
    records: str = field(default_factory=records_from_env)  # "full" or "counts" (ten-million-row benchmarks)
    # User-Agent prefixes answered 403 besides a missing or empty one; None = the mode's list.
    blocked_user_agents: tuple[str, ...] | None = None
    authors: tuple[str, ...] = DEFAULT_AUTHORS  # allowed `from` on /batch/emails
    faults: tuple[Fault, ...] = ()
    max_body_bytes: int = 64 * 1024 * 1024  # larger request bodies answer 413
    # bento_like only: seconds between accepting an import, command or email send and applying it.
    write_delay_seconds: float = BENTO_LIKE_WRITE_DELAY

    def __post_init__(self) -> None:
        self.mode = normalize_mode(self.mode)
        if self.records not in RECORDS:
            raise ValueError(f"records must be 'full' or 'counts', not {self.records!r}")
        if self.host == "localhost":
            self.host = "127.0.0.1"
        try:
            loopback = ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"the emulator only listens on loopback, not {self.host!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if self.page_size < 1 or self.search_page_size < 1:
            raise ValueError("page sizes must be >= 1")
        for name in ("tags", "fields", "segments", "broadcasts", "sequences", "workflows", "subscribers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.retry_after != AUTO and self.retry_after not in RETRY_AFTER_MODES:
            raise ValueError("retry_after must be 'seconds', 'http-date', None or 'auto'")
        if not self.write_delay_seconds >= 0:  # also refuses NaN
            raise ValueError("write_delay_seconds must be >= 0")
        if self.requests_per_minute <= 0 or self.stats_requests_per_hour <= 0 or self.bucket_capacity < 1:
            raise ValueError("rates must be > 0 and capacity >= 1")
        self.authors = tuple(a.strip().lower() for a in self.authors)
        if self.blocked_user_agents is not None:
            self.blocked_user_agents = tuple(p.lower() for p in self.blocked_user_agents)
        self.faults = tuple(self.faults)
        unknown = set(self.family_limits) - set(limits.FAMILIES)
        if unknown:
            raise ValueError(f"unknown rate-limit families {sorted(unknown)}; expected {limits.FAMILIES}")

    @property
    def bento_like(self) -> bool:
        return self.mode == BENTO_LIKE

    @property
    def counts_only(self) -> bool:
        """Writes leave counts and hashes, not records; the request log keeps counts only."""
        return self.records == COUNTS

    @property
    def queues_writes(self) -> bool:
        """Imports, commands and email sends are answered at once and applied `write_delay_seconds` later."""
        return self.bento_like

    def resolve_retry_after(self, value: str | None) -> str | None:
        """`value`, with "auto" made the mode's choice: whether Bento sends Retry-After is unknown, so
        bento_like sends none (the client must back off on its own)."""
        if value != AUTO:
            return value
        return None if self.bento_like else "seconds"

    @property
    def effective_retry_after(self) -> str | None:
        return self.resolve_retry_after(self.retry_after)

    @property
    def user_agent_blocklist(self) -> tuple[str, ...]:
        """Prefixes blocked besides a missing or empty User-Agent. Bento documents only a missing one as
        blocked, so the default mode blocks no other (Bento's own SDKs work); bento_like also blocks HTTP
        library defaults, which catches one leaking from our client."""
        if self.blocked_user_agents is not None:
            return self.blocked_user_agents
        return limits.BLOCKED_USER_AGENT_PREFIXES if self.bento_like else ()

    def initial_rate_limits(self) -> dict[str, RateLimit]:
        """The starting budget per family (rate_limits_enabled=False makes every family unlimited)."""
        if not self.rate_limits_enabled:
            return {fam: RateLimit(None) for fam in limits.FAMILIES}
        retry_after = self.effective_retry_after
        per_min = RateLimit.of(self.requests_per_minute, None, self.bucket_capacity, retry_after)
        stats = RateLimit.of(None, self.stats_requests_per_hour, self.bucket_capacity, retry_after)
        return {"fetch": per_min, "batch": per_min, "experimental": per_min, "stats": stats, **self.family_limits}
