"""What the destination tests share: the client budget they raise for the emulator."""

from __future__ import annotations

#: requests per minute for the client in tests: far above Bento's 60, so tests never wait on pacing
FAST = 60_000.0
