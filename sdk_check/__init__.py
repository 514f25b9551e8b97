"""Bento's official Node SDK, run against the emulator as an independent client (`python -m sdk_check.run`).

Our own client and the emulator were written together, so a shared misreading of Bento's API would pass
every test. The SDK Bento publishes is a second opinion: if the emulator refuses what it sends, or answers
something it cannot parse, the emulator (or our reading of Bento) is wrong.
"""
