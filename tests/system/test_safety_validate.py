"""Issue 10, "must never destroy": what `validate` (and so plan and apply) refuses before anything is read
remotely or written: targets overlapping the source, the manifest or each other (cases 1 and family),
excludes whose form matches nothing (case 3) and store URLs that would write unintended keys (case 6).

Each case runs the CLI in-process from the manifest's folder, asserts the whole stderr, and checks the disk
(and the S3 server's request log) independently: nothing changed, nothing sent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import tree, write_manifest


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.tsv").write_text("a\n")
    (tmp_path / "data" / "secrets").mkdir()
    (tmp_path / "data" / "secrets" / "api.key").write_text("k\n")
    return tmp_path


def manifest(source: str, *targets: str, name: str = "m.yaml") -> Path:
    lines = "".join(f"  - {t}\n" for t in targets)
    return write_manifest(Path.cwd(), f"version: 1\nsource: {source}\ntargets:\n{lines}", name=name)


def refused(cli, *problems: str, hint: str = "") -> None:
    """validate, plan and apply all stop with exactly these problems, and the folder is left as it was."""
    before = tree(Path.cwd())
    head = "error: invalid manifest" + (f" ({len(problems)} problems)" if len(problems) > 1 else "") + ":\n"
    want = head + "".join(f"  {p}\n" for p in problems) + hint
    for command in ("validate", "plan", "apply"):
        assert cli(command, "m.yaml") == (1, "", want), command
    assert tree(Path.cwd()) == before


# ---- case 1: a target and the source never overlap ----------------------------------------------

def test_a_target_holding_the_source_is_refused(here, cli):
    """`url: .` beside `source.dir: data` with delete: true deleted the source, the manifest and more."""
    manifest("{dir: data, method: all}", "{name: web, url: ., delete: true}")
    refused(cli, f"m.yaml:4: targets[0].url: {here} contains the source folder {here}/data (choose a target folder "
                 "outside the source folder (with delete: true cartsync would delete the source))")


def test_a_target_inside_the_source_is_refused(here, cli):
    """`source.dir: .`, `url: published` nested one level deeper on every run."""
    manifest("{dir: ., method: all}", "{name: web, url: published}")
    refused(cli, f"m.yaml:4: targets[0].url: {here}/published is inside the source folder {here} (choose a target "
                 "folder outside the source folder (each run would publish the last copy again, one level deeper))")


def test_the_source_itself_as_target_and_file_urls(here, cli):
    manifest("{dir: data, method: all}", f"{{name: web, url: 'file://{here}/data'}}")
    refused(cli, f"m.yaml:4: targets[0].url: {here}/data is the source folder {here}/data (choose a target folder "
                 "outside the source folder)")


def test_overlap_through_a_symlink_is_refused(here, cli):
    (here / "mirror").symlink_to(here / "data")
    (here / "up").symlink_to(here)
    manifest("{dir: data, method: all}", "{name: web, url: mirror/pub}")
    refused(cli, f"m.yaml:4: targets[0].url: {here}/mirror/pub (through a symlink: {here}/data/pub) is inside the "
                 f"source folder {here}/data (choose a target folder outside the source folder (each run would publish "
                 "the last copy again, one level deeper))")
    manifest("{dir: data, method: all}", "{name: web, url: up}")
    refused(cli, f"m.yaml:4: targets[0].url: {here}/up (through a symlink: {here}) contains the source folder "
                 f"{here}/data (choose a target folder outside the source folder (with delete: true cartsync would "
                 "delete the source))")


def test_a_symlink_inside_the_target_is_never_followed(here, cli):
    """A link in the target pointing at the source is the target's entry, not a way into the source: with
    delete: true the link goes, the source stays."""
    (here / "pub").mkdir()
    (here / "pub" / "data").symlink_to(here / "data")
    manifest("{dir: data, method: all}", "{name: web, url: pub, delete: true}")
    source = tree(here / "data")
    assert cli("apply", "m.yaml")[0] == 0
    assert tree(here / "data") == source
    assert tree(here / "pub") == source and not (here / "pub" / "data").is_symlink()


def test_a_target_holding_the_manifest_or_its_state_file_is_refused(here, cli):
    (here / "conf").mkdir()
    os.chdir(here / "conf")
    write_manifest(here / "conf", "version: 1\nsource: {dir: ../data, method: all}\ntargets:\n"
                   "  - {name: web, url: .., delete: true}\n", name="m.yaml")
    # (the target also contains the source: that is the one problem named)
    assert cli("validate", "m.yaml")[2].startswith(f"error: invalid manifest:\n  m.yaml:4: targets[0].url: {here} "
                                                    f"contains the source folder {here}/data")
    write_manifest(here / "conf", f"version: 1\nsource: {{dir: {here}/data, method: all}}\ntargets:\n"
                   f"  - {{name: web, url: {here}/conf, delete: true}}\n", name="m.yaml")
    before = tree(here)
    assert cli("validate", "m.yaml") == (1, "", (
        f"error: invalid manifest:\n  m.yaml:4: targets[0].url: {here}/conf holds the manifest {here}/conf/m.yaml "
        "(choose a target folder that does not hold the manifest)\n"))
    # the state file's folder is the manifest's, so holding the state file means holding the manifest, except
    # through a symlinked state folder: the check is on real paths, so both read the same
    assert tree(here) == before


def test_a_target_holding_an_outside_catalog_is_refused(here, cli):
    (here / "meta").mkdir()
    (here / "meta" / "cat.yaml").write_text("a: a.tsv\n")
    manifest("{dir: data, catalog: ../meta/cat.yaml}", "{name: web, url: meta, delete: true}")
    refused(cli, f"m.yaml:4: targets[0].url: {here}/meta holds the catalog {here}/meta/cat.yaml (choose a target "
                 "folder that does not hold the catalog)")


def test_a_target_holding_a_zenodo_token_file_is_refused(here, cli):
    (here / "keys").mkdir()
    (here / "keys" / "zenodo").write_text("secret-token-value\n")
    manifest("{dir: data, method: all}", "{name: web, url: keys, delete: true}",
             "{name: doi, zenodo: {url: 'https://sandbox.zenodo.org', token_file: keys/zenodo, deposition: 1, "
             "metadata: {title: Some title}}}")
    refused(cli, f"m.yaml:4: targets[0].url: {here}/keys holds the token file of target doi {here}/keys/zenodo "
                 "(choose a target folder that does not hold the token file of target doi)")


def test_targets_that_overlap_each_other_are_refused(here, cli):
    manifest("{dir: data, method: all}", "{name: web, url: pub, delete: true}", "{name: mirror, url: pub/sub}",
             "{name: s1, url: 's3://bucket-one/p'}", "{name: s2, url: 's3://bucket-one/p/sub'}",
             "{name: s3, url: 's3://bucket-one/p2'}",
             "{name: s4, url: 's3://bucket-one/p', storage_options: {endpoint_url: 'http://127.0.0.1:1'}}")
    refused(cli,
            f"m.yaml:5: targets[1].url: {here}/pub/sub overlaps target web ({here}/pub) (give each target its own "
            "folder or prefix: a target holding another one would take the other's files for its own (and delete "
            "them with delete: true))",
            "m.yaml:7: targets[3].url: s3://bucket-one/p/sub overlaps target s1 (s3://bucket-one/p) (give each target "
            "its own folder or prefix: a target holding another one would take the other's files for its own (and "
            "delete them with delete: true))")


def test_a_sibling_target_is_fine(here, cli):
    manifest("{dir: data, method: all}", "{name: web, url: pub, delete: true}", "{name: two, url: data2}")
    code, out, err = cli("validate", "m.yaml")
    assert (code, err) == (0, "")
    assert out == "m.yaml: valid; 2 file(s) selected from " f"{here}/data; target(s): web, two\n"


# ---- case 3: excludes with .gitignore's meaning; a form that matches nothing is an error ----------

def test_excludes_that_matched_nothing_now_exclude(here, cli, tmp_path):
    """`tmp/`, `secrets/`, `./logs/**` excluded nothing and validate accepted them: secrets/api.key went out."""
    (here / "data" / "logs").mkdir()
    (here / "data" / "logs" / "run.txt").write_text("l\n")
    (here / "data" / "tmp").mkdir()
    (here / "data" / "tmp" / "x").write_text("t\n")
    manifest('{dir: data, method: all, exclude: ["tmp/", "secrets/", "./logs/**"]}', "{name: web, url: ../pub}")
    assert cli("validate", "m.yaml") == (0, f"m.yaml: valid; 1 file(s) selected from {here}/data; target(s): web\n",
                                         "")
    assert cli("apply", "m.yaml")[0] == 0
    assert tree(tmp_path.parent / "pub") == {"a.tsv": b"a\n"}


def test_exclude_forms_that_match_nothing_are_errors(here, cli):
    manifest(f'{{dir: data, method: all, exclude: ["#notes", "logs/../tmp", "!", "{here}/data/tmp/", "ok/"]}}',
             "{name: web, url: pub}")
    refused(cli,
            "m.yaml:2: source.exclude[0]: \"#notes\" starts with '#', which .gitignore reads as a comment: it matches "
            "nothing (write \\# to match a name that starts with #)",
            "m.yaml:2: source.exclude[1]: \"logs/../tmp\" has a '.' or '..' segment, and the paths it is matched "
            "against never do (write the path from source.dir, e.g. /logs/** or logs/)",
            'm.yaml:2: source.exclude[2]: "!" matches nothing (write a name, a folder/ or a glob such as *.log)',
            f'm.yaml:2: source.exclude[3]: "{here}/data/tmp/" is an absolute path; patterns are relative to '
            "source.dir (write /tmp/ (a leading / anchors it at source.dir))")


# ---- case 6: store URLs whose form would write unintended keys --------------------------------------

@pytest.mark.parametrize("url,problem,fix", [
    ("s3://bucket-one//p", "has an empty path segment (//)", "write s3://bucket-one/p"),
    ("s3://bucket-one/p/../q", "has a '..' path segment", "write s3://bucket-one/q"),
    ("s3://bucket-one/p/./r", "has a '.' path segment", "write s3://bucket-one/p/r"),
    ("s3://bucket-one/p//r/", "has an empty path segment (//)", "write s3://bucket-one/p/r"),
    ("s3://bucket-one/..", "has a '..' path segment", "write s3://bucket-one"),
    ("gs://bucket-one/a/./b", "has a '.' path segment", "write gs://bucket-one/a/b"),
    ("memory://x//y", "has an empty path segment (//)", "write memory://x/y"),
])
def test_malformed_store_urls_are_refused_with_the_fix(here, cli, url, problem, fix):
    manifest("{dir: data, method: all}", f"{{name: web, url: '{url}'}}")
    refused(cli, f'm.yaml:4: targets[0].url: "{url}" {problem}, which the store would keep in every key ({fix})')


def test_a_url_with_a_backslash_is_refused(here, cli):
    manifest("{dir: data, method: all}", "{name: web, url: 's3://bucket-one/p\\q'}")
    refused(cli, 'm.yaml:4: targets[0].url: "s3://bucket-one/p\\\\q" has a backslash, which the store would keep in '
                 "every key (it separates no folders there) (write s3://bucket-one/p/q)")


def test_a_url_with_a_space_at_an_end_is_refused(here, cli):
    manifest("{dir: data, method: all}", "{name: web, url: 's3://bucket-one/p '}")
    refused(cli, "m.yaml:4: targets[0].url: \"s3://bucket-one/p \" has a space at the start or end, which would "
                 "become part of every key (write 's3://bucket-one/p')")


def test_malformed_url_never_reaches_s3(here, cli, s3):
    manifest("{dir: data, method: all}",
             f"{{name: web, url: 's3://{s3.bucket}//p', storage_options: {{endpoint_url: '{s3.endpoint_url}'}}}}")
    assert cli("apply", "m.yaml")[0] == 1
    assert s3.requests == [] and s3.list_objects(s3.bucket, "") == {}
