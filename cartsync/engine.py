"""The pipeline: manifest → selection → inventory and listings → plan → apply → report.

The listings (read-only) run while the source is surveyed; only files whose plan depends on their
content are hashed before planning, the others as they upload. Only `execute` writes remotely.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import inventory as inv
from . import locks, per_dataset, selection
from . import shard as shard_mod
from .backends import Backend, Features, backend_class, open_backend
from .config import Manifest, TargetConfig
from .errors import PlanError
from .model import WHOLE_TARGET, KeyRange, LocalFile, Plan, RemoteFile, Report, Scope, SourceFile
from .per_dataset import dataset_of
from .planner import guarded, make_plan
from .render import human_size
from .retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    """How to run: which targets (default all), how many concurrent transfers, whether to draw a progress bar
    (None: only on a terminal)."""

    targets: tuple[str, ...] = ()
    jobs: int = 8
    show_progress: bool | None = None
    shard: shard_mod.Shard | None = None     # a collection only: this process's share of the datasets
    allow_mass_delete: bool = False      # this run only: the max_delete guard lets the deletes through


def plan(manifest: Manifest, options: Options, on_inputs: Inputs | None = None) -> list[Plan]:
    """One plan per selected target, in manifest order. Reads the source and lists the targets; writes
    nothing anywhere but the local cache, and takes no lock. With `on_inputs`, every file is hashed and
    `on_inputs` sees what the plans are computed from (see plan_all)."""
    cache = cache_for()
    try:
        files, scope, targets = prepared(manifest, options)
        with opened(manifest, targets, cache, lock=False) as backends:
            return plan_all(backends, files, cache, scope=scope, allow_mass_delete=options.allow_mass_delete,
                            hash_all=on_inputs is not None, on_inputs=on_inputs)
    finally:
        cache.close()


def apply(manifest: Manifest, options: Options, on_plan: Callable[[list[Plan]], None] | None = None,
          on_report: Callable[[Plan, Report], None] | None = None,
          on_inputs: Inputs | None = None) -> list[tuple[Plan, Report]]:
    """Lock every selected target, plan them all, hand the plans to `on_plan` before the first write, then
    execute target after target (`on_report` after each). Returns (plan, report) per target. `on_inputs`
    (every file hashed) may refuse, by raising, before any write (a saved plan that is stale)."""
    cache = cache_for()
    results: list[tuple[Plan, Report]] = []
    try:
        files, scope, targets = prepared(manifest, options)
        parts = lock_parts(manifest, files, scope)
        with opened(manifest, targets, cache, lock=True, parts=parts) as backends:
            # a run over a whole collection, its target lock held, refuses while a shard holds a dataset
            guard = (lambda b, listing: locks.refuse_live_shards(manifest, b, listing)) \
                if manifest.source.collection and "" in parts else None
            plans = plan_all(backends, files, cache, scope=scope, allow_mass_delete=options.allow_mass_delete,
                             hash_all=on_inputs is not None, on_inputs=on_inputs, guard=guard)
            if on_plan is not None:
                on_plan(plans)
            for backend, p in zip(backends, plans, strict=False):
                report = execute(backend, p, options)
                results.append((p, report))
                if on_report is not None:
                    on_report(p, report)
    finally:
        cache.close()
    return results


def prepared(manifest: Manifest, options: Options) -> tuple[list[SourceFile], Scope, list[TargetConfig]]:
    """Selection, this run's share of it, and the targets it writes (a Zenodo target over a collection
    expanded to one per dataset), checked against the targets' limits before hashing or any request."""
    files, scope = scoped(manifest, selection.select(manifest.source), options.shard)
    targets = per_dataset.expand(manifest, targets_of(manifest, options.targets), files)
    precheck(files, targets)
    return files, scope, targets


def files_for(target: TargetConfig, keys: list[str]) -> list[str]:
    """The keys a target publishes: a per-dataset target only its dataset's."""
    return keys if target.dataset is None else [k for k in keys if dataset_of(k) == target.dataset]


def targets_of(manifest: Manifest, names: tuple[str, ...]) -> list[TargetConfig]:
    """The targets named (each once, in the order first given: `--target web --target web` is one target,
    not two runs that would lock each other out), or all of them."""
    return [manifest.target(n) for n in dict.fromkeys(names)] if names else list(manifest.targets)


def select(manifest: Manifest, targets: list[TargetConfig] | None = None) -> list[SourceFile]:
    """The source files, checked against the targets' limits: before hashing or any request."""
    files = selection.select(manifest.source)
    precheck(files, per_dataset.expand(manifest, targets if targets is not None else list(manifest.targets), files))
    return files


def scoped(manifest: Manifest, files: list[SourceFile],
           shard: shard_mod.Shard | None) -> tuple[list[SourceFile], Scope]:
    """The files this run publishes and the part of each target it owns (see model.Scope).

    A shard takes its share of a collection's datasets (shard.share: the same split in every process);
    a `datasets:` list owns just those. Only a run over a whole collection (or a plain dataset) owns the
    whole target, and so only it deletes datasets that left the collection."""
    src = manifest.source
    if shard is not None and not src.collection:
        raise PlanError("--shard splits a collection's datasets, but this source is one dataset",
                        "set source.collection: true, or run without --shard")
    if not src.collection:
        return files, Scope()
    sizes: dict[str, int] = {}
    for f in files:
        sizes[dataset_of(f.key)] = sizes.get(dataset_of(f.key), 0) + os.stat(f.path).st_size
    if shard is None:
        if not src.datasets:
            return files, Scope()
        return files, Scope(frozenset(sizes), "source.datasets lists them; datasets that left the list are not "
                                              "deleted")
    mine = frozenset(shard_mod.share(sizes, shard))
    log.info("shard %s: %d of %d dataset(s), %s of %s", shard, len(mine), len(sizes),
             human_size(sum(sizes[d] for d in mine)), human_size(sum(sizes.values())))
    why = (f"shard {shard}: {len(mine)} of {len(sizes)} dataset(s); datasets that left the collection are "
           "deleted only by a run over the whole collection, without --shard")
    return [f for f in files if dataset_of(f.key) in mine], Scope(mine, why)


def lock_parts(manifest: Manifest, files: list[SourceFile], scope: Scope) -> list[str]:
    """What an apply locks on each target: "" is the whole target, an id one dataset. A scoped run (a
    shard) locks its datasets; a run over a whole collection the target and every dataset, so it never runs
    beside a shard while shards of one collection run side by side."""
    if scope.datasets is not None:
        return sorted(scope.datasets)
    if manifest.source.collection:
        return [""] + sorted({dataset_of(f.key) for f in files})
    return [""]


def precheck(files: list[SourceFile], targets: list[TargetConfig]) -> None:
    """Key clashes and target limits, from sizes alone: before hashing anything or sending a request."""
    reserved = sorted(f.key for f in files if locks.is_lock_key(f.key))
    if reserved and targets:
        raise PlanError(f"{reserved[0]}: {locks.LOCK_NAME} is the name of cartsync's lock object on the target, "
                        "so this file could never be published", "rename that file, or leave it out of the source")
    for t in targets:
        _check_key_lengths(t, backend_class(t).features, [f.key for f in files])
    limited = [(t, cls) for t in targets
               if (cls := backend_class(t)).features.flat or cls.features.max_files or cls.features.max_bytes]
    if not limited:
        return
    sizes = {f.key: os.stat(f.path).st_size for f in files}
    for target, cls in limited:
        keys = files_for(target, sorted(sizes))
        mapping = cls.map_keys(target, keys)
        _check_limits(cls.features, {mapping[k]: sizes[k] for k in keys}, {}, target)


def _check_key_lengths(target: TargetConfig, feats: Features, keys: list[str]) -> None:
    """Keys the store would refuse (S3: over 1,024 bytes of UTF-8, prefix included), before any upload:
    the store itself would refuse them mid-apply, after other files went up."""
    limit = feats.max_key_bytes
    if limit is None:
        return
    prefix = target.url.split("://", 1)[-1].strip("/").partition("/")[2]
    full = {k: len(f"{prefix}/{k}".encode() if prefix else k.encode()) for k in keys}
    long = sorted(k for k, n in full.items() if n > limit)
    if long:
        first = long[0] if len(long[0]) <= 60 else long[0][:57] + "..."
        more = f" and {len(long) - 1} more" if len(long) > 1 else ""
        raise PlanError(f"target {target.name}: {len(long)} key(s) longer than the store's limit of {limit:,} "
                        f"bytes (UTF-8, with the prefix): {first} ({full[long[0]]:,} bytes){more}",
                        "shorten those file or folder names, or the target prefix; nothing was uploaded")


def plan_target(backend: Backend, target: TargetConfig, local: dict[str, LocalFile],
                remote: dict[str, RemoteFile] | None = None, scope: Scope = WHOLE_TARGET,
                allow_mass_delete: bool = False) -> Plan:
    """Diff the target's listing (made here unless given) against the local inventory, under the max_delete
    guard. Writes nothing remotely."""
    mapping = backend.map_keys(target, files_for(target, sorted(local)))
    mapped = {mapping[k]: local[k] for k in mapping}
    remote = locks.without_lock(backend.listing()) if remote is None else remote
    remote = backend.resolve(remote, mapped)
    _check_limits(backend.features, {k: f.size for k, f in mapped.items()}, remote, target)
    plan = make_plan(target.name, backend.url, mapped, remote, overwrite=target.overwrite, delete=target.delete,
                     scope=scope, folders=backend.features.folders, headers=backend.wanted_headers(mapped))
    plan = guarded(plan, len(remote), target.max_delete, allow_mass_delete)
    return dataclasses.replace(plan, changes=backend.plan_changes(plan))


def _check_limits(feats: Features, local: dict[str, int], remote: dict, target: TargetConfig) -> None:
    """local: key → size. Files kept on the target (no delete) count too."""
    kept = [] if target.delete else [k for k in remote if k not in local]
    count = len(local) + len(kept)
    total = sum(local.values()) + sum(remote[k].size for k in kept)
    if feats.max_files is not None and count > feats.max_files:
        raise PlanError(f"target {target.name}: {count} files, but it can hold at most {feats.max_files}",
                        f"split the dataset into {-(-count // feats.max_files)} or more targets (e.g. with "
                        "method: list), or zip small files together")
    if feats.max_bytes is not None and total > feats.max_bytes:
        raise PlanError(f"target {target.name}: {human_size(total)}, but it can hold at most "
                        f"{human_size(feats.max_bytes)}", "split the dataset into several targets")


@contextmanager
def opened(manifest: Manifest, targets: list[TargetConfig], cache: inv.HashCache,
           lock: bool, parts: list[str] | None = None) -> Iterator[list[Backend]]:
    """A backend per target, closed afterwards; with `lock`, every target locked (locks.py): on this machine
    first, each of `parts` (see lock_parts; default the whole target) with its own lock; then on the target
    itself: a run over the whole target its target lock, a shard one lock object per dataset (so shards of
    one collection run side by side). The lock objects are released before the backends close."""
    with ExitStack() as stack:
        if lock:
            for t in targets:
                # a per-dataset target (its name holds the dataset) takes one lock of its own
                for part in parts if parts is not None and t.dataset is None else [""]:
                    stack.enter_context(locks.machine_lock(manifest, t, part))
        backends: list[Backend] = []
        def close_all() -> None:
            for b in backends:
                b.close()
        stack.callback(close_all)
        for t in targets:
            backends.append(open_backend(t, cache))
        if lock:
            for b in backends:
                if parts is None or "" in parts or b.target.dataset is not None:
                    stack.enter_context(locks.target_lock(manifest, b))
                else:
                    stack.enter_context(locks.dataset_locks(manifest, b, parts))
        yield backends


Inputs = Callable[[dict[str, LocalFile], dict[str, dict[str, RemoteFile]]], None]
Guard = Callable[[Backend, dict[str, RemoteFile]], None]


def plan_all(backends: list[Backend], files: list[SourceFile], cache: inv.HashCache,
             jobs: int | None = None, scope: Scope = WHOLE_TARGET, allow_mass_delete: bool = False,
             hash_all: bool = False, on_inputs: Inputs | None = None, guard: Guard | None = None) -> list[Plan]:
    """One plan per target. The source is surveyed (stat, cached hashes) while every target is listed;
    then only the files whose plan depends on their content are hashed (those with a same-size copy on
    a target; every file with `hash_all`). The rest are hashed when uploaded, overlapping the transfers.
    `on_inputs` sees the inventory and each target's listing before planning (saved plans check them);
    `guard` sees each target's whole listing (lock objects included) as it arrives, and may refuse."""
    with ThreadPoolExecutor(max_workers=len(backends) or 1, thread_name_prefix="list") as pool:
        within = KeyRange.of(scope)
        listings = [pool.submit(b.listing, within) for b in backends]
        local = inv.survey(files, cache)
        remotes = []
        for backend, pending in zip(backends, listings, strict=True):
            listing = pending.result()
            if guard is not None:
                guard(backend, listing)
            remotes.append(locks.without_lock(listing))
    compared: set[str] = set()
    for backend, remote in zip(backends, remotes, strict=False):
        mapping = backend.map_keys(backend.target, files_for(backend.target, sorted(local)))
        compared |= {k for k, t in mapping.items() if (r := remote.get(t)) is not None and r.size == local[k].size}
    local = inv.hash_missing(local, cache, jobs, keys=None if hash_all else compared)
    log.info("source: %d file(s), %s; hashed %s (%d cached, %d left for upload)", len(local),
             human_size(sum(f.size for f in local.values())), human_size(cache.bytes_hashed), cache.hits,
             sum(1 for f in local.values() if f.md5 is None))
    if on_inputs is not None:
        on_inputs(local, {b.target.name: r for b, r in zip(backends, remotes, strict=False)})
    return [plan_target(b, b.target, local, remote, scope, allow_mass_delete)
            for b, remote in zip(backends, remotes, strict=True)]


def unlock(manifest: Manifest, name: str) -> str:
    """Remove the lock object of target `name` (see locks.py), whoever holds it; what was done, for the user."""
    target = manifest.target(name)
    cache = cache_for()
    try:
        backend = open_backend(target, cache)
        try:
            return locks.unlock(manifest, backend)
        finally:
            backend.close()
    finally:
        cache.close()


def execute(backend: Backend, plan: Plan, opts: Options) -> Report:
    from .executor import Executor  # (and tqdm) only when something is applied
    return Executor(backend, RetryPolicy.from_env(), opts.jobs, opts.show_progress).run(plan)


def cache_for(path: Path | None = None) -> inv.HashCache:
    return inv.HashCache(path)
