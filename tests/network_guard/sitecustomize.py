"""A DNS blocker for subprocesses under test: put this folder first on PYTHONPATH and set NETWORK_GUARD_LOG.

Python imports `sitecustomize` at start-up, so every name lookup of the child process goes through
here: loopback names resolve as usual; any other name is written to the log file and refused, as it
would be on a machine with no network but loopback. The test then asserts the log stays empty.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

_LOG = os.environ.get("NETWORK_GUARD_LOG")
_resolve = socket.getaddrinfo


def _is_loopback(host: Any) -> bool:
    if host is None:
        return True  # a local bind, not a lookup
    name = host.decode() if isinstance(host, bytes) else str(host)
    if name.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if not _is_loopback(host):
        if _LOG:
            with open(_LOG, "a", encoding="utf-8") as log:
                log.write(f"{host}\n")
        raise socket.gaierror(socket.EAI_NONAME, f"network guard: no lookup of {host!r} (loopback only)")
    return _resolve(host, *args, **kwargs)


if _LOG:
    socket.getaddrinfo = _guarded_getaddrinfo
