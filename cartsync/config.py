"""What a manifest says, as frozen values: the source, the targets, their Zenodo settings.

Pure data and the pure conversions that build it (sizes, delete limits, the state file's place): no YAML,
no jsonschema and no I/O, so backends and selection depend on what a manifest *means* and never on how it
is read. `manifest.py` turns a YAML file into these values after validating it; upload-aws/upload-zenodo
build them in memory through the same path. A layering contract (pyproject.toml) keeps this module free of
the loaders.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog_format import CATALOG_NAME, PARTS
from .errors import CartsyncError
from .model import DEFAULT_DELETE_LIMIT, DeleteLimit

OVERWRITE_MODES = ("changed", "always", "never")
DEFAULT_PART_SIZE = 8 * 2**20          # as the aws CLI uses
STATE_SUFFIX = ".cartsync-state.json"


@dataclass(frozen=True)
class ZenodoConfig:
    url: str
    metadata: dict[str, Any]
    token_file: Path | None = None
    token_env: str = "ZENODO_TOKEN"
    deposition: str = "new"          # "new" or a numeric id as a string
    publish: bool = False
    state_file: Path | None = None   # where the created deposition id is recorded (beside the manifest)
    marker: str = ""                 # put in the deposition's notes to find it again if the state is lost
    state_key: str = ""              # the record's key in the state file (default: the target's name)


@dataclass(frozen=True)
class TargetConfig:
    name: str
    url: str                          # fsspec URL, or the Zenodo server URL for zenodo targets
    storage_options: dict[str, Any] = field(default_factory=dict)
    delete: bool = False
    overwrite: str = "changed"
    part_size: int = DEFAULT_PART_SIZE
    part_concurrency: int = 4
    headers: tuple[tuple[str, dict[str, str]], ...] = ()
    zenodo: ZenodoConfig | None = None
    dataset: str | None = None        # a Zenodo target expanded over a collection: this dataset's (per_dataset)
    max_delete: DeleteLimit = DEFAULT_DELETE_LIMIT
    public_url: str | None = None     # where browsers read the target (CDN, custom domain); `cartsync check`
    origin: str | None = None         # the viewer's origin the CORS checks use (`cartsync check`)


@dataclass(frozen=True)
class SourceConfig:
    dir: Path
    method: str = "catalog"
    catalog: Path | None = None
    files: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    collection: bool = False
    datasets: tuple[str, ...] = ()           # collection: only these sub-folders (default: all with a catalog)
    parts: tuple[str, ...] = PARTS           # catalog: which groups of files
    catalog_as: str = CATALOG_NAME           # the name the catalog is published under, at the dataset's root


@dataclass(frozen=True)
class Manifest:
    path: Path
    source: SourceConfig
    targets: tuple[TargetConfig, ...]

    def target(self, name: str) -> TargetConfig:
        for t in self.targets:
            if t.name == name:
                return t
        names = ", ".join(t.name for t in self.targets)
        raise CartsyncError(f"--target {name}: {self.path} has no target of that name (targets: {names})")


def state_file_for(manifest: Path) -> Path:
    """Where per-target state (e.g. a created Zenodo deposition id) is kept: beside the manifest (the real
    file, when the manifest is a symlink)."""
    return manifest.resolve().with_name(manifest.stem + STATE_SUFFIX)


_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMG]i?B|B)?\s*$")
_UNITS = {None: 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def parse_size(value: int | str) -> int:
    """Bytes from `8388608` or a size like `"64MiB"` / `"5 MB"`; ValueError for anything else."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(value)
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def delete_limit(value: Any) -> DeleteLimit:
    """`max_delete: 20` (a count), `"25%"` (a fraction of the target's files); absent: the default. The
    schema has checked the form."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]+(\.[0-9]+)?%", value):
        return DeleteLimit(fraction=float(value[:-1]) / 100)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return DeleteLimit(count=value)
    return DEFAULT_DELETE_LIMIT       # absent, or a wrong form the schema check reports
