"""Which deposition is a target's, and what its concept holds now. Reads only; never writes.

A target names its deposition by id, or says `deposition: new`: then the id is the state file's record,
or, when that record was lost (or names a deposition deleted since), the newest deposition whose notes
carry the target's marker (one search). A published record is one version of a concept: one more search
finds the latest published version and an open new-version draft, and the files are compared with that
draft if there is one (a draft an interrupted run left is reused, not duplicated).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...config import ZenodoConfig
from ...errors import RemoteError
from .state import StateFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Remote:
    """The target's deposition as found on the server."""
    current: dict[str, Any]            # the deposition the files are compared with (an open draft if any)
    published: dict[str, Any] | None   # the latest published version of its concept; None: never published


class Finder:
    """Looks the target's deposition up. `get(path)` is one retried GET of the API, returning its JSON."""

    def __init__(self, get: Callable[[str], Any], cfg: ZenodoConfig, state: StateFile, target: str) -> None:
        self.get, self.cfg, self.state, self.target = get, cfg, state, target

    def deposition(self, dep_id: Any) -> dict[str, Any]:
        """One deposition, fresh (search hits lack `links.bucket`, and file ids change)."""
        dep: dict[str, Any] = self.get(f"/deposit/depositions/{dep_id}")
        return dep

    def locate(self) -> Remote | None:
        """The target's deposition and concept; None: there is none yet (`deposition: new` only)."""
        dep_id = self.cfg.deposition
        if dep_id == "new":
            dep_id = str(self.state.read().get("deposition_id") or "")
            if not dep_id:
                found = self.by_marker()
                dep_id = str(found["id"]) if found else ""
        if not dep_id:
            return None
        try:
            dep = self.deposition(dep_id)
        except RemoteError as exc:
            if exc.status == 404 and self.cfg.deposition == "new":
                found = self.by_marker()
                if found is None:
                    log.warning("deposition %s in %s no longer exists; a new one will be created", dep_id,
                                self.state.path)
                    return None
                dep = self.deposition(found["id"])
            else:
                if exc.status == 404:
                    raise self._missing(dep_id) from None
                raise
        if not dep.get("submitted"):
            return Remote(dep, None)
        latest, draft = self.concept(dep)
        published = latest or dep
        return Remote(draft or published, published)

    def _missing(self, dep_id: str) -> RemoteError:
        return RemoteError(f"target {self.target}: Zenodo deposition {dep_id} does not exist",
                           "check the id (the number in the deposition's URL) and the server url")

    def concept(self, dep: Mapping[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(latest published version, open new-version draft) of the deposition's concept; one search."""
        concept = dep.get("conceptrecid")
        if not concept:
            return None, None
        hits = self.get(f"/deposit/depositions?q=conceptrecid:{concept}&allversions=true&size=100") or []
        hits = [h for h in hits if str(h.get("conceptrecid")) == str(concept)]
        published = [h for h in hits if h.get("submitted")]
        drafts = [h for h in hits if not h.get("submitted")]
        latest = max(published, key=lambda h: int(h["id"]), default=None)
        draft = max(drafts, key=lambda h: int(h["id"]), default=None)
        return latest, draft

    def by_marker(self) -> dict[str, Any] | None:
        """The deposition an earlier run created for this manifest+target, if its record was lost."""
        marker = self.cfg.marker
        hits = self.get(f'/deposit/depositions?q="{marker}"&size=100') or []
        mine = [h for h in hits if marker in str((h.get("metadata") or {}).get("notes", ""))]
        return max(mine, key=lambda h: int(h["id"]), default=None)
