"""Catalogs shaped the way cartloader's writers shape them, and the exact files each `parts` value selects.

The shapes follow cartloader at ee2fb4a: `utils/ficture2_helper.ficture2_params_to_factor_assets` (FICTURE
factors with and without UMAP, multi-sample shared files, cells with and without boundaries),
`import_xenium_cell.make_factor_dict` (cells and squares, `raw_pixel_col`), `write_catalog_for_assets`
(`id`, `title`, `description`, `assets.sge`, `overview`, `basemap` from `id:file` and `id1:id2:file`,
background assets from `image_png2pmtiles`). The expected sets are written out by hand from cartloader's
`upload_aws.collect_files_from_yaml` grouping: basics (everything but the two others), optional (UMAP
and alias), basemap (non-SGE basemaps); the catalog always goes.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cartsync.config import SourceConfig
from cartsync.selection import select

ALL = ("basics", "optional", "basemap")


def ficture(model: str, decode: str | None, umap: bool, multi: bool = False) -> dict:
    """A FICTURE factor entry (train-only when decode is None)."""
    de_base = decode if (decode and multi) else model
    entry: dict = {"id": model, "name": model.upper(), "model_id": model, "de": f"{de_base}-bulk-de.tsv",
                   "info": f"{de_base}-info.tsv", "model": f"{model}-model.tsv", "rgb": f"{model}-rgb.tsv",
                   "pmtiles": {"hex": f"{model}.pmtiles"}}
    if decode:
        entry.update(decode_id=decode, post=f"{decode}-pseudobulk.tsv.gz")
        entry["pmtiles"]["raster"] = f"{decode}-pixel-raster.pmtiles"
    if multi:
        entry.update(analysis_type="multi-sample", shared_de=f"{model}-bulk-de.tsv",
                     shared_post=f"{model}-model.tsv", shared_info=f"{model}-info.tsv")
    if umap:
        entry["umap"] = {"tsv": f"{model}-umap.tsv.gz", "pmtiles": f"{model}-umap.pmtiles",
                         "png": f"{model}.umap.png", "ind_png": f"{model}.umap.single.prob.png"}
        if multi:
            entry["shared_umap"] = {k: v.replace(model, f"{model}-shared", 1) for k, v in entry["umap"].items()}
    return entry


def cells(model: str, boundaries: bool, umap: bool) -> dict:
    entry = {"id": model, "name": model, "model_id": model, "decode_id": model, "cells_id": model,
             "de": f"{model}-bulk-de.tsv", "info": f"{model}-info.tsv", "post": f"{model}-pseudobulk.tsv.gz",
             "rgb": f"{model}-rgb.tsv", "heatmap_pdf": f"{model}-heatmap.pdf", "heatmap_tsv": f"{model}-heatmap.tsv",
             "raw_pixel_col": False, "pmtiles": {"cells": f"{model}-cells.pmtiles"}}
    if boundaries:
        entry["pmtiles"]["boundaries"] = f"{model}-boundaries.pmtiles"
    if umap:
        entry["umap"] = {"tsv": f"{model}-umap.tsv.gz", "pmtiles": f"{model}-umap.pmtiles",
                         "png": f"{model}.umap.png"}
    return entry


def square(prefix: str) -> dict:
    """import_visiumhd_square: a square factor (its `square_id`, boundaries as the one pmtiles)."""
    return {"id": prefix, "name": prefix, "square_id": prefix, "rgb": f"{prefix}-rgb.tsv",
            "de": f"{prefix}-bulk-de.tsv", "raw_pixel_col": False, "pmtiles": {"boundaries": f"{prefix}.pmtiles"},
            "post": f"{prefix}-pseudobulk.tsv.gz", "info": f"{prefix}-info.tsv",
            "umap": {"tsv": f"{prefix}-umap.tsv.gz", "png": f"{prefix}.umap.png",
                     "ind_png": f"{prefix}.umap.single.binary.png", "pmtiles": f"{prefix}-umap.pmtiles"}}


def write_dataset(root: Path, catalog: dict, extra: tuple[str, ...] = ()) -> Path:
    """The catalog, every file it could name (walked as cartloader's traverse_dict does), and clutter
    cartloader's runs leave beside them (logs, flag files, Makefiles) that is never selected."""
    root.mkdir(parents=True)
    (root / "catalog.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))

    def walk(value, key=""):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, k)
        elif isinstance(value, list):
            for v in value:
                yield from walk(v, key)
        elif isinstance(value, str) and key not in ("id", "name", "title", "description", "default",
                                                     "raw_pixel_col", "analysis_type") and not key.endswith("_id"):
            yield value
    for name in list(walk(catalog)) + ["run_cartload2.log", "cartload.aws.done", "upload_aws.mk",
                                       "t18-f12.done", "tmp/scratch.tsv", *extra]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    return root


def selected(root: Path, parts: tuple[str, ...]) -> set[str]:
    return {f.key for f in select(SourceConfig(dir=root, method="catalog", parts=parts))}


SGE = {"all": "genes_all.pmtiles", "bins": ["genes_bin1.pmtiles", "genes_bin2.pmtiles"],
       "counts": "genes_bin_counts.json"}
SGE_FILES = {"genes_all.pmtiles", "genes_bin1.pmtiles", "genes_bin2.pmtiles", "genes_bin_counts.json"}


def test_ficture_with_umap_cells_boundaries_squares_image_basemap(tmp_path):
    catalog = {
        "id": "xenium-lung.v2",
        "title": "Xenium lung v2.1 / FFPE",
        "description": "FICTURE 2.0 + Xenium Ranger cells/boundaries. See https://example.org/a.b for methods.",
        "assets": {
            "sge": SGE, "overview": "sge-mono-dark.pmtiles",
            "factors": [ficture("t18-f12", "t18-f12-p18-a6", umap=True),
                        dict(ficture("t12-f24", "t12-f24-p12-a6", umap=False), alias="t12-f24-alias.tsv"),
                        cells("xeniumranger", boundaries=True, umap=True),
                        cells("proseg", boundaries=False, umap=False),
                        square("square_008um")],
            "basemap": {"sge": {"default": "dark", "dark": "sge-mono-dark.pmtiles",
                                "light": "sge-mono-light.pmtiles"},
                        "hne": "hne.pmtiles",                                       # background asset
                        "dapi": {"default": "mip", "mip": "dapi-mip.pmtiles"}},     # id1:id2:file
        }}
    root = write_dataset(tmp_path / "xenium", catalog)
    basics = SGE_FILES | {
        "sge-mono-dark.pmtiles", "sge-mono-light.pmtiles",
        "t18-f12-bulk-de.tsv", "t18-f12-info.tsv", "t18-f12-model.tsv", "t18-f12-rgb.tsv", "t18-f12.pmtiles",
        "t18-f12-p18-a6-pseudobulk.tsv.gz", "t18-f12-p18-a6-pixel-raster.pmtiles",
        "t12-f24-bulk-de.tsv", "t12-f24-info.tsv", "t12-f24-model.tsv", "t12-f24-rgb.tsv", "t12-f24.pmtiles",
        "t12-f24-p12-a6-pseudobulk.tsv.gz", "t12-f24-p12-a6-pixel-raster.pmtiles",
        "xeniumranger-bulk-de.tsv", "xeniumranger-info.tsv", "xeniumranger-pseudobulk.tsv.gz",
        "xeniumranger-rgb.tsv", "xeniumranger-heatmap.pdf", "xeniumranger-heatmap.tsv",
        "xeniumranger-cells.pmtiles", "xeniumranger-boundaries.pmtiles",
        "proseg-bulk-de.tsv", "proseg-info.tsv", "proseg-pseudobulk.tsv.gz", "proseg-rgb.tsv",
        "proseg-heatmap.pdf", "proseg-heatmap.tsv", "proseg-cells.pmtiles",
        "square_008um-rgb.tsv", "square_008um-bulk-de.tsv", "square_008um.pmtiles",
        "square_008um-pseudobulk.tsv.gz", "square_008um-info.tsv"}
    optional = {"t18-f12-umap.tsv.gz", "t18-f12-umap.pmtiles", "t18-f12.umap.png", "t18-f12.umap.single.prob.png",
                "t12-f24-alias.tsv",
                "xeniumranger-umap.tsv.gz", "xeniumranger-umap.pmtiles", "xeniumranger.umap.png",
                "square_008um-umap.tsv.gz", "square_008um.umap.png", "square_008um.umap.single.binary.png",
                "square_008um-umap.pmtiles"}
    basemap = {"hne.pmtiles", "dapi-mip.pmtiles"}
    assert selected(root, ("basics",)) == basics | {"catalog.yaml"}
    assert selected(root, ("optional",)) == optional | {"catalog.yaml"}
    assert selected(root, ("basemap",)) == basemap | {"catalog.yaml"}
    assert selected(root, ("basics", "optional")) == basics | optional | {"catalog.yaml"}
    assert selected(root, ALL) == basics | optional | basemap | {"catalog.yaml"}


def test_ficture_without_umap_and_train_only(tmp_path):
    catalog = {"id": "visiumhd-mouse", "title": "Visium HD 3' mouse brain",
               "description": "Factors at 18 um; no UMAP.", "assets": {
                   "sge": SGE, "factors": [ficture("t18-f24", "t18-f24-p18-a6", umap=False),
                                           ficture("t24-f12", None, umap=False)]}}
    root = write_dataset(tmp_path / "hd", catalog)
    basics = SGE_FILES | {
        "t18-f24-bulk-de.tsv", "t18-f24-info.tsv", "t18-f24-model.tsv", "t18-f24-rgb.tsv", "t18-f24.pmtiles",
        "t18-f24-p18-a6-pseudobulk.tsv.gz", "t18-f24-p18-a6-pixel-raster.pmtiles",
        "t24-f12-bulk-de.tsv", "t24-f12-info.tsv", "t24-f12-model.tsv", "t24-f12-rgb.tsv", "t24-f12.pmtiles"}
    assert selected(root, ALL) == selected(root, ("basics",)) == basics | {"catalog.yaml"}
    assert selected(root, ("optional",)) == selected(root, ("basemap",)) == {"catalog.yaml"}


def test_punkst_style_raw_pixel_col_is_never_a_file(tmp_path):
    """punkst's pixel-level outputs name their column set in raw_pixel_col; a value that looks like a file
    name (it has a dot) is still not one: cartloader skips the key."""
    entry = dict(cells("punkst", boundaries=True, umap=False), raw_pixel_col="topK.P1.tsv.gz")
    catalog = {"id": "punkst", "assets": {"sge": SGE, "factors": [entry]}}
    root = write_dataset(tmp_path / "p", catalog)
    got = selected(root, ALL)
    assert "topK.P1.tsv.gz" not in got
    assert got == SGE_FILES | {"punkst-bulk-de.tsv", "punkst-info.tsv", "punkst-pseudobulk.tsv.gz",
                               "punkst-rgb.tsv", "punkst-heatmap.pdf", "punkst-heatmap.tsv", "punkst-cells.pmtiles",
                               "punkst-boundaries.pmtiles", "catalog.yaml"}


def test_multi_sample_collection_with_shared_files(tmp_path):
    """run_cartload2_multi: one folder per sample, each with its own catalog naming shared-model files;
    a sample whose catalog has no id lands under cartloader's folder.replace('_', '-').lower()."""
    def sample(sid: str | None) -> dict:
        factor = ficture("t18-f24", f"t18-f24-p18-a6-{sid or 'x'}", umap=True, multi=True)
        return {**({"id": sid} if sid else {}), "title": f"Sample {sid}", "assets": {"sge": SGE, "factors": [factor]}}
    write_dataset(tmp_path / "coll" / "FB080_O1a", sample("fb080-o1a"))
    write_dataset(tmp_path / "coll" / "FB080_O2b", sample(None))
    got = {f.key for f in select(SourceConfig(dir=tmp_path / "coll", method="catalog", collection=True,
                                              datasets=("FB080_O1a", "FB080_O2b")))}
    decode = {"fb080-o1a": "t18-f24-p18-a6-fb080-o1a", "fb080-o2b": "t18-f24-p18-a6-x"}
    expected = set()
    for prefix, dec in decode.items():
        expected |= {f"{prefix}/{n}" for n in (
            f"{dec}-bulk-de.tsv", f"{dec}-info.tsv", f"{dec}-pseudobulk.tsv.gz", f"{dec}-pixel-raster.pmtiles",
            "t18-f24-model.tsv", "t18-f24-rgb.tsv", "t18-f24.pmtiles",
            "t18-f24-bulk-de.tsv", "t18-f24-info.tsv",                     # shared_de, shared_info
            "t18-f24-umap.tsv.gz", "t18-f24-umap.pmtiles", "t18-f24.umap.png", "t18-f24.umap.single.prob.png",
            "t18-f24-shared-umap.tsv.gz", "t18-f24-shared-umap.pmtiles", "t18-f24-shared.umap.png",
            "t18-f24-shared.umap.single.prob.png", *SGE_FILES, "catalog.yaml")}
    assert got == expected
    only_optional = {f.key for f in select(SourceConfig(dir=tmp_path / "coll", method="catalog", collection=True,
                                                        parts=("optional",)))}
    assert only_optional == {k for k in expected if "umap" in k or k.endswith("catalog.yaml")}


@pytest.mark.parametrize("description", [
    "Mouse brain, 10 um/bin. v1.2",
    "see data/README.md",
    "FICTURE t18.f12 / Xenium 5k panel (2025-01-02)",
    "a.pmtiles",
])
def test_descriptions_and_titles_with_dots_slashes_spaces_are_not_files(tmp_path, description):
    catalog = {"id": "d", "title": description, "description": description, "assets": {"sge": SGE}}
    root = write_dataset(tmp_path / "d", catalog)
    assert selected(root, ALL) == SGE_FILES | {"catalog.yaml"}


def test_catalog_under_another_name_and_outside_the_folder(tmp_path):
    """cartloader's --catalog-yaml: any file, anywhere; data files resolve against --in-dir; published
    as catalog.yaml (the one name viewers open)."""
    root = write_dataset(tmp_path / "d", {"id": "d", "assets": {"sge": SGE}})
    elsewhere = tmp_path / "catalogs" / "catalog_v2.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("id: d\nassets:\n  sge:\n    all: genes_all.pmtiles\n")
    files = select(SourceConfig(dir=root, method="catalog", catalog=elsewhere))
    assert {f.key: f.path for f in files} == {"genes_all.pmtiles": root / "genes_all.pmtiles",
                                              "catalog.yaml": elsewhere}
    inside = root / "catalog_v2.yaml"
    inside.write_text(elsewhere.read_text())
    files = select(SourceConfig(dir=root, method="catalog", catalog=inside))
    assert {f.key: f.path for f in files} == {"genes_all.pmtiles": root / "genes_all.pmtiles",
                                              "catalog.yaml": root / "catalog_v2.yaml"}
