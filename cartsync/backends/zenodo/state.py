"""The state file beside the manifest: per target, the deposition a run created (and its DOI once published).

JSON, no secrets, safe to commit. A `deposition: new` target records the id it created here; when the record
is lost the deposition is found again by the marker in its notes, so the file is a shortcut,
never the only copy of what was made. Writes go through a temporary file and `os.replace`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...errors import CartsyncError, PlanError


class StateFile:
    """Per-target records beside the manifest (JSON; no secrets; safe to commit)."""

    def __init__(self, path: Path, target: str) -> None:
        self.path, self.target = path, target

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise self._unreadable(str(exc)) from None
        record = data.get("targets", {}).get(self.target, {}) if isinstance(data, dict) else None
        if not isinstance(record, dict) or not isinstance(data.get("targets", {}), dict):
            raise self._unreadable("expected a JSON object")
        dep = record.get("deposition_id")
        if dep is not None and not (isinstance(dep, int) or str(dep).isdigit()):
            raise self._unreadable(f"deposition_id {dep!r} is not a number")
        return dict(record)

    def _unreadable(self, why: str) -> PlanError:
        return PlanError(f"state file {self.path} is unreadable ({why})",
                         "fix or remove it; cartsync will find its deposition by its marker")

    def write(self, **record: Any) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        data.setdefault("cartsync_state", 1)
        data.setdefault("targets", {}).setdefault(self.target, {}).update(record)
        tmp = self.path.with_name(self.path.name + f".tmp{os.getpid()}")
        try:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._unwritable(exc, record.get("deposition_id")) from None

    def check_writable(self) -> None:
        """Before creating anything remotely: the record of what is created must be keepable."""
        probe = self.path.with_name(self.path.name + f".probe{os.getpid()}")
        try:
            probe.touch()
            probe.unlink()
        except OSError as exc:
            raise self._unwritable(exc, None) from None

    def _unwritable(self, exc: OSError, dep: Any) -> CartsyncError:
        made = f"; it records deposition {dep}, which a re-run finds again by its marker" if dep else ""
        return CartsyncError(f"state file {self.path} cannot be written ({exc.strerror}){made}",
                             f"make {self.path.parent} writable, or copy the manifest to a writable folder and "
                             "run it from there (adjust source.dir, which is relative to the manifest)")
