"""A request is timed from the last byte that left this machine, not the last byte handed to the kernel.

After an upload's body is written, the kernel may still hold most of it: its send buffer grows to megabytes,
and on a slow link (10 KB/s from a laptop, a congested login node) draining it takes longer than the idle
timeout. http.client, urllib3 and botocore then wait for the answer with the read timeout alone, and a
healthy upload times out, is retried, and times out again. `wait_sent` waits, before the answer is read,
for as long as the kernel's send queue keeps shrinking; it gives up only after `idle` seconds in which not
one byte left (the same rule as for answers: no progress for the idle timeout). An answer that comes early
(a server refusing the body) ends the wait at once.

The queue is read with SIOCOUTQ (Linux) or SO_NWRITE (macOS); elsewhere the wait is skipped, as before.
The mixin is installed on the connections of botocore's client (s3/client.py) and of the Zenodo session.

The other side of the same rule: a read timeout is per read, so a server that drips one byte just inside
the idle timeout would hold a request for ever. `WATCHDOG` bounds the whole answer (Timeouts.answer, 120 s
from the last byte of the request; the answers cartsync reads are small): past it, the connection is shut
down, the read fails, and the retry policy takes over, within its budget.
"""
from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import select
import socket
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..retry import Timeouts

log = logging.getLogger(__name__)

_SIOCOUTQ = 0x5411          # = TIOCOUTQ: bytes in the send queue not yet acknowledged (Linux)
_SO_NWRITE = 0x1024         # macOS: the same, as a socket option
_STEP = (0.05, 0.5)         # first and longest pause between looks at the queue


def unsent(sock: socket.socket) -> int | None:
    """Bytes written to `sock` that the peer has not acknowledged yet; None where the platform cannot say."""
    try:
        if sys.platform.startswith("linux"):
            buf = array.array("i", [0])
            fcntl.ioctl(sock.fileno(), _SIOCOUTQ, buf)
            return int(buf[0])
        if sys.platform == "darwin":
            return int(sock.getsockopt(socket.SOL_SOCKET, _SO_NWRITE))
    except (OSError, ValueError):
        return None
    return None


def wait_sent(sock: Any, idle: float | None) -> None:
    """Return once the kernel has sent what was written to `sock` or an answer is waiting; raise
    TimeoutError after `idle` seconds without one byte acknowledged. No bound (None): return at once."""
    if idle is None or sock is None:
        return
    queued = unsent(sock)
    if not queued:
        return
    last, since, pause = queued, time.monotonic(), _STEP[0]
    while queued:
        try:
            ready, _, _ = select.select([sock], [], [], pause)
        except (OSError, ValueError):
            return
        if ready:
            return                      # the answer (or a closed connection): reading it says which
        queued = unsent(sock)
        if queued is None:
            return
        t = time.monotonic()
        if queued < last:
            last, since = queued, t
        elif t - since >= idle:
            raise TimeoutError(f"no byte of the request was sent in {idle:g} s ({queued} bytes still queued)")
        pause = min(pause * 2, _STEP[1])


class Watchdog:
    """Shuts down the sockets whose answer is not in by its deadline (one daemon thread, started on first use)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[Any, float, float]] = {}      # id(sock) → (sock, deadline, limit)
        self._thread: threading.Thread | None = None

    def arm(self, sock: Any, seconds: float) -> None:
        if sock is None or seconds <= 0:
            return
        with self._cond:
            self._armed[id(sock)] = (sock, time.monotonic() + seconds, seconds)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="answer-watchdog", daemon=True)
                self._thread.start()
            self._cond.notify()

    def disarm(self, sock: Any) -> None:
        if sock is not None:
            with self._cond:
                self._armed.pop(id(sock), None)

    def _watch(self) -> None:
        while True:
            with self._cond:
                while not self._armed:
                    self._cond.wait()
                now = time.monotonic()
                late = [(k, v) for k, v in self._armed.items() if v[1] <= now]
                for k, _ in late:
                    del self._armed[k]
                if not late:
                    self._cond.wait(min(v[1] for v in self._armed.values()) - now)
                    continue
            for _, (sock, _, limit) in late:
                log.info("abandoned an answer still arriving %g s after the request (CARTSYNC_ANSWER_TIMEOUT)",
                         limit)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


WATCHDOG = Watchdog()


class DrainBeforeAnswer:
    """Mixed into an http.client / urllib3 connection class: `getresponse` first waits as `wait_sent` does,
    bounded by the connection's own (read) timeout, which urllib3 has set by then; then the whole answer is
    bounded by Timeouts.answer (WATCHDOG), until the connection's next request or its close."""

    timeout: Any
    sock: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer_timeout = Timeouts.from_env().answer     # read once per connection, not per request

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        idle = self.timeout if isinstance(self.timeout, (int, float)) else None
        wait_sent(self.sock, idle)
        WATCHDOG.arm(self.sock, self.answer_timeout)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]

    def putrequest(self, *args: Any, **kwargs: Any) -> Any:
        WATCHDOG.disarm(self.sock)             # the last answer on this connection was read
        return super().putrequest(*args, **kwargs)  # type: ignore[misc]

    def close(self) -> None:
        WATCHDOG.disarm(self.sock)
        super().close()  # type: ignore[misc]


def draining_pools(pools: Mapping[str, type]) -> dict[str, type]:
    """Subclasses of these urllib3 connection pools (by scheme) whose connections mix in DrainBeforeAnswer."""
    out: dict[str, type] = {}
    for scheme, pool in pools.items():
        base: type = getattr(pool, "ConnectionCls")  # noqa: B009 — any pool class: urllib3 declares it
        conn = type(f"Draining{base.__name__}", (DrainBeforeAnswer, base), {})
        out[scheme] = type(f"Draining{pool.__name__}", (pool,), {"ConnectionCls": conn})
    return out
