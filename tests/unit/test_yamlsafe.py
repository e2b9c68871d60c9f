"""Manifests and catalogs are parsed in time linear in their size: alias bombs, deep nesting and
alias cycles are refused with one clear message, through the real CLI in a subprocess (a regression
would hang, and the subprocess timeout turns that into a failure)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO, write_manifest

from cartsync import yamlsafe

# 9 levels of 9 aliases each: 1.3 KB that expands to 9**9 (387 million) values
BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else '0'] * 9)}]\n" for i in range(9))


def run(*args: str, cwd: Path) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "cartsync", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout, done.stderr


def local_manifest(folder: Path, extra: str = "") -> Path:
    path = write_manifest(folder, """
        version: 1
        source: {dir: src, method: catalog}
        targets:
          - {name: local, url: out}
        """, name="m.yaml")
    path.write_text(path.read_text() + extra)
    return path


def source(folder: Path, catalog: str) -> Path:
    src = folder / "src"
    src.mkdir()
    (src / "a.tsv").write_text("a\n")
    (src / "catalog.yaml").write_text(catalog)
    return src


def test_the_bomb_is_small_and_huge():
    assert len(BOMB) < 1500
    assert BOMB.count("*l7") == 9


def test_alias_bomb_manifest_is_refused(tmp_path):
    source(tmp_path, "id: x\nassets: {a: a.tsv}\n")
    local_manifest(tmp_path, "x-bomb:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines()))
    assert run("plan", "m.yaml", cwd=tmp_path) == (1, "", (
        "error: invalid manifest:\n  m.yaml:1: not valid YAML: its aliases expand to 490,329,081 values; "
        "cartsync reads at most 100,000 beyond the 45 written out\n"
        "hint: write the repeated values out, or use fewer nested aliases\n"))
    assert not (tmp_path / "out").exists()


def test_alias_bomb_catalog_is_refused(tmp_path):
    src = source(tmp_path, "id: x\nassets: {a: a.tsv}\n" + BOMB)
    local_manifest(tmp_path)
    assert run("apply", "m.yaml", cwd=tmp_path) == (1, "", (
        f"error: {src.resolve()}/catalog.yaml:1: catalog is not valid YAML: its aliases expand to 490,329,070 "
        "values; cartsync reads at most 100,000 beyond the 34 written out\n"
        "hint: write the repeated values out, or use fewer nested aliases\n"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("depth,line", [(990, 3), (2000, 3)], ids=["990-levels", "past-libyaml-limit"])
def test_deep_catalog_is_refused(tmp_path, depth, line):
    # was: `unexpected RecursionError …, report it` from the catalog walk
    src = source(tmp_path, "id: x\nassets: {a: a.tsv}\ndeep: " + "[" * depth + "]" * depth + "\n")
    local_manifest(tmp_path)
    code, out, err = run("apply", "m.yaml", cwd=tmp_path)
    assert (code, out) == (1, "")
    assert err == (f"error: {src.resolve()}/catalog.yaml:{line}: catalog is not valid YAML: nested more than 100 "
                   "levels deep\nhint: flatten the structure\n")
    assert not (tmp_path / "out").exists()


def test_deep_manifest_is_refused(tmp_path):
    source(tmp_path, "id: x\nassets: {a: a.tsv}\n")
    local_manifest(tmp_path, "x-deep: " + "{a: " * 999 + "1" + "}" * 999 + "\n")
    assert run("validate", "m.yaml", cwd=tmp_path) == (1, "", (
        "error: invalid manifest:\n  m.yaml:5: not valid YAML: nested more than 100 levels deep\n"
        "hint: flatten the structure\n"))


def test_alias_cycle_in_catalog_is_refused(tmp_path):
    src = source(tmp_path, "id: x\nassets: &a {a: a.tsv, again: *a}\n")
    local_manifest(tmp_path)
    assert run("apply", "m.yaml", cwd=tmp_path) == (1, "", (
        f"error: {src.resolve()}/catalog.yaml:2: catalog is not valid YAML: an alias refers to a node that "
        "contains it (a cycle)\nhint: write the repeated value out instead of the alias\n"))


def test_ordinary_aliases_still_work(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source(tmp_path, "id: x\nshared: &f a.tsv\nassets: {a: *f, b: *f}\n")
    (tmp_path / "m.yaml").write_text("version: 1\nsource: {dir: src, method: catalog}\ntargets:\n"
                                     "  - {name: one, url: out1, overwrite: &o changed}\n"
                                     "  - {name: two, url: out2, overwrite: *o}\n")
    assert cli("apply", "m.yaml")[0] == 0
    assert sorted(p.name for p in (tmp_path / "out2").iterdir()) == ["a.tsv", "catalog.yaml"]


def test_parse_matches_safe_load_and_keeps_lines():
    text = "a: &x {b: [1, 2.5, null, true]}\nc: *x\nd: 2026-01-02\n"
    parsed = yamlsafe.parse(text)
    assert parsed.data == yaml.safe_load(text)
    assert [k.start_mark.line for k, _ in parsed.root.value] == [0, 1, 2]
    assert yamlsafe.parse("").data is None and yamlsafe.parse("").root is None


def test_c_loader_is_used_where_pyyaml_has_it():
    assert yaml.__with_libyaml__                  # the shared venv has it; the 50 MB catalog needs it
    assert yamlsafe.LOADER is yaml.CSafeLoader


@pytest.mark.parametrize("text,line,problem", [
    ("a: [unclosed\n", 2, "expected ',' or ']', but got '<stream end>'"),
    ("a: b: c\n", 1, "mapping values are not allowed here"),
    ("a: *nowhere\n", 1, "found undefined alias"),
])
def test_syntax_errors_read_as_the_python_parser_words_them(text, line, problem):
    with pytest.raises(yamlsafe.YamlProblem) as info:
        yamlsafe.parse(text)
    assert (info.value.line, info.value.problem) == (line, problem)
