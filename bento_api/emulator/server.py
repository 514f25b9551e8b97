"""HTTP/1.1 plumbing: a ThreadingHTTPServer whose handler reads the request once, asks the App or the
admin endpoints for an answer, and writes it in a single send (keep-alive, exact Content-Length).

Quiet by design: no stderr line per request, since benchmarks send hundreds of thousands.
"""

from __future__ import annotations

import contextlib
import math
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from . import admin, codec, limits
from .app import App, Outcome, api_path
from .calls import JSON_TYPE, Response, error


class EmulatorHTTPServer(ThreadingHTTPServer):
    """Daemon thread per connection; remembers open connections so stop() can cut idle keep-alives."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], app: App, admin_api: admin.AdminAPI) -> None:
        self.app = app
        self.admin_api = admin_api
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, EmulatorRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request is normal here (faults, deadlines): stay quiet about it."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            return
        print(f"bento emulator: error while serving {client_address}: {exc!r}", file=sys.stderr)

    def close_connections(self) -> None:
        """Shut down every open client connection so their handler threads end."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _BodyTooLarge(Exception):
    pass


#: bytes read at a time from a body refused as too large (read and dropped, never kept)
_DISCARD_CHUNK = 1 << 16


class EmulatorRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "bento-emulator"
    sys_version = ""
    server: EmulatorHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: one line per request would flood stderr in benchmarks."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    # ------------------------------------------------------------------ request
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.app.cfg.max_body_bytes:
            self._discard(length)
            raise _BodyTooLarge
        return self.rfile.read(length) if length > 0 else b""

    def _discard(self, length: int) -> None:
        """Read a refused body without keeping it: a client still writing it would otherwise see a reset
        connection instead of the 413 (a real server answers it too)."""
        while length > 0:
            chunk = self.rfile.read(min(length, _DISCARD_CHUNK))
            if not chunk:
                return
            length -= len(chunk)

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        too_large = False
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                if too_large:
                    raise _BodyTooLarge
                return b"".join(parts)
            total += size
            if total > self.server.app.cfg.max_body_bytes:
                too_large = True
                parts.clear()
            if too_large:
                self._discard(size)
            else:
                parts.append(self.rfile.read(size))
            self.rfile.readline()

    def _handle(self) -> None:
        arrived = time.monotonic()
        app = self.server.app
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            raw = self._read_body()
        except (_BodyTooLarge, ValueError):
            self.close_connection = True
            answer = app.body_too_large()
            rel = api_path(path)
            if rel is not None:  # logged like any API request, so a test sees every 413 a client got
                app.log_unread(self.command, rel, query, self.headers.get("User-Agent"), answer.status, arrived)
            self._send(answer)
            return
        if path == limits.ADMIN_PREFIX or path.startswith(limits.ADMIN_PREFIX + "/"):
            self._send(self.server.admin_api.handle(self.command, path[len(limits.ADMIN_PREFIX):], query, raw))
            return
        rel = api_path(path)
        if rel is None:
            self._send(error(404, "Not Found"))
            return
        headers = {"user-agent": self.headers.get("User-Agent"), "authorization": self.headers.get("Authorization")}
        outcome = app.process(self.command, rel, query, {k: v for k, v in headers.items() if v is not None},
                              raw, arrived)
        self._deliver(outcome)

    # ------------------------------------------------------------------ response
    def _deliver(self, outcome: Outcome) -> None:
        if outcome.response is None:
            self._drop()
        elif outcome.trickle is not None:
            self._trickle(outcome)
        else:
            self._send(outcome.response)

    def _drop(self) -> None:
        """Close the socket without a byte of answer (a lost response)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _encode(self, resp: Response) -> tuple[bytes, bytes]:
        body = resp.raw if resp.raw is not None else codec.dumps(resp.payload)
        try:
            reason = HTTPStatus(resp.status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {resp.status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {resp.content_type or JSON_TYPE}",
            f"Content-Length: {len(body)}",
            *(f"{k}: {v}" for k, v in resp.headers.items()),
            "Connection: close" if self.close_connection else "Connection: keep-alive",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body

    def _send(self, resp: Response) -> None:
        head, body = self._encode(resp)
        if self.command == "HEAD":
            body = b""
        try:
            self.wfile.write(head + body)
        except OSError:
            self.close_connection = True

    def _trickle(self, outcome: Outcome) -> None:
        """Send the answer a few bytes at a time: each read is quick, the whole takes minutes."""
        fault = outcome.trickle
        assert fault is not None and outcome.response is not None
        resp = outcome.response
        body = resp.raw if resp.raw is not None else codec.dumps(resp.payload)
        # n chunks with a pause between each take (n - 1) intervals: at least the fault's total seconds.
        needed = (math.ceil(fault.trickle_seconds() / max(fault.interval, 1e-3)) + 1) * fault.chunk
        if len(body) < needed:
            body = body + b" " * (needed - len(body))  # trailing whitespace keeps the JSON valid
        self.close_connection = True
        head, _ = self._encode(Response(resp.status, raw=body, content_type=resp.content_type,
                                        headers=resp.headers))
        stopping = self.server.app.stopping
        try:
            self.wfile.write(head)
            for i in range(0, len(body), fault.chunk):
                if i and stopping.wait(fault.interval):
                    break
                self.wfile.write(body[i: i + fault.chunk])
        except OSError:
            pass
