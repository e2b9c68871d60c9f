"""The writes that move a deposition through its lifecycle: create, new version, edit, metadata, publish.

Each non-idempotent call (create, newversion, publish) may succeed on the
server while its answer is lost (a 504, a reset). Before retrying one, we
re-read the remote state and adopt what the lost call made, so a retry never
creates a second deposition or version.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import CartsyncError, RemoteError
from ...model import Change, Kind, Plan
from .meta import merged, metadata_diff, remote_files

if TYPE_CHECKING:      # for annotations only: the backend imports this module when it writes
    from .backend import ZenodoBackend

log = logging.getLogger(__name__)


def _recovering(backend: ZenodoBackend, do: Callable[[], Any], recover: Callable[[], Any]) -> Any:
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

    return backend.retrying(attempt)


def _get(backend: ZenodoBackend, dep_id: Any) -> dict[str, Any]:
    return backend._get(f"/deposit/depositions/{dep_id}")


def _create(backend: ZenodoBackend) -> dict[str, Any]:
    def do() -> Any:
        return backend.api.call("POST", "/deposit/depositions", json={"metadata": backend.want_meta})

    def recover() -> Any:
        # the search index may lag behind a creation: look a few times before concluding there is none
        for delay in (0.0, 0.5, 1.0, 2.0):
            time.sleep(delay * backend.policy.base / 0.5)
            found = backend._find_by_marker()
            if found is not None:
                return found
        return None

    dep = _recovering(backend, do, recover)
    backend.state.write(deposition_id=int(dep["id"]), concept_id=str(dep.get("conceptrecid", "")),
                        server=backend.cfg.url)
    return dep


def _new_version(backend: ZenodoBackend, published: dict[str, Any]) -> dict[str, Any]:
    def open_draft() -> Any:
        return backend._concept(published)[1]

    def do() -> Any:
        try:
            dep = backend.api.call("POST", f"/deposit/depositions/{published['id']}/actions/newversion")
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

    draft = _recovering(backend, do, open_draft)
    if draft is None:
        raise CartsyncError(f"Zenodo made a new version of {published['id']} but its draft cannot be found",
                            "re-run in a minute (the search index may lag)")
    backend.state.write(deposition_id=int(draft["id"]), concept_id=str(draft.get("conceptrecid", "")),
                        server=backend.cfg.url)
    return draft


def prepare(backend: ZenodoBackend, plan: Plan) -> list[Change]:
    """Make sure there is a draft to write to, with the wanted metadata; record it."""
    changes: list[Change] = []
    files_change = bool(plan.uploads or plan.of(Kind.DELETE))
    dep = backend.dep
    draft: dict[str, Any] | None
    if dep is None or backend.cfg.publish or (dep.get("submitted") and files_change):
        backend.state.check_writable()      # say so before creating, versioning or publishing, not after
    if dep is None:
        draft = _create(backend)
        changes.append(Change("+", "deposition", f"created draft {draft['id']}"))
    elif dep.get("submitted"):
        if files_change:
            draft = _new_version(backend, dep)
            changes.append(Change("+", "deposition", f"new version draft {draft['id']} of record {dep['id']}"))
        elif backend.cfg.publish and metadata_diff(backend.want_meta, dep.get("metadata") or {}):
            draft = backend.retrying(lambda: backend.api.call(
                "POST", f"/deposit/depositions/{dep['id']}/actions/edit"))
            changes.append(Change("~", "deposition", f"editing published record {dep['id']}"))
        else:
            draft = None
    else:
        draft = dep
    if draft is None:
        return changes
    draft = _get(backend, draft["id"])          # fresh: list hits lack links.bucket, file ids change
    if files_change and draft.get("state") == "inprogress":
        raise CartsyncError(f"deposition {draft['id']} is a published record being edited; its files are locked",
                            "publish or discard that edit on Zenodo, then re-run (cartsync will make a new version)")
    backend.draft = draft
    backend.files = remote_files(draft)
    have = draft.get("metadata") or {}
    diffs = metadata_diff(backend.want_meta, have)
    if diffs:
        body = {"metadata": merged(backend.want_meta, have)}
        backend.retrying(lambda: backend.api.call("PUT", f"/deposit/depositions/{draft['id']}", json=body))
        changes.append(Change("~", "metadata", ", ".join(d[0] for d in diffs)))
    return changes


def publish_if_asked(backend: ZenodoBackend, ok: bool) -> list[Change]:
    draft = backend.draft
    if not backend.cfg.publish or not ok or draft is None:
        return []
    dep_id = draft["id"]

    def do() -> Any:
        return backend.api.call("POST", f"/deposit/depositions/{dep_id}/actions/publish")

    def recover() -> Any:
        dep = _get(backend, dep_id)
        return dep if dep.get("submitted") and dep.get("state") == "done" else None

    dep = _recovering(backend, do, recover)
    doi = dep.get("doi") or (dep.get("metadata") or {}).get("doi", "")
    url = (dep.get("links") or {}).get("html") or (dep.get("links") or {}).get("record_html", "")
    backend.state.write(deposition_id=int(dep["id"]), concept_id=str(dep.get("conceptrecid", "")), doi=doi,
                        record_url=url, published=True, server=backend.cfg.url)
    return [Change("+", "published", f"DOI {doi} — {url}")]
