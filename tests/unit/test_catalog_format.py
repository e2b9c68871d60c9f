"""The cartload2 catalog format on parsed data: file values, cartloader's parts, the dataset id.

And the split it stands for: the manifest's values (config) and the format import no YAML or jsonschema,
checked in a fresh interpreter, so a backend importing them does not load the manifest's readers.
"""
from __future__ import annotations

import os
import subprocess
import sys

from helpers import REPO

from cartsync import catalog_format


def test_references_name_files_not_ids_or_prose(tmp_path):
    data = {"id": "mouse-brain", "title": "Mouse brain", "description": "a sample.tsv with spaces",
            "assets": {"basemap": {"default": "sge", "sge": "sge.pmtiles", "he": "he.pmtiles"},
                       "factors": [{"id": "t18", "pmtiles": "t18.pmtiles", "umap": {"tsv": "t18.umap.tsv"},
                                    "alias": "t18.alias.tsv"}]}}
    assert list(catalog_format.references(data, tmp_path)) == [
        ("assets.basemap.sge", "sge.pmtiles"), ("assets.basemap.he", "he.pmtiles"),
        ("assets.factors.pmtiles", "t18.pmtiles"), ("assets.factors.umap.tsv", "t18.umap.tsv"),
        ("assets.factors.alias", "t18.alias.tsv")]


def test_files_in_parts_follow_cartloaders_groups_in_catalog_order():
    named = [("assets.basemap.sge", "sge.pmtiles"), ("assets.basemap.he", "he.pmtiles"),
             ("assets.factors.pmtiles", "t18.pmtiles"), ("assets.factors.umap.tsv", "t18.umap.tsv"),
             ("assets.factors.alias", "t18.alias.tsv"), ("assets.more", "t18.pmtiles")]
    assert catalog_format.files_in_parts(named, ("basics",)) == ["sge.pmtiles", "t18.pmtiles"]
    assert catalog_format.files_in_parts(named, ("optional",)) == ["t18.umap.tsv", "t18.alias.tsv"]
    assert catalog_format.files_in_parts(named, ("basemap",)) == ["he.pmtiles"]
    assert catalog_format.files_in_parts(named, catalog_format.PARTS) == [
        "sge.pmtiles", "he.pmtiles", "t18.pmtiles", "t18.umap.tsv", "t18.alias.tsv"]


def test_dataset_id_falls_back_when_the_id_is_no_path_segment():
    assert catalog_format.dataset_id({"id": " s1 "}, "x") == "s1"
    assert [catalog_format.dataset_id({"id": v}, "x") for v in ("a/b", "..", "", 3)] == ["x"] * 4
    assert catalog_format.cartloader_id("S2_Raw") == "s2-raw"


def test_config_and_catalog_format_load_no_yaml_or_jsonschema():
    code = ("import sys, cartsync.config, cartsync.catalog_format, cartsync.identity; "
            "print(sorted(m for m in ('yaml', 'jsonschema', 'cartsync.manifest', 'cartsync.yamlsafe') "
            "if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
