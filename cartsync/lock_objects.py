"""Lock objects beside the data (locks.py says which ones a run takes): written only where none lives,
refreshed while held, removed at the end.

A lock object holds JSON: who (user@host), pid, the manifest's path, the target, the dataset (a shard's
per-dataset lock only), since and until (UTC, ISO 8601). It never holds a secret. A token names one
version of a lock (an ETag, a content hash), so that a refresh or a removal touches only the lock this run
wrote. An expired lock (a crashed runner) is taken over with a conditional replace of the stale version, so
two takers cannot both win. Expiry compares `until` with this machine's clock: keep clocks in sync (NTP), or
raise CARTSYNC_LOCK_TTL (seconds, default 600).
"""
from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, TypeVar

from .errors import LockedError

log = logging.getLogger(__name__)
LOCK_NAME = ".cartsync.lock"
DEFAULT_TTL = 600.0
PARALLEL = 8            # lock objects written or removed at once (a shard holds one per dataset)
T = TypeVar("T")
R = TypeVar("R")


def ttl() -> float:
    try:
        return max(1.0, float(os.environ.get("CARTSYNC_LOCK_TTL", DEFAULT_TTL)))
    except ValueError:
        return DEFAULT_TTL


class LockStore(Protocol):
    """Where one lock object lives."""

    where: str

    def create(self, body: bytes) -> str | None:
        """Write the lock only if none exists; its token, or None when one is there."""

    def read(self) -> tuple[bytes, str] | None:
        """The lock's body and token, or None."""

    def replace(self, body: bytes, token: str) -> str | None:
        """Overwrite the lock only if it is still `token`; the new token, or None when it is not."""

    def remove(self, token: str | None) -> None:
        """Delete the lock (only if it is still `token`, unless None)."""


class FileLockStore:
    """`<folder>/.cartsync.lock` on a local (or file://) target, created exclusively."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_NAME
        self.where = str(self.path)
        self._made: list[Path] = []       # folders create() made (a shard's dataset folder): removed if left empty

    @staticmethod
    def _token(body: bytes) -> str:
        return hashlib.sha256(body).hexdigest()

    def create(self, body: bytes) -> str | None:
        missing = [p for p in (self.path.parent, *self.path.parent.parents) if not p.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._made = missing
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        return self._token(body)

    def read(self) -> tuple[bytes, str] | None:
        try:
            body = self.path.read_bytes()
        except FileNotFoundError:
            return None
        return body, self._token(body)

    def replace(self, body: bytes, token: str) -> str | None:
        current = self.read()
        if current is None or current[1] != token:
            return None
        # a unique name, renamed over the lock: a reader sees the old or the new body, never a mix
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(body)
        os.replace(tmp, self.path)
        return self._token(body)

    def remove(self, token: str | None) -> None:
        current = self.read()
        if current is not None and (token is None or current[1] == token):
            self.path.unlink(missing_ok=True)
        for folder in self._made:         # innermost first; one that now holds data stays
            try:
                folder.rmdir()
            except OSError:
                break
        self._made = []


@dataclass(frozen=True)
class Holder:
    """What a lock says about the run holding it."""

    who: str
    pid: int
    manifest: str
    target: str
    since: str
    until: str
    dataset: str = ""

    @classmethod
    def parse(cls, body: bytes) -> Holder | None:
        try:
            d = json.loads(body)
            return cls(str(d["who"]), int(d["pid"]), str(d["manifest"]), str(d["target"]), str(d["since"]),
                       str(d["until"]), str(d.get("dataset", "")))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @property
    def expired(self) -> bool:
        """Past its `until`, or held by a process of this machine that no longer exists (a killed run)."""
        if self.who == _who() and self.pid != os.getpid() and not _alive(self.pid):
            return True
        try:
            return datetime.fromisoformat(self.until) <= datetime.now(timezone.utc)
        except ValueError:
            return True

    def describe(self) -> str:
        return f"{self.who} (pid {self.pid}, {self.manifest}) since {self.since}, until {self.until}"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Claim:
    """One lock object this run wants: where, what it is called in messages, what it says."""

    store: LockStore
    what: str                   # "target web", "dataset sample-001 of target web"
    manifest: str               # the manifest's resolved path
    target: str
    dataset: str = ""

    def body(self, since: float, lifetime: float) -> bytes:
        d: dict[str, object] = {"who": _who(), "pid": os.getpid(), "manifest": self.manifest, "target": self.target}
        if self.dataset:
            d["dataset"] = self.dataset
        d.update(since=_stamp(since), until=_stamp(time.time() + lifetime))
        return json.dumps(d, indent=1).encode()


def acquire(claim: Claim, since: float, lifetime: float, unlock_hint: str) -> str:
    """Write `claim`'s lock, or take over an expired one; its token. LockedError while another run holds it."""
    store = claim.store
    body = claim.body(since, lifetime)
    for _ in range(3):             # the lock may vanish or be taken over between our calls: look again
        token = store.create(body)
        if token is not None:
            return token
        current = store.read()
        if current is None:
            continue
        if current[0] == body:
            return current[1]      # ours: a create whose answer was lost, retried
        holder = Holder.parse(current[0])
        if holder is not None and not holder.expired:
            raise LockedError(f"{claim.what} is locked by {holder.describe()} ({store.where})",
                              f"wait for that run to finish; if it crashed, the lock expires at {holder.until}, "
                              f"or remove it with: {unlock_hint}")
        token = store.replace(body, current[1])
        if token is not None:
            log.warning("%s: took over an expired lock (%s)", claim.what,
                        holder.describe() if holder else "unreadable")
            return token
    raise LockedError(f"{claim.what}: the lock at {store.where} keeps changing",
                      "another run is starting at the same time; re-run in a minute")


def each(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """`fn` over the items, up to PARALLEL at once (one lock is one request; a shard may hold hundreds);
    the first error is raised once every call has ended."""
    if len(items) <= 1:
        return [fn(c) for c in items]
    with ThreadPoolExecutor(max_workers=min(PARALLEL, len(items)), thread_name_prefix="lock") as pool:
        pending = [pool.submit(fn, c) for c in items]
        errors = [e for p in pending if (e := p.exception()) is not None]
        if errors:      # a refusal says more than a failed request beside it
            raise next((e for e in errors if isinstance(e, LockedError)), errors[0])
        return [p.result() for p in pending]


class Held:
    """Lock objects this run holds: refreshed every third of their lifetime in one thread (once `start`ed),
    removed by `release` (each only if it is still the version this run wrote)."""

    def __init__(self, tokens: dict[Claim, str], since: float, lifetime: float) -> None:
        self.tokens = tokens
        self._since, self._lifetime = since, lifetime
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)

    def start(self) -> Held:
        self._thread.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(self._lifetime / 3):
            for claim, token in list(self.tokens.items()):
                try:
                    new = claim.store.replace(claim.body(self._since, self._lifetime), token)
                except Exception as exc:  # noqa: BLE001 — a failed refresh is retried at the next tick
                    log.warning("%s: could not refresh the lock at %s: %s", claim.what, claim.store.where, exc)
                    continue
                if new is None:
                    log.warning("%s: the lock at %s was removed or taken over while this run held it",
                                claim.what, claim.store.where)
                    del self.tokens[claim]
                else:
                    self.tokens[claim] = new

    def release(self, retrying: Callable[[Callable[[], None]], None]) -> None:
        """Stop refreshing and remove every lock; a lock that cannot be removed only expires (a warning)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

        def remove(claim: Claim) -> None:
            token = self.tokens[claim]
            try:
                try:    # once outside the run's retry budget: a run that gave up on the target still tidies
                    claim.store.remove(token)
                except Exception:  # noqa: BLE001 — then under the retry policy, as every call
                    retrying(lambda: claim.store.remove(token))
            except Exception as exc:  # noqa: BLE001 — the data is done; an unremoved lock only expires
                log.warning("%s: could not remove the lock at %s (%s); it expires by itself", claim.what,
                            claim.store.where, exc)
        each(remove, list(self.tokens))
