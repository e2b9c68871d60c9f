"""Source selection: methods, excludes, collections, and paths that try to leave the source folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cartsync.errors import SourceError
from cartsync.manifest import SourceConfig
from cartsync.selection import matches, select


def keys(source: SourceConfig) -> list[str]:
    return [f.key for f in select(source)]


def make(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_all_is_recursive_with_posix_keys_and_excludes(tmp_path):
    make(tmp_path, {"a.pmtiles": "1", "sub/b.tsv": "2", "sub/deep/c.log": "3", "tmp/x": "4", "run.log": "5"})
    assert keys(SourceConfig(dir=tmp_path, method="all")) == [
        "a.pmtiles", "run.log", "sub/b.tsv", "sub/deep/c.log", "tmp/x"]
    assert keys(SourceConfig(dir=tmp_path, method="all", exclude=("*.log", "tmp/**"))) == ["a.pmtiles", "sub/b.tsv"]


@pytest.mark.parametrize("key,pattern,hit", [
    ("a.log", "*.log", True), ("sub/a.log", "*.log", True), ("sub/a.log", "sub/*.log", True),
    ("sub/deep/a.log", "sub/*.log", False), ("sub/deep/a.log", "sub/**/*.log", True),
    ("tmp/a", "tmp/**", True), ("tmpx/a", "tmp/**", False), ("a.tsv.gz", "*.gz", True), ("a.tsv", "?.tsv", True),
])
def test_glob_rules(key, pattern, hit):
    assert matches(key, pattern) is hit


def test_catalog_selects_referenced_files_not_ids(dataset):
    got = keys(SourceConfig(dir=dataset, method="catalog"))
    assert "catalog.yaml" in got and "run_cartload2.log" not in got and "t12-f24.done" not in got
    assert not any(k.startswith("t12-f24-p12-a6") and "." not in k for k in got)   # decode_id is not a file
    assert len(got) == 16


def test_catalog_missing_files_listed_in_one_error(tmp_path):
    make(tmp_path, {"catalog.yaml": "id: x\nassets:\n  a: a.pmtiles\n  b: [b.tsv, c.png]\n", "b.tsv": ""})
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=tmp_path, method="catalog"))
    assert info.value.message == "a.pmtiles: missing\nc.png: missing"
    assert info.value.hint == f"every selected file must exist inside {tmp_path.resolve()}"


def test_catalog_dotdot_and_absolute_are_refused(tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    src = make(tmp_path / "src", {"catalog.yaml": "a: ../outside.txt\nb: /etc/hostname.txt\nc: ok.tsv\n", "ok.tsv": ""})
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=src, method="catalog"))
    assert info.value.message == ("../outside.txt: outside the source folder (named in catalog.yaml)\n"
                                  "/etc/hostname.txt: absolute path in catalog.yaml (catalog paths are relative "
                                  "to the dataset folder)")


def test_symlink_escape_is_refused_by_name(tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    src = make(tmp_path / "src", {"catalog.yaml": "a: link.tsv\n"})
    (src / "link.tsv").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=src, method="catalog"))
    assert info.value.message == f"link.tsv: symlink points outside the source folder (to {tmp_path / 'outside.txt'})"
    with pytest.raises(SourceError):
        select(SourceConfig(dir=src, method="all"))


def test_symlink_inside_is_fine_and_loops_are_named(tmp_path):
    src = make(tmp_path / "src", {"real.tsv": "x", "sub/y.tsv": "y"})
    (src / "alias.tsv").symlink_to(src / "real.tsv")
    (src / "sub" / "up").symlink_to(src)            # a folder loop: walked once, not forever
    # sub/up points back at the root, which was already walked: skipped, so the walk ends
    assert keys(SourceConfig(dir=src, method="all")) == ["alias.tsv", "real.tsv", "sub/y.tsv"]
    (src / "l1.tsv").symlink_to(src / "l2.tsv")
    (src / "l2.tsv").symlink_to(src / "l1.tsv")
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=src, method="list", files=("l1.tsv",)))
    assert info.value.message == "l1.tsv: symlink loop"


def test_list_method_and_escapes(tmp_path):
    src = make(tmp_path / "src", {"a.tsv": "", "b/c.tsv": ""})
    assert keys(SourceConfig(dir=src, method="list", files=("b/c.tsv", "a.tsv"))) == ["a.tsv", "b/c.tsv"]
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=src, method="list", files=("../x", "/etc/passwd", "b/../a.tsv", "nope")))
    assert info.value.message == ("../x: outside the source folder\n/etc/passwd: absolute path "
                                  f"(paths are relative to {src.resolve()})\nnope: missing")


def test_names_with_spaces_unicode_and_empty_files(tmp_path):
    src = make(tmp_path / "src", {"with space.tsv": "", "ünïcødé-π.pmtiles": "x"})
    assert keys(SourceConfig(dir=src, method="all")) == ["with space.tsv", "ünïcødé-π.pmtiles"]


def test_non_utf8_name_is_refused(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    with open(os.path.join(os.fsencode(src), b"bad-\xff.tsv"), "w") as f:
        f.write("x")
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=src, method="all"))
    assert info.value.message == "b'bad-\\xff.tsv': file name is not valid UTF-8 (rename it)"


@pytest.mark.parametrize("text,message", [
    ("a: [unclosed\n", "catalog.yaml:2: catalog is not valid YAML: expected ',' or ']', but got '<stream end>'"),
    ("- a.tsv\n", "catalog.yaml: catalog must be a mapping, got list"),
    ("", "catalog.yaml: catalog must be a mapping, got an empty file"),
    ("id: x\ntitle: only words\n", "catalog.yaml: catalog references no files"),
])
def test_broken_catalogs(tmp_path, text, message):
    src = make(tmp_path / "src", {"catalog.yaml": text})
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=src, method="catalog"))
    assert info.value.message == f"{src.resolve()}/{message}"


def test_catalog_reference_excluded_is_an_error(tmp_path):
    src = make(tmp_path / "src", {"catalog.yaml": "a: a.log\n", "a.log": ""})
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=src, method="catalog", exclude=("*.log",)))
    assert info.value.message == ("a.log: selected by the catalog but matched by an exclude pattern "
                                  "(remove the pattern or the reference)")


def test_collection_lands_each_dataset_under_its_id(tmp_path):
    make(tmp_path, {"s1/catalog.yaml": "id: sample-one\na: a.pmtiles\n", "s1/a.pmtiles": "1", "s1/x.log": "",
                    "s2/catalog.yaml": "b: b.pmtiles\n", "s2/b.pmtiles": "2", "notes/readme.txt": ""})
    assert keys(SourceConfig(dir=tmp_path, method="catalog", collection=True)) == [
        "s2/b.pmtiles", "s2/catalog.yaml", "sample-one/a.pmtiles", "sample-one/catalog.yaml"]
