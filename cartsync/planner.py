"""Pure: (local inventory, remote listing, target settings) → Plan. No I/O."""
from __future__ import annotations

from typing import Mapping

from .model import Action, Change, Kind, LocalFile, Plan, RemoteFile, Scope

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
              overwrite: str = "changed", delete: bool = False, scope: Scope = Scope(),
              changes: tuple[Change, ...] = (), notes: tuple[str, ...] = (),
              headers: Mapping[str, Mapping[str, str]] | None = None) -> Plan:
    """`headers`: key → the headers each file should have, where the target compares them (S3)."""
    actions: list[Action] = []
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
        actions += [Action(Kind.DELETE, k, remote[k].size, "not in source", None, remote[k]) for k in orphans]
    elif orphans:
        notes += (f"{len(orphans)} remote file(s) not in the source are kept (delete: false)",)
    return Plan(target, url, tuple(sorted(actions, key=_order)), changes, notes)
