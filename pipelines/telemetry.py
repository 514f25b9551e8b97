"""dlt's anonymous telemetry, off for the commands that promise to reach nothing but loopback.

dlt sends usage events to its telemetry host from every pipeline run unless told not to: a DNS lookup and
an HTTPS request per run. The demo and the emulator command only talk to an emulator on 127.0.0.1, so
they turn it off in their own process. Users' own runs keep dlt's setting; the README says how to turn
it off (this environment variable, or `dlthub_telemetry = false` under `[runtime]` in `.dlt/config.toml`).
"""

from __future__ import annotations

import os

#: dlt reads the environment before any config file, so this wins over ~/.dlt/config.toml
TELEMETRY_ENV = "RUNTIME__DLTHUB_TELEMETRY"


def turn_off_dlt_telemetry() -> None:
    """For this process and its children only; dlt starts telemetry once, at the first pipeline."""
    os.environ[TELEMETRY_ENV] = "false"
