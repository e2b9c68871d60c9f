"""A target's deposition and the writes that move it through its lifecycle: create, new version, edit,
metadata, files, publish.

Each non-idempotent call (create, newversion, publish) may succeed on the
server while its answer is lost (a 504, a reset). Before retrying one, we
re-read the remote state and adopt what the lost call made, so a retry never
creates a second deposition or version.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from ...config import ZenodoConfig
from ...errors import CartsyncError, RemoteError, VerifyError
from ...model import Change, Kind, LocalFile, Plan, RemoteFile
from ..base import Progress
from .client import ZenodoClient
from .locate import Finder, Remote
from .meta import desired_metadata, md5_of, merged, metadata_diff, remote_files
from .state import StateFile

log = logging.getLogger(__name__)
T = TypeVar("T")


class Retrying(Protocol):
    """Runs one remote call under the target's retry policy (`Backend.retrying`)."""

    def __call__(self, fn: Callable[[], T]) -> T: ...


class Deposition:
    """One target's deposition on one Zenodo server, for one run.

    Call order: `read()` (listing), then — from the executor only — `prepare()` once, `put()` / `remove()`
    (from several transfer threads, each for its own key), `publish_if_asked()` once.

    State kept between calls, and documented as this object's:
    - `remote`: what `read()` found (None: no deposition yet, or read() not called). `current` and
      `published` are its two parts; planning and `prepare()` decide from them.
    - `draft`, `files`: the draft this run writes to, fresh from the server, and its files by key, set by
      `prepare()`. `draft` stays None when there is nothing to write to (a published record whose files
      are current and whose metadata waits for `publish: true`); `put()` / `remove()` then refuse.
    """

    def __init__(self, api: ZenodoClient, retrying: Retrying, cfg: ZenodoConfig, state: StateFile, target: str,
                 pause: float = 0.5) -> None:
        """`pause`: the retry policy's base pause (s); the look-agains after a lost create scale with it."""
        self.api, self.retrying, self.cfg, self.state, self.pause = api, retrying, cfg, state, pause
        self.want = desired_metadata(cfg.metadata, cfg.marker)
        self.find = Finder(self._get, cfg, state, target)
        self.remote: Remote | None = None
        self.draft: dict[str, Any] | None = None
        self.files: dict[str, RemoteFile] = {}
        self._retried: set[str] = set()      # keys whose upload failed once: look before sending again

    def _get(self, path: str) -> Any:
        return self.retrying(lambda: self.api.call("GET", path))

    # ---- reading -------------------------------------------------------------------------------

    def read(self) -> dict[str, RemoteFile]:
        """The files of the deposition they are compared with, by key ({} when there is none yet)."""
        self.remote = self.find.locate()
        return remote_files(self.remote.current) if self.remote else {}

    @property
    def current(self) -> dict[str, Any] | None:
        """The deposition the files are compared with (an open draft if any); None: none yet."""
        return self.remote.current if self.remote else None

    @property
    def published(self) -> dict[str, Any] | None:
        """The latest published version of the concept, if any."""
        return self.remote.published if self.remote else None

    # ---- writing (executor only) ---------------------------------------------------------------

    def _recovering(self, do: Callable[[], Any], recover: Callable[[], Any]) -> Any:
        """Run `do` under the retry policy; before each retry, `recover()` may return what a lost call made."""
        state = {"first": True}

        def attempt() -> Any:
            if not state["first"]:
                found = recover()
                if found is not None:
                    log.info("an earlier attempt had succeeded; using its result")
                    return found
            state["first"] = False
            return do()

        return self.retrying(attempt)

    def _record(self, dep: dict[str, Any], **more: Any) -> None:
        self.state.write(deposition_id=int(dep["id"]), concept_id=str(dep.get("conceptrecid", "")), **more,
                         server=self.cfg.url)

    def _create(self) -> dict[str, Any]:
        def do() -> Any:
            return self.api.call("POST", "/deposit/depositions", json={"metadata": self.want})

        def recover() -> Any:
            # the search index may lag behind a creation: look a few times before concluding there is none
            for delay in (0.0, 0.5, 1.0, 2.0):
                time.sleep(delay * self.pause / 0.5)
                found = self.find.by_marker()
                if found is not None:
                    return found
            return None

        dep: dict[str, Any] = self._recovering(do, recover)
        self._record(dep)
        return dep

    def _new_version(self, published: dict[str, Any]) -> dict[str, Any]:
        def open_draft() -> Any:
            return self.find.concept(published)[1]

        def do() -> Any:
            try:
                dep = self.api.call("POST", f"/deposit/depositions/{published['id']}/actions/newversion")
            except RemoteError as exc:
                # "Please remove all files first.": a new-version draft already exists; use it
                if exc.status == 400 and "remove all files" in exc.message:
                    found = open_draft()
                    if found is not None:
                        return found
                raise
            # the docs claim the original is returned; the server returns the new draft. Be right either way.
            # An answer without the draft's id (a proxy, a server change) is not trusted: find the draft instead.
            ok = isinstance(dep, dict) and dep.get("id") is not None and not dep.get("submitted")
            return dep if ok and str(dep["id"]) != str(published["id"]) else open_draft()

        draft: dict[str, Any] | None = self._recovering(do, open_draft)
        if draft is None:
            raise CartsyncError(f"Zenodo made a new version of {published['id']} but its draft cannot be found",
                                "re-run in a minute (the search index may lag)")
        self._record(draft)
        return draft

    def prepare(self, plan: Plan) -> list[Change]:
        """Make sure there is a draft to write to, with the wanted metadata; record it. Sets `draft`, `files`."""
        changes: list[Change] = []
        files_change = bool(plan.uploads or plan.of(Kind.DELETE))
        dep = self.current
        draft: dict[str, Any] | None
        if dep is None or self.cfg.publish or (dep.get("submitted") and files_change):
            self.state.check_writable()      # say so before creating, versioning or publishing, not after
        if dep is None:
            draft = self._create()
            changes.append(Change("+", "deposition", f"created draft {draft['id']}"))
        elif dep.get("submitted"):
            if files_change:
                draft = self._new_version(dep)
                changes.append(Change("+", "deposition", f"new version draft {draft['id']} of record {dep['id']}"))
            elif self.cfg.publish and metadata_diff(self.want, dep.get("metadata") or {}):
                draft = self.retrying(lambda: self.api.call(
                    "POST", f"/deposit/depositions/{dep['id']}/actions/edit"))
                changes.append(Change("~", "deposition", f"editing published record {dep['id']}"))
            else:
                draft = None
        else:
            draft = dep
        if draft is None:
            return changes
        draft = self.find.deposition(draft["id"])
        if files_change and draft.get("state") == "inprogress":
            raise CartsyncError(f"deposition {draft['id']} is a published record being edited; its files are "
                                "locked", "publish or discard that edit on Zenodo, then re-run (cartsync will make "
                                "a new version)")
        self.draft = draft
        self.files = remote_files(draft)
        have = draft.get("metadata") or {}
        diffs = metadata_diff(self.want, have)
        if diffs:
            body = {"metadata": merged(self.want, have)}
            self.retrying(lambda: self.api.call("PUT", f"/deposit/depositions/{draft['id']}", json=body))
            changes.append(Change("~", "metadata", ", ".join(d[0] for d in diffs)))
        return changes

    def put(self, local: LocalFile, key: str, progress: Progress) -> RemoteFile:
        """Send one file into the draft and verify what Zenodo says it stored (one try; the executor retries)."""
        draft = self.draft
        assert draft is not None, "prepare() must run first"
        if key in self._retried:
            # the previous attempt may have landed although its answer was lost: look before re-sending
            current = remote_files(self.find.deposition(draft["id"]))
            if key in current and (current[key].md5, current[key].size) == (local.md5, local.size):
                return current[key]
        self._retried.add(key)
        resp = self.api.put_file(draft["links"]["bucket"], key, local.path, local.size, progress)
        self._retried.discard(key)
        if not (resp or {}).get("checksum"):
            # not a checksum mismatch (retried): the server did not say what it stored, and asking again won't help
            raise RemoteError(f"{key}: Zenodo answered the upload without a checksum, so it cannot be verified",
                              f"check that {self.cfg.url} is Zenodo (or a proxy passing its answers on "
                              "unchanged); re-run to try again")
        md5, size = md5_of(str(resp.get("checksum", ""))), int(resp.get("size", -1))
        if (md5, size) != (local.md5, local.size):
            raise VerifyError(f"{key}: Zenodo stored md5 {md5}, {size} bytes; expected {local.md5}, {local.size}")
        return RemoteFile(key, size, md5)

    def remove(self, remote: RemoteFile) -> None:
        """Delete one file from the draft; one already gone (a retried delete that had succeeded) is fine."""
        assert self.draft is not None, "prepare() must run first"
        current = self.files.get(remote.key)
        file_id = current.get("id") if current else remote.get("id")
        try:
            self.api.call("DELETE", f"/deposit/depositions/{self.draft['id']}/files/{file_id}")
        except RemoteError as exc:
            if exc.status != 404:
                raise

    def publish_if_asked(self, ok: bool) -> list[Change]:
        """Publish the draft when the manifest says `publish: true` and every transfer succeeded; record the DOI."""
        draft = self.draft
        if not self.cfg.publish or not ok or draft is None:
            return []
        dep_id = draft["id"]

        def do() -> Any:
            return self.api.call("POST", f"/deposit/depositions/{dep_id}/actions/publish")

        def recover() -> Any:
            dep = self.find.deposition(dep_id)
            return dep if dep.get("submitted") and dep.get("state") == "done" else None

        dep = self._recovering(do, recover)
        doi = dep.get("doi") or (dep.get("metadata") or {}).get("doi", "")
        url = (dep.get("links") or {}).get("html") or (dep.get("links") or {}).get("record_html", "")
        self._record(dep, doi=doi, record_url=url, published=True)
        return [Change("+", "published", f"DOI {doi} — {url}")]
