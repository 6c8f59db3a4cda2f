"""Entry point of local worker processes: Beam's SDK harness, minus its start-up chatter.

Beam's own worker logs every gRPC step at INFO on stderr and repeats each
failure with a full traceback; the parent process reports failures itself. Set
``ARCOFORGE_WORKER_DEBUG=1`` to see everything.
"""

import logging
import os
import sys

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


def main() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s (worker %(process)d): %(message)s"))
    if not os.environ.get("ARCOFORGE_WORKER_DEBUG"):
        handler.setLevel(logging.WARNING)
        handler.addFilter(_QuietFilter())
        sys.stderr = _StderrWithoutTracebacks(sys.stderr)
    # Importing the package imported Beam, whose import-time warning gave the root logger a
    # default stderr handler at INFO; ours replaces it.
    logging.getLogger().handlers[:] = [handler]
    from apache_beam.runners.worker import sdk_worker_main

    from .rechunk import keep_freed_memory_for_reuse, limit_netcdf_chunk_cache
    from .runners import exit_now

    keep_freed_memory_for_reuse()  # before the harness starts its threads
    limit_netcdf_chunk_cache()  # before the first input is opened in this worker
    sdk_worker_main.main(sys.argv)
    exit_now(0)


if __name__ == "__main__":
    main()
