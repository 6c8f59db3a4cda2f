"""The memory of the processes a bake runs in: what each may hold, and how the C libraries use it.

Its own module because these are settings of a whole process, not of the
rechunk arithmetic or of one transform: glibc's allocator (keep freed memory
for the next task, or hand it back after each), netCDF-C's chunk cache, the
assembly buffer a worker keeps between tasks, and the share of ``max_mem``
left to each of several local worker processes. Nothing here changes a
process on import; the worker entry point (:mod:`arcoforge.runtime.workers`)
and the transforms that open inputs and write tasks call these explicitly.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
import time
from collections.abc import Iterator

from ..errors import RecipeError
from ..rechunk import TaskBuffer

# Memory of one local worker process before it holds any data: an interpreter with Beam, xarray,
# zarr and the netCDF libraries loaded (measured: 250-300 MiB).
WORKER_PROCESS_BYTES = 300 * 2**20


def local_data_budget(max_mem: int, num_workers: int) -> int:
    """Bytes of array data each of ``num_workers`` local processes may hold within ``max_mem`` in all.

    Worker processes beyond the first cost their own memory out of the same machine.

    >>> local_data_budget(2**30, 1) == 2**30
    True
    >>> local_data_budget(2**30, 2) // 2**20
    362
    """
    budget = (max_mem - (max(num_workers, 1) - 1) * WORKER_PROCESS_BYTES) // max(num_workers, 1)
    if budget <= 0:
        raise RecipeError(
            f"max_mem={max_mem / 2**20:.0f} MiB cannot hold {num_workers} local worker processes of about "
            f"{WORKER_PROCESS_BYTES / 2**20:.0f} MiB each; raise max_mem or use fewer workers"
        )
    return budget


# netCDF-C keeps a cache of inflated HDF5 chunks for every variable of every open file, 64 MiB
# each by default, and xarray keeps up to 128 files open: a write task that reads 30 files held
# their inflated chunks long after reading them (measured: ~400 MB a worker). A piece is read in
# one call that inflates each chunk once, so the cache saves nothing here.
NETCDF_CHUNK_CACHE_BYTES = 0


def limit_netcdf_chunk_cache(nbytes: int = NETCDF_CHUNK_CACHE_BYTES) -> None:
    """Set netCDF-C's chunk cache for files opened from now on in this process.

    Called by the transforms that open inputs and write tasks, so that merely
    importing arcoforge changes nothing for other code in the process.
    """
    try:
        import netCDF4
    except ImportError:  # then no input is read through netCDF-C
        return
    _, nelems, preemption = netCDF4.get_chunk_cache()
    netCDF4.set_chunk_cache(nbytes, nelems, preemption)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
_allocator_keeps_freed_memory = False
WORKER_MMAP_THRESHOLD = 32 * 2**20  # a worker's blocks this large get their own mapping (a task's assembled buffer)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library, if it is glibc (``mallopt`` and ``malloc_trim``); None elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        _ = (libc.mallopt, libc.malloc_trim)  # both must exist
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory_for_reuse() -> bool:
    """Make glibc keep memory a task frees and serve the next task's arrays from it.

    Every task allocates the same arrays: pieces of a few MB, HDF5 and Blosc
    buffers. By default each thread of the SDK harness gets its own heap, and
    the trim after each task handed the memory back, so every byte a task
    touched was a new page fault (measured on the benchmark: 2.1 million faults
    and 8.7 s of system time; 0.71 million and 6.5 s with this, 1.5 s less wall
    time). One heap and no trimming; arrays over 32 MiB (a task's
    assembled buffer) still get their own mapping, returned when freed, which
    keeps the heap from fragmenting. For arcoforge's own worker processes only;
    returns False off glibc.
    """
    global _allocator_keeps_freed_memory
    libc = _glibc()
    if libc is None:
        return False
    tuned = all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, 2**31 - 1)))
    _allocator_keeps_freed_memory = tuned
    return tuned


def limit_coordinator_heaps(arenas: int = 2) -> bool:
    """Cap glibc's heaps in a process that only coordinates workers (Beam's local runner with worker processes).

    Each of the runner's threads (gRPC, one per parallel bundle) gets a heap of
    its own, and the stage data they pass (messages of up to 10 MB) leave each
    heap large after they are freed. Measured on 10,000 one-step inputs: the
    bake process grew by 106 MB with 2 heaps, 162 MB without.

    Blocks of :data:`COORDINATOR_MMAP_THRESHOLD` or more get a mapping of their
    own, returned when freed: glibc would otherwise raise that threshold to the
    largest block freed so far, and side inputs and stage outputs of several MB
    then fragment the heaps (at 100,000 inputs: +104 MB while planning, 91 MB of
    it free but kept). Returns False off glibc.
    """
    libc = _glibc()
    return libc is not None and all(libc.mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, arenas), (_M_MMAP_THRESHOLD, COORDINATOR_MMAP_THRESHOLD)))


# Blocks this large or larger get their own mapping in a coordinating process (see limit_coordinator_heaps).
COORDINATOR_MMAP_THRESHOLD = 256 * 2**10


# How often the coordinating process of a local bake hands freed heap memory back to the OS.
COORDINATOR_TRIM_SECONDS = 2.0
_trimmer: threading.Thread | None = None


def trim_freed_memory_every(seconds: float = COORDINATOR_TRIM_SECONDS) -> bool:
    """Hand the heap memory this process has freed back to the OS every ``seconds``, from a daemon thread.

    For the process that coordinates local workers: between stages it decodes
    and re-encodes what crosses them (the schema pools, the plan and its side
    inputs, each a few MB at 10^5 inputs), in message buffers glibc serves from
    its heaps and keeps once freed: measured on 20,000 one-step inputs, 17 MB
    of its 93 MB of heaps were free, a kilobyte per input. ``malloc_trim``
    returns free pages anywhere in a heap, not only at its top. Started once
    per process; returns False off glibc.
    """
    global _trimmer
    libc = _glibc()
    if libc is None:
        return False
    if _trimmer is None:
        def run() -> None:
            while True:
                time.sleep(seconds)
                libc.malloc_trim(0)

        _trimmer = threading.Thread(target=run, name="arcoforge-trim", daemon=True)
        _trimmer.start()
    return True


def release_freed_memory() -> None:
    """Hand memory freed by a finished task back to the OS (glibc keeps it otherwise).

    Reading a task's pieces allocates many arrays of a few MB that glibc serves
    from per-thread heaps and keeps after they are freed; without this a worker's
    RSS stays one task's worth above what it holds. Skipped where
    :func:`keep_freed_memory_for_reuse` made the process reuse that memory
    instead; no-op off glibc.
    """
    libc = _glibc()
    if libc is not None and not _allocator_keeps_freed_memory:
        libc.malloc_trim(0)


@contextlib.contextmanager
def one_off_allocations() -> Iterator[None]:
    """Run a step that runs once and frees many MB at once (planning a bake) without keeping its memory.

    A worker keeps freed memory for its next task (:func:`keep_freed_memory_for_reuse`)
    and serves arrays under 32 MiB from its heap: what planning freed (the schema
    pool opened whole, the plan's per-input arrays beside it) stayed in the heap
    through all the worker's write tasks. Within this, blocks of
    :data:`COORDINATOR_MMAP_THRESHOLD` or more get mappings of their own, returned
    when freed, and freed heap memory is handed back to the OS at the end.
    No-op off glibc.
    """
    libc = _glibc()
    if libc is not None and _allocator_keeps_freed_memory:
        libc.mallopt(_M_MMAP_THRESHOLD, COORDINATOR_MMAP_THRESHOLD)
    try:
        yield
    finally:
        if libc is not None:
            if _allocator_keeps_freed_memory:
                libc.mallopt(_M_MMAP_THRESHOLD, WORKER_MMAP_THRESHOLD)
            libc.malloc_trim(0)


_task_buffer = TaskBuffer()


def worker_task_buffer() -> TaskBuffer | None:
    """This process's :class:`~arcoforge.rechunk.TaskBuffer` if it is one of arcoforge's workers (see
    :func:`keep_freed_memory_for_reuse`); None in any other process, which then gets its memory back."""
    return _task_buffer if _allocator_keeps_freed_memory else None
