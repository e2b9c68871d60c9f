"""Source selection: methods, excludes, collections, and paths that try to leave the source folder."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from cartsync.config import SourceConfig
from cartsync.errors import SourceError
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
    # .gitignore's meaning (these excluded nothing before pathspec did the matching)
    ("tmp/a", "tmp/", True), ("sub/tmp/a", "tmp/", True), ("tmp", "tmp/", False), ("tmpx/a", "tmp/", False),
    ("secrets/api.key", "secrets/", True), ("a/secrets/deep/api.key", "secrets/", True),
    ("logs/a.txt", "./logs/**", True), ("sub/logs/a.txt", "./logs/**", False),
    ("top.txt", "/top.txt", True), ("sub/top.txt", "/top.txt", False), ("sub/top.txt", "top.txt", True),
    ("a/b/c/d.tsv", "a/**/d.tsv", True), ("a/d.tsv", "a/**/d.tsv", True), ("x/a/d.tsv", "a/**/d.tsv", False),
])
def test_glob_rules(key, pattern, hit):
    assert matches(key, pattern) is hit


def test_excludes_mean_what_gitignore_means(tmp_path):
    """The case from issue 10: none of these excluded anything, and secrets/api.key was published."""
    make(tmp_path, {"a.pmtiles": "1", "tmp/x.bin": "2", "sub/tmp/y.bin": "3", "secrets/api.key": "k",
                    "logs/run.txt": "4", "sub/logs/keep.txt": "5", "notes.log": "6", "keep.log": "7"})
    got = keys(SourceConfig(dir=tmp_path, method="all",
                            exclude=("tmp/", "secrets/", "./logs/**", "*.log", "!keep.log")))
    assert got == ["a.pmtiles", "keep.log", "sub/logs/keep.txt"]


def test_negation_reincludes_inside_an_excluded_folder(tmp_path):
    make(tmp_path, {"tmp/keep.tsv": "1", "tmp/drop.tsv": "2"})
    assert keys(SourceConfig(dir=tmp_path, method="all", exclude=("tmp/", "!tmp/keep.tsv"))) == ["tmp/keep.tsv"]


def test_a_catalog_under_another_name_is_the_catalog_and_published_as_catalog_yaml(tmp_path):
    src = make(tmp_path / "src", {"mycatalog.yaml": "assets: {a: a.tsv, b: sub/catalog.yaml}\n", "a.tsv": "1",
                                  "sub/catalog.yaml": "x: y\n"})
    got = select(SourceConfig(dir=src, method="catalog", catalog=src / "mycatalog.yaml"))
    assert [(f.key, f.path, f.catalog) for f in got] == [
        ("a.tsv", src / "a.tsv", False), ("catalog.yaml", src / "mycatalog.yaml", True),
        ("sub/catalog.yaml", src / "sub" / "catalog.yaml", False)]    # a data file that happens to be so named


def test_catalog_as_keeps_another_name(tmp_path):
    src = make(tmp_path / "src", {"mycatalog.yaml": "a: a.tsv\n", "a.tsv": "1"})
    got = select(SourceConfig(dir=src, method="catalog", catalog=src / "mycatalog.yaml", catalog_as="v2.yaml"))
    assert [(f.key, f.catalog) for f in got] == [("a.tsv", False), ("v2.yaml", True)]


def test_a_catalog_outside_the_source_resolves_against_the_source(tmp_path):
    """As cartloader's --catalog-yaml: the catalog may be elsewhere, the data files are under --in-dir."""
    src = make(tmp_path / "src", {"a.tsv": "1", "b/c.tsv": "2"})
    make(tmp_path / "meta", {"cat_v2.yaml": "a: a.tsv\nb: b/c.tsv\n", "a.tsv": "not this one"})
    got = select(SourceConfig(dir=src, method="catalog", catalog=tmp_path / "meta" / "cat_v2.yaml"))
    assert [(f.key, f.path, f.catalog) for f in got] == [
        ("a.tsv", src / "a.tsv", False), ("b/c.tsv", src / "b" / "c.tsv", False),
        ("catalog.yaml", tmp_path / "meta" / "cat_v2.yaml", True)]
    # data files must still be inside the source
    (tmp_path / "meta" / "bad.yaml").write_text("a: ../meta/a.tsv\n")
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=src, method="catalog", catalog=tmp_path / "meta" / "bad.yaml"))
    assert info.value.message == "../meta/a.tsv: outside the source folder (named in bad.yaml)"


def test_a_data_file_cannot_take_the_catalogs_published_name(tmp_path):
    src = make(tmp_path / "src", {"mycatalog.yaml": "a: catalog.yaml\n", "catalog.yaml": "old: x.tsv\n"})
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=src, method="catalog", catalog=src / "mycatalog.yaml"))
    assert info.value.message == ("catalog.yaml: named in mycatalog.yaml as a data file, but the catalog is "
                                  "published under that name (rename the file, or set source.catalog_as)")


def test_which_file_is_the_catalog_with_all_list_and_collections(tmp_path):
    make(tmp_path / "one", {"catalog.yaml": "a: a.tsv\n", "a.tsv": "1", "sub/catalog.yaml": "b: c\n"})
    flagged = lambda src: [f.key for f in select(src) if f.catalog]
    assert flagged(SourceConfig(dir=tmp_path / "one", method="all")) == ["catalog.yaml"]
    assert flagged(SourceConfig(dir=tmp_path / "one", method="list", files=("a.tsv", "sub/catalog.yaml"))) == []
    make(tmp_path / "many", {"s1/catalog.yaml": "id: one\na: a.tsv\n", "s1/a.tsv": "1",
                             "s2/catalog.yaml": "a: a.tsv\n", "s2/a.tsv": "2"})
    assert flagged(SourceConfig(dir=tmp_path / "many", method="catalog", collection=True)) == [
        "one/catalog.yaml", "s2/catalog.yaml"]


def test_files_with_cartsyncs_temp_suffix_are_refused(tmp_path):
    """A local target never lists (and cleans up) *.cartsync-tmp: such a source file would never converge."""
    make(tmp_path, {"a.tsv": "1", "big.bin.cartsync-tmp": "2"})
    with pytest.raises(SourceError) as info:
        select(SourceConfig(dir=tmp_path, method="all"))
    assert info.value.message == ("big.bin.cartsync-tmp: ends in .cartsync-tmp, the suffix of cartsync's own temp "
                                  'files (rename it, or exclude it with "*.cartsync-tmp")')
    assert keys(SourceConfig(dir=tmp_path, method="all", exclude=("*.cartsync-tmp",))) == ["a.tsv"]


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


def test_an_excluded_folder_is_not_entered(tmp_path):
    """What is inside an excluded folder (here a symlink out of the source) is no problem of the source."""
    make(tmp_path / "src", {"a.tsv": "1", ".venv/lib/x.py": "2"})
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "src" / ".venv" / "lib" / "out").symlink_to(tmp_path / "elsewhere")
    assert keys(SourceConfig(dir=tmp_path / "src", method="all", exclude=(".venv/",))) == ["a.tsv"]
    with pytest.raises(SourceError):             # with a negation nothing can be skipped unread
        select(SourceConfig(dir=tmp_path / "src", method="all", exclude=(".venv/", "!.venv/lib/x.py")))
