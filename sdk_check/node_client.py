"""Runs one phase of sdk_check/node/check.mjs (Bento's Node SDK) and reads what each SDK call returned."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).resolve().parent / "node"
SCRIPT = NODE_DIR / "check.mjs"
SDK_PACKAGE = NODE_DIR / "node_modules" / "@bentonow" / "bento-node-sdk" / "package.json"
PHASE_TIMEOUT_SECONDS = 120.0


class NodeUnavailable(RuntimeError):
    """node is missing, or the SDK is not installed next to the script."""


@dataclass(frozen=True)
class SdkCall:
    """One SDK call as the script reported it: its return value, or the error it raised."""

    call: str
    result: Any = None
    error_name: str | None = None
    error_message: str | None = None

    @property
    def failed(self) -> bool:
        return self.error_name is not None


@dataclass(frozen=True)
class Credentials:
    site_uuid: str
    publishable_key: str
    secret_key: str
    base_url: str


def sdk_version() -> str:
    """The installed SDK's version (the lockfile pins it); raises NodeUnavailable if it is not installed."""
    if shutil.which("node") is None:
        raise NodeUnavailable("node is not on PATH")
    if not SDK_PACKAGE.exists():
        raise NodeUnavailable(f"the Node SDK is not installed: run `npm ci` in {NODE_DIR}")
    return str(json.loads(SDK_PACKAGE.read_text())["version"])


def run_phase(phase: str, credentials: Credentials, plan_json: str) -> list[SdkCall]:
    """Run the script for one phase; raises RuntimeError if it crashed or printed something unexpected."""
    env = {**os.environ, "BENTO_BASE_URL": credentials.base_url, "BENTO_SITE_UUID": credentials.site_uuid,
           "BENTO_PUBLISHABLE_KEY": credentials.publishable_key, "BENTO_SECRET_KEY": credentials.secret_key,
           "SDK_CHECK_PLAN": plan_json}
    done = subprocess.run(["node", str(SCRIPT), phase], cwd=NODE_DIR, env=env, capture_output=True, text=True,
                          timeout=PHASE_TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"node exited {done.returncode} in phase {phase}: {done.stderr.strip()[-2000:]}")
    calls = []
    for line in done.stdout.splitlines():
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"phase {phase}: not a JSON line from node: {line[:200]!r}") from exc
        error = item.get("error")
        if error is None:
            calls.append(SdkCall(item["call"], item.get("result")))
        else:
            calls.append(SdkCall(item["call"], None, str(error.get("name")), str(error.get("message"))))
    return calls
