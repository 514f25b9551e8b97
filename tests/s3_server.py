"""An S3 API on 127.0.0.1 for tests: moto in server mode, in its own process, stopped after.

The ledger reaches `s3://` through s3fs and botocore over real HTTP, exactly as it would reach AWS or MinIO;
only the endpoint differs. `env()` is what a process needs to use it and nothing else: test keys, the
endpoint in `AWS_ENDPOINT_URL` (botocore reads it), no instance metadata lookups, and no shared AWS config
or credentials files of the developer's, so nothing can reach AWS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from .postgres_server import free_port

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0


class S3ServerError(RuntimeError):
    """moto did not start or answer; the message holds the end of its log."""


class S3Server:
    """`moto_server` on a free port of 127.0.0.1; `env()` points boto/s3fs at it."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> S3Server:
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise S3ServerError(f"moto exited with {self._process.returncode}: {self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2):
                    return self
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    self.stop()
                    raise S3ServerError(f"moto did not answer on {self.endpoint} in {START_TIMEOUT_S:.0f} s: "
                                        f"{self._tail()}") from None
                time.sleep(0.1)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)

    def env(self, folder: Path) -> dict[str, str]:
        """Environment for a process using this server; `folder` holds the (absent) AWS config files."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(folder / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(folder / "no-aws-credentials"),
        }

    def filesystem(self) -> Any:
        """An s3fs filesystem on this server for the test itself (no caching: each test sees fresh listings)."""
        import s3fs  # type: ignore[import-untyped]  # the [s3] extra

        # no region_name: s3fs would send it as the bucket's location constraint, which us-east-1 must not have
        return s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=self.endpoint,
                                 skip_instance_cache=True, use_listings_cache=False)

    def new_bucket(self) -> str:
        name = f"bento-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name


def clean_aws_environ() -> dict[str, str]:
    """os.environ without any AWS_* setting of the developer's (profiles, keys, endpoints)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
