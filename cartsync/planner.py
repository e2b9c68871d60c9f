"""Pure: (local inventory, remote listing, target settings) → Plan. No I/O."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from .errors import PlanError
from .model import WHOLE_TARGET, Action, Change, DeleteLimit, Kind, LocalFile, Plan, RemoteFile, Scope


def _order(action: Action) -> tuple[int, str]:
    # What is in the way of an upload first; then data files, then catalogs (a reader never sees a catalog
    # naming a missing file), then deletions.
    if action.kind is Kind.DELETE:
        return (0 if action.first else 3), action.key
    return (2 if action.catalog else 1), action.key


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


def in_the_way(local: Mapping[str, LocalFile], remote: Mapping[str, RemoteFile]) -> dict[str, str]:
    """On a target with real folders: remote key → the local key it blocks. A remote file where the source
    has a folder (remote `a`, local `a/b.tsv`), or a remote folder's files where the source has a file
    (remote `a/b.tsv`, local `a`): neither upload can happen until the remote side is gone."""
    blocked: dict[str, str] = {}
    folders: dict[str, str] = {}          # every folder the remote keys need → one key under it
    for key in remote:
        parts = key.split("/")
        for n in range(1, len(parts)):
            folders.setdefault("/".join(parts[:n]), key)
    for key in local:
        parts = key.split("/")
        for n in range(1, len(parts)):
            prefix = "/".join(parts[:n])
            if prefix in remote and prefix not in local:
                blocked.setdefault(prefix, key)
        if key in folders and key not in remote:
            blocked.update({k: key for k in remote if k.startswith(key + "/") and k not in local})
    return blocked


def header_drift(have: tuple[tuple[str, str], ...] | None, want: Mapping[str, str] | None,
                 ) -> tuple[tuple[str, str | None, str | None], ...]:
    """(header, now, wanted) for each header that differs; nothing where either side is unknown.
    x-amz-meta-md5 counts only when present and wrong (tools other than cartsync never write it)."""
    if have is None or want is None:
        return ()
    now = dict(have)
    names = sorted(set(now) | set(want), key=lambda n: (n.startswith("x-amz-meta-"), n))
    return tuple((n, now.get(n), want.get(n)) for n in names
                 if now.get(n) != want.get(n) and not (n == "x-amz-meta-md5" and now.get(n) is None))


def make_plan(target: str, url: str, local: Mapping[str, LocalFile], remote: Mapping[str, RemoteFile], *,
              overwrite: str = "changed", delete: bool = False, scope: Scope = WHOLE_TARGET, folders: bool = False,
              changes: tuple[Change, ...] = (), notes: tuple[str, ...] = (),
              headers: Mapping[str, Mapping[str, str]] | None = None) -> Plan:
    """`folders`: the target is a real folder tree (a local target), where a file and a folder cannot share
    a name; what stands in the way of an upload is deleted first (only with `delete`, else a PlanError).
    `headers`: key → the headers each file should have, where the target compares them (S3)."""
    actions: list[Action] = []
    blocked = in_the_way(local, remote) if folders else {}
    if blocked and not delete:
        first = min(blocked)
        what = ("a file where the source has a folder" if blocked[first].startswith(first + "/")
                else "inside a folder where the source has a file")
        more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
        raise PlanError(f"target {target}: {first} on the target is {what} ({blocked[first]}){more}",
                        "set delete: true on the target to let cartsync remove it first, or remove it yourself")
    for key, lf in local.items():
        rf = remote.get(key)
        if rf is None:
            actions.append(Action(Kind.CREATE, key, lf.size, "new", lf, None))
        else:
            kind, why = compare(lf, rf, overwrite)
            drift = header_drift(rf.headers, (headers or {}).get(key)) if kind is Kind.KEEP and \
                overwrite != "never" else ()
            if drift:
                why = ", ".join(f"{n} {a or '(none)'} → {b or '(none)'}" for n, a, b in drift)
                actions.append(Action(Kind.HEADERS, key, lf.size, why, lf, rf, drift))
            else:
                actions.append(Action(kind, key, lf.size, why, lf, rf))
    orphans = sorted(k for k in set(remote) - set(local) if scope.owns(k))
    if scope.datasets is not None:
        notes += (f"only this run's {len(scope.datasets)} dataset(s) are compared; everything else under the "
                  f"target is left alone ({scope.why})",)
    if delete:
        actions += [Action(Kind.DELETE, k, remote[k].size, f"in the way of {blocked[k]}", None, remote[k], first=True)
                    if k in blocked else Action(Kind.DELETE, k, remote[k].size, "not in source", None, remote[k])
                    for k in orphans]
    elif orphans:
        notes += (f"{len(orphans)} remote file(s) not in the source are kept (delete: false)",)
    return Plan(target, url, tuple(sorted(actions, key=_order)), changes, notes, scope=scope)


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
