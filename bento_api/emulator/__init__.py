"""A local Bento emulator: a real HTTP server on 127.0.0.1 with Bento's API, checks, limits and faults.

It is independent of the rest of bento_api on purpose (its own limits table), so it checks our client
rather than echoing it. See docs/emulator.md.
"""

from .config import EmulatorConfig
from .emulator import BentoEmulator
from .faults import Fault, parse_fault_spec
from .ratelimit import RateLimit
from .records import RequestRecord

__all__ = ["BentoEmulator", "EmulatorConfig", "Fault", "RateLimit", "RequestRecord", "parse_fault_spec"]
