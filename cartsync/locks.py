"""One apply at a time per target, across machines: a lock held by the target itself where the store allows it.

Two layers, taken in this order by `engine.opened`:

1. `machine_lock`: an flock in the local cache folder per (manifest, target[, dataset]). Cheap; refuses a
   second run on this machine at once, before any request.
2. Lock objects beside the data (lock_objects.py), so two machines (two CI runners, two login nodes, two
   tasks of a SLURM array) that share nothing but the target refuse each other:
   - S3: created with a conditional write (`PutObject` with `If-None-Match: *`), refreshed and removed with
     `If-Match: <its ETag>`. A local folder or `file://` target: a file created exclusively (`O_CREAT|O_EXCL`).
     Any other store (Zenodo, memory://, gs://…) has no conditional write that cartsync uses: that is said
     once per cache folder, and the machine lock is all there is.
   - A run over the whole target holds `<prefix>/.cartsync.lock` (`target_lock`); a shard of a collection
     holds `<prefix>/<dataset>/.cartsync.lock` for each of its datasets (`dataset_locks`), so shards run side
     by side. The two kinds exclude each other in the order "write yours, then look for the other": the whole
     run looks at its listing (taken after its lock) for live dataset locks (`refuse_live_shards`), a shard
     reads the target lock after writing its own. On a store that reads its own writes (S3 since 2020, a
     disk), one of two runs starting together always sees the other; both may refuse, neither can miss.

The lock objects are taken out of every listing (`without_lock`), so they are never planned, deleted as
stale or counted as data. `cartsync unlock` removes them deliberately.
"""
from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from . import identity
from . import inventory as inv
from .backends import Backend
from .config import Manifest, TargetConfig
from .errors import CartsyncError, LockedError, NoConditionalWrite
from .lock_objects import LOCK_NAME, Claim, FileLockStore, Held, Holder, LockStore, acquire, each, ttl

log = logging.getLogger(__name__)
V = TypeVar("V")
__all__ = ["LOCK_NAME", "dataset_locks", "is_lock_key", "machine_lock", "refuse_live_shards", "store_for",
           "target_lock", "unlock", "without_lock"]


def is_lock_key(key: str) -> bool:
    """The target's lock object, or a dataset's (`<dataset>/.cartsync.lock`, one level down)."""
    return key == LOCK_NAME or (key.endswith("/" + LOCK_NAME) and key.count("/") == 1)


def dataset_lock_ids(listing: Iterable[str]) -> list[str]:
    """The datasets whose lock object (`<dataset>/.cartsync.lock`) a listing shows, sorted."""
    return sorted(k.partition("/")[0] for k in listing if is_lock_key(k) and k != LOCK_NAME)


def without_lock(listing: Mapping[str, V]) -> dict[str, V]:
    """A target listing without lock objects: they are never planned, deleted or counted."""
    return {k: v for k, v in listing.items() if not is_lock_key(k)}


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


# ---- where a target keeps its lock objects ---------------------------------------------------------------


def store_for(backend: Backend, dataset: str = "") -> LockStore | None:
    """The lock object of the target (or of one of its datasets), or None where the store has no conditional
    write cartsync can use."""
    from .backends.s3 import S3Backend
    name = f"{dataset}/{LOCK_NAME}" if dataset else LOCK_NAME
    if isinstance(backend, S3Backend):
        return backend.lock_store(name)
    # imported only now: it imports fsspec (~0.2 CPU-s), which an S3 no-op otherwise never needs
    from .backends.fsspec import FsspecBackend
    if isinstance(backend, FsspecBackend) and backend.local:
        return FileLockStore(Path(backend.root) / dataset if dataset else Path(backend.root))
    return None


def _say_once(manifest: Manifest, target: TargetConfig, why: str) -> None:
    marker = _locks_folder() / f"{identity.run_key(manifest.path, target.name)}.no-target-lock"
    if marker.exists():
        return
    log.warning("target %s: %s; it is locked on this machine only (in %s)", target.name, why, inv.cache_dir())
    marker.touch()


def _hint(manifest: Manifest, target: TargetConfig) -> str:
    return f"cartsync unlock {manifest.path} --target {target.name}"


def _claim(manifest: Manifest, backend: Backend, store: LockStore, dataset: str = "") -> Claim:
    name = backend.target.name
    what = f"dataset {dataset} of target {name}" if dataset else f"target {name}"
    return Claim(store, what, str(manifest.path.resolve()), name, dataset)


@contextmanager
def _holding(manifest: Manifest, backend: Backend, claims: list[Claim]) -> Iterator[bool]:
    """Hold `claims` (all or none) while the block runs; yields False where the store refused a conditional
    write or could not be written (the machine lock is then all there is)."""
    target = backend.target
    lifetime, since = ttl(), time.time()
    tokens: dict[Claim, str] = {}

    def take(claim: Claim) -> None:
        tokens[claim] = backend.retrying(lambda: acquire(claim, since, lifetime, _hint(manifest, target)))
    held = Held(tokens, since, lifetime)
    try:
        each(take, claims)
    except NoConditionalWrite as exc:
        held.release(backend.retrying)          # the ones taken before (none on such a store)
        _say_once(manifest, target, f"the store refused a conditional write ({exc})")
    except LockedError:
        held.release(backend.retrying)          # the ones taken before the refusal
        raise
    except Exception as exc:  # noqa: BLE001 — the listing that follows reports an unreachable/denied store
        # by name; a store that lists but cannot hold the lock is locked on this machine only
        held.release(backend.retrying)
        log.info("target %s: could not create the lock at %s (%s); locked on this machine only",
                 target.name, claims[0].store.where, exc)
    else:
        held.start()
        try:
            yield True
        finally:
            held.release(backend.retrying)
        return
    yield False


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
    with _holding(manifest, backend, [_claim(manifest, backend, store)]):
        yield


@contextmanager
def dataset_locks(manifest: Manifest, backend: Backend, datasets: Iterable[str]) -> Iterator[None]:
    """A shard's locks: one lock object per dataset it publishes, then a look at the target lock, which a
    run over the whole collection holds: while that is live, the shard lets its locks go and is refused."""
    target = backend.target
    claims = [_claim(manifest, backend, store, ds) for ds in sorted(datasets)
              if (store := store_for(backend, ds)) is not None]
    if not claims:
        yield
        return
    with _holding(manifest, backend, claims) as held:
        if held:
            whole = store_for(backend)
            current = backend.retrying(whole.read) if whole is not None else None
            # an unreadable lock counts as expired, as `acquire` takes one over
            holder = Holder.parse(current[0]) if current is not None else None
            if whole is not None and holder is not None and not holder.expired:
                raise LockedError(f"target {target.name} is locked by a run over the whole target: "
                                  f"{holder.describe()} ({whole.where})",
                                  f"wait for that run to finish; if it crashed, the lock expires at {holder.until}, "
                                  f"or remove it with: {_hint(manifest, target)}")
        yield


def live_dataset_locks(backend: Backend, listing: Mapping[str, object]) -> list[tuple[str, Holder, str]]:
    """The datasets whose lock object the listing shows and that are not expired: (dataset, holder, where)."""
    stores = [(ds, store) for ds in dataset_lock_ids(listing) if (store := store_for(backend, ds)) is not None]

    def look(item: tuple[str, LockStore]) -> tuple[str, Holder, str] | None:
        ds, store = item
        current = backend.retrying(store.read)
        if current is None:
            return None                 # released between the listing and now
        holder = Holder.parse(current[0])        # unreadable: expired, as `acquire` takes one over
        return None if holder is None or holder.expired else (ds, holder, store.where)
    return [r for r in each(look, stores) if r is not None]


def refuse_live_shards(manifest: Manifest, backend: Backend, listing: Mapping[str, object]) -> None:
    """A run over the whole target, holding the target lock, refuses while a shard holds a dataset's lock
    (read from the listing made after the target lock was written; see the module docstring)."""
    live = live_dataset_locks(backend, listing)
    if not live:
        return
    ds, holder, where = live[0]
    more = f" and {len(live) - 1} more dataset(s)" if len(live) > 1 else ""
    raise LockedError(f"dataset {ds} of target {backend.target.name} is locked by a shard: "
                      f"{holder.describe()} ({where}){more}",
                      f"wait for the shards to finish; if one crashed, its lock expires at {holder.until}, or "
                      f"remove it with: {_hint(manifest, backend.target)}")


def _remove(backend: Backend, store: LockStore, what: str) -> list[str]:
    """Remove the lock at `store`, whoever holds it; what was removed, for the user (nothing: none there)."""
    current = backend.retrying(store.read)
    if current is None:
        return []
    holder = Holder.parse(current[0])
    backend.retrying(lambda: store.remove(current[1]))
    return [f"{what}: removed the lock held by {holder.describe() if holder else 'an unreadable lock'} "
            f"({store.where})."]


def unlock(manifest: Manifest, backend: Backend) -> str:
    """Remove the target's lock and its datasets' (a shard's), whoever holds them; what was removed."""
    target = backend.target
    store = store_for(backend)
    if store is None:
        raise CartsyncError(f"target {target.name}: this store holds no lock object (only the machine lock in "
                            f"{inv.cache_dir()}, which ends with its process)", "nothing to unlock")
    said = _remove(backend, store, f"target {target.name}")
    for ds in dataset_lock_ids(backend.listing()):
        ds_store = store_for(backend, ds)
        if ds_store is not None:
            said += _remove(backend, ds_store, f"dataset {ds} of target {target.name}")
    return "\n".join(said) or f"target {target.name}: not locked ({store.where} does not exist)."
