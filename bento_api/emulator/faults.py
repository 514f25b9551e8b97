"""Fault injection: what can go wrong between a client and Bento, reproducible from a seed.

A fault matches requests by path prefix (relative to /api/v1) and method, fires with a probability
drawn from a seeded RNG, and optionally only a limited number of times. Faults are plain data so
they can come from Python, the admin HTTP endpoint or the command line alike.
"""

from __future__ import annotations

import dataclasses
import random
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

# Kinds, grouped by when they act.
LATENCY: Final = "latency"  # adds delay, then the request proceeds
REFUSE_ROWS: Final = "refuse_rows"  # modifies batch handling: matching rows count as failed
BEFORE_APPLY_KINDS: Final = frozenset(
    {"server_error", "html_error", "error_200", "rate_limit", "drop_before_apply", "huge_body", "redirect"}
)
AFTER_APPLY_KINDS: Final = frozenset({"drop_after_apply", "truncated_json", "trickle"})
KINDS: Final = frozenset({LATENCY, REFUSE_ROWS}) | BEFORE_APPLY_KINDS | AFTER_APPLY_KINDS

_RETRY_AFTER_MODES: Final = ("seconds", "http-date", None)


@dataclass
class Fault:
    """One injected fault. Only the parameters of its own kind matter; see docs/emulator.md.

    kind: latency, server_error, html_error, error_200, rate_limit, drop_before_apply,
      drop_after_apply, truncated_json, trickle, huge_body, refuse_rows, redirect.
    probability: chance that a matching request is hit (seeded RNG, so runs repeat).
    count: how many times the fault fires at most (None = unlimited).
    path_prefix: only paths under /api/v1 starting with this ("/batch", "/fetch/search"); None = all.
    method: only this HTTP method (GET, POST, ...); None = any.
    """

    kind: str
    probability: float = 1.0
    count: int | None = None
    path_prefix: str | None = None
    method: str | None = None
    # server_error: status to answer (5xx), redirect: 3xx; server_error/html_error: apply the batch first if True.
    status: int = 503
    apply: bool = False
    # latency: delay; rate_limit: Retry-After value; trickle: minimum total duration of the body.
    seconds: float | None = None
    # rate_limit: "seconds", "http-date" or None (no Retry-After header).
    retry_after: str | None = "seconds"
    # server_error / error_200: the error text in the JSON body.
    message: str | None = None
    # trickle: bytes per write and pause between writes.
    chunk: int = 1
    interval: float = 1.0
    # huge_body: size of the 200 body.
    megabytes: float = 32.0
    # refuse_rows: these emails (normalised) and/or emails matching this regex count as failed.
    emails: frozenset[str] = field(default_factory=frozenset)
    pattern: str | None = None
    # redirect: the Location header (a moved host or an http -> https hop, as a proxy would answer)
    location: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0 or None")
        if self.kind == "server_error" and not 500 <= self.status <= 599:
            raise ValueError("server_error status must be 5xx")
        if self.kind == "redirect" and not (300 <= self.status <= 399 and self.location):
            raise ValueError("redirect needs a 3xx status and a location")
        if self.retry_after not in _RETRY_AFTER_MODES:
            raise ValueError("retry_after must be 'seconds', 'http-date' or None")
        if self.chunk < 1 or self.interval < 0 or self.megabytes < 0:
            raise ValueError("chunk must be >= 1, interval and megabytes >= 0")
        if self.seconds is not None and self.seconds < 0:
            raise ValueError("seconds must be >= 0")
        if isinstance(self.emails, str):
            self.emails = frozenset(_split_emails(self.emails))
        else:
            self.emails = frozenset(e.strip().lower() for e in self.emails)
        if self.pattern is not None:
            re.compile(self.pattern)
        if self.kind == REFUSE_ROWS and not self.emails and self.pattern is None:
            raise ValueError("refuse_rows needs emails or pattern")
        if self.method is not None:
            self.method = self.method.upper()

    def latency_seconds(self) -> float:
        return 1.0 if self.seconds is None else self.seconds

    def retry_after_seconds(self) -> float:
        return 1.0 if self.seconds is None else self.seconds

    def trickle_seconds(self) -> float:
        return 600.0 if self.seconds is None else self.seconds

    def refuses(self, email: str) -> bool:
        """True if this refuse_rows fault makes Bento count a row with this email as failed."""
        if email in self.emails:
            return True
        return self.pattern is not None and re.search(self.pattern, email) is not None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["emails"] = sorted(self.emails)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build from JSON (admin endpoint); unknown keys are an error, not silently ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault parameter(s): {sorted(unknown)}")
        if "kind" not in data:
            raise ValueError("a fault needs 'kind'")
        kwargs = dict(data)
        if "emails" in kwargs and not isinstance(kwargs["emails"], str):
            kwargs["emails"] = frozenset(kwargs["emails"])
        return cls(**kwargs)


def _split_emails(text: str) -> list[str]:
    return [e.strip().lower() for e in re.split(r"[;|,\s]+", text) if e.strip()]


_BOOL_WORDS: Final = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def parse_fault_spec(spec: str) -> Fault:
    """Parse the CLI form `kind:key=value,key=value` (e.g. `server_error:probability=0.2,status=502`).

    Lists of emails use ';' or '|' as separator since ',' separates parameters. 'none' means None.
    """
    kind, _, rest = spec.partition(":")
    kwargs: dict[str, Any] = {"kind": kind.strip()}
    types = {f.name: f.type for f in dataclasses.fields(Fault)}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in types or key == "kind":
            raise ValueError(f"bad fault parameter {part!r} in {spec!r}")
        kwargs[key] = _coerce(str(types[key]), raw.strip())
    return Fault.from_dict(kwargs)


def _coerce(type_name: str, raw: str) -> Any:
    if raw.lower() == "none" and "None" in type_name:
        return None
    if type_name.startswith("bool"):
        if raw.lower() not in _BOOL_WORDS:
            raise ValueError(f"expected a boolean, got {raw!r}")
        return _BOOL_WORDS[raw.lower()]
    if type_name.startswith("int"):
        return int(raw)
    if type_name.startswith("float"):
        return float(raw)
    if type_name.startswith("frozenset"):
        return frozenset(_split_emails(raw))
    return raw


@dataclass
class FaultPlan:
    """What the faults decided for one request."""

    delay: float = 0.0
    terminal: Fault | None = None  # at most one fault that replaces or mangles the answer
    refusers: list[Fault] = field(default_factory=list)

    def refuses(self, email: str) -> bool:
        return any(f.refuses(email) for f in self.refusers)


class FaultInjector:
    """Thread-safe list of active faults with a seeded RNG (same seed and order -> same hits)."""

    def __init__(self, seed: int, faults: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._faults: list[tuple[Fault, list[int | None]]] = []
        for f in faults:
            self.add(f)

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append((fault, [fault.count]))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        with self._lock:
            return [f for f, left in self._faults if left[0] is None or left[0] > 0]

    def plan(self, method: str, path: str) -> FaultPlan:
        """Decide which faults hit this request; consumes counts and RNG draws."""
        out = FaultPlan()
        with self._lock:
            for fault, left in self._faults:
                if left[0] is not None and left[0] <= 0:
                    continue
                if fault.path_prefix is not None and not path.startswith(fault.path_prefix):
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                if fault.kind not in (LATENCY, REFUSE_ROWS) and out.terminal is not None:
                    continue
                if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                    continue
                if left[0] is not None:
                    left[0] -= 1
                if fault.kind == LATENCY:
                    out.delay += fault.latency_seconds()
                elif fault.kind == REFUSE_ROWS:
                    out.refusers.append(fault)
                else:
                    out.terminal = fault
        return out
