"""zenodo: targets — the deposit lifecycle, declaratively and idempotently.

Remote state is one GET of the deposition (metadata and files), plus, for a
published record, one search of its concept for the latest version and an
open new-version draft (locate.py). `deposition: new` records the id it created in the
state file beside the manifest (state.py), and marks the deposition's notes so that a
run whose record was lost finds it again instead of creating a second one.
This class is the Backend interface over one `Deposition` (deposition.py), which holds
what listing found and the draft a run writes to; it keeps no state of its own.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...config import TargetConfig
from ...errors import PlanError
from ...inventory import HashCache
from ...model import Change, KeyRange, Kind, LocalFile, Plan, RemoteFile, Report
from ..base import Backend, Features, Progress
from .client import ZenodoClient
from .deposition import Deposition
from .meta import metadata_diff
from .state import StateFile


class ZenodoBackend(Backend):
    features = Features(flat=True, max_files=100, max_bytes=50 * 10**9)
    finish_is_cleanup = False      # finish() publishes

    def __init__(self, target: TargetConfig, cache: HashCache) -> None:
        super().__init__(target, cache)
        assert target.zenodo is not None, "backend_class picks this backend for zenodo: targets only"
        self.cfg = target.zenodo
        self.api = ZenodoClient(self.cfg)
        self.state = StateFile(self.cfg.state_file or Path(".cartsync-state.json"), self.cfg.state_key or target.name)
        self.deposition = Deposition(self.api, self.retrying, self.cfg, self.state, target.name, self.policy.base)

    @property
    def dep(self) -> dict[str, Any] | None:
        """The deposition the files are compared with, as `listing()` found it; None: none yet."""
        return self.deposition.current

    @property
    def published(self) -> dict[str, Any] | None:
        """The latest published version of the deposition's concept, as `listing()` found it."""
        return self.deposition.published

    @property
    def url(self) -> str:
        dep = f"/deposition/{self.dep['id']}" if self.dep else "/deposition/(new)"
        return self.cfg.url + dep

    # ---- reading -------------------------------------------------------------------------------

    @classmethod
    def map_keys(cls, target, keys: list[str]) -> dict[str, str]:
        by_name: dict[str, list[str]] = {}
        for k in keys:
            by_name.setdefault(k.rsplit("/", 1)[-1], []).append(k)
        clashes = {n: ks for n, ks in by_name.items() if len(ks) > 1}
        if clashes:
            lines = [f"{n}: {', '.join(ks)}" for n, ks in sorted(clashes.items())]
            raise PlanError(f"target {target.name}: Zenodo records are flat, and these files share a name:\n  "
                            + "\n  ".join(lines), "rename them, or publish each folder to its own deposition")
        return {k: k.rsplit("/", 1)[-1] for k in keys}

    def listing(self, within: KeyRange | None = None) -> dict[str, RemoteFile]:
        return self.deposition.read()

    def plan_changes(self, plan: Plan) -> tuple[Change, ...]:
        changes: list[Change] = []
        files_change = bool(plan.uploads or plan.of(Kind.DELETE))
        dep, published, want = self.dep, self.published, self.deposition.want
        if dep is None:
            changes.append(Change("+", "deposition", f"create a new draft on {self.cfg.url}"))
        elif dep.get("submitted") and files_change:
            changes.append(Change("+", "deposition", f"new version of published record {dep['id']}"))
        elif not dep.get("submitted") and published is not None:
            changes.append(Change("=", "deposition", f"open new-version draft {dep['id']} of record "
                                  f"{published['id']}"))
        # a new deposition is created with the wanted metadata: nothing to diff
        diffs = metadata_diff(want, dep.get("metadata") or {}) if dep else []
        waits = dep is not None and dep.get("submitted") and not files_change and not self.cfg.publish
        for field, old, new in diffs:
            changes.append(Change("!" if waits else "~", f"metadata.{field}", f"{old} → {new}"))
        if waits and diffs:
            changes.append(Change("!", "metadata", "changes to a published record wait: set publish: true"))
        needs_publish = self.cfg.publish and (dep is None or not dep.get("submitted") or files_change or diffs)
        if needs_publish:
            changes.append(Change("+", "publish", "publish (mints a DOI; cannot be undone)"))
        elif not self.cfg.publish and (dep is None or not dep.get("submitted") or files_change):
            changes.append(Change("=", "publish", "draft stays unpublished (publish: false)"))
        return tuple(changes)

    # ---- writing (executor only) ---------------------------------------------------------------

    def begin(self, plan: Plan) -> list[Change]:
        return self.deposition.prepare(plan)

    def upload(self, local: LocalFile, key: str, progress: Progress) -> RemoteFile:
        return self.deposition.put(local, key, progress)

    def delete(self, remote: RemoteFile) -> None:
        self.deposition.remove(remote)

    def finish(self, report: Report, ok: bool) -> list[Change]:
        return self.deposition.publish_if_asked(ok)

    def close(self) -> None:
        self.api.close()
