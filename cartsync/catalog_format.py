"""The cartload2 catalog format: what cartloader writes and viewers read, as far as cartsync needs it.

A dataset is a folder with a `catalog.yaml` (CATALOG_NAME) at its root; its values name the dataset's files
relative to that root. This module knows the format only — which values are files, which of cartloader's
groups (`parts`) a file belongs to, a dataset's id — on data already parsed. Reading the file (selection.py,
through yamlsafe), walking folders, excludes and path safety live elsewhere, so the format can change
without touching them and this module stays free of I/O beyond one `is_file` (below).

A catalog value is a file unless its key says otherwise: the same keys cartloader's
`collect_files_from_yaml` skips (ids, names, `raw_pixel_col`, `analysis_type`, …) plus prose
(`description`, `title`) and a basemap's `default`; a value is then a file when it has an extension or a
`/`. A value with spaces is prose unless it has an extension and the file is there.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CATALOG_NAME = "catalog.yaml"   # the file viewers open at a dataset's root; the catalog is published so
PARTS = ("basics", "optional", "basemap")     # cartloader's groups of files, all published by default

# Catalog values under these keys are identifiers or prose, never files.
_NOT_FILE_KEYS = {"id", "name", "title", "description", "default", "version", "label", "url", "doi", "analysis",
                  "analysis_type", "raw_pixel_col"}
_OPTIONAL_SUFFIXES = ("umap.tsv", "umap.png", "umap.ind_png", "umap.pmtiles")
_FILE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,12}$")


def cartloader_id(folder_name: str) -> str:
    """A dataset's sub-prefix when its catalog has no id: cartloader's `input_id.replace("_", "-").lower()`."""
    return folder_name.replace("_", "-").lower()


def dataset_id(data: dict[str, Any], fallback: str) -> str:
    """The catalog's `id` where it is usable as one path segment, else `fallback`."""
    value = data.get("id")
    if isinstance(value, str) and value.strip() and "/" not in value and value not in (".", ".."):
        return value.strip()
    return fallback


def part_of(dotted: str) -> str:
    """cartloader's grouping: basics (SGE, factors, cells), optional (UMAP, alias), basemap (non-SGE basemaps)."""
    if dotted.startswith("assets.basemap") and not dotted.startswith("assets.basemap.sge"):
        return "basemap"
    if dotted.endswith(_OPTIONAL_SUFFIXES) or dotted.rsplit(".", 1)[-1] == "alias":
        return "optional"
    return "basics"


def references(data: Any, base: Path, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(dotted key path, value) of every value in the catalog that names a file, in catalog order. `base`
    is the dataset's root, where a spaced value is looked for."""
    if isinstance(data, dict):
        for k, v in data.items():
            yield from references(v, base, path + (str(k),))
    elif isinstance(data, list):
        for v in data:
            yield from references(v, base, path)
    elif isinstance(data, str) and _looks_like_file(path[-1] if path else None, data, base):
        yield ".".join(path), data


def files_in_parts(named: list[tuple[str, str]], parts: tuple[str, ...]) -> list[str]:
    """The referenced values of `parts`, each once, in catalog order (as written: not yet checked)."""
    return list(dict.fromkeys(v for k, v in named if part_of(k) in parts))


def _looks_like_file(key: str | None, value: str, base: Path) -> bool:
    if key in _NOT_FILE_KEYS or (key or "").endswith("_id") or not value or "://" in value:
        return False
    if any(c.isspace() for c in value):
        # prose has spaces too: a spaced value is a file only if it has an extension and is there
        return bool(_FILE_SUFFIX.search(value)) and (base / value).is_file()
    return bool(_FILE_SUFFIX.search(value)) or "/" in value
