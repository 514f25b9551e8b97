"""What the destination tests share: the client budget they raise for the emulator, the env they must not inherit."""

from __future__ import annotations

from bento_api.emulator.config import MODE_ENV

#: requests per minute for the client in tests: far above Bento's 60, so tests never wait on pacing
FAST = 60_000.0

#: environment prefixes a test must not inherit from the developer's shell (they would override the
#: keywords under test): Bento keys, dlt's destination/source config and its extract/normalize/load tuning
ENV_PREFIXES = ("BENTO_", "DESTINATION__", "SOURCES__", "NORMALIZE__", "LOAD__", "DATA_WRITER__", "EXTRACT__")


def must_isolate(key: str) -> bool:
    """True for a variable a test must not inherit; BENTO_EMULATOR_MODE is kept: the run chooses the mode."""
    return key.startswith(ENV_PREFIXES) and key != MODE_ENV
