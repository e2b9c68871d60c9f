"""Load a manifest: safe YAML, JSON-schema validation, semantic checks → config.Manifest.

Every problem names the manifest file, the line, the key path and, where we
can, the fix; all problems are collected and raised together.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import patterns, redact, yamlsafe
from .catalog_format import CATALOG_NAME, PARTS
from .config import (
    DEFAULT_PART_SIZE,
    STATE_SUFFIX,
    Manifest,
    SourceConfig,
    TargetConfig,
    ZenodoConfig,
    delete_limit,
    parse_size,
    state_file_for,
)
from .errors import ManifestError

if TYPE_CHECKING:
    import jsonschema


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


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def expand_path(text: str, base: Path) -> Path:
    """Expand ~ and ${VAR}; resolve relative paths against `base` (the manifest's folder)."""
    missing = [v for v in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text) if v not in os.environ]
    if missing:
        raise ValueError(f"environment variable {', '.join(missing)} is not set")
    expanded = os.path.expanduser(os.path.expandvars(text))
    p = Path(expanded)
    return Path(os.path.normpath(p if p.is_absolute() else base / p))


# ---- locating errors in the YAML text --------------------------------------------------------

def _fmt_path(path: list[Any]) -> str:
    out = ""
    for part in path:
        if isinstance(part, str) and redact.looks_like_token(part):     # a token pasted as a key
            part = f"<a key of {len(part)} characters that looks like a token>"
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _node_at(root: yaml.Node | None, path: list[Any], key_node: bool = False) -> yaml.Node | None:
    node = root
    for i, part in enumerate(path):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == part:
                    node = k if key_node and i == len(path) - 1 else v
                    break
            else:
                return node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


class _Problems:
    def __init__(self, file: Path, root: yaml.Node | None) -> None:
        self.file, self.root = file, root
        self.items: list[str] = []
        self.lines: list[int] = []

    def add(self, path: list[Any], message: str, hint: str = "", key_node: bool = False) -> None:
        node = _node_at(self.root, path, key_node)
        where = f"{self.file}:{node.start_mark.line + 1}" if node is not None else str(self.file)
        text = f"{where}: {_fmt_path(path)}: {message}"
        self.items.append(text + (f" ({hint})" if hint else ""))
        self.lines.append(node.start_mark.line if node is not None else -1)

    def add_line(self, line: int, path: list[Any], message: str) -> None:
        self.items.append(f"{self.file}:{line + 1}: {_fmt_path(path)}: {message}")
        self.lines.append(line)

    def sorted(self) -> list[str]:
        return [text for _, text in sorted(zip(self.lines, self.items, strict=False), key=lambda p: p[0])]


def _describe(value: Any) -> str:
    kind = {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping", type(None): "nothing"}.get(type(value), type(value).__name__)
    if isinstance(value, str) and redact.looks_like_token(value):
        return f"{kind} of {len(value)} characters that looks like a token"     # never echoed
    shown = json.dumps(value) if isinstance(value, (str, int, float, bool)) else ""
    return f"{kind} {shown}".strip()


_TYPE_NAMES = {"string": "a string", "boolean": "true or false", "integer": "a whole number",
               "array": "a list", "object": "a mapping", "number": "a number"}


def _schema_problem(err: jsonschema.ValidationError, problems: _Problems) -> None:
    path = list(err.absolute_path)
    v = err.validator
    if v == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        for key in sorted(set(err.instance) - set(allowed)):
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "allowed keys: " + ", ".join(allowed)
            problems.add(path + [key], "unknown key", hint, key_node=True)
    elif v == "required":
        missing = re.match(r"'(.*?)' is a required property", err.message)
        name = missing.group(1) if missing else err.message
        problems.add(path, f"missing required key {name!r}")
    elif v == "enum":
        choices = ", ".join(str(c) for c in err.validator_value)
        problems.add(path, f"{_describe(err.instance)} is not allowed", f"use one of: {choices}")
    elif v == "const":
        problems.add(path, f"{_describe(err.instance)} is not allowed", f"use {err.validator_value!r}")
    elif v == "type":
        want = _TYPE_NAMES.get(err.validator_value, str(err.validator_value))
        problems.add(path, f"expected {want}, got {_describe(err.instance)}")
    elif v == "minItems" and err.validator_value == 1:
        problems.add(path, "must not be empty", "list at least one item")
    elif v == "minLength":
        problems.add(path, f"{_describe(err.instance)} is too short (at least {err.validator_value} characters)")
    elif v == "oneOf":
        # Report the branch that fits the value's type (e.g. the object form of a creator), if exactly one does.
        fitting = [e for e in err.context if e.validator != "type" and len(e.relative_schema_path) > 1
                   and not any(c.validator == "type" and c.relative_schema_path[0] == e.relative_schema_path[0]
                               for c in err.context)]
        if fitting:
            for sub in fitting:
                _schema_problem(sub, problems)
        else:
            problems.add(path, f"{_describe(err.instance)} has the wrong form", _hint(path))
    elif v == "pattern" and path[-1:] == ["token_env"]:
        # not a variable name, so maybe the token itself: described, never echoed (see _zenodo_secrets)
        if not redact.token_env_problem(str(err.instance)):
            problems.add(path, f"the value given ({len(str(err.instance))} characters) is not the name of an "
                         "environment variable", redact.TOKEN_ENV_HINT)
    elif v == "pattern":
        problems.add(path, f"{_describe(err.instance)} has the wrong form", _hint(path))
    elif v == "minimum":
        problems.add(path, f"{err.instance} is too small (at least {err.validator_value})")
    else:
        problems.add(path, err.message)


def _hint(path: list[Any]) -> str:
    if "creators" in path and path[-1] != "orcid":
        return _PATTERN_HINTS["creators"]
    named = [p for p in path if isinstance(p, str)]
    return _PATTERN_HINTS.get(named[-1] if named else "", "")


_PATTERN_HINTS = {
    "creators": 'write "Lastname, Firstname" or {name: "Lastname, Firstname", affiliation: …, orcid: …}',
    "name": 'use letters, digits, ".", "_" and "-"',
    "orcid": "an ORCID looks like 0000-0002-1825-0097",
    "deposition": "use `new` or the numeric id of an existing deposition",
    "part_size": 'a number of bytes (at least 5 MiB) or a size like "64MiB"',
    "url": "start it with https://",
    "publication_date": "use YYYY-MM-DD",
    "catalog_as": "a file name without folders, e.g. catalog.yaml",
    "public_url": "an http(s) URL without credentials, e.g. https://data.example.org/mouse-brain",
    "origin": "scheme://host[:port] without a path, e.g. https://v3o-main.carto-scope.org",
}


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


def _duplicate_keys(node: yaml.Node | None, path: list[Any]) -> list[tuple[int, list[Any], str]]:
    """YAML keeps the last of two equal keys without a word; a manifest must not."""
    out: list[tuple[int, list[Any], str]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for k, v in node.value:
            if k.value in first:
                out.append((k.start_mark.line, path + [k.value],
                            f"duplicate key (also on line {first[k.value] + 1}; YAML would keep only the last)"))
            first.setdefault(k.value, k.start_mark.line)
            out += _duplicate_keys(v, path + [k.value])
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out += _duplicate_keys(v, path + [i])
    return out


def from_data(data: Any, file: Path, root: yaml.Node | None = None, text: str | None = None) -> Manifest:
    """Validate manifest data (from YAML `text`, or built in memory by upload-aws/upload-zenodo)."""
    problems = _Problems(file, root)
    for line, path, message in _duplicate_keys(root, []):
        problems.add_line(line, path, message)
    if not isinstance(data, dict):
        problems.add([], f"expected a mapping with version, source and targets, got {_describe(data)}")
        raise ManifestError(problems.items)
    marker = _valid_marker(text) if text is not None else None
    known_valid = marker is not None and not problems.items and marker.exists()
    if not known_valid:
        import jsonschema
        validator = jsonschema.Draft202012Validator(schema())
        for err in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
            _schema_problem(err, problems)
    manifest = _build(file, data, problems)
    if problems.items:
        raise ManifestError(problems.sorted())
    assert manifest is not None
    if marker is not None and not known_valid:
        _remember_valid(marker)
    return manifest


def _build(file: Path, data: dict[str, Any], problems: _Problems) -> Manifest | None:
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
    _check_overlaps(manifest, [i for i, t in enumerate(raw_targets) if isinstance(t, dict)], problems)
    return None if problems.items else manifest


def url_problem(url: str) -> tuple[str, str] | None:
    """(problem, fix) for a store URL whose form would put unintended keys on the store: object stores keep
    `//`, `.` and `..` in a key as written (s3://b//p stores "/p/a.tsv"), and a space at either end is part of
    the key too. Local paths are normalized instead (expand_path)."""
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


def _check_overlaps(manifest: Manifest, indexes: list[int], problems: _Problems) -> None:
    """A local target must not overlap the source (either way, through symlinks) nor hold the manifest, its
    state file, the catalog or a Zenodo token file: with delete: true it would delete them, and a target
    inside the source would be published into itself, one level deeper each run. Two targets must not
    overlap each other either."""
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
        ident = _store_identity(target, folder)
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


def _store_identity(target: TargetConfig, folder: str | None) -> tuple[str, ...]:
    """Where a target's files are, comparable between targets: a real local folder, or scheme, endpoint
    and path of a store."""
    if folder is not None:
        return ("file", os.path.realpath(folder).lstrip("/"))
    scheme, rest = target.url.split("://", 1) if "://" in target.url else ("", target.url)
    scheme = {"s3a": "s3"}.get(scheme, scheme)
    endpoint = str(target.storage_options.get("endpoint_url") or "")
    return (scheme, endpoint, rest.strip("/"))


def marker_for(**identity: str) -> str:
    """The mark cartsync leaves in a deposition's notes, to find "the deposition this dataset made" when
    the state file is lost. Derived only from what the user wrote (server, target name, dataset, metadata),
    never from where the manifest happens to be: a moved, renamed or freshly cloned project finds its
    deposition again, and two datasets never share one."""
    text = "\0".join(f"{k}={v}" for k, v in sorted(identity.items()))
    return "cartsync:" + hashlib.sha1(text.encode()).hexdigest()[:16]


def _written_dataset(src: dict[str, Any]) -> str:
    """The source as the user wrote it (normalised), e.g. `cartload2` or `cartload2:v2.yaml`."""
    parts = [os.path.normpath(str(src[k])) for k in ("dir", "catalog") if isinstance(src.get(k), str)]
    return ":".join(parts)


def _holds_credential(url: str) -> bool:
    return bool(re.search(r"(?i)(secret|token|password|key)=", url) or re.match(r"^[a-z0-9]+://[^/@]*(:[^/@]*)?@", url)
                or redact.url_credential(url))


def _zenodo_secrets(z: dict[str, Any], token_file: Path | None, at: list[Any], problems: _Problems) -> None:
    """The places a Zenodo token gets pasted by mistake: refused, and never echoed."""
    if isinstance(z.get("token_env"), str) and (why := redact.token_env_problem(z["token_env"])):
        problems.add(at + ["token_env"], why, redact.TOKEN_ENV_HINT)
    raw = z.get("token_file")
    if isinstance(raw, str) and token_file is not None and (why := redact.token_file_problem(raw, token_file.exists())):
        problems.add(at + ["token_file"], why, redact.TOKEN_FILE_HINT)
    if isinstance(z.get("url"), str) and _holds_credential(z["url"]):
        problems.add(at + ["url"], "looks like it holds a credential", redact.ZENODO_URL_HINT)


def _build_target(t: dict[str, Any], i: int, base: Path, problems: _Problems, file: Path,
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
                           marker=marker_for(server=str(z.get("url", "https://zenodo.org")).rstrip("/"),
                                             target=str(t.get("name")), dataset=_written_dataset(source),
                                             metadata=json.dumps({k: v for k, v in meta.items() if k != "notes"},
                                                                 sort_keys=True, default=str)))
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
        bucket = url.split("://", 1)[1].split("/", 1)[0] if url.startswith(("s3://", "s3a://")) else None
        endpoint = (t.get("storage_options") or {}).get("endpoint_url") if isinstance(
            t.get("storage_options"), dict) else None
        if _holds_credential(url):
            # never echo the URL: it may hold the secret
            problems.add(["targets", i, "url"], "looks like it holds a credential", redact.URL_HINT)
        elif isinstance(endpoint, str) and _holds_credential(endpoint):
            problems.add(["targets", i, "storage_options", "endpoint_url"], "looks like it holds a credential",
                         redact.URL_HINT)
        elif bucket is not None and not _BUCKET_RE.fullmatch(bucket):
            problems.add(["targets", i, "url"], f"{json.dumps(bucket)} is not a valid S3 bucket name",
                         "use 3-63 lowercase letters, digits, '.' and '-'")
        elif (malformed := url_problem(url)) is not None:
            problems.add(["targets", i, "url"], f"{json.dumps(url)} {malformed[0]}", malformed[1])
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
