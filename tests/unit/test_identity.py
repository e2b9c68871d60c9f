"""The one identity hash: both stored identities keep the values earlier releases wrote.

The expected values were computed by the two formulas this module replaced (manifest.marker_for and
locks._ident): a deposition marker lives in Zenodo notes, so a change would orphan every deposition's
recovery; a lock name lives in the cache folder.
"""
from __future__ import annotations

from pathlib import Path

from cartsync import identity


def test_deposition_marker_keeps_its_published_value():
    assert identity.deposition_marker(server="https://zenodo.org", target="doi", dataset="cartload2",
                                      metadata="{}") == "cartsync:493af1eb7077d1c6"
    assert identity.deposition_marker(parent="cartsync:0123456789abcdef", dataset="s1") == "cartsync:d31daa461d7875ac"


def test_deposition_marker_ignores_the_order_fields_come_in():
    assert identity.deposition_marker(dataset="s1", parent="cartsync:0123456789abcdef") == "cartsync:d31daa461d7875ac"


def test_run_key_keeps_the_lock_names_on_disk():
    manifest = Path("/data/project/m.yaml")
    assert identity.run_key(manifest, "web") == "ce04f868435f675a"
    assert identity.run_key(manifest, "web", "s1") == "741aae93761e7711"


def test_run_key_is_the_identity_digest_of_path_target_and_dataset():
    manifest = Path("/data/project/m.yaml")
    assert identity.run_key(manifest, "web", "s1") == identity.digest("/data/project/m.yaml", "web", "s1")
    assert identity.run_key(manifest, "web", "s1") != identity.run_key(manifest, "web", "s2")
