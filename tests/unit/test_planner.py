"""The planner is pure: rows of (local, remote, settings) → expected actions."""
from __future__ import annotations

from pathlib import Path

import pytest

from cartsync.errors import PlanError
from cartsync.model import Kind, LocalFile, RemoteFile
from cartsync.planner import make_plan


def L(key: str, size: int = 10, md5: str = "aa", catalog: bool = False) -> LocalFile:
    return LocalFile(key, Path("/x") / key, size, md5, catalog=catalog)


def R(key: str, size: int = 10, md5: str | None = "aa") -> RemoteFile:
    return RemoteFile(key, size, md5)


ROWS = [
    ("new file", [L("a")], [], {}, [("create", "a", "new")]),
    ("same", [L("a")], [R("a")], {}, [("keep", "a", "same size and md5")]),
    ("size differs", [L("a", 12)], [R("a", 10)], {}, [("replace", "a", "size 10 → 12")]),
    ("same size other md5", [L("a")], [R("a", md5="bb")], {}, [("replace", "a", "same size, content differs (md5)")]),
    ("no remote checksum", [L("a")], [R("a", md5=None)], {},
     [("replace", "a", "same size, no remote checksum to compare")]),
    ("never", [L("a", 12)], [R("a")], {"overwrite": "never"}, [("keep", "a", "exists (overwrite: never)")]),
    ("never still creates", [L("b")], [], {"overwrite": "never"}, [("create", "b", "new")]),
    ("always", [L("a")], [R("a")], {"overwrite": "always"}, [("replace", "a", "overwrite: always")]),
    ("orphan kept", [L("a")], [R("a"), R("z")], {}, [("keep", "a", "same size and md5")]),
    ("orphan deleted", [L("a")], [R("a"), R("z")], {"delete": True},
     [("keep", "a", "same size and md5"), ("delete", "z", "not in source")]),
    # which file is a catalog is the selection's flag, not its name (a nested data file may be called
    # catalog.yaml; the flag is what holds a catalog back)
    ("order: data, catalogs, deletes", [L("catalog.yaml", catalog=True), L("z.pmtiles"),
                                        L("s1/catalog.yaml", catalog=True), L("a.tsv"), L("docs/catalog.yaml")],
     [R("old")], {"delete": True},
     [("create", "a.tsv", "new"), ("create", "docs/catalog.yaml", "new"), ("create", "z.pmtiles", "new"),
      ("create", "catalog.yaml", "new"), ("create", "s1/catalog.yaml", "new"), ("delete", "old", "not in source")]),
    ("file in the way of a folder, local target", [L("a/b.tsv"), L("c")], [R("a"), R("c")],
     {"delete": True, "folders": True},
     [("delete", "a", "in the way of a/b.tsv"), ("create", "a/b.tsv", "new"), ("keep", "c", "same size and md5")]),
    ("folder in the way of a file, local target", [L("a")], [R("a/b.tsv"), R("a/c/d.tsv"), R("z")],
     {"delete": True, "folders": True},
     [("delete", "a/b.tsv", "in the way of a"), ("delete", "a/c/d.tsv", "in the way of a"), ("create", "a", "new"),
      ("delete", "z", "not in source")]),
    ("file and folder may share a name on a store without folders", [L("a/b.tsv")], [R("a")], {"delete": True},
     [("create", "a/b.tsv", "new"), ("delete", "a", "not in source")]),
]


@pytest.mark.parametrize("what,local,remote,settings,expected", ROWS, ids=[r[0] for r in ROWS])
def test_plan_rows(what, local, remote, settings, expected):
    plan = make_plan("t", "u", {f.key: f for f in local}, {r.key: r for r in remote}, **settings)
    assert [(a.kind.value, a.key, a.reason) for a in plan.actions] == expected


def test_orphans_note_and_has_changes():
    plan = make_plan("t", "u", {"a": L("a")}, {"a": R("a"), "z": R("z")})
    assert plan.notes == ("1 remote file(s) not in the source are kept (delete: false)",)
    assert not plan.has_changes and len(plan.of(Kind.KEEP)) == 1


@pytest.mark.parametrize("local,remote,message", [
    ([L("a/b.tsv")], [R("a")], "target t: a on the target is a file where the source has a folder (a/b.tsv)"),
    ([L("a")], [R("a/b.tsv"), R("a/c.tsv")],
     "target t: a/b.tsv on the target is inside a folder where the source has a file (a) (and 1 more)"),
])
def test_in_the_way_without_delete_is_an_error(local, remote, message):
    with pytest.raises(PlanError) as info:
        make_plan("t", "u", {f.key: f for f in local}, {r.key: r for r in remote}, folders=True)
    assert info.value.message == message
    assert info.value.hint == "set delete: true on the target to let cartsync remove it first, or remove it yourself"
