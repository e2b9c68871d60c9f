"""Saved plans: `plan M --out plan.json` writes a plan with a fingerprint of what it was computed from;
`apply plan.json` applies exactly that plan, or refuses it as stale (Terraform's "saved plan is stale").

The fingerprint is: the manifest's SHA-256 (its text, not the text itself), every selected local file
with its size and MD5, and each target's listing (key → size and ETag/MD5). Applying lists each target once
(the listing apply makes anyway, under the lock), re-surveys the source (cached hashes make that cheap),
compares all three with the file, and then re-plans from those identical inputs: the planner is pure, so the
plan is the saved one — and that is checked too, action by action. Any difference refuses the plan, naming
what changed. A plan file holds keys, sizes, hashes, the target URLs (which never hold credentials) and the
plan; never storage_options, a token or the manifest's text.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__
from .errors import CartsyncError
from .model import LocalFile, Plan, RemoteFile
from .render import plan_json

FORMAT = "cartsync-saved-plan"
VERSION = 1


class StalePlan(CartsyncError):
    """What a saved plan was computed from has changed since."""


def is_saved_plan(path: Path) -> bool:
    """Whether `path` is a saved plan (JSON with our format tag) rather than a manifest."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(200).lstrip()
    except OSError:
        return False
    return head.startswith(b"{") and FORMAT.encode() in head


def manifest_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_entries(local: dict[str, LocalFile]) -> dict[str, list[Any]]:
    return {k: [f.size, f.md5] for k, f in sorted(local.items())}


def listing_entries(remote: dict[str, RemoteFile]) -> dict[str, list[Any]]:
    return {k: [r.size, r.etag or r.md5] for k, r in sorted(remote.items())}


@dataclass
class Captured:
    """What `engine.plan(on_inputs=…)` saw: filled in by `capture`."""

    source: dict[str, list[Any]] | None = None
    listings: dict[str, dict[str, list[Any]]] | None = None

    def capture(self, local: dict[str, LocalFile], remotes: dict[str, dict[str, RemoteFile]]) -> None:
        self.source = source_entries(local)
        self.listings = {name: listing_entries(r) for name, r in remotes.items()}


def fingerprint(manifest_sha: str, source: dict[str, Any], listings: dict[str, Any]) -> str:
    blob = json.dumps([manifest_sha, source, listings], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def document(manifest_path: Path, targets: tuple[str, ...], allow_mass_delete: bool, captured: Captured,
             plans: list[Plan]) -> dict[str, Any]:
    """The saved plan, as JSON-ready data."""
    assert captured.source is not None and captured.listings is not None
    sha = manifest_digest(manifest_path)
    return {
        "format": FORMAT, "version": VERSION, "cartsync": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "manifest": {"path": str(manifest_path.resolve()), "sha256": sha},
        "options": {"targets": list(targets), "allow_mass_delete": allow_mass_delete},
        "fingerprint": fingerprint(sha, captured.source, captured.listings),
        "source": captured.source,
        "listings": captured.listings,
        "plans": [plan_json(p) for p in plans],
    }


def write(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=1) + "\n")


def load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CartsyncError(f"saved plan {path}: cannot be read ({exc})", "write it again with cartsync plan "
                            "MANIFEST --out FILE") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise CartsyncError(f"saved plan {path}: not a version-{VERSION} cartsync plan",
                            "write it again with this cartsync: cartsync plan MANIFEST --out FILE")
    return doc


def _diff(kind: str, saved: dict[str, list[Any]], now: dict[str, list[Any]]) -> list[str]:
    out = []
    for key in sorted(set(saved) | set(now)):
        before, after = saved.get(key), now.get(key)
        if before == after:
            continue
        if before is None:
            out.append(f"{kind} {key} is new")
        elif after is None:
            out.append(f"{kind} {key} is gone")
        elif before[0] != after[0]:
            out.append(f"{kind} {key} changed (size {before[0]} → {after[0]})")
        else:
            out.append(f"{kind} {key} changed (content)")
    return out


class Checker:
    """Compares what apply sees with a saved plan: `inputs` before planning, `plans` after."""

    def __init__(self, path: Path, doc: dict[str, Any]) -> None:
        self.path, self.doc = path, doc
        manifest = Path(doc["manifest"]["path"])
        self.manifest = manifest

    def _stale(self, changes: list[str]) -> StalePlan:
        shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        return StalePlan(f"saved plan {self.path} is stale: {shown}",
                         f"re-plan: cartsync plan {self.manifest} --out {self.path}, review it, then apply it")

    def check_manifest(self) -> None:
        try:
            sha = manifest_digest(self.manifest)
        except OSError:
            raise self._stale([f"the manifest {self.manifest} is gone"]) from None
        if sha != self.doc["manifest"]["sha256"]:
            raise self._stale([f"the manifest {self.manifest} changed"])

    def inputs(self, local: dict[str, LocalFile], remotes: dict[str, dict[str, RemoteFile]]) -> None:
        changes = _diff("source file", self.doc["source"], source_entries(local))
        for name, remote in remotes.items():
            changes += _diff(f"target {name}: file", self.doc["listings"].get(name, {}), listing_entries(remote))
        if changes:
            raise self._stale(changes)

    def plans(self, plans: list[Plan]) -> None:
        if [plan_json(p) for p in plans] != self.doc["plans"]:
            raise self._stale(["the plan computed now differs from the saved one (another cartsync version?)"])
