"""Choose the local files to publish: method all | catalog | list, excludes, collections.

Keys are relative POSIX paths; every selected data file must resolve (after
`..` and symlinks) inside the source folder. Selection also decides which file
is a dataset's catalog (`SourceFile.catalog`): with method: catalog the file
`source.catalog` names, wherever it is (cartloader's `--catalog-yaml` may be
outside `--in-dir`), published as `source.catalog_as` (default catalog.yaml) at
the dataset's root, its references resolved against the source folder, where
the published catalog sits; with all and list, the catalog.yaml at the root.
Files ending in cartsync's temp suffix are refused: a local target ignores and
cleans up such files, so one could never be published. Which catalog values
name files, and cartloader's parts, are the catalog format's (catalog_format.py);
selection reads the catalog and checks every path it names.
"""
from __future__ import annotations

import functools
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from . import catalog_format, patterns, yamlsafe
from .catalog_format import CATALOG_NAME, PARTS
from .config import SourceConfig
from .errors import SourceError
from .model import TMP_SUFFIX, SourceFile

matches = patterns.matches      # header globs (backends/s3.py) share the exclude semantics


def select(source: SourceConfig) -> list[SourceFile]:
    """The files to publish, sorted by key; raise SourceError naming every problem at once."""
    root = source.dir.resolve()
    if source.collection:
        files: list[SourceFile] = []
        problems: list[str] = []
        if source.datasets:
            missing = [d for d in source.datasets if not (root / d / CATALOG_NAME).is_file()]
            if missing:
                raise SourceError("\n".join(f"{root / d}: no {CATALOG_NAME} (listed dataset)" for d in missing))
            datasets = [root / d for d in source.datasets]
        else:
            datasets = sorted(p for p in root.iterdir() if (p / CATALOG_NAME).is_file())
        if not datasets:
            raise SourceError(f"{root}: no sub-folder holds a {CATALOG_NAME}",
                              "a collection is a folder of datasets, each with its own catalog.yaml")
        seen: dict[str, Path] = {}
        for folder in datasets:
            dataset_id = dataset_id_of(folder / CATALOG_NAME, catalog_format.cartloader_id(folder.name))
            if dataset_id in seen:
                problems.append(f"{folder}: dataset id {dataset_id!r} is also used by {seen[dataset_id]}")
                continue
            seen[dataset_id] = folder
            sub = SourceConfig(dir=folder, method=source.method, exclude=source.exclude, parts=source.parts,
                               catalog_as=source.catalog_as)
            try:
                files += [SourceFile(f"{dataset_id}/{f.key}", f.path, f.catalog) for f in _select_one(sub, folder)]
            except SourceError as exc:
                problems.append(exc.message)
        if problems:
            raise SourceError("\n".join(problems))
        return _non_empty(sorted(files, key=lambda f: f.key), root)
    return _non_empty(_select_one(source, root), root)


def _non_empty(files: list[SourceFile], root: Path) -> list[SourceFile]:
    if not files:
        raise SourceError(f"{root}: the source selects no files", "check source.dir, method and exclude (an empty "
                          "source with delete: true would delete everything published)")
    return files


def dataset_id_of(catalog: Path, fallback: str) -> str:
    """The id the catalog file gives its dataset (catalog_format.dataset_id), else `fallback`."""
    return catalog_format.dataset_id(read_catalog(catalog), fallback)


def _select_one(source: SourceConfig, root: Path) -> list[SourceFile]:
    problems: list[str] = []
    plain: set[str] = set()      # regular files the walk saw (scandir's d_type): no second lstat needed
    catalog: Path | None = None
    inside: str | None = None    # the catalog's path under root, if it is there
    if source.method == "all":
        candidates = list(_walk(root, problems, plain, patterns.pruned_folder(source.exclude)))
    elif source.method == "list":
        candidates = list(source.files)
    else:
        catalog = source.catalog or root / CATALOG_NAME
        candidates = catalog_files(catalog, root, problems, source.parts)
        inside = _rel_or_none(catalog, root)
        if inside is not None:
            candidates.append(inside)        # for the exclude check below; the catalog is added apart
    excluded = [c for c in candidates if patterns.excluded(c, source.exclude)] if source.exclude else []
    if source.method == "all":
        dropped = set(excluded)
        candidates = [c for c in candidates if c not in dropped]
    elif excluded:
        for c in excluded:
            problems.append(f"{c}: selected by the {source.method} but matched by an exclude pattern"
                            " (remove the pattern or the reference)")
    if inside is not None:
        candidates.remove(inside)
    files: dict[str, SourceFile] = {}
    real_dirs: dict[str, str | None] = {}
    for rel in candidates:
        if rel.endswith(TMP_SUFFIX):
            problems.append(f"{rel}: ends in {TMP_SUFFIX}, the suffix of cartsync's own temp files (rename it, "
                            f"or exclude it with \"*{TMP_SUFFIX}\")")
            continue
        f = _plain(root, rel, real_dirs, rel in plain) or _checked(root, rel, problems)
        if f is not None:
            files[f.key] = f
    if catalog is not None:
        if source.catalog_as in files:
            problems.append(f"{source.catalog_as}: named in {catalog.name} as a data file, but the catalog is "
                            f"published under that name (rename the file, or set source.catalog_as)")
        files[source.catalog_as] = SourceFile(source.catalog_as, catalog, catalog=True)
    elif CATALOG_NAME in files:
        files[CATALOG_NAME] = SourceFile(CATALOG_NAME, files[CATALOG_NAME].path, catalog=True)
    if problems:
        raise SourceError("\n".join(problems), "every selected file must exist inside " + str(root))
    return sorted(files.values(), key=lambda f: f.key)


def _rel_or_none(path: Path, root: Path) -> str | None:
    try:
        return _rel(path, root)
    except ValueError:
        return None


def read_catalog(path: Path) -> dict[str, Any]:
    """A catalog's top-level mapping (SourceError naming the file and line if it cannot be read). Parsed once
    per version of the file: a collection's selection reads each catalog for its id and for its files, and
    parsing was half of a 200-dataset selection. The mapping is shared: callers only read it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceError(f"{path}: catalog not found", "set source.catalog, or use method: all") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read catalog: {exc}") from None
    return _parsed_catalog(path, st.st_mtime_ns, st.st_size, st.st_ino)


@functools.lru_cache(maxsize=4096)
def _parsed_catalog(path: Path, mtime_ns: int, size: int, inode: int) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SourceError(f"{path}: catalog not found", "set source.catalog, or use method: all") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read catalog: {exc}") from None
    try:
        data = yamlsafe.parse(text).data
    except yamlsafe.YamlProblem as exc:
        line = f":{exc.line}" if exc.line else ""
        raise SourceError(f"{path}{line}: catalog is not valid YAML: {exc.problem}", exc.hint) from None
    if not isinstance(data, dict):
        got = type(data).__name__ if data is not None else "an empty file"
        raise SourceError(f"{path}: catalog must be a mapping, got {got}")
    return data


def catalog_files(catalog: Path, root: Path, problems: list[str], parts: tuple[str, ...] = PARTS) -> list[str]:
    """Paths (relative to root) of every data file the catalog references, in catalog order (the catalog
    itself not included). References resolve against root, where the catalog is published (as cartloader
    resolves them against --in-dir), wherever the local catalog file is."""
    refs: list[str] = []
    named = list(catalog_format.references(read_catalog(catalog), root))
    if not named:
        problems.append(f"{catalog}: catalog references no files")
    for ref in catalog_format.files_in_parts(named, parts):
        if os.path.isabs(ref):
            problems.append(f"{ref}: absolute path in {catalog.name} (catalog paths are relative to the dataset "
                            "folder)")
            continue
        try:
            refs.append(_rel(root / ref, root))
        except ValueError:
            problems.append(f"{ref}: outside the source folder (named in {catalog.name})")
    return refs


def _rel(path: Path, root: Path) -> str:
    """Lexical relative POSIX path of `path` under `root`; ValueError if `..` leaves root."""
    norm = os.path.normpath(os.path.join(str(root), str(path)) if not path.is_absolute() else str(path))
    rel = os.path.relpath(norm, os.path.normpath(str(root)))
    if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
        raise ValueError(rel)
    return Path(rel).as_posix()


def _plain(root: Path, rel: str, real_dirs: dict[str, str | None], regular: bool = False) -> SourceFile | None:
    """The common case, cheaply: a readable regular file (not a symlink) in a folder that resolves inside
    root (`regular`: the walk already saw a regular file there). Anything else (None) goes through
    _checked, which explains what is wrong."""
    try:
        rel.encode("utf-8")        # a name that is not valid UTF-8 arrives surrogate-escaped
    except UnicodeEncodeError:
        return None
    if regular:                    # from the walk: a normalized path inside root, no symlink
        return SourceFile(key=rel, path=root / rel) if os.access(os.path.join(root, rel), os.R_OK) else None
    if not rel or rel.startswith(("/", "~")) or "\\" in rel:
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    folder = "/".join(parts[:-1])
    if folder not in real_dirs:
        real = os.path.realpath(os.path.join(root, folder)) if folder else str(root)
        real_dirs[folder] = real if real == str(root) or real.startswith(str(root) + os.sep) else None
    real_dir = real_dirs[folder]
    if real_dir is None:
        return None
    path = os.path.join(real_dir, parts[-1])
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return None
    except OSError:
        return None
    if not os.access(path, os.R_OK):
        return None
    return SourceFile(key=rel, path=root / rel)


def _checked(root: Path, rel: str, problems: list[str]) -> SourceFile | None:
    """The file for `rel` if it exists, is a regular file and resolves inside root."""
    if os.path.isabs(rel) or rel.startswith("~"):
        problems.append(f"{rel}: absolute path (paths are relative to {root})")
        return None
    try:
        key = _rel(root / rel, root)
    except ValueError:
        problems.append(f"{rel}: outside the source folder")
        return None
    path = root / key
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        problems.append(f"{key.encode('utf-8', 'surrogateescape')!r}: file name is not valid UTF-8 (rename it)")
        return None
    try:
        real = path.resolve(strict=True)
    except FileNotFoundError:
        what = "broken symlink" if path.is_symlink() else "missing"
        problems.append(f"{key}: {what}")
        return None
    except (RuntimeError, OSError) as exc:
        msg = "symlink loop" if "loop" in str(exc).lower() or getattr(exc, "errno", 0) == 40 else str(exc)
        problems.append(f"{key}: {msg}")
        return None
    if real != root and root not in real.parents:
        problems.append(f"{key}: symlink points outside the source folder (to {real})")
        return None
    if not real.is_file():
        problems.append(f"{key}: not a regular file")
        return None
    if not os.access(real, os.R_OK):
        problems.append(f"{key}: not readable (permission denied)")
        return None
    return SourceFile(key=key, path=path)


def _walk(root: Path, problems: list[str], plain: set[str],
          pruned: Callable[[str], bool] = lambda rel: False) -> Iterator[str]:
    """Every file under root as a relative POSIX path; follows folder symlinks only inside root, once.
    Folders `pruned` says are excluded as a whole are not entered (nothing in them is a problem).
    Regular files (not symlinks) are also added to `plain`."""
    seen = {root}
    stack = [root]
    base = str(root).rstrip("/") + "/"
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            problems.append(f"{_rel(Path(folder), root)}: cannot list folder: {exc.strerror}")
            continue
        for entry in entries:
            rel = entry.path[len(base):]       # scandir joins with "/": the relative key, without pathlib
            if entry.is_dir() and pruned(rel):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.is_symlink() and os.path.isdir(entry.path):
                real = Path(entry.path).resolve()
                if real != root and root not in real.parents:
                    problems.append(f"{rel}: symlink points outside the source folder (to {real})")
                elif real not in seen:
                    seen.add(real)
                    stack.append(Path(entry.path))
            else:
                if entry.is_file(follow_symlinks=False):
                    plain.add(rel)
                yield rel
