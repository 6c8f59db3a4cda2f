"""The I/O layer: everything arcoforge needs to read inputs and write stores on local disks and object stores.

One module per concept, each usable without Beam:

- :mod:`~arcoforge.io.filesystems`: which fsspec filesystem and options a URL is read with (HTTP timeouts, netrc);
- :mod:`~arcoforge.io.redaction`: secrets by default, kept out of logs and of everything published;
- :mod:`~arcoforge.io.retries`: transient versus permanent failures, and retries with backoff (on tenacity);
- :mod:`~arcoforge.io.deadline`: the total deadline on one input read;
- :mod:`~arcoforge.io.signatures`: the one check that a body is data, not an error page;
- :mod:`~arcoforge.io.cache`: the verified input cache and the download that fills it;
- :mod:`~arcoforge.io.remote`: remote inputs and the picklable file object they are read through;
- :mod:`~arcoforge.io.atomic`: writing a file so readers see the old content or the new, never half;
- :mod:`~arcoforge.io.state`: what a bake records beside its store (plan, done tasks, held-back metadata);
- :mod:`~arcoforge.io.lease`: who is writing a store, a lease that expires when its bake dies.

The names below are what the other layers use; anything else is the modules' own business. State, lease
(and :mod:`~arcoforge.io.zarr_store`, which needs zarr) are imported by their module path.
"""

from __future__ import annotations

from .atomic import replacing, write_atomically, write_json_atomically
from .cache import CacheEntry, InputCache, default_cache_root, download
from .deadline import DEFAULT_DEADLINE, Deadline, DeadlineExceeded, call_within
from .filesystems import (filesystem, infer_compression, merge_options, netrc_credentials, options_for, protocol_of,
                          split_open_kwargs)
from .redaction import (REDACTED, environment_secrets, public_options, public_url, redact, register_secrets,
                        secret_values)
from .remote import InputFile, RemoteInput, concurrency_slots
from .retries import (RetryPolicy, TransientInputError, call_with_retries, describe_failure, is_transient,
                      with_deadline)
from .signatures import NotDataError, check_data_signature, check_file_signature

__all__ = [
    "DEFAULT_DEADLINE",
    "REDACTED",
    "CacheEntry",
    "Deadline",
    "DeadlineExceeded",
    "InputCache",
    "InputFile",
    "NotDataError",
    "RemoteInput",
    "RetryPolicy",
    "TransientInputError",
    "call_with_retries",
    "call_within",
    "check_data_signature",
    "check_file_signature",
    "concurrency_slots",
    "default_cache_root",
    "describe_failure",
    "download",
    "environment_secrets",
    "filesystem",
    "infer_compression",
    "is_transient",
    "merge_options",
    "netrc_credentials",
    "options_for",
    "protocol_of",
    "public_options",
    "public_url",
    "redact",
    "register_secrets",
    "replacing",
    "secret_values",
    "split_open_kwargs",
    "with_deadline",
    "write_atomically",
    "write_json_atomically",
]
