"""Local worker processes: Beam's SDK harness minus its chatter, started warm ahead of the runner.

Owns the entry point the embedded runner's worker command runs
(``python -m arcoforge.runtime.workers``), the environment those processes run
with, and :class:`WarmWorkers`. Only the standard library at import: the
``arcoforge`` command imports this before Beam, and a worker re-executes itself
with its tunables before importing anything heavy.

Beam's own worker logs every gRPC step at INFO on stderr and repeats each
failure with a full traceback; the parent process reports failures itself. Set
``ARCOFORGE_WORKER_DEBUG=1`` to see everything.

Warm workers. A worker spends over a second importing Beam, xarray and zarr,
and Beam's local runner starts its workers only when the first stage runs,
after the bake's own process has imported the same and built the pipeline.
``arcoforge bake`` therefore starts its workers first (:class:`WarmWorkers`):
one process imports while the bake does, then forks the others from itself,
so the imports are paid once (on 2 cores, three processes importing side by
side took 1.7 s; see docs/performance.md; on macOS each worker starts on its
own instead). Each worker accepts on its own Unix socket, bound by the bake
beforehand in a private folder. The runner's worker command
(:func:`attach_command`) is a small stdlib-only program that claims one
waiting worker by renaming its socket (atomic: no two claim the same one),
hands it the environment the runner set (where to connect), relays its exit
code, and runs a cold worker itself when none is waiting. A waiting worker
exits when the bake that started it does (its stdin is a pipe from the
bake), or when the program that claimed it is killed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import warnings

from ..scratch import remove_stale, scratch_dir
from .process import exit_now

# A socket's path has at most 107 bytes (Linux; 103 on macOS): the workers' folder name (with its maker,
# see arcoforge.scratch) and the longest socket name, as claimed, must fit after the temporary folder's path.
_MAX_SOCKET = 103
_LONGEST_NAME = "4194304.18446744073.abcdef-abcdefgh/warm-99.sock.claimed-4194304"
# What ``python -m`` runs in a worker process; the runner's worker command names it too.
WORKER_MODULE = "arcoforge.runtime.workers"
NOISY = ("apache_beam.runners.common", "apache_beam.runners.worker", "__main__", "apache_beam.runners.worker.sdk_worker_main")


class _QuietFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if "apitools not found" in str(record.msg):
            return False
        return not record.name.startswith(NOISY)


class _StderrWithoutTracebacks:
    """stderr minus the tracebacks Beam's harness prints for failed bundles.

    The harness sends the same traceback to the parent process, which raises it;
    printing it here as well only buries the one-line error the user gets.
    """

    def __init__(self, stream):
        self._stream = stream
        self._dropped = False

    def write(self, text: str) -> int:
        dropped, self._dropped = self._dropped, text.startswith("Traceback (most recent call last)")
        if self._dropped or (dropped and text == "\n"):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


# With this tunable glibc (2.35+) asks for transparent huge pages for the memory it maps:
# a task's large arrays (Blosc's output buffer above all) take one page fault per 2 MiB
# rather than per 4 kiB (measured on the benchmark: 0.70 million faults -> 0.15 million).
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
# A local worker is one of several processes sharing the machine's cores, so the math
# libraries' own thread pools only compete with the other workers (perf on the benchmark:
# 1.5% of all CPU samples were idle OpenBLAS threads spinning). dask.distributed sets the
# same for its workers. A value the user set is kept.
ONE_THREAD_PER_LIBRARY = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def worker_environment(environ: dict[str, str], platform: str = sys.platform) -> dict[str, str]:
    """The environment a local worker runs with: ``environ`` plus the settings above.

    >>> env = worker_environment({"OMP_NUM_THREADS": "4"}, platform="linux")
    >>> env["OMP_NUM_THREADS"], env["OPENBLAS_NUM_THREADS"], env["GLIBC_TUNABLES"]
    ('4', '1', 'glibc.malloc.hugetlb=1')
    >>> worker_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "linux")["GLIBC_TUNABLES"]
    'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
    >>> "GLIBC_TUNABLES" in worker_environment({}, platform="darwin")
    False
    """
    env = {**ONE_THREAD_PER_LIBRARY, **environ}
    tunables = env.get("GLIBC_TUNABLES", "")
    if platform.startswith("linux") and HUGE_PAGES_TUNABLE not in tunables:
        env["GLIBC_TUNABLES"] = f"{tunables}:{HUGE_PAGES_TUNABLE}" if tunables else HUGE_PAGES_TUNABLE
    return env


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    wanted = worker_environment(dict(os.environ))
    if argv is None and wanted.get("GLIBC_TUNABLES") != os.environ.get("GLIBC_TUNABLES"):
        # Tunables are read when a process starts: start again with them, before importing anything.
        os.execve(sys.executable, [sys.executable, "-m", WORKER_MODULE, *args], wanted)
    os.environ.update(wanted)  # before numpy is imported
    if args[:1] == ["--warm"]:
        serve_when_claimed([int(fd) for fd in args[1:]])
    else:
        run_harness()


def _quiet_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s (worker %(process)d): %(message)s"))
    if not os.environ.get("ARCOFORGE_WORKER_DEBUG"):
        handler.setLevel(logging.WARNING)
        handler.addFilter(_QuietFilter())
        if not isinstance(sys.stderr, _StderrWithoutTracebacks):
            sys.stderr = _StderrWithoutTracebacks(sys.stderr)
    logging.getLogger().handlers[:] = [handler]


def _prepare() -> None:
    """Import what running tasks needs, and set up the process for them."""
    _quiet_logging()
    from .. import import_quickly

    import_quickly("apache_beam.runners.worker.sdk_worker_main", "arcoforge.transforms", "arcoforge.hdf5_chunks",
                   "netCDF4", "h5netcdf", "deflate")
    # Beam's import-time warning may have given the root logger a default handler; ours stays.
    _quiet_logging()
    from .memory import keep_freed_memory_for_reuse, limit_netcdf_chunk_cache

    keep_freed_memory_for_reuse()  # before the harness starts its threads
    limit_netcdf_chunk_cache()  # before the first input is opened in this worker


def run_harness() -> None:
    """Run Beam's SDK harness with the runner's environment, then exit."""
    _prepare()
    from apache_beam.runners.worker import sdk_worker_main

    sdk_worker_main.main(sys.argv)
    exit_now(0)


def serve_when_claimed(listener_fds: list[int]) -> None:
    """Import everything, fork a worker for each further socket, then accept a claimer and run the harness.

    Forking after the imports shares them: the children start with Beam,
    xarray and zarr loaded, at the cost of a fork. No thread is running yet
    when they fork (the exit watch starts after). A claimer that connects
    while this is still importing waits in the listen queue. It is told
    ``accepted`` first, so that if this worker died before accepting it can
    start a cold worker instead.
    """
    _prepare()
    from apache_beam.runners.worker import sdk_worker_main

    gc.freeze()  # the collector would otherwise touch, and so copy, every shared object
    mine, children = listener_fds[0], []
    for fd in listener_fds[1:]:
        with warnings.catch_warnings():
            # Python 3.12+ warns of forking a multi-threaded process. The one other thread is
            # pyarrow's jemalloc background thread (Beam imports pyarrow), which jemalloc's own
            # fork handlers take care of; no Python thread has started yet.
            warnings.filterwarnings("ignore", message=".*multi-threaded.*fork", category=DeprecationWarning)
            child = os.fork()
        if child == 0:
            mine, children = fd, []
            break
        children.append(child)
    for fd in listener_fds:
        if fd != mine:
            os.close(fd)
    threading.Thread(target=_exit_when_closed, args=(0,), daemon=True).start()  # stdin: a pipe from the bake
    listener = socket.socket(fileno=mine)
    connection, _ = listener.accept()
    listener.close()
    connection.sendall(b"accepted\n")
    environment = json.loads(_read_line(connection))
    os.environ.clear()
    os.environ.update(worker_environment(environment))
    threading.Thread(target=_exit_when_closed, args=(os.dup(connection.fileno()),), daemon=True).start()
    code = 0
    try:
        sdk_worker_main.main(sys.argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        logging.getLogger(__name__).exception("worker failed")
        code = 1
    connection.sendall(f"{code}\n".encode())
    for child in children:  # they end with the bake; until then they are part of its process tree
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)
    exit_now(code)


def _read_line(connection: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        block = connection.recv(65536)
        if not block:
            raise ConnectionError("the worker's claimer went away before saying where to connect")
        data += block
    return data.decode()


def _exit_when_closed(fd: int) -> None:
    """End this process when ``fd`` reaches its end: whoever holds its other end is gone.

    Raw reads, no Python file object: nothing here holds a lock a fork could copy.
    """
    try:
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    os._exit(1)


# The runner's worker command runs this with the folder of warm workers, and the Python and
# module to start a cold worker with. Only the standard library: it starts in milliseconds, in a few MB.
_CLAIM = r"""
import glob, json, os, socket, sys
folder, python = sys.argv[1], sys.argv[2]
for path in sorted(glob.glob(os.path.join(folder, "warm-*.sock"))):
    claimed = "%s.claimed-%d" % (path, os.getpid())
    try:
        os.rename(path, claimed)
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        connection.connect(claimed)
        reader = connection.makefile("rb")
        if reader.readline() != b"accepted\n":
            continue
    except OSError:
        continue
    connection.sendall(json.dumps(dict(os.environ)).encode() + b"\n")
    reply = reader.readline().strip()
    sys.exit(int(reply) if reply else 1)
os.execv(python, [python, "-m", sys.argv[3]])
"""


def attach_command(folder: str) -> str:
    """The worker command for Beam's runner: claim a warm worker in ``folder``, or be a cold one."""
    python = shlex.quote(sys.executable)
    return f"exec {python} -S -c {shlex.quote(_CLAIM)} {shlex.quote(folder)} {python} {WORKER_MODULE}"


class WarmWorkers:
    """Worker processes started ahead of the runner, importing while the bake does.

    A context manager around a bake; while it is open, the worker command of
    :func:`~arcoforge.runtime.runners.local_runner` claims these. Workers left unclaimed are stopped on exit.

    >>> with WarmWorkers(0):  # none wanted: the runner starts its workers itself
    ...     WarmWorkers.active_folder() is None
    True
    """

    _active: str | None = None

    def __init__(self, count: int):
        self.count = count if os.name == "posix" else 0  # Unix sockets and inherited descriptors
        if self.count and len(os.path.join(tempfile.gettempdir(), "arcoforge-workers-", _LONGEST_NAME)) > _MAX_SOCKET:
            logging.getLogger(__name__).debug("the temporary folder's path is too long for sockets: no warm workers")
            self.count = 0
        self.folder = scratch_dir("workers") if self.count else None
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> WarmWorkers:
        if not self.folder:
            return self
        remove_stale(keep=self.folder)  # what bakes killed on this host left in the temporary folder
        # Listening before the workers start: a claimer never finds the folder empty.
        listeners = []
        for number in range(self.count):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(os.path.join(self.folder, f"warm-{number}.sock"))
            listener.listen(1)
            listeners.append(listener)
        fds = [listener.fileno() for listener in listeners]
        # On Linux one process imports and forks the others. macOS's system frameworks are not
        # safe to use in a child forked after they were loaded, so there each worker starts alone.
        batches = [fds] if sys.platform.startswith("linux") else [[fd] for fd in fds]
        try:
            for batch in batches:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", WORKER_MODULE, "--warm", *map(str, batch)], stdin=subprocess.PIPE,
                    pass_fds=batch, env=worker_environment(dict(os.environ)),  # so it need not start itself again
                ))
        finally:
            for listener in listeners:
                listener.close()
        WarmWorkers._active = self.folder
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.folder:
            return
        WarmWorkers._active = None
        for process in self.processes:
            with contextlib.suppress(OSError):
                process.stdin.close()  # an unclaimed worker exits on this
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)

    @classmethod
    def active_folder(cls) -> str | None:
        return cls._active

    def claimed(self) -> int:
        """How many of these workers a runner has claimed so far."""
        return sum(".claimed-" in name for name in os.listdir(self.folder)) if self.folder else 0


if __name__ == "__main__":
    main()
