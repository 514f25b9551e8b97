"""One run at a time on an `s3://` ledger: a lease object created and renewed with conditional PUTs.

An object store has no flock, and a runner that dies (a CI worker torn down mid-load) leaves no kernel to
drop its lock. So a run holds a *lease*: a small JSON object beside the ledger
(`<ledger>/.bento-locks/<site>.<operation>.lease`) naming its holder, that only one writer can create and
that expires unless the holder renews it.

- **acquire**: PUT with `If-None-Match: *` creates it only if nobody holds it. If it exists and has not
  expired, the run is busy (`BentoBusyError` naming the holder and the expiry) or waits (`--wait`).
  If it has expired (its holder died), PUT with `If-Match: <its ETag>` takes it over: of two runs that
  saw the same expired lease, only the first PUT matches, the other gets 412 and is busy.
- **expiry** is judged by the store's own clock: a lease is expired once the store's `Date` is at least
  `lease_seconds + 1` past the object's `Last-Modified` (one second for their whole-second precision),
  so the clocks of the runners do not matter.
- **renewal**: a daemon thread rewrites the lease every `lease_seconds / 3` with `If-Match` on the ETag of
  its own last write. If that PUT gets 412, another run took the lease over (this one stalled past its
  expiry): `on_lost` is told (the run context trips its breaker, so no request starts after that).
- **self-check**: before each request the run calls `verify()`: a lease not renewed for two thirds of its
  term (the process was paused, the store is out of reach) is given up at once, by this host's monotonic
  clock, before another run could take it over, and `on_lost` is told. So a holder that wakes up from a
  stall starts no request, whichever of its threads runs first.
- **release**: DELETE with `If-Match` on its ETag, so a lease another run has taken over is left alone.

The duration is DEFAULT_LEASE_SECONDS, or BENTO_LEASE_SECONDS, or the `lease_seconds` keyword (tests of a
killed holder shorten it). Requests go through s3fs (the ledger's own fsspec filesystem, so the same
credentials and endpoint), which needs botocore with `IfNoneMatch` / `IfMatch` on PutObject (1.35.69 or
later; the `[s3]` extra pins it).
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import email.utils
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from .ledger import LedgerError
from .runlock import POLL_SECONDS, BentoBusyError, holder_text

#: the term of a lease; the holder renews it every third of that
DEFAULT_LEASE_SECONDS = 60.0
ENV_LEASE_SECONDS = "BENTO_LEASE_SECONDS"
#: fsspec protocols served by s3fs, whose conditional PUTs the lease relies on
LEASE_PROTOCOLS = frozenset({"s3", "s3a"})
#: the longest pause between two tries while waiting for a busy lease (each try is a request)
MAX_POLL_SECONDS = 1.0
#: S3 error codes of a conditional write that lost: 412, or 409 while another conditional write is under way
_LOST_RACE = frozenset({"PreconditionFailed", "ConditionalRequestConflict", "412", "409"})
_MISSING = frozenset({"NoSuchKey", "404"})


def lease_seconds_default() -> float:
    """DEFAULT_LEASE_SECONDS, or BENTO_LEASE_SECONDS (tests of a dead holder shorten it)."""
    text = os.environ.get(ENV_LEASE_SECONDS)
    if not text:
        return DEFAULT_LEASE_SECONDS
    value = float(text)
    if not value > 0:
        raise ValueError(f"{ENV_LEASE_SECONDS} must be a positive number of seconds, got {text!r}")
    return value


def s3_error_code(error: BaseException) -> str | None:
    """The S3 error code behind an exception (s3fs turns botocore's ClientError into OSError, as its cause)."""
    seen: BaseException | None = error
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = response.get("Error", {}).get("Code")
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return str(code or status or "") or None
        seen = seen.__cause__ or seen.__context__
    return None


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


class LeaseSnapshot:
    """One read of the lease object: its holder, ETag, and the store's Last-Modified and Date."""

    def __init__(self, holder: dict[str, Any], etag: str, modified: dt.datetime, server_now: dt.datetime) -> None:
        self.holder = holder
        self.etag = etag
        self.modified = modified
        self.server_now = server_now

    @property
    def term(self) -> float:
        """The holder's own lease duration (a lease that does not say is read with the default)."""
        value = self.holder.get("lease_seconds")
        return float(value) if isinstance(value, int | float) and value > 0 else DEFAULT_LEASE_SECONDS

    @property
    def expires(self) -> dt.datetime:
        """When the store will count it expired (see the module docstring for the extra second)."""
        return self.modified + dt.timedelta(seconds=self.term + 1)

    @property
    def expired(self) -> bool:
        return self.server_now >= self.expires


class S3LeaseLock:
    """A lease object at `url` (s3://bucket/key) held by this run; see the module docstring. A `RunLock`."""

    def __init__(
        self,
        url: str,
        description: str,
        *,
        lease_seconds: float | None = None,
        on_lost: Callable[[str], None] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        import fsspec  # type: ignore[import-untyped]  # fsspec ships no type hints

        self.path = url
        self.description = description
        self.lease_seconds = lease_seconds_default() if lease_seconds is None else float(lease_seconds)
        if not self.lease_seconds > 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
        self.on_lost = on_lost
        self.fs: Any
        try:
            self.fs, key_path = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise LedgerError(f"cannot use the {description}: {exc}. An s3:// ledger needs s3fs "
                              "(pip install 'bento-dlt[s3]')") from exc
        self.bucket, self.key, _ = self.fs.split_path(key_path)
        self._started_at = ""
        self._etag: str | None = None
        self._renewed_at = 0.0  # monotonic start of the last write that succeeded: the lease runs from then
        self._state = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self.lost: str | None = None

    def __repr__(self) -> str:
        return f"S3LeaseLock({self.path!r})"

    @property
    def held(self) -> bool:
        with self._state:
            return self._etag is not None and self.lost is None

    # -- requests ------------------------------------------------------------------------------

    def _body(self) -> bytes:
        now = dt.datetime.now(dt.UTC)
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": self._started_at or _iso(now),
            "what": self.description,
            "lease_seconds": self.lease_seconds,
            "renewed_at": _iso(now),
            "expires_at": _iso(now + dt.timedelta(seconds=self.lease_seconds)),  # the holder's clock: for people
            "write": uuid.uuid4().hex,  # every write a new ETag, even within one second
        }
        return json.dumps(holder).encode()

    def _put(self, **condition: str) -> str:
        """PUT our holder record under `condition` (IfNoneMatch / IfMatch); returns the new ETag."""
        response = self.fs.call_s3(
            "put_object", Bucket=self.bucket, Key=self.key, Body=self._body(), ContentType="application/json",
            **condition,
        )
        return str(response["ETag"])

    def read(self) -> LeaseSnapshot | None:
        """The lease as stored now, or None if there is none."""
        from fsspec.asyn import sync  # type: ignore[import-untyped]

        async def fetch() -> tuple[dict[str, Any], bytes]:
            response = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            async with response["Body"] as body:
                return response, await body.read()

        try:
            response, data = sync(self.fs.loop, fetch)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if s3_error_code(exc) in _MISSING:
                return None
            raise
        try:
            holder = json.loads(data.decode("utf-8") or "{}")
        except ValueError:
            holder = {}
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        # the store's clock (every S3 answer has a Date); this host's only if a proxy dropped it
        server_now = email.utils.parsedate_to_datetime(headers["date"]) if "date" in headers else dt.datetime.now(
            dt.UTC)
        return LeaseSnapshot(holder if isinstance(holder, dict) else {}, str(response["ETag"]),
                             response["LastModified"], server_now)

    # -- taking it -----------------------------------------------------------------------------

    def create(self) -> bool:
        """Create the lease if there is none (If-None-Match: *); False if one exists."""
        started = time.monotonic()
        try:
            etag = self._put(IfNoneMatch="*")
        except OSError as exc:
            if isinstance(exc, FileExistsError) or s3_error_code(exc) in _LOST_RACE:
                return False
            raise
        self._won(etag, started)
        return True

    def take_over(self, expired: LeaseSnapshot) -> bool:
        """Replace an expired lease, only if it is still the one read (If-Match: its ETag); False if not."""
        started = time.monotonic()
        try:
            etag = self._put(IfMatch=expired.etag)
        except OSError as exc:
            if s3_error_code(exc) in _LOST_RACE | _MISSING:
                return False
            raise
        self._won(etag, started)
        return True

    def _won(self, etag: str, started: float) -> None:
        with self._state:
            self._etag, self._renewed_at = etag, started
            self.lost = None
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"bento-lease-{self.key}", daemon=True)
        self._renewer.start()
        atexit.register(self.release)  # a normal exit frees the lease now instead of after its term

    def _try(self) -> LeaseSnapshot | None:
        """One try: None if the lease is ours now, else the snapshot of the live lease that keeps us out."""
        self._started_at = _iso(dt.datetime.now(dt.UTC))
        while True:
            if self.create():
                return None
            current = self.read()
            if current is None:
                continue  # released between the two requests: try to create it again
            if not current.expired:
                return current
            if self.take_over(current):
                return None
            current = self.read()
            if current is not None and not current.expired:
                return current  # another run took it over first
            # deleted or expired again in between: start over

    def _try_or_explain(self) -> LeaseSnapshot | None:
        """`_try`, with the store's refusals (no bucket, no permission, unreachable) as one clear LedgerError."""
        try:
            return self._try()
        except Exception as exc:  # botocore's connection errors are not OSErrors
            if s3_error_code(exc) == "NoSuchBucket":
                raise LedgerError(
                    f"the ledger's bucket {self.bucket!r} does not exist (the ledger never creates one): create "
                    "it, or check the URL and the endpoint"
                ) from None
            raise LedgerError(
                f"cannot take the lease {self.path} on the {self.description}: {exc}. The run needs to read, "
                "write and delete objects under the ledger's .bento-locks/ prefix"
            ) from exc

    def acquire(self, wait: float | None = None) -> None:
        if self.held:
            return
        deadline = time.monotonic() + (wait or 0.0)
        poll = min(MAX_POLL_SECONDS, max(POLL_SECONDS, self.lease_seconds / 10))
        while (current := self._try_or_explain()) is not None:
            if time.monotonic() >= deadline:
                waited = f" after waiting {wait:g}s" if wait else ""
                raise BentoBusyError(
                    f"busy: another run holds the {self.description} ({holder_text(current.holder)}; its lease "
                    f"runs until {_iso(current.expires)} unless renewed){waited}; nothing was sent. Wait for it "
                    "(--wait SECONDS, or sync(wait=...)) or run later",
                    holder=current.holder,
                    path=self.path,
                )
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    # -- keeping it ----------------------------------------------------------------------------

    @property
    def _overdue_after(self) -> float:
        """Seconds without a renewal after which the holder stops trusting its lease (two thirds of the term)."""
        return self.lease_seconds * 2 / 3

    def verify(self) -> None:
        """Before a request: if the lease went unrenewed too long (the process stalled, the store is out of
        reach), give it up now, by this host's monotonic clock, before another run can take it over."""
        with self._state:
            if self._etag is None or self.lost is not None:
                return
            silent = time.monotonic() - self._renewed_at
        if silent >= self._overdue_after:
            self._lose(f"the lease on the {self.description} went {silent:.0f}s without a renewal (the run stalled "
                       "or the store is out of reach), so another run may take it over", taken=False)

    def _renew_loop(self) -> None:
        interval = self.lease_seconds / 3
        pause = interval
        while not self._stop.wait(pause):
            with self._state:
                etag = self._etag if self.lost is None else None
            if etag is None:
                return
            started = time.monotonic()
            try:
                new_etag = self._put(IfMatch=etag)
            except Exception as exc:  # botocore's connection errors are not OSErrors
                if s3_error_code(exc) in _LOST_RACE | _MISSING:
                    try:
                        taker = self.read()
                    except Exception:  # who took it only makes the message better
                        taker = None
                    by = holder_text(taker.holder) if taker is not None else "another run (or it was deleted)"
                    self._lose(f"the lease on the {self.description} was taken over by {by}", taken=True)
                    return
                self.verify()  # not renewed for two thirds of the term: stop now
                pause = min(interval, max(POLL_SECONDS, interval / 4))
                continue
            with self._state:
                if self._etag != etag or self.lost is not None:  # released or given up meanwhile
                    return
                self._etag, self._renewed_at = new_etag, started
            pause = interval

    def _lose(self, reason: str, *, taken: bool) -> None:
        """The lease is no longer this run's; `taken`: another run holds it (else keep the ETag, to delete it)."""
        with self._state:
            if self.lost is not None or self._etag is None:
                return
            self.lost = reason
            if taken:
                self._etag = None
        if self.on_lost is not None:
            self.on_lost(reason)

    # -- giving it up --------------------------------------------------------------------------

    def release(self) -> None:
        atexit.unregister(self.release)
        self._stop.set()
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not threading.current_thread():
            renewer.join(self.lease_seconds)  # a renewal under way ends (a store out of reach: its retries)
        with self._state:
            etag, self._etag = self._etag, None
        if etag is None:
            return
        # taken over or gone already (412, 404): not ours to delete; the store unreachable: it expires
        with contextlib.suppress(Exception):
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=etag)
