"""Zenodo targets from the public side: the latest published version's files, at Zenodo's two public URLs.

Zenodo serves a published record's files at two URLs that behave differently (zenodo/zenodo#2593):
  record URL  <server>/records/<id>/files/<name>              answers Range (206), sends no CORS headers;
  API URL     <server>/api/records/<id>/files/<name>/content  sends CORS headers, ignores Range (200, whole file).
A browser viewer on another origin needs both on one URL to stream PMTiles, so this module probes each URL kind
with one ranged GET carrying Origin and says plainly which does what. The catalog and the files are read
through the API URL (the one a browser may read); PMTiles headers through the record URL (the one that serves
ranges). A draft has no public URLs at all: only a published version is checked.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from . import probes
from .model import Finding, TargetCheck, Verdict
from .web import request

ISSUE = "zenodo/zenodo#2593"


def record_url(server: str, record: Any, name: str) -> str:
    return f"{server}/records/{record}/files/{quote(name, safe='')}"


def api_url(server: str, record: Any, name: str) -> str:
    return f"{server}/api/records/{record}/files/{quote(name, safe='')}/content"


def unpublished(result: TargetCheck, dep: Mapping[str, Any] | None) -> None:
    if dep is None:
        result.add(Finding("zenodo", "record", Verdict.FAILED, "no deposition for this target yet",
                           "run `cartsync apply` for this target, publish it (publish: true), then check again"))
    else:
        result.add(Finding("zenodo", "record", Verdict.FAILED,
                           f"deposition {dep.get('id')} is a draft: a draft has no public file URLs",
                           "set publish: true and run `cartsync apply` (publishing mints a DOI and cannot be "
                           "undone), then check again"))


def _behaviour(url: str, origin: str) -> tuple[bool, bool, str]:
    a = request("GET", url, {"Origin": origin, "Range": f"bytes=0-{probes.HEADER_LEN - 1}"}, limit=probes.HEADER_LEN)
    ranges = a.status == 206
    allow = a.header("access-control-allow-origin")
    cors = allow in ("*", origin)
    said = (f"{a.line}; ranges: {'yes' if ranges else 'no'}; CORS: "
            + (f"yes (Access-Control-Allow-Origin: {allow})" if cors else
               "no (" + (f"Access-Control-Allow-Origin: {allow}" if allow else "no Access-Control-Allow-Origin") + ")"))
    return ranges, cors, said


def check_record(result: TargetCheck, server: str, record: Mapping[str, Any], names: Mapping[str, Any],
                 origin: str, probe_files: bool = True) -> None:
    """Findings for the published `record`; `names`: record file name → LocalFile."""
    rid = record.get("record_id") or record.get("id")
    catalogs = [n for n, f in names.items() if f.catalog]
    for name in catalogs:
        result.add(probes.catalog(api_url(server, rid, name), name, names[name].md5 or ""))
    if probe_files:
        for name in sorted(names):
            found = probes.file_present(api_url(server, rid, name), name, names[name].size)
            result.add(found)
    tiles = sorted(n for n in names if n.endswith(".pmtiles"))
    for name in tiles:
        result.add(probes.pmtiles(record_url(server, rid, name), name, names[name].size))
    sample = (tiles or catalogs or sorted(names))[:1]
    if not sample:
        return
    kinds = {"record URL": record_url(server, rid, sample[0]), "API URL": api_url(server, rid, sample[0])}
    both = []
    for kind, url in kinds.items():
        ranges, cors, said = _behaviour(url, origin)
        if ranges and cors:
            both.append(kind)
        result.add(Finding("zenodo", f"{kind} {url}", Verdict.PASSED if ranges and cors else Verdict.WARNING, said))
    if both:
        result.add(Finding("zenodo", "browser viewer", Verdict.PASSED,
                           f"the {both[0]} serves ranges with CORS: a browser viewer can stream from it"))
    elif tiles:
        result.add(Finding("zenodo", "browser viewer", Verdict.FAILED,
                           f"no URL of record {rid} serves both ranges and CORS ({ISSUE}): a viewer on another origin "
                           "cannot stream these PMTiles from Zenodo; the catalog and small files it can read whole "
                           "from the API URL",
                           "for a browser viewer, publish the same dataset to an S3 target as well and open it "
                           "there; Zenodo stays the citable copy"))
    else:
        result.add(Finding("zenodo", "browser viewer", Verdict.PASSED,
                           "no PMTiles in the record; a viewer can read its files whole from the API URL "
                           f"(CORS there, no ranges: {ISSUE})"))
