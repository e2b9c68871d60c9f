"""One apply at a time per target, across machines: a lock held by the target itself where the store allows it.

Two layers, taken in this order by `engine.opened`:

1. `machine_lock`: an flock in the local cache folder per (manifest, target). Cheap; refuses a second run on
   this machine at once, before any request.
2. `target_lock`: a lock object beside the data, so two machines (two CI runners, two login nodes) that
   share nothing but the target refuse each other.
   - S3: `<prefix>/.cartsync.lock`, created with a conditional write (`PutObject` with `If-None-Match: *`);
     refreshed (`If-Match: <its ETag>`) every third of its lifetime while the apply runs; an expired lock is
     taken over with `If-Match` on the stale one's ETag, so two takers cannot both win; removed at the end.
   - A local folder or `file://` target: `<folder>/.cartsync.lock`, created exclusively (`O_CREAT|O_EXCL`).
   - Any other store (Zenodo, memory://, gs://…) has no conditional write that cartsync uses: that is said
     once per cache folder, and the machine lock is all there is.

The lock holds JSON: who (user@host), pid, the manifest's path, the target, since and until (UTC, ISO 8601).
It never holds a secret. `LOCK_NAME` is taken out of every listing (`without_lock`), so the lock is never
planned, deleted as stale or counted as data. An expired lock (a crashed runner) is taken over; `cartsync
unlock` removes one deliberately. Expiry compares the lock's `until` with this machine's clock: keep clocks
in sync (NTP), or raise CARTSYNC_LOCK_TTL (seconds, default 600).
"""
from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, TypeVar

from . import identity
from . import inventory as inv
from .backends import Backend
from .config import Manifest, TargetConfig
from .errors import CartsyncError, LockedError, NoConditionalWrite

log = logging.getLogger(__name__)
LOCK_NAME = ".cartsync.lock"
DEFAULT_TTL = 600.0
V = TypeVar("V")


def without_lock(listing: Mapping[str, V]) -> dict[str, V]:
    """A target listing without the lock object: it is never planned, deleted or counted."""
    return {k: v for k, v in listing.items() if k != LOCK_NAME}


def ttl() -> float:
    try:
        return max(1.0, float(os.environ.get("CARTSYNC_LOCK_TTL", DEFAULT_TTL)))
    except ValueError:
        return DEFAULT_TTL


# ---- the machine lock ------------------------------------------------------------------------------------


def _locks_folder() -> Path:
    folder = inv.cache_dir() / "locks"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise inv.CacheError(inv.cache_dir(), exc) from None
    return folder


@contextmanager
def machine_lock(manifest: Manifest, target: TargetConfig, dataset: str = "") -> Iterator[None]:
    """One apply at a time per (manifest, target[, dataset]) on this machine: a second one exits with a clear
    message. A run over a whole collection locks the target and every dataset; a shard locks only its
    datasets, so shards run side by side but never beside a whole run."""
    with inv.lock_file(identity.run_key(manifest.path, target.name, dataset)) as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().decode(errors="replace").strip() or "another process"
            what = f"dataset {dataset} of target {target.name}" if dataset else f"target {target.name}"
            raise LockedError(f"{what} of {manifest.path} is being applied by {holder}",
                              "wait for that run to finish, then re-run") from None
        try:        # who holds it, for the message above; on a full disk the lock holds without it
            fh.seek(0)
            fh.truncate()
            fh.write(f"pid {os.getpid()}".encode())
        except OSError:
            pass
        try:
            yield
        finally:
            try:
                fh.seek(0)
                fh.truncate()
            except OSError:
                pass
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# ---- lock stores -----------------------------------------------------------------------------------------


class LockStore(Protocol):
    """Where a target keeps its lock object. A token names one version of it (an ETag, a content hash)."""

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

    @staticmethod
    def _token(body: bytes) -> str:
        return hashlib.sha256(body).hexdigest()

    def create(self, body: bytes) -> str | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
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


def store_for(backend: Backend) -> LockStore | None:
    """The backend's lock store, or None where the store has no conditional write cartsync can use."""
    from .backends.s3 import S3Backend
    if isinstance(backend, S3Backend):
        return backend.lock_store(LOCK_NAME)
    # imported only now: it imports fsspec (~0.2 CPU-s), which an S3 no-op otherwise never needs
    from .backends.fsspec import FsspecBackend
    if isinstance(backend, FsspecBackend) and backend.local:
        return FileLockStore(Path(backend.root))
    return None


# ---- the target lock -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """What a lock says about the run holding it."""

    who: str
    pid: int
    manifest: str
    target: str
    since: str
    until: str

    @classmethod
    def parse(cls, body: bytes) -> Holder | None:
        try:
            d = json.loads(body)
            return cls(str(d["who"]), int(d["pid"]), str(d["manifest"]), str(d["target"]), str(d["since"]),
                       str(d["until"]))
        except (ValueError, KeyError, TypeError):
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


def _body(manifest: Manifest, target: TargetConfig, since: float, lifetime: float) -> bytes:
    return json.dumps({"who": _who(), "pid": os.getpid(),
                       "manifest": str(manifest.path.resolve()), "target": target.name,
                       "since": _stamp(since), "until": _stamp(time.time() + lifetime)}, indent=1).encode()


def _say_once(manifest: Manifest, target: TargetConfig, why: str) -> None:
    marker = _locks_folder() / f"{identity.run_key(manifest.path, target.name)}.no-target-lock"
    if marker.exists():
        return
    log.warning("target %s: %s; it is locked on this machine only (in %s)", target.name, why, inv.cache_dir())
    marker.touch()


def _acquire(store: LockStore, manifest: Manifest, target: TargetConfig, since: float, lifetime: float) -> str:
    body = _body(manifest, target, since, lifetime)
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
            raise LockedError(f"target {target.name} is locked by {holder.describe()} ({store.where})",
                              f"wait for that run to finish; if it crashed, the lock expires at {holder.until}, or "
                              f"remove it with: cartsync unlock {manifest.path} --target {target.name}")
        token = store.replace(body, current[1])
        if token is not None:
            log.warning("target %s: took over an expired lock (%s)", target.name,
                        holder.describe() if holder else "unreadable")
            return token
    raise LockedError(f"target {target.name}: the lock at {store.where} keeps changing",
                      "another run is starting at the same time; re-run in a minute")


@contextmanager
def target_lock(manifest: Manifest, backend: Backend) -> Iterator[None]:
    """Hold the target's own lock (see the module docstring) while the block runs; refresh it; remove it."""
    target = backend.target
    store = store_for(backend)
    if store is None:
        if not backend.url.startswith("memory://") and target.zenodo is None:   # see README "Locks"
            _say_once(manifest, target, "this store has no conditional write")
        yield
        return
    lifetime, since = ttl(), time.time()
    try:
        token = backend.retrying(lambda: _acquire(store, manifest, target, since, lifetime))
    except NoConditionalWrite as exc:
        _say_once(manifest, target, f"the store refused a conditional write ({exc})")
        yield
        return
    except LockedError:
        raise
    except Exception as exc:  # noqa: BLE001 — the listing that follows reports an unreachable/denied store
        # by name; a store that lists but cannot hold the lock is locked on this machine only
        log.info("target %s: could not create the lock at %s (%s); locked on this machine only",
                 target.name, store.where, exc)
        yield
        return
    held = {"token": token}
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(lifetime / 3):
            try:
                new = store.replace(_body(manifest, target, since, lifetime), held["token"])
            except Exception as exc:  # noqa: BLE001 — a failed refresh is retried at the next tick
                log.warning("target %s: could not refresh the lock at %s: %s", target.name, store.where, exc)
                continue
            if new is None:
                log.warning("target %s: the lock at %s was removed or taken over while this run held it",
                            target.name, store.where)
                return
            held["token"] = new

    thread = threading.Thread(target=refresh, name="lock-refresh", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        try:
            try:        # once outside the run's retry budget: a run that gave up on the target still tidies
                store.remove(held["token"])
            except Exception:  # noqa: BLE001 — then under the retry policy, as every call
                backend.retrying(lambda: store.remove(held["token"]))
        except Exception as exc:  # noqa: BLE001 — the data is done; an unremoved lock only expires
            log.warning("target %s: could not remove the lock at %s (%s); it expires by itself",
                        target.name, store.where, exc)


def unlock(manifest: Manifest, backend: Backend) -> str:
    """Remove the target's lock, whoever holds it; what was removed, for the user."""
    target = backend.target
    store = store_for(backend)
    if store is None:
        raise CartsyncError(f"target {target.name}: this store holds no lock object (only the machine lock in "
                            f"{inv.cache_dir()}, which ends with its process)", "nothing to unlock")
    current = backend.retrying(store.read)
    if current is None:
        return f"target {target.name}: not locked ({store.where} does not exist)."
    holder = Holder.parse(current[0])
    backend.retrying(lambda: store.remove(current[1]))
    return (f"target {target.name}: removed the lock held by "
            f"{holder.describe() if holder else 'an unreadable lock'} ({store.where}).")
