"""What `pip install .` (not -e) ships: every package under cartsync/, found, not listed by hand."""
from __future__ import annotations

import tomllib

from helpers import REPO


def test_every_package_folder_is_found_by_the_install():
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    # found, not a hand-written list (which missed new subpackages)
    assert conf["packages"] == {"find": {"include": ["cartsync*"]}}
    folders = {p.parent for p in (REPO / "cartsync").rglob("*.py") if "__pycache__" not in p.parts}
    # a folder of modules without __init__.py is not a package to find_packages: it would not be installed
    assert sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").exists()) == []
