"""Where a target writes, checked before anything runs: URL forms a store would take literally, secrets
pasted into URLs, and targets that overlap the source, each other or the manifest's own files.

Object stores keep `//`, `.`, `..`, a backslash and edge spaces in a key as written, so such a URL would put
unintended keys on the store: it is refused with the fixed URL. A URL that holds a credential is refused
without being echoed. Local targets are compared through symlinks (realpath): a target inside the source
would publish into itself, and one holding the source or the manifest would delete them with delete: true.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from . import redact
from .config import STATE_SUFFIX, Manifest, TargetConfig
from .problems import Problems

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def holds_credential(url: str) -> bool:
    """True if `url` seems to carry a secret (user:password@, a `token=` query, a known key form)."""
    return bool(re.search(r"(?i)(secret|token|password|key)=", url) or re.match(r"^[a-z0-9]+://[^/@]*(:[^/@]*)?@", url)
                or redact.url_credential(url))


def store_url_problem(url: str, endpoint: object) -> tuple[str, str, str] | None:
    """(which key: "url" or "endpoint_url", problem, fix) for a url target's URL and endpoint, the first
    found; None if both are fine. Never echoes a value that may hold a secret."""
    bucket = url.split("://", 1)[1].split("/", 1)[0] if url.startswith(("s3://", "s3a://")) else None
    if holds_credential(url):
        return "url", "looks like it holds a credential", redact.URL_HINT
    if isinstance(endpoint, str) and holds_credential(endpoint):
        return "endpoint_url", "looks like it holds a credential", redact.URL_HINT
    if bucket is not None and not _BUCKET_RE.fullmatch(bucket):
        return ("url", f"{json.dumps(bucket)} is not a valid S3 bucket name",
                "use 3-63 lowercase letters, digits, '.' and '-'")
    if (malformed := url_problem(url)) is not None:
        return "url", f"{json.dumps(url)} {malformed[0]}", malformed[1]
    return None


def url_problem(url: str) -> tuple[str, str] | None:
    """(problem, fix) for a store URL whose form would put unintended keys on the store: object stores keep
    `//`, `.` and `..` in a key as written (s3://b//p stores "/p/a.tsv"), and a space at either end is part of
    the key too. Local paths are normalized instead (manifest.expand_path)."""
    if url != url.strip():
        return "has a space at the start or end, which would become part of every key", f"write {url.strip()!r}"
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        return "holds a control character", "remove it"
    if "://" not in url or local_path(url) is not None:
        return None
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    if "\\" in path:
        return ("has a backslash, which the store would keep in every key (it separates no folders there)",
                f"write {scheme}://{host}/{path.replace(chr(92), '/')}")
    segments = path.rstrip("/").split("/") if path.rstrip("/") else []
    bad = [seg for seg in segments if seg in ("", ".", "..")]
    if not bad:
        return None
    kept: list[str] = []
    for seg in segments:
        if seg == "..":
            if kept:
                kept.pop()
        elif seg not in ("", "."):
            kept.append(seg)
    fixed = f"{scheme}://{host}" + ("/" + "/".join(kept) if kept else "")
    what = {"": "an empty path segment (//)", ".": "a '.' path segment", "..": "a '..' path segment"}[bad[0]]
    return f"has {what}, which the store would keep in every key", f"write {fixed}"


def local_path(url: str) -> str | None:
    """The folder of a local target (a plain path or file://), else None (a store cartsync cannot see into)."""
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return rest if scheme in ("file", "local") else None


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _shown(given: Path | str, real: str) -> str:
    return f"{given}" if str(given) == real else f"{given} (through a symlink: {real})"


def check_overlaps(manifest: Manifest, indexes: list[int], problems: Problems) -> None:
    """A local target must not overlap the source (either way, through symlinks) nor hold the manifest, its
    state file, the catalog or a Zenodo token file: with delete: true it would delete them, and a target
    inside the source would be published into itself, one level deeper each run. Two targets must not
    overlap each other either. `indexes`: each target's index in the manifest's `targets` list."""
    src = manifest.source
    source_real = os.path.realpath(src.dir)
    # the state file as named beside the manifest's path as given (a symlink's folder too): the real one,
    # beside the real manifest (state_file_for), is in any folder that holds the manifest itself
    beside = manifest.path.with_name(manifest.path.stem + STATE_SUFFIX).resolve()
    own = [("the manifest", manifest.path.resolve()), ("its state file", beside)]
    if src.catalog is not None:
        own.append(("the catalog", src.catalog))
    own += [("the token file of target " + t.name, t.zenodo.token_file) for t in manifest.targets
            if t.zenodo is not None and t.zenodo.token_file is not None]
    seen: list[tuple[tuple[str, ...], str, str]] = []
    fix = "choose a target folder outside the source folder"
    for i, target in zip(indexes, manifest.targets, strict=True):
        if target.zenodo is not None:
            continue
        where = ["targets", i, "url"]
        folder = local_path(target.url)
        ident = _store_location(target, folder)
        for other_ident, other_name, other_url in seen:
            a, b = "/".join(ident), "/".join(other_ident)
            if a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/"):
                problems.add(where, f"{target.url} overlaps target {other_name} ({other_url})",
                             "give each target its own folder or prefix: a target holding another one would "
                             "take the other's files for its own (and delete them with delete: true)")
                break
        seen.append((ident, target.name, target.url))
        if folder is None:
            continue
        real = os.path.realpath(folder)
        shown = _shown(folder, real)
        if real == source_real:
            problems.add(where, f"{shown} is the source folder {src.dir}", fix)
        elif _inside(source_real, real):
            problems.add(where, f"{shown} contains the source folder {_shown(src.dir, source_real)}",
                         fix + " (with delete: true cartsync would delete the source)")
        elif _inside(real, source_real):
            problems.add(where, f"{shown} is inside the source folder {_shown(src.dir, source_real)}",
                         fix + " (each run would publish the last copy again, one level deeper)")
        else:
            for what, path in own:
                path_real = os.path.realpath(path)
                if _inside(path_real, real):
                    problems.add(where, f"{shown} holds {what} {_shown(path, path_real)}",
                                 f"choose a target folder that does not hold {what}")
                    break


def _store_location(target: TargetConfig, folder: str | None) -> tuple[str, ...]:
    """Where a target's files are, comparable between targets: a real local folder, or scheme, endpoint
    and path of a store. (A location to compare, not an identity to hash: see identity.py for those.)"""
    if folder is not None:
        return ("file", os.path.realpath(folder).lstrip("/"))
    scheme, rest = target.url.split("://", 1) if "://" in target.url else ("", target.url)
    scheme = {"s3a": "s3"}.get(scheme, scheme)
    endpoint = str(target.storage_options.get("endpoint_url") or "")
    return (scheme, endpoint, rest.strip("/"))
