"""Who is writing a store: a lease that expires by itself when its bake dies.

A bake holds ``<root>/.arcoforge/<store>/lease.json`` while it writes the
store. The document names the owner (one bake), its host and process id, and
the time of its last heartbeat; the bake renews it every few seconds
(:class:`LeaseKeeper`). Another bake of the same store

- renews it, when it is the same owner (the CLI and its workers share one);
- takes it over, with a warning naming the old owner, when its heartbeat is
  older than the lease's time to live (``ttl``, 60 s by default), or when it was
  taken on this host by a process that no longer runs (at once);
- breaks it when asked (``--break-lease``);
- fails otherwise, naming who holds it (:class:`LeaseError`).

Each change is a compare-and-swap, so two bakes racing for one lease never both
win: on a local disk under an exclusive lock file (``flock``) and with an
exclusive create (a hard link, which fails if the lease exists); on S3 with
conditional writes (``If-None-Match: *`` to create, ``If-Match: <ETag>`` to renew
or take over). Other object stores fall back to write-then-read-back, which
narrows the race but cannot close it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import InfrastructureError
from ..scratch import process_alive, process_start
from .atomic import temporary_name, write_json_atomically

logger = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
DEFAULT_TTL = 60.0
# How often a holder renews: often enough that a few missed beats do not lose the lease.
MAX_HEARTBEAT = 5.0


class LeaseError(InfrastructureError):
    """Another bake holds the store: two writers would interleave their chunks."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def heartbeat_interval(ttl: float) -> float:
    """Seconds between renewals for a lease living ``ttl`` seconds: 5 s, or a quarter of a short TTL."""
    return max(0.05, min(MAX_HEARTBEAT, ttl / 4))


def new_lease(owner: str, ttl: float, now: dt.datetime | None = None) -> dict[str, Any]:
    """The lease document this process writes for ``owner``."""
    now = now or _now()
    return {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "pid_start": process_start(os.getpid()),
            "acquired": now.isoformat(), "heartbeat": now.isoformat(), "ttl": float(ttl),
            "expires": (now + dt.timedelta(seconds=ttl)).isoformat()}


def renewed(lease: dict[str, Any], now: dt.datetime | None = None) -> dict[str, Any]:
    """``lease`` with a new heartbeat (host and pid stay those of its creator)."""
    now = now or _now()
    ttl = float(lease.get("ttl", DEFAULT_TTL))
    return {**lease, "heartbeat": now.isoformat(), "expires": (now + dt.timedelta(seconds=ttl)).isoformat()}


def staleness(lease: dict[str, Any], now: dt.datetime, alive: Callable[[int, str | None], bool] = process_alive,
              host: str | None = None) -> str | None:
    """Why ``lease`` may be taken over (its heartbeat is too old, its process is gone), or ``None``.

    >>> old = {"owner": "a", "host": "h", "pid": 1, "heartbeat": "2020-01-01T00:00:00+00:00", "ttl": 60}
    >>> staleness(old, dt.datetime(2020, 1, 1, 0, 2, tzinfo=dt.timezone.utc), host="other")
    'its last heartbeat was 120 s ago (time to live 60 s)'
    """
    beat = lease.get("heartbeat") or lease.get("acquired")
    ttl = float(lease.get("ttl", DEFAULT_TTL))
    if beat is None and lease.get("expires"):  # a lease of an older version: only its expiry is known
        if dt.datetime.fromisoformat(lease["expires"]) < now:
            return f"it expired at {lease['expires']}"
    elif beat is not None:
        age = (now - dt.datetime.fromisoformat(beat)).total_seconds()
        if age > ttl:
            return f"its last heartbeat was {age:.0f} s ago (time to live {ttl:.0f} s)"
    pid = lease.get("pid")
    if lease.get("host") == (host or socket.gethostname()) and isinstance(pid, int) and not alive(
            pid, lease.get("pid_start")):
        return f"its process {pid} on this host is gone"
    return None


def describe(lease: dict[str, Any]) -> str:
    return (f"owner {lease.get('owner')}, host {lease.get('host')}, pid {lease.get('pid')}, since "
            f"{lease.get('acquired')}, last heartbeat {lease.get('heartbeat') or '?'}")


# ---------------------------------------------------------------------------------------------
# Where the lease document lives: compare-and-swap on a local disk, on S3, or (weakly) elsewhere


class _Conflict(Exception):
    """The lease changed between reading it and writing it."""


class LocalLeaseFile:
    """The lease as a local file; every change is made under an exclusive ``flock`` of a lock file."""

    def __init__(self, path: str):
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        import fcntl

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(f"{self.path}.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None, None
        return json.loads(data), hashlib.sha256(data).hexdigest()

    def create(self, lease: dict[str, Any]) -> None:
        with self._locked():
            # Written whole under a temporary name, then linked: the link is the exclusive create.
            tmp = temporary_name(self.path)
            with open(tmp, "w") as out:
                json.dump(lease, out, indent=2)
            try:
                os.link(tmp, self.path)  # fails if the lease exists, even where flock is not honoured
            except FileExistsError:
                raise _Conflict() from None
            finally:
                os.unlink(tmp)

    def replace(self, lease: dict[str, Any], token: str | None) -> None:
        with self._locked():
            if self.read()[1] != token:
                raise _Conflict()
            write_json_atomically(self.path, lease, indent=2)

    def delete(self, token: str | None) -> None:
        with self._locked():
            if self.read()[1] != token:
                raise _Conflict()
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)


class S3LeaseObject:
    """The lease as an S3 object, changed only by conditional writes."""

    def __init__(self, fs: Any, path: str):
        self.fs = fs
        self.bucket, _, self.key = path.partition("/")

    @staticmethod
    def _conflict(error: BaseException) -> bool:
        text = f"{type(error).__name__} {error} {getattr(error, '__cause__', '')}"
        return any(code in text for code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"))

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            response = self.fs.call_s3("get_object", Bucket=self.bucket, Key=self.key)
        except FileNotFoundError:
            return None, None
        data = _read_body(self.fs, response["Body"])
        return json.loads(data), response["ETag"]

    def _put(self, lease: dict[str, Any], **condition: str) -> None:
        body = json.dumps(lease, indent=2).encode()
        try:
            self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=body, **condition)
        except Exception as error:
            if self._conflict(error):
                raise _Conflict() from None
            raise

    def create(self, lease: dict[str, Any]) -> None:
        self._put(lease, IfNoneMatch="*")

    def replace(self, lease: dict[str, Any], token: str | None) -> None:
        if token is None:
            raise _Conflict()
        self._put(lease, IfMatch=token)

    def delete(self, token: str | None) -> None:
        current = self.read()[1]
        if current != token:
            raise _Conflict()
        with contextlib.suppress(FileNotFoundError):
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key)


def _read_body(fs: Any, body: Any) -> bytes:
    from fsspec.asyn import sync

    async def read() -> bytes:
        async with body:
            return await body.read()

    return sync(fs.loop, read)


class FsspecLeaseFile:
    """The lease on any other filesystem: written whole, then read back (not atomic)."""

    def __init__(self, fs: Any, path: str):
        self.fs, self.path = fs, path

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None, None
        return json.loads(data), hashlib.sha256(data).hexdigest()

    def _write(self, lease: dict[str, Any], token: str | None) -> None:
        if self.read()[1] != token:
            raise _Conflict()
        self.fs.pipe_file(self.path, json.dumps(lease, indent=2).encode())
        written, _ = self.read()
        if not written or written.get("owner") != lease["owner"]:
            raise _Conflict()

    def create(self, lease: dict[str, Any]) -> None:
        self._write(lease, None)

    def replace(self, lease: dict[str, Any], token: str | None) -> None:
        self._write(lease, token)

    def delete(self, token: str | None) -> None:
        if self.read()[1] != token:
            raise _Conflict()
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path)


def lease_file(fs: Any, path: str) -> LocalLeaseFile | S3LeaseObject | FsspecLeaseFile:
    """The compare-and-swap backend for the lease at ``path`` of filesystem ``fs``."""
    protocols = fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)
    if {"file", "local"} & set(protocols):
        return LocalLeaseFile(path)
    if {"s3", "s3a"} & set(protocols) and hasattr(fs, "call_s3"):
        return S3LeaseObject(fs, path)
    return FsspecLeaseFile(fs, path)


# ---------------------------------------------------------------------------------------------
# Taking, renewing and releasing


@dataclasses.dataclass
class Lease:
    """The lease of one store, as one owner sees it."""

    backend: LocalLeaseFile | S3LeaseObject | FsspecLeaseFile
    where: str  # the store URL, for messages
    taken: bool = False  # whether acquire() created or took over the lease (rather than renewed it)

    def acquire(self, owner: str, ttl: float = DEFAULT_TTL, break_lease: bool = False) -> dict[str, Any]:
        """Take (or renew) the lease for ``owner``, or raise :class:`LeaseError` naming who holds it."""
        for _ in range(20):
            current, token = self.backend.read()
            try:
                if current is None:
                    lease = new_lease(owner, ttl)
                    self.backend.create(lease)
                    self.taken = True
                    return lease
                if current.get("owner") == owner:
                    lease = renewed({**current, "ttl": float(ttl)})
                    self.backend.replace(lease, token)
                    self.taken = False
                    return lease
                why = "you asked to break it (--break-lease)" if break_lease else staleness(current, _now())
                if why is None:
                    raise LeaseError(
                        f"{self.where} is being written by another bake (lease held: {describe(current)}); it is "
                        f"taken over once its heartbeat is {float(current.get('ttl', DEFAULT_TTL)):.0f} s old, or "
                        "at once if you rerun with --break-lease (StoreToZarr(break_lease=True)) and that bake "
                        "is no longer running"
                    )
                lease = new_lease(owner, ttl)
                self.backend.replace(lease, token)
                self.taken = True
                logger.warning("took over the lease of %s from owner %s (host %s, pid %s): %s", self.where,
                               current.get("owner"), current.get("host"), current.get("pid"), why)
                return lease
            except _Conflict:
                continue  # it changed under us: look again
        raise LeaseError(f"{self.where}: the lease keeps changing under this bake; another bake is taking it")

    def renew(self, owner: str) -> bool:
        """Renew ``owner``'s lease; ``False`` when it is no longer ``owner``'s (released, or taken over)."""
        for _ in range(5):
            current, token = self.backend.read()
            if current is None or current.get("owner") != owner:
                return False
            try:
                self.backend.replace(renewed(current), token)
                return True
            except _Conflict:
                continue  # renewed by another process of the same bake, or taken: look again
        return False

    def release(self, owner: str) -> None:
        """Give the lease up, if ``owner`` holds it."""
        for _ in range(5):
            current, token = self.backend.read()
            if current is None or current.get("owner") != owner:
                return
            try:
                self.backend.delete(token)
                return
            except _Conflict:
                continue

    def read(self) -> dict[str, Any] | None:
        return self.backend.read()[0]


class LeaseKeeper:
    """A daemon thread renewing ``owner``'s leases until stopped, or until a lease is released or taken."""

    def __init__(self, leases: list[Lease], owner: str, ttl: float = DEFAULT_TTL):
        self.leases, self.owner, self.interval = list(leases), owner, heartbeat_interval(ttl)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="arcoforge-lease-heartbeat", daemon=True)

    def start(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def _run(self) -> None:
        kept = list(self.leases)
        while kept and not self._stop.wait(self.interval):
            for lease in list(kept):
                try:
                    if not lease.renew(self.owner):
                        kept.remove(lease)
                        if lease.read() is not None:
                            logger.error("the lease of %s was taken by another bake", lease.where)
                except Exception as error:  # a storage hiccup: the next beat tries again
                    logger.warning("could not renew the lease of %s: %s", lease.where, type(error).__name__)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def __enter__(self) -> "LeaseKeeper":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()
