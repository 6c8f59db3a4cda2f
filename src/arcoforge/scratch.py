"""Scratch files and folders in the system's temporary folder, named after the process that made them.

A bake makes a few: its progress folder, its warm workers' socket folder, local
copies of inputs (``copy_to_local``), downloads on their way to a remote cache.
Each is removed when it is no longer needed, but a process killed with SIGKILL
(an OOM kill, a crash test) removes nothing. So each name says who made it —
host, process id and that process's start time, which tells a reused process id
apart — ``arcoforge-progress-4242.987654.1a2b3c-k3j4h5g6``, and
:func:`remove_stale`, run as a bake (or its pool of workers) starts, removes the
ones whose maker is gone from this host. That is decided as for the leases and
spills of killed bakes (:func:`process_alive`, here rather than in
:mod:`arcoforge.io.lease` so that the worker module, which imports only the
standard library, can use it too).

Only entries directly in :func:`tempfile.gettempdir`, owned by this user, not
symbolic links, and named as arcoforge names them are ever removed. Names of
older arcoforge versions say nothing of their maker; they are removed once
nothing in them changed for a day.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator

logger = logging.getLogger(__name__)

PREFIX = "arcoforge-"
# Entries of older versions (no maker in the name) are removed once untouched for this long.
LEGACY_AGE = 24 * 3600.0

_TAGGED = re.compile(r"^arcoforge-(?P<kind>[a-z]+)-(?P<pid>\d+)\.(?P<start>\d+)\.(?P<host>[0-9a-f]{6})-")
# What older versions made: mkdtemp/mkstemp names (8 characters of [a-z0-9_]) under these prefixes.
_LEGACY = re.compile(r"^arcoforge-((progress|workers|download|lint|feedstock)-[a-z0-9_]+|[a-z0-9_]{8}(\.\w{1,16})?)$")

_TAG: tuple[int, str] | None = None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), to tell a reused pid; ``None`` elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as status:
            fields = status.read().rsplit(")", 1)[1].split()
        return fields[19]  # field 22 of stat(5), counted after the command name
    except (OSError, IndexError):
        return None


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` of this host still runs (and, given ``started``, is the same process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:
        with open(f"/proc/{pid}/stat") as status:
            if status.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False  # killed, waiting for its parent to reap it
    except (OSError, IndexError):
        pass
    return started is None or process_start(pid) in (None, started)


def host_code(host: str | None = None) -> str:
    """Six hex digits standing for a host name, so that a temporary folder shared by hosts is swept safely."""
    return hashlib.sha1((host or socket.gethostname()).encode()).hexdigest()[:6]


def owner_tag() -> str:
    """``pid.start.host`` of this process (recomputed after a fork: the pid changed)."""
    global _TAG
    pid = os.getpid()
    if _TAG is None or _TAG[0] != pid:
        _TAG = (pid, f"{pid}.{process_start(pid) or 0}.{host_code()}")
    return _TAG[1]


def scratch_dir(kind: str) -> str:
    """A new private folder ``arcoforge-<kind>-<owner>-XXXXXXXX`` in the temporary folder."""
    return tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-{owner_tag()}-")


def scratch_file(kind: str, suffix: str = "") -> tuple[int, str]:
    """A new private file ``arcoforge-<kind>-<owner>-XXXXXXXX<suffix>``: ``(open descriptor, path)``."""
    return tempfile.mkstemp(prefix=f"{PREFIX}{kind}-{owner_tag()}-", suffix=suffix)


@contextlib.contextmanager
def scratch_folder(kind: str) -> Iterator[str]:
    """:func:`scratch_dir`, removed with all it holds on exit."""
    folder = scratch_dir(kind)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def maker_gone(name: str, host: str | None = None) -> bool | None:
    """Whether the process named in scratch entry ``name`` is gone from this host.

    ``None`` when the name does not say (an older version's, or another host's).

    >>> maker_gone("arcoforge-progress-1.0.000000-abcdefgh", host="elsewhere")
    """
    match = _TAGGED.match(name)
    if match is None or match["host"] != host_code(host):
        return None
    start = match["start"]
    return not process_alive(int(match["pid"]), None if start == "0" else start)


def _newest_change(path: str, info: os.stat_result) -> float:
    """The latest modification time of ``path`` and, for a folder, of what it holds directly."""
    newest = info.st_mtime
    if stat.S_ISDIR(info.st_mode):
        with contextlib.suppress(OSError), os.scandir(path) as entries:
            for entry in entries:
                with contextlib.suppress(OSError):
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
    return newest


def remove_stale(keep: str | None = None, legacy_age: float = LEGACY_AGE) -> list[str]:
    """Remove this user's arcoforge scratch entries whose maker is gone; the paths removed.

    ``keep``: one path never to remove (the caller's own). Entries of older
    versions go once untouched for ``legacy_age`` seconds.
    """
    root = tempfile.gettempdir()
    try:
        names = [name for name in os.listdir(root) if name.startswith(PREFIX)]
    except OSError:
        return []
    removed = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    now = time.time()
    for name in names:
        path = os.path.join(root, name)
        if path == keep:
            continue
        gone = maker_gone(name)
        if gone is False or (gone is None and not _LEGACY.match(name)):
            continue
        try:
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode) or (uid is not None and info.st_uid != uid):
                continue
            if gone is None and now - _newest_change(path, info) < legacy_age:
                continue
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(path)
            else:
                os.remove(path)
        except FileNotFoundError:
            continue  # another process swept it first
        except OSError as error:
            logger.debug("could not remove %s: %s", path, error)
            continue
        removed.append(path)
    if removed:
        logger.info("removed %d temporary files and folders of arcoforge processes that were killed", len(removed))
    return removed
