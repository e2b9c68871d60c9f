"""A Zenodo target over a collection: one deposition per dataset.

Zenodo records are flat and every dataset holds a `catalog.yaml`, so a collection cannot share one
deposition. The engine expands such a target into one sub-target per dataset, named `<target>/<id>`:
its own deposition (found again by its own marker, recorded under its own name in the state file), the
dataset's files only, and the manifest's metadata as a template filled from the dataset's catalog:
`{id}`, `{title}` and `{description}` in any string are replaced by the catalog's values, and a template
without `title` or `description` takes the catalog's (title falling back to the id, description to
cartloader's "No description provided."). Store targets are not expanded: a collection lands under
`<url>/<id>` there.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from . import identity, selection
from .config import Manifest, TargetConfig
from .errors import PlanError
from .model import SourceFile

NO_DESCRIPTION = "No description provided."
PLACEHOLDERS = ("id", "title", "description")


def dataset_of(key: str) -> str:
    """A collection key's dataset id (`<id>/<file>`)."""
    return key.split("/", 1)[0]


def expand(manifest: Manifest, targets: list[TargetConfig], files: list[SourceFile]) -> list[TargetConfig]:
    """The targets a run writes to: each Zenodo target of a collection becomes one per dataset in `files`."""
    if not manifest.source.collection:
        return targets
    out: list[TargetConfig] = []
    catalogs = {dataset_of(f.key): f for f in files if f.catalog}     # the selection says which file it is
    for t in targets:
        if t.zenodo is None:
            out.append(t)
            continue
        if t.zenodo.deposition != "new":
            raise PlanError(f"target {t.name}: a collection makes one deposition per dataset, but deposition is "
                            f"{t.zenodo.deposition}", "use deposition: new (each dataset's deposition is recorded "
                            "in the state file)")
        for ds in sorted({dataset_of(f.key) for f in files}):
            fields = _catalog_fields(catalogs.get(ds), ds)
            name = f"{t.name}/{ds}"
            cfg = dataclasses.replace(t.zenodo, metadata=fill(t.zenodo.metadata, fields),
                                      marker=identity.deposition_marker(parent=t.zenodo.marker, dataset=ds))
            out.append(dataclasses.replace(t, name=name, zenodo=cfg, dataset=ds))
    return out


def _catalog_fields(catalog: SourceFile | None, ds: str) -> dict[str, str]:
    data = selection.read_catalog(catalog.path) if catalog is not None else {}
    title, description = data.get("title"), data.get("description")
    return {"id": ds, "title": str(title).strip() if title else ds,
            "description": str(description).strip() if description else NO_DESCRIPTION}


def fill(template: dict[str, Any], fields: dict[str, str]) -> dict[str, Any]:
    """The template with every `{id}`, `{title}`, `{description}` replaced (nothing else is interpreted, so
    braces in a description stay as written); title and description default to the catalog's."""
    def sub(value: Any) -> Any:
        if isinstance(value, str):
            for name in PLACEHOLDERS:
                value = value.replace("{" + name + "}", fields[name])
            return value
        if isinstance(value, list):
            return [sub(v) for v in value]
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        return value

    out = {k: sub(v) for k, v in template.items()}
    out.setdefault("title", fields["title"])
    out.setdefault("description", fields["description"])
    return out
