"""How an arcoforge process ends: flushed, and without the interpreter's teardown.

Its own module because both ends of a local bake use it, the ``arcoforge``
command (:mod:`arcoforge.cli`) and its worker processes
(:mod:`arcoforge.runtime.workers`), and neither of them should import the other,
nor the runner that starts the workers, to get it. Standard library only.
"""

from __future__ import annotations

import logging
import os
import sys


def exit_now(code: int) -> None:
    """End this process once its work is done and its output flushed, skipping interpreter teardown.

    Tearing down the thousands of modules a worker imported (and the collections
    that run on the way) took 0.5 s per process after the last task, while the
    bake waited; nothing is left to release that the OS does not reclaim.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
