"""zenodo: targets — the deposit lifecycle, declaratively and idempotently.

Remote state is one GET of the deposition (metadata and files), plus, for a
published record, one search of its concept for the latest version and an
open new-version draft. `deposition: new` records the id it created in the
state file beside the manifest, and marks the deposition's notes so that a
run whose record was lost finds it again instead of creating a second one.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import PlanError, RemoteError, VerifyError
from ...model import Change, KeyRange, Kind, LocalFile, Plan, RemoteFile, Report
from ..base import Backend, Features, Progress
from .client import ZenodoClient
from .meta import desired_metadata, md5_of, metadata_diff, remote_files
from .state import StateFile

log = logging.getLogger(__name__)


class ZenodoBackend(Backend):
    features = Features(flat=True, max_files=100, max_bytes=50 * 10**9, atomic_replace=False)
    finish_is_cleanup = False      # finish() publishes

    def __init__(self, target, cache) -> None:
        super().__init__(target, cache)
        self.cfg = target.zenodo
        self.api = ZenodoClient(self.cfg)
        self.state = StateFile(self.cfg.state_file or Path(".cartsync-state.json"), self.cfg.state_key or target.name)
        self.marker = self.cfg.marker
        self.want_meta = desired_metadata(self.cfg.metadata, self.marker)
        self.dep: dict[str, Any] | None = None       # the deposition the files are compared with
        self.published: dict[str, Any] | None = None  # the latest published version, if any
        self.draft: dict[str, Any] | None = None     # the draft we write to (set by begin)
        self.files: dict[str, RemoteFile] = {}
        self.retried: set[str] = set()

    @property
    def url(self) -> str:
        dep = f"/deposition/{self.dep['id']}" if self.dep else "/deposition/(new)"
        return self.cfg.url + dep

    def _get(self, path: str, **kw: Any) -> Any:
        return self.retrying(lambda: self.api.call("GET", path, **kw))

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
        dep_id = self.cfg.deposition
        if dep_id == "new":
            dep_id = str(self.state.read().get("deposition_id") or "")
            if not dep_id:
                found = self._find_by_marker()
                dep_id = str(found["id"]) if found else ""
        if not dep_id:
            return {}
        try:
            dep = self._get(f"/deposit/depositions/{dep_id}")
        except RemoteError as exc:
            if exc.status == 404 and self.cfg.deposition == "new":
                found = self._find_by_marker()
                if found is None:
                    log.warning("deposition %s in %s no longer exists; a new one will be created", dep_id,
                                self.state.path)
                    return {}
                dep = self._get(f"/deposit/depositions/{found['id']}")
            else:
                if exc.status == 404:
                    raise self._missing(dep_id) from None
                raise
        return self._adopt(dep)

    def _missing(self, dep_id: str) -> RemoteError:
        return RemoteError(f"target {self.target.name}: Zenodo deposition {dep_id} does not exist",
                           "check the id (the number in the deposition's URL) and the server url")

    def _adopt(self, dep: dict[str, Any]) -> dict[str, RemoteFile]:
        if dep.get("submitted"):
            self.published = dep
            latest, draft = self._concept(dep)
            self.published = latest or dep
            dep = draft or self.published
        self.dep = dep
        self.files = remote_files(dep)
        return dict(self.files)

    def _concept(self, dep: Mapping[str, Any]) -> tuple[dict | None, dict | None]:
        """(latest published version, open new-version draft) of the deposition's concept; one search."""
        concept = dep.get("conceptrecid")
        if not concept:
            return None, None
        hits = self._get(f"/deposit/depositions?q=conceptrecid:{concept}&allversions=true&size=100") or []
        hits = [h for h in hits if str(h.get("conceptrecid")) == str(concept)]
        published = [h for h in hits if h.get("submitted")]
        drafts = [h for h in hits if not h.get("submitted")]
        latest = max(published, key=lambda h: int(h["id"]), default=None)
        draft = max(drafts, key=lambda h: int(h["id"]), default=None)
        return latest, draft

    def _find_by_marker(self) -> dict[str, Any] | None:
        """The deposition an earlier run created for this manifest+target, if its record was lost."""
        hits = self._get(f'/deposit/depositions?q="{self.marker}"&size=100') or []
        mine = [h for h in hits if self.marker in str((h.get("metadata") or {}).get("notes", ""))]
        return max(mine, key=lambda h: int(h["id"]), default=None)

    def plan_changes(self, plan: Plan) -> tuple[Change, ...]:
        changes: list[Change] = []
        files_change = bool(plan.uploads or plan.of(Kind.DELETE))
        dep = self.dep
        if dep is None:
            changes.append(Change("+", "deposition", f"create a new draft on {self.cfg.url}"))
        elif dep.get("submitted") and files_change:
            changes.append(Change("+", "deposition", f"new version of published record {dep['id']}"))
        elif not dep.get("submitted") and self.published is not None:
            changes.append(Change("=", "deposition", f"open new-version draft {dep['id']} of record "
                                  f"{self.published['id']}"))
        # a new deposition is created with the wanted metadata: nothing to diff
        diffs = metadata_diff(self.want_meta, dep.get("metadata") or {}) if dep else []
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
        from .deposition import prepare
        return prepare(self, plan)

    def upload(self, local: LocalFile, key: str, progress: Progress) -> RemoteFile:
        assert self.draft is not None, "begin() must run first"
        if key in self.retried:
            # the previous attempt may have landed although its answer was lost: look before re-sending
            current = remote_files(self._get(f"/deposit/depositions/{self.draft['id']}"))
            if key in current and (current[key].md5, current[key].size) == (local.md5, local.size):
                return current[key]
        self.retried.add(key)
        resp = self.api.put_file(self.draft["links"]["bucket"], key, local.path, local.size, progress)
        self.retried.discard(key)
        if not (resp or {}).get("checksum"):
            # not a checksum mismatch (retried): the server did not say what it stored, and asking again won't help
            raise RemoteError(f"{key}: Zenodo answered the upload without a checksum, so it cannot be verified",
                              f"check that {self.cfg.url} is Zenodo (or a proxy passing its answers on "
                              "unchanged); re-run to try again")
        md5, size = md5_of(str(resp.get("checksum", ""))), int(resp.get("size", -1))
        if (md5, size) != (local.md5, local.size):
            raise VerifyError(f"{key}: Zenodo stored md5 {md5}, {size} bytes; expected {local.md5}, {local.size}")
        return RemoteFile(key, size, md5)

    def delete(self, remote: RemoteFile) -> None:
        assert self.draft is not None
        current = self.files.get(remote.key)
        file_id = current.get("id") if current else remote.get("id")
        try:
            self.api.call("DELETE", f"/deposit/depositions/{self.draft['id']}/files/{file_id}")
        except RemoteError as exc:
            if exc.status != 404:   # already gone (e.g. a retried delete that had succeeded) is fine
                raise

    def finish(self, report: Report, ok: bool) -> list[Change]:
        from .deposition import publish_if_asked
        return publish_if_asked(self, ok)

    def close(self) -> None:
        self.api.close()

