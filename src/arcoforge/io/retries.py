"""Retries: which failures are worth another try, and how patiently they are retried.

A bake reads thousands of inputs from servers that fail now and then. A
transient failure (HTTP 5xx and 429, S3 ``SlowDown``, timeouts, connection
resets, a body cut short or failing its checksum) is retried with exponential
backoff and full jitter; a permanent one (404, 403, a body that is not data,
and anything not known to be transient, so a bug is never retried for hours)
fails at once. All tries of one read share a total deadline
(:mod:`arcoforge.io.deadline`). The retry loop itself is tenacity's; the rules
(:func:`is_transient`, :class:`RetryPolicy`) and the wording of failures
(:func:`describe_failure`) are ours.
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from ..errors import InputError, RecipeError
from .deadline import DEFAULT_DEADLINE, Deadline, DeadlineExceeded, call_within
from .redaction import redact
from .signatures import NotDataError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# HTTP statuses worth another try: request timeout, too early, too many requests, server errors.
TRANSIENT_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
TRANSIENT_S3_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestLimitExceeded", "TooManyRequestsException", "ProvisionedThroughputExceededException",
    "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable", "InternalServerError",
    "500", "502", "503", "504",
})
_TRANSIENT_ERRNO = frozenset({errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT,
                              errno.EPIPE, errno.EBUSY, errno.EAGAIN, errno.EHOSTUNREACH, errno.ENETUNREACH,
                              getattr(errno, "EREMOTEIO", errno.EIO)})


class TransientInputError(InputError):
    """A download that came out wrong in a way another try may fix (truncated, checksum mismatch)."""



def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def http_status(error: BaseException) -> int | None:
    """The HTTP status behind an error, if there is one (aiohttp, botocore, s3fs)."""
    for current in _chain(error):
        status = getattr(current, "status", None)
        if isinstance(status, int):
            return status
        response = getattr(current, "response", None)
        if isinstance(response, Mapping):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
    return None


def _s3_code(error: BaseException) -> str | None:
    for current in _chain(error):
        response = getattr(current, "response", None)
        if isinstance(response, Mapping) and isinstance(response.get("Error"), Mapping):
            return str(response["Error"].get("Code"))
    return None


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` may go away if the same request is made again.

    Transient: HTTP 408/425/429/5xx, S3 ``SlowDown``/throttling/``InternalError``,
    timeouts, connections reset or refused, bodies cut short. Permanent:
    missing (404) or forbidden (403) inputs, bodies that are not data, and
    anything not known to be transient, so a bug is never retried for hours.
    The status or cause behind a wrapper counts: fsspec reports an HTTP 503
    while sizing a file as ``FileNotFoundError``.
    """
    status = http_status(error)
    if status is not None:
        return status in TRANSIENT_HTTP_STATUS
    code = _s3_code(error)
    if code is not None:
        return code in TRANSIENT_S3_CODES
    for current in _chain(error):
        if isinstance(current, TransientInputError):
            return True
        if isinstance(current, (NotDataError, RecipeError)):
            return False
        if _transient_kind(current):
            return True
    return False


_TRANSIENT_NAMES = frozenset({
    # aiohttp
    "ClientPayloadError", "ServerDisconnectedError", "ClientConnectionError", "ClientOSError",
    "ServerTimeoutError", "ClientConnectorError", "ConnectionTimeoutError", "SocketTimeoutError",
    "ClientConnectionResetError",
    # botocore
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ResponseStreamingError", "IncompleteReadError",
    # fsspec, http.client
    "FSTimeoutError", "IncompleteRead", "RemoteDisconnected",
})


def _transient_kind(error: BaseException) -> bool:
    import asyncio

    if isinstance(error, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    if type(error).__name__ in _TRANSIENT_NAMES:
        return True
    return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNO


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how patiently, a transient failure is retried.

    ``attempts`` counts the first try (1 means no retry). The wait before try
    ``n + 1`` is drawn uniformly from ``[0, min(max_delay, base_delay * 2**(n - 1))]``
    ("full jitter"), so many workers hitting one server spread out. ``deadline``
    bounds all tries of one read together, in seconds (``None``: no bound; see
    :mod:`arcoforge.io.deadline`).
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    deadline: float | None = DEFAULT_DEADLINE

    def __post_init__(self) -> None:
        if int(self.attempts) < 1:
            raise RecipeError(f"retries: attempts must be at least 1, got {self.attempts!r}")

    @classmethod
    def of(cls, value: "int | RetryPolicy | Mapping[str, Any] | None") -> "RetryPolicy":
        """A policy from an attempt count, a mapping of fields, a policy, or ``None`` (the default)."""
        if isinstance(value, RetryPolicy):
            return value
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            return cls(**value)
        return cls(attempts=int(value))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return (rng or random).uniform(0.0, ceiling)


def with_deadline(policy: RetryPolicy, seconds: float | None) -> RetryPolicy:
    """``policy`` with its deadline set to ``seconds`` (``arcoforge bake --input-deadline``), if given."""
    import dataclasses

    return policy if seconds is None else dataclasses.replace(policy, deadline=float(seconds))


def call_with_retries(function: Callable[[], T], policy: RetryPolicy, what: str) -> T:
    """Call ``function``, retrying transient failures as ``policy`` says; ``what`` names it in logs.

    All tries together end by ``policy.deadline``: a try still running then is
    abandoned, and no try starts (nor wait lasts) past it. The last failure is
    re-raised with ``attempts`` (how many tries were made) set on it.
    """
    deadline = Deadline(policy.deadline)
    tries = 0

    def one_try() -> T:
        nonlocal tries
        tries += 1
        return call_within(function, deadline, what)

    def give_up(state: tenacity.RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome is not None else None
        out_of_time = isinstance(error, DeadlineExceeded) or deadline.remaining() <= 0
        return state.attempt_number >= policy.attempts or out_of_time

    def wait(state: tenacity.RetryCallState) -> float:
        return min(policy.delay(state.attempt_number), max(0.0, deadline.remaining()))

    def log_retry(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.info("%s failed (%s), try %d of %d; again in %.2f s", redact(what),
                    describe_failure(error) if error is not None else "?", state.attempt_number, policy.attempts,
                    state.next_action.sleep if state.next_action is not None else 0.0)

    retrying = tenacity.Retrying(stop=give_up, wait=wait, retry=tenacity.retry_if_exception(is_transient),
                                 before_sleep=log_retry, reraise=True)
    try:
        return retrying(one_try)
    except Exception as error:
        try:
            error.attempts = tries  # type: ignore[attr-defined]
        except AttributeError:
            pass
        raise


def describe_failure(error: BaseException) -> str:
    """A short, secret-free description of why a read failed (no URL: callers name the input)."""
    for current in _chain(error):
        if isinstance(current, (TransientInputError, NotDataError)):
            return redact(str(current))
    status = http_status(error)
    code = _s3_code(error)
    if status in (401, 403) or (status is None and isinstance(error, PermissionError)):
        return f"access denied ({f'HTTP {status}' if status else code or 'permission denied'})"
    if status == 404 or code in ("NoSuchKey", "NoSuchBucket") or (
        status is None and code is None and isinstance(error, FileNotFoundError) and not is_transient(error)
    ):
        return f"not found ({f'HTTP {status}' if status else code or 'no such file'})"
    if status is not None:
        reason = next((getattr(c, "message", "") for c in _chain(error) if getattr(c, "status", None) == status), "")
        text = f"HTTP {status}" + (f" {reason}" if reason and str(reason) != str(status) else "")
        return redact(text + (f" ({code})" if code and code != str(status) else ""))
    if code is not None:
        return f"S3 error {code}"
    # A wrapper without a message of its own (fsspec's FileNotFoundError(url)) says less than its cause.
    current = next((c for c in _chain(error) if _transient_kind(c)), error)
    text = str(current).strip()
    return redact(f"{type(current).__name__}: {text}" if text else type(current).__name__)
