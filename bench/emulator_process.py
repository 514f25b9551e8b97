"""Run the emulator in its own process for benchmarks, so that its work never shares our GIL or RSS."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass
class EmulatorProcess:
    env: dict[str, str]  # BENTO_BASE_URL, BENTO_SITE_UUID, BENTO_PUBLISHABLE_KEY, BENTO_SECRET_KEY
    admin_url: str
    pid: int = 0

    def peak_rss_mb(self) -> float:
        """The emulator process's peak RSS so far (VmHWM, Linux), in MB."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmHWM for process {self.pid}")

    @property
    def credentials(self) -> dict[str, str]:
        return {
            "site_uuid": self.env["BENTO_SITE_UUID"],
            "publishable_key": self.env["BENTO_PUBLISHABLE_KEY"],
            "secret_key": self.env["BENTO_SECRET_KEY"],
            "base_url": self.env["BENTO_BASE_URL"],
        }

    def log(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.admin_url}/log", timeout=120).json())

    def summary(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.admin_url}/summary", timeout=120).json())

    def reset_log(self) -> None:
        httpx.post(f"{self.admin_url}/reset_log", timeout=30).raise_for_status()


@contextmanager
def emulator_process(args: Sequence[str] = ()) -> Iterator[EmulatorProcess]:
    """Start `python -m bento_api.emulator --port 0 ARGS`, read its banner, stop it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bento_api.emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        env: dict[str, str] = {}
        admin = ""
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("export "):
                key, _, value = line[len("export "):].strip().partition("=")
                env[key] = value
            elif line.startswith("Admin endpoints:"):
                admin = line.split()[2].rstrip("/")
            elif line.startswith("Press Ctrl-C"):
                break
        if not env or not admin:
            raise RuntimeError("the emulator did not start")
        yield EmulatorProcess(env=env, admin_url=admin, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
