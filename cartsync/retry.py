"""The one place that decides what is retried, and how."""
from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from typing import Callable, TypeVar

import tenacity

from .errors import AuthError, CartsyncError, RemoteError, SourceChanged

T = TypeVar("T")
_RETRY_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
                "ThrottlingException", "RequestTimeTooSkewed", "BadDigest", "IncompleteBody", "503", "500"}
_RETRY_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
                 errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EREMOTEIO, errno.EBUSY}


def is_retryable(exc: BaseException) -> bool:
    """Transient faults (connection errors, timeouts, 5xx, 429/408, checksum mismatch) are retried."""
    if isinstance(exc, (AuthError, SourceChanged)):
        return False
    if isinstance(exc, RemoteError):
        return exc.retryable
    if isinstance(exc, CartsyncError):
        return False
    if isinstance(exc, (TimeoutError, socket.timeout, ConnectionError)):
        return True
    name = type(exc).__name__
    if name in {"ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "ChunkedEncodingError",
                "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
                "ResponseStreamingError", "IncompleteReadError", "ServerDisconnectedError",
                "ClientPayloadError", "ClientOSError", "ServerTimeoutError", "ClientConnectorError",
                "ProtocolError", "IncompleteRead", "RemoteDisconnected"}:
        return True
    if not isinstance(getattr(exc, "response", None), dict) and isinstance(
            getattr(exc.__cause__, "response", None), dict):
        exc = exc.__cause__  # s3fs wraps botocore's ClientError in an OSError; judge the original
    response = getattr(exc, "response", None)
    if isinstance(response, dict):   # botocore ClientError
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        return code in _RETRY_CODES or status >= 500 or status in (408, 429)
    if isinstance(exc, OSError) and not isinstance(exc, (PermissionError, FileNotFoundError)):
        return exc.errno in _RETRY_ERRNOS or exc.errno == errno.EAGAIN
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_retryable(cause)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    max_wait: float = 30.0
    base: float = 0.5

    @classmethod
    def from_env(cls) -> "RetryPolicy":
        # Tests and impatient users can shorten the backoff; the rule of what is retried stays the same.
        return cls(attempts=int(os.environ.get("CARTSYNC_RETRY_ATTEMPTS", 6)),
                   max_wait=float(os.environ.get("CARTSYNC_RETRY_MAX_WAIT", 30)),
                   base=float(os.environ.get("CARTSYNC_RETRY_BASE", 0.5)))

    def call(self, fn: Callable[[], T], on_retry: Callable[[BaseException], None] | None = None) -> T:
        jitter = tenacity.wait_random_exponential(multiplier=self.base, max=self.max_wait)

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            after = getattr(exc, "retry_after", None)
            if after is not None:
                return min(float(after), max(self.max_wait, 1.0) * 4)
            return jitter(state)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            if on_retry and state.outcome is not None and state.outcome.exception() is not None:
                on_retry(state.outcome.exception())

        retrying = tenacity.Retrying(stop=tenacity.stop_after_attempt(self.attempts), wait=wait,
                                     retry=tenacity.retry_if_exception(is_retryable),
                                     before_sleep=before_sleep, reraise=True)
        return retrying(fn)
