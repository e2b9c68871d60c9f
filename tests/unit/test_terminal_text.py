"""Terminal control sequences in file names and server answers never reach a terminal raw (issue 10, case 14).

A name holding \\r, ESC, a C1 control or a bidi override could rewrite or reorder a plan line ("+ create
a.txt" over "- delete b.txt"). Every human-readable output — plan, report, errors, -v logs — escapes them;
the JSON keeps the exact key (json.dumps escapes control characters itself).
"""
from __future__ import annotations

import json

from helpers import tree, write_manifest

NAMES = {"a\rb.txt": "a\\rb.txt", "\x1b[2Jwipe.txt": "\\x1b[2Jwipe.txt", "evil\u202etxt.exe": "evil\\u202etxt.exe",
         "c1\x9bx.txt": "c1\\x9bx.txt", "two\nlines.txt": "two\\nlines.txt", "tab\there.txt": "tab\\there.txt"}
RAW = tuple(c for name in NAMES for c in name if not c.isalnum() and c not in ".[")


def source(root):
    (root / "src").mkdir()
    for name in NAMES:
        (root / "src" / name).write_bytes(b"x")
    (root / "src" / "plain.txt").write_bytes(b"y")
    return write_manifest(root, """
        version: 1
        source: {dir: src, method: all}
        targets:
          - {name: out, url: out, delete: true}
        """, name="m.yaml")


def no_raw_controls(text: str) -> bool:
    return not any(c in text for c in RAW if c != "\n") and all(line.isprintable() for line in text.splitlines())


def test_plan_escapes_control_characters_in_names(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    source(tmp_path)
    code, out, err = cli("plan", "m.yaml")
    assert (code, err) == (0, "")
    assert out == (f"Target out → {tmp_path}/out\n"
                   "  + create   \\x1b[2Jwipe.txt    1 B\n"
                   "  + create   a\\rb.txt           1 B\n"
                   "  + create   c1\\x9bx.txt        1 B\n"
                   "  + create   evil\\u202etxt.exe  1 B\n"
                   "  + create   plain.txt          1 B\n"
                   "  + create   tab\\there.txt      1 B\n"
                   "  + create   two\\nlines.txt     1 B\n"
                   "Plan: 7 to create, 0 to replace, 0 to delete, 0 unchanged (7 B to send).\n")
    code, out, _ = cli("plan", "m.yaml", "--json")
    assert sorted(a["key"] for a in json.loads(out)["plans"][0]["actions"]) == sorted([*NAMES, "plain.txt"])


def test_apply_report_and_verbose_log_escape_them_and_the_files_keep_their_names(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    source(tmp_path)
    code, out, err = cli("-v", "apply", "m.yaml")
    assert code == 0 and no_raw_controls(out) and no_raw_controls(err)
    for shown in NAMES.values():
        assert f"INFO: create {shown} (1 B)\n" in err
        assert f"  + create   {shown}" in err
    assert sorted(tree(tmp_path / "out")) == sorted([*NAMES, "plain.txt"])      # the exact names, on disk
    # a deletion, in the plan and the report
    (tmp_path / "src" / "\x1b[2Jwipe.txt").unlink()
    code, out, err = cli("apply", "m.yaml")
    assert (code, out) == (0, "out: 0 created, 0 replaced, 1 deleted; 0 B sent in " + out.split(" sent in ")[1])
    assert "  - delete   \\x1b[2Jwipe.txt  1 B\n" in err and no_raw_controls(err)


def test_errors_escape_them(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    write_manifest(tmp_path, """
        version: 1
        source: {dir: src, method: list, files: ["gone\\e[2J\\r.txt"]}
        targets:
          - {name: out, url: out}
        """, name="m.yaml")
    code, out, err = cli("plan", "m.yaml")
    assert (code, out, err) == (1, "", "error: gone\\x1b[2J\\r.txt: missing\n"
                                       f"hint: every selected file must exist inside {tmp_path}/src\n")


def test_a_server_answer_with_control_characters_is_escaped_in_the_plan(tmp_path, monkeypatch, cli, dataset, zenodo):
    """Zenodo's metadata is shown in the plan's diff: a title holding ESC must not reach the terminal raw."""
    from helpers import zenodo_manifest
    monkeypatch.chdir(tmp_path)
    zenodo_manifest(tmp_path, zenodo.url)
    assert cli("apply", "manifest.yaml")[0] == 0
    (dep,) = zenodo.depositions.values()
    dep.metadata["title"] = "Mouse\x1b]0;pwned\x07 brain"
    code, out, err = cli("plan", "manifest.yaml")
    assert code == 0 and no_raw_controls(out)
    assert "  ~ metadata.title: 'Mouse\\x1b]0;pwned\\x07 brain' → 'Mouse brain, Visium HD, FICTURE factors'\n" in out
