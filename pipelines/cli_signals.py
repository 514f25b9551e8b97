"""SIGINT and SIGTERM for `bento-dlt sync`: the CLI owns its process, so it turns a signal into a run cancel.

dlt intercepts both signals while it normalizes and loads and then only stops starting new jobs (a whole
file each), so on its own a first Ctrl-C seems to do nothing and SIGTERM (Airflow, Kubernetes, systemd)
is ignored. Here the first signal cancels the run (`RunCancel`; the destination also reads dlt's own
flag): no request starts after it, requests in flight get `cancel_grace_seconds()` to answer, and the
command then ends with one line and 130 (SIGINT) or 143 (SIGTERM). If requests still hang after the
grace, a watchdog ends the process itself (the kernel releases the run's locks; the package stays
pending). A second signal ends the process at once. `sync()` itself never installs handlers: a program
that embeds it keeps its own (an orchestrator's).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from bento_destination.runcontext import RunCancel, cancel_grace_seconds, dlt_signal

from .cli_common import Console

HANDLED = (signal.SIGINT, signal.SIGTERM)
WATCH_PERIOD = 0.05
#: the watchdog's margin after the grace, for the run to end on its own first
WATCH_MARGIN = 1.0


def signal_name(number: int | None) -> str:
    return signal.Signals(number).name if number else "SIGINT"


class SignalGuard:
    """Installs the CLI's SIGINT/SIGTERM handlers for a sync and watches the grace period (a context manager).

    `progress()` gives (rows sent in this run, rows not sent yet) for the line printed when it ends the process.
    """

    def __init__(
        self, console: Console, cancel: RunCancel, progress: Callable[[], tuple[int, int]], command: str = "sync"
    ) -> None:
        self.console = console
        self.cancel = cancel
        self._progress = progress
        self._command = command
        self._grace = cancel_grace_seconds()
        self._previous: dict[int, Any] = {}
        self._done = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="bento-sync-signals", daemon=True)

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for number in HANDLED:
                self._previous[number] = signal.signal(number, self._handle)
        self._watchdog.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._done.set()
        if self._stop_signal() is not None:
            # the run ended on a signal and the command is ending too: a second signal that comes meanwhile
            # still ends it with its exit code (a handler put back would let it kill the process, exit -2)
            return
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _stop_signal(self) -> int | None:
        caught = dlt_signal()
        if caught is not None:
            return caught
        return (self.cancel.signal_number or signal.SIGINT) if self.cancel.is_set() else None

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self._stop_signal() is not None:  # the second signal (dlt passes it on to us)
            self._exit(number, f"stopped at once by a second {signal_name(number)}")
        self.cancel.cancel(number)

    def _watch(self) -> None:
        since: float | None = None
        while not self._done.wait(WATCH_PERIOD):
            caught = self._stop_signal()
            if caught is None:
                continue
            since = since if since is not None else time.monotonic()
            if time.monotonic() - since >= self._grace + WATCH_MARGIN:
                self._exit(caught, f"stopped by {signal_name(caught)}; requests still unanswered after "
                                   f"{self._grace:g}s were abandoned")

    def _exit(self, number: int, what: str) -> None:
        """End the process now, with one line: worker threads may hang in a request and cannot be joined."""
        code = 128 + number
        sent, not_sent = self._progress()
        message = (f"bento-dlt {self._command}: {what}: {sent} rows sent in this run, about {not_sent} not sent "
                   "yet: the load package stays pending and the next run resumes it")
        text = self.console.redact(message)
        try:
            if self.console.json_mode:
                summary = {"command": self._command, "ok": False, "exit_code": code, "error": text}
                os.write(1, (json.dumps(summary) + "\n").encode())
            os.write(2, (text + "\n").encode())
        finally:
            os._exit(code)
