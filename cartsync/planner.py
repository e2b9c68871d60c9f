"""Pure: (local inventory, remote listing, target settings) → Plan. No I/O."""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

from .model import Action, Change, DeleteLimit, Kind, LocalFile, Plan, RemoteFile, Scope

CATALOG_NAME = "catalog.yaml"


def is_catalog(key: str) -> bool:
    return key.rsplit("/", 1)[-1] == CATALOG_NAME


def _order(action: Action) -> tuple[int, str]:
    # Data files, then catalogs (a reader never sees a catalog naming a missing file), then deletions.
    rank = 2 if action.kind is Kind.DELETE else (1 if is_catalog(action.key) else 0)
    return rank, action.key


def compare(local: LocalFile, remote: RemoteFile, overwrite: str) -> tuple[Kind, str]:
    """Whether a file present on both sides is kept or replaced, and why."""
    if overwrite == "never":
        return Kind.KEEP, "exists (overwrite: never)"
    if overwrite == "always":
        return Kind.REPLACE, "overwrite: always"
    if remote.size != local.size:
        return Kind.REPLACE, f"size {remote.size} → {local.size}"
    if remote.md5 is None:
        return Kind.REPLACE, "same size, no remote checksum to compare"
    if remote.md5 != local.md5:
        return Kind.REPLACE, "same size, content differs (md5)"
    return Kind.KEEP, "same size and md5"


def make_plan(target: str, url: str, local: Mapping[str, LocalFile], remote: Mapping[str, RemoteFile], *,
              overwrite: str = "changed", delete: bool = False, scope: Scope = Scope(),
              changes: tuple[Change, ...] = (), notes: tuple[str, ...] = ()) -> Plan:
    actions: list[Action] = []
    for key, lf in local.items():
        rf = remote.get(key)
        if rf is None:
            actions.append(Action(Kind.CREATE, key, lf.size, "new", lf, None))
        else:
            kind, why = compare(lf, rf, overwrite)
            actions.append(Action(kind, key, lf.size, why, lf, rf))
    orphans = sorted(k for k in set(remote) - set(local) if scope.owns(k))
    if scope.datasets is not None:
        notes += (f"only this run's {len(scope.datasets)} dataset(s) are compared; everything else under the "
                  f"target is left alone ({scope.why})",)
    if delete:
        actions += [Action(Kind.DELETE, k, remote[k].size, "not in source", None, remote[k]) for k in orphans]
    elif orphans:
        notes += (f"{len(orphans)} remote file(s) not in the source are kept (delete: false)",)
    return Plan(target, url, tuple(sorted(actions, key=_order)), changes, notes)


def delete_guard(deletes: int, target_files: int, limit: DeleteLimit) -> str | None:
    """Why `deletes` of the target's `target_files` files are too many for `limit`, or None. Pure."""
    if deletes <= limit.floor:
        return None
    if limit.count is not None and deletes > limit.count:
        return f"max_delete: {deletes} deletion(s) exceed the limit of {limit.count}"
    if limit.fraction is not None and target_files and deletes > limit.fraction * target_files:
        return (f"max_delete: {deletes} of the target's {target_files} file(s) would be deleted, more than "
                f"{limit.fraction * 100:g}%")
    return None


def guarded(plan: Plan, target_files: int, limit: DeleteLimit, allow: bool) -> Plan:
    """The plan with its deletes refused (and a note saying so) where the max_delete guard trips. Pure."""
    why = delete_guard(len(plan.of(Kind.DELETE)), target_files, limit)
    if why is None:
        return plan
    if allow:
        return replace(plan, notes=plan.notes + (f"{why}; allowed for this run (--allow-mass-delete)",))
    return replace(plan, deletes_refused=True, notes=plan.notes + (
        f"{why}: apply will refuse the deletes (the uploads go ahead); if they are meant, re-run with "
        "--allow-mass-delete, or raise max_delete in the manifest",))
