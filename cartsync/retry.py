"""The one place that decides what is retried, how, and for how long.

Bounded waits. Every request is abandoned when no byte arrives for `Timeouts.idle` (60 s): a
silent server, not a slow one (a moving upload is not cut). Tries of one call are spaced by
exponential backoff with jitter (tenacity). A target whose every request fails is given up on
`budget` (300 s) after the first failing request started: no try starts that could end past it,
and every later call to that target fails at once, so a run ends within the budget of a server
going silent however many files are left. A Retry-After longer than what is left of the budget
fails at once and says when to come back. Every wait is logged at -v: what, why, when next.

The defaults' arithmetic (asserted in tests/test_timeouts.py): a try starts only while
`budget - connect - idle` (230 s) is not yet past, and a silent try ends `idle` (60 s) after it
started, so a silent target is given up on within 290 s: 4 tries of 60 s plus backoff. Six quick
faults (a burst of 503s) still get their six tries.
"""
from __future__ import annotations

import datetime
import errno
import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from .errors import AuthError, CartsyncError, RemoteError, SourceChanged

log = logging.getLogger(__name__)
T = TypeVar("T")
_RETRY_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "Throttling",
                "ThrottlingException", "RequestTimeTooSkewed", "BadDigest", "IncompleteBody", "503", "500"}
_RETRY_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE, errno.ETIMEDOUT,
                 errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EREMOTEIO, errno.EBUSY}


_RETRY_EAI = {socket.EAI_AGAIN}

# Transport faults by type: the standard library's here; each backend adds its library's (`transient`) when it
# makes its client, so a library is named only where it is used. `_NOT_TRANSIENT` wins: a TLS failure (a wrong
# CA bundle, a proxy that intercepts) stays wrong however often it is tried.
_TRANSIENT: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError, http.client.IncompleteRead)
_NOT_TRANSIENT: tuple[type[BaseException], ...] = ()
_registry_lock = threading.Lock()


def transient(*types: type[BaseException], never: tuple[type[BaseException], ...] = ()) -> None:
    """Declare a library's exception classes transport faults (retried), and `never` as not (TLS failures)."""
    global _TRANSIENT, _NOT_TRANSIENT
    with _registry_lock:
        _TRANSIENT += tuple(t for t in types if t not in _TRANSIENT)
        _NOT_TRANSIENT += tuple(t for t in never if t not in _NOT_TRANSIENT)


def describe_error(exc: BaseException) -> str:
    """An exception as one line for a report or a log (a CartsyncError's own message)."""
    if isinstance(exc, CartsyncError):
        return exc.message
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


def dns_failure(exc: BaseException) -> socket.gaierror | None:
    """The name-resolution error behind `exc` (libraries wrap it two or three levels deep), if any."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None or isinstance(seen, socket.gaierror):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# Two layers use one policy (each built once, from the options): per request (Backend.retrying: each call
# to a store, e.g. one part) and per file (the executor: the whole upload, for what no single request
# retries, e.g. a verification mismatch). A fault the inner layer retried to its limit is marked TRIED_OUT
# and not retried again by the outer one: a part that keeps failing is tried `attempts` times, not squared.
TRIED_OUT = "cartsync_tried_out"


def _retry_here(exc: BaseException) -> bool:
    return is_retryable(exc) and not getattr(exc, TRIED_OUT, False)


def is_retryable(exc: BaseException) -> bool:
    """Transient faults (connection errors, timeouts, 5xx, 429/408, checksum mismatch) are retried."""
    if not isinstance(exc, Exception):       # Ctrl-C, SystemExit
        return False
    if isinstance(exc, (AuthError, SourceChanged)):
        return False
    if isinstance(exc, RemoteError):
        return exc.retryable
    if isinstance(exc, CartsyncError):
        return False
    gai = dns_failure(exc)
    if gai is not None:
        return gai.errno in _RETRY_EAI      # "try again" (EAI_AGAIN); a name that does not exist stays wrong
    if isinstance(exc, _TRANSIENT) and not isinstance(exc, _NOT_TRANSIENT):
        return True
    if not isinstance(getattr(exc, "response", None), dict) and isinstance(
            getattr(exc.__cause__, "response", None), dict):
        exc = exc.__cause__ or exc  # s3fs wraps botocore's ClientError in an OSError; judge the original
    response = getattr(exc, "response", None)
    if isinstance(response, dict):   # botocore ClientError
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        # 501 NotImplemented: the store lacks the call; it never clears (backends/s3/compat.py)
        return code in _RETRY_CODES or (status >= 500 and status != 501) or status in (408, 429)
    if isinstance(exc, OSError) and not isinstance(exc, (PermissionError, FileNotFoundError)):
        return exc.errno in _RETRY_ERRNOS or exc.errno == errno.EAGAIN
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_retryable(cause)


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


@dataclass(frozen=True)
class Timeouts:
    """How long one try may wait. Documented in the README; set by environment variables."""
    connect: float = 10.0     # to open a connection (TLS included)
    idle: float = 60.0        # with no byte received (or, while sending, none accepted for `connect`)
    answer: float = 120.0     # for a whole answer, from the last byte of the request: a server that drips
                              # a byte just inside `idle` is abandoned too (backends/sockets.py)

    @classmethod
    def from_env(cls) -> Timeouts:
        return cls(connect=_env("CARTSYNC_CONNECT_TIMEOUT", cls.connect), idle=_env("CARTSYNC_IDLE_TIMEOUT", cls.idle),
                   answer=_env("CARTSYNC_ANSWER_TIMEOUT", cls.answer))


class Streak:
    """Since when every request to one target has failed (None: the last one was answered).

    Shared by every call to a target (listing, lifecycle, each file's transfer), across threads.
    """

    def __init__(self) -> None:
        self._since: float | None = None
        self._lock = threading.Lock()
        self.given_up = False     # a call was refused a try for the budget: no first try starts either

    def answered(self) -> None:
        with self._lock:
            self._since = None
            self.given_up = False

    def failed(self, started: float) -> None:
        with self._lock:
            self._since = started if self._since is None else min(self._since, started)

    def age(self, now: float) -> float:
        with self._lock:
            return 0.0 if self._since is None else now - self._since


class GaveUp(RemoteError):
    """The target failed every request for the whole retry budget, or asked to wait past it."""


def _when(seconds: float) -> str:
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6
    max_wait: float = 30.0
    base: float = 0.5
    budget: float = 300.0
    timeouts: Timeouts = Timeouts()
    streak: Streak = field(default_factory=Streak, compare=False, repr=False)

    @classmethod
    def from_env(cls) -> RetryPolicy:
        # Tests and impatient users can shorten the waits; the rule of what is retried stays the same.
        return cls(attempts=int(_env("CARTSYNC_RETRY_ATTEMPTS", cls.attempts)),
                   max_wait=_env("CARTSYNC_RETRY_MAX_WAIT", cls.max_wait), base=_env("CARTSYNC_RETRY_BASE", cls.base),
                   budget=_env("CARTSYNC_RETRY_BUDGET", cls.budget), timeouts=Timeouts.from_env())

    def sharing(self, other: RetryPolicy) -> RetryPolicy:
        """This policy, counting failures in `other`'s streak (one target, one budget)."""
        return RetryPolicy(self.attempts, self.max_wait, self.base, self.budget, self.timeouts, other.streak)

    def _left(self) -> float:
        """Budget left for one more try, which may wait connect + idle before it fails."""
        return self.budget - self.streak.age(time.monotonic()) - self.timeouts.connect - self.timeouts.idle

    def call(self, fn: Callable[[], T], on_retry: Callable[[BaseException], None] | None = None,
             what: str = "request") -> T:
        """fn(), retried under this policy; `what` names it in the log (never holds a secret)."""
        jitter = tenacity.wait_random_exponential(multiplier=self.base, max=self.max_wait)
        tries = [0]     # tries made
        spent = [False]  # stopped because the target's budget is spent

        pauses: list[float] = []   # the pause stop() decided with, for wait() to take (one decision per retry)

        def attempt() -> T:
            # a first try now could end past the budget: the target is given up on. A retry was decided by
            # stop(), pause included: checking again here would refuse a try the log has just announced
            if tries[0] == 0 and (self._left() < 0 or self.streak.given_up):
                raise _StopRetrying()
            tries[0] += 1
            started = time.monotonic()
            try:
                result = fn()
            except Exception as exc:
                if is_retryable(exc):
                    self.streak.failed(started)
                else:
                    self.streak.answered()
                raise
            self.streak.answered()
            return result

        def wait(state: tenacity.RetryCallState) -> float:
            return pauses.pop() if pauses else 0.0

        def stop(state: tenacity.RetryCallState) -> bool:
            # tenacity asks stop() before wait(): the pause is drawn here, so that "is there budget for one
            # more try" counts the pause before it
            exc = state.outcome.exception() if state.outcome else None
            if state.attempt_number >= self.attempts:
                return True
            after = getattr(exc, "retry_after", None)
            if after is not None and float(after) > self._left():
                return True
            pause = float(after) if after is not None else jitter(state)
            if self._left() - pause < 0:
                spent[0] = True
                self.streak.given_up = True     # else another call's first try could start in the pause's margin
                return True
            pauses[:] = [pause]
            return False

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            if exc is None:
                return
            pause = state.next_action.sleep if state.next_action else 0.0
            log.info("%s: %s; try %d of %d in %.1f s", what, describe_error(exc), state.attempt_number + 1,
                     self.attempts, pause)
            if on_retry:
                on_retry(exc)

        retrying = tenacity.Retrying(stop=stop, wait=wait, retry=tenacity.retry_if_exception(_retry_here),
                                     before_sleep=before_sleep, reraise=True)
        last: list[BaseException] = []

        def remembered() -> T:
            try:
                return attempt()
            except _StopRetrying:
                raise
            except BaseException as exc:
                last[:] = [exc]
                raise

        try:
            try:
                return retrying(remembered)
            except Exception as exc:
                if not isinstance(exc, _StopRetrying) and is_retryable(exc):
                    setattr(exc, TRIED_OUT, True)   # tried here as often as this layer may: not again outside
                raise
        except _StopRetrying:
            raise self._gave_up(last[0] if last else None, what, tries) from None
        except Exception as exc:
            if spent[0]:
                raise self._gave_up(exc, what, tries) from None
            if not isinstance(exc, RemoteError):
                raise
            if exc.retry_after is not None and exc.retry_after > self._left():
                raise GaveUp(f"{exc.message}; the server asks to wait {_span(exc.retry_after)}, longer than cartsync "
                             "waits", f"re-run after {_when(exc.retry_after)}", status=exc.status) from None
            raise

    def _gave_up(self, last: BaseException | None, what: str, tries: list[int]) -> GaveUp:
        budget = f"no answer within the retry budget ({_span(self.budget)})"
        if tries[0] and last:
            text = f"{what}: {budget}; last: {describe_error(last)}"
        else:
            text = f"{what}: not tried: {budget}"
        return GaveUp(text, "check that the server is up and reachable; CARTSYNC_IDLE_TIMEOUT and "
                      "CARTSYNC_RETRY_BUDGET set how long cartsync waits (see the README)")


class _StopRetrying(Exception):
    """Raised instead of a try that could not end within the budget."""
