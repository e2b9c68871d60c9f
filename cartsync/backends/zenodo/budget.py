"""Zenodo's rate limit, honoured by every process on this machine that uses the same token.

Zenodo allows an authenticated token 100 requests a minute and 5,000 an hour (zenodo-api.md, "Rate
limits"). A collection publishes many depositions, often from several processes at once (a job array on
one node), so the budget is kept in a file in the cache folder, one per (server, token) — named by a
hash, never the token — holding the send times of the last hour. Before each request a process takes a
slot under an exclusive lock on that file, waiting (visibly at -v) until the oldest send in a full window
ages out. A 429 from other machines sharing the token is still possible and is retried as documented
(Retry-After). Limits: CARTSYNC_ZENODO_RATE, e.g. "100/60,5000/3600" (requests/seconds, comma-separated;
default 95/60,4900/3600).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path

from ...errors import CartsyncError

log = logging.getLogger(__name__)

# Zenodo's 100/min and 5,000/h, less a margin: a request is counted here when it leaves and by Zenodo when it
# arrives, and on a busy machine requests counted a second apart can arrive together (seen: 104 in a minute)
DEFAULT_LIMITS = ((95, 60.0), (4900, 3600.0))


def limits_from_env() -> tuple[tuple[int, float], ...]:
    text = os.environ.get("CARTSYNC_ZENODO_RATE", "").strip()
    if not text:
        return DEFAULT_LIMITS
    try:
        out = tuple((int(n), float(s)) for n, s in (part.split("/") for part in text.split(",")))
    except ValueError:
        raise CartsyncError(f"CARTSYNC_ZENODO_RATE {text!r}: not a rate limit",
                            "write requests/seconds pairs, e.g. 100/60,5000/3600") from None
    if any(n < 1 or s <= 0 for n, s in out):
        raise CartsyncError(f"CARTSYNC_ZENODO_RATE {text!r}: each limit needs at least 1 request and a window "
                            "longer than 0 s", "e.g. 100/60,5000/3600")
    return out


class RateBudget:
    """acquire() before every request; the budget is shared through `folder/zenodo-rate-<hash>.json`."""

    def __init__(self, folder: Path, server: str, token: str,
                 limits: tuple[tuple[int, float], ...] | None = None) -> None:
        digest = hashlib.sha256(f"{server}\0{token}".encode()).hexdigest()[:16]
        self.path = folder / f"zenodo-rate-{digest}.json"
        self.limits = limits or limits_from_env()
        self.horizon = max(s for _, s in self.limits)
        self._thread_lock = threading.Lock()
        self.waited = 0.0
        self.usable = True

    def acquire(self) -> None:
        """Block until one more request fits every window, then record it."""
        with self._thread_lock:
            while True:
                wait = self._try()
                if wait <= 0:
                    return
                log.info("Zenodo rate limit: waiting %.1f s before the next request (shared budget %s)", wait,
                         self.path.name)
                self.waited += wait
                time.sleep(wait)

    def _try(self) -> float:
        """Record a send and return 0, or return how long to wait."""
        if not self.usable:
            return 0.0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            # a cache folder we cannot write must not block a run: this process keeps its own count
            log.warning("the Zenodo rate budget cannot be shared (%s); counting in this process only", exc.strerror)
            self.usable = False
            return 0.0
        try:
            return self._record(fd)
        except OSError as exc:      # e.g. ENOSPC on a full disk: the same as a folder we cannot write
            log.warning("the Zenodo rate budget cannot be shared (%s); counting in this process only", exc.strerror)
            self.usable = False
            return 0.0

    def _record(self, fd: int) -> float:
        with os.fdopen(fd, "r+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                sends = [float(t) for t in json.loads(fh.read() or "[]")]
            except (ValueError, TypeError):
                sends = []
            now = time.time()
            sends = [t for t in sends if now - t < self.horizon]
            wait = 0.0
            for n, seconds in self.limits:
                recent = sorted(t for t in sends if now - t < seconds)
                if len(recent) >= n:
                    wait = max(wait, recent[len(recent) - n] + seconds - now)
            if wait <= 0:
                sends.append(now)
                fh.seek(0)
                fh.truncate()
                fh.write(json.dumps(sends))
            return wait
