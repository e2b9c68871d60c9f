"""Load a manifest: safe YAML, JSON-schema validation, semantic checks → config.Manifest.

Every problem names the manifest file, the line, the key path and, where we
can, the fix; all problems are collected (problems.py) and raised together.
The values built are config.py's; URL and overlap checks are target_urls.py's.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from . import identity, patterns, redact, yamlsafe
from .catalog_format import CATALOG_NAME, PARTS
from .config import (
    DEFAULT_PART_SIZE,
    Manifest,
    SourceConfig,
    TargetConfig,
    ZenodoConfig,
    delete_limit,
    parse_size,
    state_file_for,
)
from .errors import ManifestError
from .problems import Problems, describe, duplicate_keys, schema_problem
from .target_urls import check_overlaps, holds_credential, store_url_problem


def _schema_text() -> str:
    # next to this module, inside the package (and the wheel); importlib.resources would cost ~7 ms of imports
    return (Path(__file__).parent / "schemas" / "manifest.schema.json").read_text(encoding="utf-8")


def schema() -> dict[str, Any]:
    return json.loads(_schema_text())


def _valid_marker(text: str) -> Path:
    """Where a manifest's passing schema check is remembered: keyed by the manifest's and the schema's
    bytes, so any edit to either checks again. Saves importing jsonschema (~50 ms) on every re-run."""
    from .inventory import cache_dir
    digest = hashlib.sha256(_schema_text().encode() + b"\0" + text.encode()).hexdigest()
    return cache_dir() / "valid-manifests" / digest


def _remember_valid(marker: Path) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:
        pass     # a cache that cannot be written only means checking again next time


def expand_path(text: str, base: Path) -> Path:
    """Expand ~ and ${VAR}; resolve relative paths against `base` (the manifest's folder)."""
    missing = [v for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text) if v not in os.environ]
    if missing:
        raise ValueError(f"environment variable {', '.join(missing)} is not set")
    expanded = os.path.expanduser(os.path.expandvars(text))
    p = Path(expanded)
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


# ---- loading ----------------------------------------------------------------------------------

def load(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest; raise ManifestError listing every problem found."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError([f"{file}: no such file"], "check the manifest path") from None
    except UnicodeDecodeError as exc:
        raise _not_utf8(file, exc.object, exc.start) from None
    except OSError as exc:
        raise ManifestError([f"{file}: cannot read: {exc}"]) from None
    if "\x00" in text:          # UTF-16 without a byte-order mark decodes as UTF-8 full of NULs
        raise _not_utf8(file, text.encode(), text.index("\x00"))
    try:
        parsed = yamlsafe.parse(text)
    except yamlsafe.YamlProblem as exc:
        where = f"{file}:{exc.line}" if exc.line else str(file)
        raise ManifestError([f"{where}: not valid YAML: {exc.problem}"], exc.hint) from None
    return from_data(parsed.data, file, parsed.root, text)


def _not_utf8(file: Path, data: bytes, at: int) -> ManifestError:
    """A manifest in another encoding, said as such (not as a codec error or a YAML syntax error)."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:at + 2]:
        return ManifestError([f"{file}: is UTF-16 text; cartsync reads manifests as UTF-8"],
                             f"save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 {file} > utf8.yaml, then use "
                             "utf8.yaml), or choose UTF-8 in your editor's save dialog")
    line = data[:at].count(b"\n") + 1
    return ManifestError([f"{file}:{line}: is not UTF-8 (byte 0x{data[at]:02x}); cartsync reads manifests as UTF-8"],
                         f"save it as UTF-8 (e.g. iconv -f latin1 -t UTF-8 {file} > utf8.yaml, then use utf8.yaml)")


def from_data(data: Any, file: Path, root: yaml.Node | None = None, text: str | None = None) -> Manifest:
    """Validate manifest data (from YAML `text`, or built in memory by upload-aws/upload-zenodo)."""
    problems = Problems(file, root)
    for line, path, message in duplicate_keys(root, []):
        problems.add_line(line, path, message)
    if not isinstance(data, dict):
        problems.add([], f"expected a mapping with version, source and targets, got {describe(data)}")
        raise ManifestError(problems.items)
    marker = _valid_marker(text) if text is not None else None
    known_valid = marker is not None and not problems.items and marker.exists()
    if not known_valid:
        import jsonschema
        validator = jsonschema.Draft202012Validator(schema())
        for err in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
            schema_problem(err, problems)
    manifest = _build(file, data, problems)
    if problems.items:
        raise ManifestError(problems.sorted())
    assert manifest is not None
    if marker is not None and not known_valid:
        _remember_valid(marker)
    return manifest


def _build(file: Path, data: dict[str, Any], problems: Problems) -> Manifest | None:
    """Semantic checks on whatever is well-typed, and the Manifest when all is well."""
    base = file.resolve().parent
    src: dict[str, Any] = data["source"] if isinstance(data.get("source"), dict) else {}
    source_dir: Path | None = None
    if isinstance(src.get("dir"), str):
        try:
            source_dir = expand_path(src["dir"], base)
        except ValueError as exc:
            problems.add(["source", "dir"], str(exc))
        else:
            if not source_dir.is_dir():
                what = "is not a folder" if source_dir.exists() else "does not exist"
                problems.add(["source", "dir"], f"{source_dir} {what}",
                             "paths are relative to the manifest's folder")
    method = src.get("method", "catalog")
    catalog: Path | None = None
    if isinstance(src.get("catalog"), str) and source_dir is not None:
        try:
            catalog = expand_path(src["catalog"], source_dir)
        except ValueError as exc:
            problems.add(["source", "catalog"], str(exc))
    if method == "list" and not src.get("files"):
        problems.add(["source"], "method: list needs a non-empty `files` list")
    if src.get("files") and method != "list":
        problems.add(["source", "files"], f"is only used with method: list (method is {method})")
    if src.get("datasets") and not src.get("collection"):
        problems.add(["source", "datasets"], "is only used with collection: true")
    if src.get("parts") and method != "catalog":
        problems.add(["source", "parts"], f"is only used with method: catalog (method is {method})")
    if src.get("collection") and method == "list":
        problems.add(["source", "collection"], "a collection needs method: catalog or all")
    if (src.get("catalog") and method != "catalog") and not src.get("collection"):
        problems.add(["source", "catalog"], f"is only used with method: catalog (method is {method})")
    if src.get("catalog_as") and method != "catalog":
        problems.add(["source", "catalog_as"], f"is only used with method: catalog (method is {method})")
    excludes = src.get("exclude")
    for j, pattern in enumerate(excludes if isinstance(excludes, list) else []):
        found = patterns.problem(pattern, str(source_dir) if source_dir else None) if isinstance(pattern, str) else None
        if found is not None:
            problems.add(["source", "exclude", j], f"{json.dumps(pattern)} {found[0]}", found[1])

    targets: list[TargetConfig] = []
    seen: dict[str, int] = {}
    raw_targets: list[Any] = data["targets"] if isinstance(data.get("targets"), list) else []
    for i, t in enumerate(raw_targets):
        if not isinstance(t, dict):
            continue
        name = t.get("name")
        if isinstance(name, str):
            if name in seen:
                problems.add(["targets", i, "name"], f"duplicate target name {name!r} (also targets[{seen[name]}])",
                             "give each target a unique name")
            seen.setdefault(name, i)
        target = _build_target(t, i, base, problems, file, src, collection=bool(src.get("collection")))
        if target is not None:
            targets.append(target)
    if problems.items or source_dir is None:
        return None
    source = SourceConfig(dir=source_dir, method=method, catalog=catalog,
                          files=tuple(src.get("files", ())), exclude=tuple(src.get("exclude", ())),
                          collection=bool(src.get("collection", False)), datasets=tuple(src.get("datasets", ())),
                          parts=tuple(src.get("parts", PARTS)),
                          catalog_as=str(src.get("catalog_as", CATALOG_NAME)))
    manifest = Manifest(path=file, source=source, targets=tuple(targets))
    check_overlaps(manifest, [i for i, t in enumerate(raw_targets) if isinstance(t, dict)], problems)
    return None if problems.items else manifest


def _written_dataset(src: dict[str, Any]) -> str:
    """The source as the user wrote it (normalised), e.g. `cartload2` or `cartload2:v2.yaml`."""
    parts = [os.path.normpath(str(src[k])) for k in ("dir", "catalog") if isinstance(src.get(k), str)]
    return ":".join(parts)


def _marker(z: dict[str, Any], t: dict[str, Any], source: dict[str, Any], meta: dict[str, Any]) -> str:
    """The deposition's marker, from what the user wrote (identity.deposition_marker; the notes excluded,
    since the marker is put there)."""
    return identity.deposition_marker(server=str(z.get("url", "https://zenodo.org")).rstrip("/"),
                                      target=str(t.get("name")), dataset=_written_dataset(source),
                                      metadata=json.dumps({k: v for k, v in meta.items() if k != "notes"},
                                                          sort_keys=True, default=str))


def _zenodo_secrets(z: dict[str, Any], token_file: Path | None, at: list[Any], problems: Problems) -> None:
    """The places a Zenodo token gets pasted by mistake: refused, and never echoed."""
    if isinstance(z.get("token_env"), str) and (why := redact.token_env_problem(z["token_env"])):
        problems.add(at + ["token_env"], why, redact.TOKEN_ENV_HINT)
    raw = z.get("token_file")
    if isinstance(raw, str) and token_file is not None and (why := redact.token_file_problem(raw, token_file.exists())):
        problems.add(at + ["token_file"], why, redact.TOKEN_FILE_HINT)
    if isinstance(z.get("url"), str) and holds_credential(z["url"]):
        problems.add(at + ["url"], "looks like it holds a credential", redact.ZENODO_URL_HINT)


def _build_target(t: dict[str, Any], i: int, base: Path, problems: Problems, file: Path,
                  source: dict[str, Any], collection: bool = False) -> TargetConfig | None:
    has_url, z = "url" in t, t.get("zenodo")
    if has_url == (z is not None):
        problems.add(["targets", i], "needs exactly one of `url` (a store) or `zenodo` (a deposition)")
        return None
    if z is not None:
        if not isinstance(z, dict):
            return None
        if any(k in t for k in ("storage_options", "part_size", "part_concurrency", "headers", "public_url")):
            problems.add(["targets", i], "storage_options, part_size, part_concurrency, headers and public_url "
                         "apply to url targets only")
        token_file = None
        if isinstance(z.get("token_file"), str):
            try:
                token_file = expand_path(z["token_file"], base)
            except ValueError as exc:
                problems.add(["targets", i, "zenodo", "token_file"], str(exc))
        if "token_file" in z and "token_env" in z:
            problems.add(["targets", i, "zenodo"], "give token_file or token_env, not both")
        _zenodo_secrets(z, token_file, ["targets", i, "zenodo"], problems)
        meta: dict[str, Any] = z["metadata"] if isinstance(z.get("metadata"), dict) else {}
        if str(z.get("deposition", "new")) == "new":
            # a collection's depositions take title and description from each dataset's catalog
            needed = ("upload_type", "creators") if collection else ("title", "upload_type", "description", "creators")
            for key in needed:
                if key not in meta:
                    problems.add(["targets", i, "zenodo", "metadata"], f"missing {key!r}",
                                 "title, upload_type, description and creators are needed for a new deposition")
        cfg = ZenodoConfig(url=str(z.get("url", "https://zenodo.org")).rstrip("/"), metadata=meta,
                           token_file=token_file, token_env=str(z.get("token_env", "ZENODO_TOKEN")),
                           deposition=str(z.get("deposition", "new")), publish=bool(z.get("publish", False)),
                           state_file=state_file_for(file),
                           marker=_marker(z, t, source, meta))
        url = cfg.url
    else:
        cfg, given = None, t.get("url")
        if not isinstance(given, str):
            return None
        url = given
        if "://" not in url:
            try:
                url = str(expand_path(url, base))
            except ValueError as exc:
                problems.add(["targets", i, "url"], str(exc))
        elif url.startswith("file://"):
            url = "file://" + str(expand_path(url[len("file://"):], base))
        storage = t.get("storage_options")
        endpoint = storage.get("endpoint_url") if isinstance(storage, dict) else None
        if (wrong := store_url_problem(url, endpoint)) is not None:
            key, message, hint = wrong
            at = ["targets", i, "url"] if key == "url" else ["targets", i, "storage_options", "endpoint_url"]
            problems.add(at, message, hint)
    try:
        part_size = parse_size(t.get("part_size", DEFAULT_PART_SIZE))
    except (ValueError, TypeError):
        return None
    if part_size < 5 * 2**20:
        problems.add(["targets", i, "part_size"], f"{part_size} bytes is below the S3 minimum part size",
                     "use at least 5MiB")
    headers: dict[str, Any] = t["headers"] if isinstance(t.get("headers"), dict) else {}
    return TargetConfig(name=str(t.get("name")), url=url, storage_options=dict(t.get("storage_options") or {}),
                        delete=bool(t.get("delete", False)), overwrite=str(t.get("overwrite", "changed")),
                        part_size=part_size, part_concurrency=int(t.get("part_concurrency", 4)),
                        headers=tuple((g, dict(h)) for g, h in headers.items()), zenodo=cfg,
                        max_delete=delete_limit(t.get("max_delete")),
                        public_url=_opt_str(t.get("public_url")), origin=_opt_str(t.get("origin")))


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None
