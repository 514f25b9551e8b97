"""EmulatorConfig: every knob of the emulator, all defaulted to Bento-like behaviour."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from . import limits
from .faults import Fault
from .ratelimit import RETRY_AFTER_MODES, RateLimit

DEFAULT_SITE_UUID = "emulator-site-0000-4000-8000-00000001"
DEFAULT_PUBLISHABLE_KEY = "pk_emulator_0000000000000000000000"
DEFAULT_SECRET_KEY = "sk_emulator_0000000000000000000000"
DEFAULT_AUTHORS = ("author@example.com",)


@dataclass
class EmulatorConfig:
    """Options of a BentoEmulator. Rate limits default to Bento's real budget (docs/bento-api.md)."""

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
    retry_after: str | None = "seconds"  # "seconds", "http-date" or None (no header)
    # Per-family overrides of the above, e.g. {"stats": RateLimit.of(per_hour=60)}; RateLimit(None) = unlimited.
    family_limits: dict[str, RateLimit] = field(default_factory=dict)
    log_bodies: bool = True  # False keeps only counts and emails (million-row benchmarks)
    blocked_user_agents: tuple[str, ...] = limits.BLOCKED_USER_AGENT_PREFIXES
    authors: tuple[str, ...] = DEFAULT_AUTHORS  # allowed `from` on /batch/emails
    faults: tuple[Fault, ...] = ()
    max_body_bytes: int = 64 * 1024 * 1024  # larger request bodies answer 413

    def __post_init__(self) -> None:
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
        if self.retry_after not in RETRY_AFTER_MODES:
            raise ValueError("retry_after must be 'seconds', 'http-date' or None")
        if self.requests_per_minute <= 0 or self.stats_requests_per_hour <= 0 or self.bucket_capacity < 1:
            raise ValueError("rates must be > 0 and capacity >= 1")
        self.authors = tuple(a.strip().lower() for a in self.authors)
        self.blocked_user_agents = tuple(p.lower() for p in self.blocked_user_agents)
        self.faults = tuple(self.faults)
        unknown = set(self.family_limits) - set(limits.FAMILIES)
        if unknown:
            raise ValueError(f"unknown rate-limit families {sorted(unknown)}; expected {limits.FAMILIES}")

    def initial_rate_limits(self) -> dict[str, RateLimit]:
        """The starting budget per family (rate_limits_enabled=False makes every family unlimited)."""
        if not self.rate_limits_enabled:
            return {fam: RateLimit(None) for fam in limits.FAMILIES}
        per_min = RateLimit.of(self.requests_per_minute, None, self.bucket_capacity, self.retry_after)
        stats = RateLimit.of(None, self.stats_requests_per_hour, self.bucket_capacity, self.retry_after)
        return {"fetch": per_min, "batch": per_min, "experimental": per_min, "stats": stats, **self.family_limits}
