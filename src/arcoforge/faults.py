"""A test-only hook that kills the process at a named step of a bake or an append.

Every step after which a crash leaves the store in a distinct state calls
:func:`checkpoint` with its name (see docs/reliability.md for the list). With
``ARCOFORGE_FAULT_AT=<step>`` in the environment the process dies there at once,
without unwinding (``SIGKILL``, as the OOM killer or a preempted VM would);
``<step>#<n>`` dies at the n-th time the step is reached (write tasks are one
step reached many times). Unset, a checkpoint costs one dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal

logger = logging.getLogger(__name__)

FAULT_ENV = "ARCOFORGE_FAULT_AT"


def parse_fault(value: str) -> tuple[str, int]:
    """``"append.task#2"`` -> ``("append.task", 2)``; a step without ``#n`` dies the first time.

    >>> parse_fault("bake.commit")
    ('bake.commit', 1)
    """
    step, _, count = value.partition("#")
    return step.strip(), int(count) if count else 1


def checkpoint(step: str) -> None:
    """Die here, now, if the environment asks for a fault at ``step``."""
    armed = os.environ.get(FAULT_ENV)
    if not armed:
        return
    wanted, count = parse_fault(armed)
    if wanted != step:
        return
    if count > 1:  # counted down in this process's own environment (no module state)
        os.environ[FAULT_ENV] = f"{step}#{count - 1}"
        return
    logger.warning("fault injected at %s (%s=%s): killing process %d", step, FAULT_ENV, armed, os.getpid())
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(137)  # not reached where SIGKILL exists
