"""Zenodo metadata as a declarative value: what the manifest wants, and how it differs from the server's."""
from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import Any

from ...model import RemoteFile

_PERSON_KEYS = ("name", "affiliation", "orcid", "gnd")


def _person(c: Any) -> dict[str, str]:
    if isinstance(c, str):
        return {"name": c}
    return {k: str(c[k]) for k in _PERSON_KEYS if isinstance(c, Mapping) and c.get(k)}


def desired_metadata(meta: Mapping[str, Any], marker: str) -> dict[str, Any]:
    """The metadata the deposition should have: the manifest's, creators as objects, plus our marker in notes."""
    want = dict(meta)
    for key in ("creators", "contributors"):
        if key in want:
            want[key] = [dict(_person(c), **({"type": c["type"]} if isinstance(c, Mapping) and "type" in c else {}))
                         for c in want[key]]
    note = f"Published with cartsync ({marker})."
    want["notes"] = f"{want['notes'].rstrip()}\n\n{note}" if want.get("notes") else note
    return want


def _text(value: Any) -> str:
    # Zenodo stores description/notes as sanitised HTML: compare the text, not the markup.
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", str(value)))).strip()


def _norm(field: str, value: Any) -> Any:
    if value is None:
        return None
    if field in ("description", "notes", "title"):
        return _text(value)
    if field == "license":
        return str(value.get("id") if isinstance(value, Mapping) else value).lower()
    if field in ("creators", "contributors") and isinstance(value, list):
        return [_person(c) for c in value]
    if field == "keywords" and isinstance(value, list):
        return [str(v) for v in value]
    return value


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else repr(value if len(value) <= 60 else value[:57] + "…")
    return "(unset)" if value is None else text


def metadata_diff(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(field, current, wanted) for each field the manifest sets that the server holds differently.

    Fields the manifest does not set (publication_date, prereserve_doi, …) are the server's business."""
    out = []
    for field in want:
        if _norm(field, want[field]) != _norm(field, have.get(field)):
            out.append((field, _show(have.get(field)), _show(want[field])))
    return out


def merged(want: Mapping[str, Any], have: Mapping[str, Any]) -> dict[str, Any]:
    """The full metadata to PUT (Zenodo replaces it wholesale): the server's, with the manifest's fields set."""
    out = {k: v for k, v in have.items() if k not in ("prereserve_doi",)}
    out.update(want)
    return out


def md5_of(checksum: str) -> str:
    return checksum.split(":", 1)[1] if checksum.startswith("md5:") else checksum


def remote_files(dep: Mapping[str, Any]) -> dict[str, RemoteFile]:
    out = {}
    for f in dep.get("files") or []:
        name = f.get("filename") or f.get("key")
        checksum = f.get("checksum")        # absent from a non-conforming server: "no checksum", not "differs"
        out[name] = RemoteFile(name, int(float(f.get("filesize", f.get("size", 0)))),
                               md5_of(str(checksum)) if checksum else None, None, (("id", str(f.get("id", ""))),))
    return out
