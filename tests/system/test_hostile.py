"""Hostile and broken input, end to end through the CLI.

Every case runs `cartsync plan|apply|upload-*` in-process, asserts the exact
user-facing message (the whole stderr, or the exact error/report lines) and
that nothing was sent: no write reached the S3 server (PutObject, UploadPart,
CreateMultipartUpload, DeleteObject… counted by tests/fakes/s3server.py), no
POST/PUT/DELETE in the Zenodo fake's log (or no request at all where the check
comes before any request), and a local target folder left as it was.

The unit tests in test_manifest.py / test_selection.py own the wording of the
individual problems; here the point is what the user sees (`error: …`,
`hint: …`) and that the refusal comes before anything is sent.

Cases marked xfail(strict=True) are findings: the assertion states what a
careful user would expect; the reason says what happens today.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from helpers import tree, write_manifest

S3_WRITE_OPS = ("PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload", "DeleteObject",
                "DeleteObjects", "CopyObject")
TOKEN = "test-token-zz9"


# ---- helpers ------------------------------------------------------------------------------------

@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """Run from tmp_path, so manifests are named as the user typed them (m.yaml:3: …)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def s3_writes(s3) -> int:
    counts = s3.counts()
    return sum(counts[op] for op in S3_WRITE_OPS)


def zenodo_writes(zenodo) -> list[tuple[str, str, int]]:
    return [r for r in zenodo.requests if r[0] in ("POST", "PUT", "DELETE", "PATCH")]


def s3_manifest(s3, src: str = "cartload2", method: str = "catalog", prefix: str = "p", extra: str = "",
                endpoint: str | None = None, name: str = "m.yaml") -> Path:
    return write_manifest(Path.cwd(), f"""
        version: 1
        source:
          dir: {src}
          method: {method}
        targets:
          - name: web
            url: s3://{s3.bucket}/{prefix}
            storage_options: {{endpoint_url: "{endpoint or s3.endpoint_url}"}}
        """ + extra, name=name)


def local_manifest(src: str = "cartload2", method: str = "catalog", name: str = "m.yaml") -> Path:
    return write_manifest(Path.cwd(), f"""
        version: 1
        source: {{dir: {src}, method: {method}}}
        targets:
          - {{name: local, url: out}}
        """, name=name)


def zenodo_yaml(url: str, src: str = "cartload2", method: str = "catalog", name: str = "m.yaml",
                target: dict | None = None, **z) -> Path:
    """A manifest with one zenodo target `doi`; `z` goes into `zenodo:` (token_env ZT unless a token_file)."""
    if "token_file" not in z:
        z.setdefault("token_env", "ZT")
    data = {"version": 1, "source": {"dir": src, "method": method},
            "targets": [{"name": "doi", **(target or {}), "zenodo": {"url": url, **z, "metadata": {
                "title": "Hostile input", "upload_type": "dataset", "description": "d",
                "creators": ["Doe, Jane"]}}}]}
    path = Path.cwd() / name
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


def make_src(root: Path, files: dict[str, bytes | str]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def hint_inside(root: Path) -> str:
    return f"hint: every selected file must exist inside {root.resolve()}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """Like the `cli` fixture, but also returns argparse's exit code instead of raising SystemExit."""
    from cartsync.cli import main
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


# ---- the manifest -------------------------------------------------------------------------------

@pytest.mark.parametrize("text,problem", [
    ("version: 1\nsource: {dir: cartload2\ntargets:\n  - {name: local, url: out}\n",
     "m.yaml:3: not valid YAML: expected ',' or '}', but got ':'"),
    ("version: 1\nsource:\n\tdir: cartload2\ntargets:\n  - {name: local, url: out}\n",
     "m.yaml:3: not valid YAML: found character '\\t' that cannot start any token"),
], ids=["unclosed-brace", "tab-indent"])
def test_malformed_yaml(here, cli, dataset, text, problem):
    (here / "m.yaml").write_text(text)
    assert cli("apply", "m.yaml") == (1, "", f"error: invalid manifest:\n  {problem}\nhint: check indentation and quoting\n")
    assert not (here / "out").exists()


def test_wrong_types_all_reported_at_once(here, cli, dataset, s3):
    (here / "m.yaml").write_text(f'version: "1"\nsource:\n  dir: cartload2\n  exclude: "*.log"\ntargets:\n'
                                 f'  - name: web\n    url: s3://{s3.bucket}/p\n    delete: 1\n    part_size: [16MiB]\n')
    assert cli("apply", "m.yaml") == (1, "", (
        "error: invalid manifest (4 problems):\n"
        '  m.yaml:1: version: a string "1" is not allowed (use 1)\n'
        '  m.yaml:4: source.exclude: expected a list, got a string "*.log"\n'
        "  m.yaml:8: targets[0].delete: expected true or false, got a number 1\n"
        '  m.yaml:9: targets[0].part_size: a list has the wrong form (a number of bytes (at least 5 MiB) or a size '
        'like "64MiB")\n'))
    assert s3.requests == []


def test_source_and_targets_of_the_wrong_shape(here, cli, dataset):
    (here / "m.yaml").write_text("version: 1\nsource: cartload2\ntargets: {name: local, url: out}\n")
    assert cli("apply", "m.yaml") == (1, "", (
        "error: invalid manifest (2 problems):\n"
        '  m.yaml:2: source: expected a mapping, got a string "cartload2"\n'
        "  m.yaml:3: targets: expected a list, got a mapping\n"))
    assert not (here / "out").exists()


def test_unknown_keys_at_every_level(here, cli, dataset, s3):
    (here / "m.yaml").write_text(f'version: 1\nsource:\n  dir: cartload2\n  exlude: ["*.log"]\ntargets:\n'
                                 f'  - name: web\n    url: s3://{s3.bucket}/p\n    storage_option: {{anon: true}}\n'
                                 f'    overwite: always\ndelete: true\n')
    assert cli("apply", "m.yaml") == (1, "", (
        "error: invalid manifest (4 problems):\n"
        "  m.yaml:4: source.exlude: unknown key (did you mean 'exclude'?)\n"
        "  m.yaml:8: targets[0].storage_option: unknown key (did you mean 'storage_options'?)\n"
        "  m.yaml:9: targets[0].overwite: unknown key (did you mean 'overwrite'?)\n"
        "  m.yaml:10: delete: unknown key (allowed keys: source, targets, version)\n"))
    assert s3.requests == []


def test_duplicate_key_is_an_error(here, cli, dataset):
    (here / "out").mkdir()
    (here / "out" / "keep-me.txt").write_text("published earlier")
    (here / "m.yaml").write_text("version: 1\nsource:\n  dir: cartload2\ntargets:\n  - name: local\n    url: out\n"
                                 "    delete: false\n    delete: true\n")
    before = tree(here / "out")
    code, out, err = cli("apply", "m.yaml")
    assert tree(here / "out") == before
    assert (code, out, err) == (1, "", "error: invalid manifest:\n  m.yaml:8: targets[0].delete: duplicate key (also "
                                "on line 7; YAML would keep only the last)\n")


def test_missing_manifest(here, cli):
    assert cli("apply", "nope.yaml") == (1, "", "error: invalid manifest:\n  nope.yaml: no such file\n"
                                                "hint: check the manifest path\n")


def test_manifest_not_utf8(here, cli, dataset):
    (here / "m.yaml").write_bytes(b"version: 1\n# caf\xe9\nsource: {dir: cartload2}\n")
    # the line and the fix, not the codec's "position 16" (issue 10)
    assert cli("apply", "m.yaml") == (1, "", "error: invalid manifest:\n  m.yaml:2: is not UTF-8 (byte 0xe9); cartsync "
                                             "reads manifests as UTF-8\nhint: save it as UTF-8 (e.g. iconv -f latin1 "
                                             "-t UTF-8 m.yaml > utf8.yaml, then use utf8.yaml)\n")
    assert not (here / "out").exists()


def test_missing_source_folder(here, cli, s3):
    s3_manifest(s3, src="nope")
    assert cli("apply", "m.yaml") == (1, "", f"error: invalid manifest:\n  m.yaml:3: source.dir: {here}/nope does not "
                                             "exist (paths are relative to the manifest's folder)\n")
    assert s3.requests == []


def test_source_folder_is_a_file(here, cli, dataset):
    local_manifest(src="cartload2/genes_all.pmtiles")
    assert cli("apply", "m.yaml") == (1, "", (
        f"error: invalid manifest:\n  m.yaml:2: source.dir: {here}/cartload2/genes_all.pmtiles is not a folder "
        "(paths are relative to the manifest's folder)\n"))
    assert not (here / "out").exists()


def test_credentials_in_the_url_are_refused_and_not_echoed(here, cli, dataset, s3):
    (here / "m.yaml").write_text("version: 1\nsource: {dir: cartload2}\ntargets:\n"
                                 f"  - {{name: web, url: \"s3://AKIAHOSTILE:wJalrHOSTILEsecret@{s3.bucket}/p\"}}\n")
    code, out, err = cli("apply", "m.yaml")
    assert (code, out, err) == (1, "", "error: invalid manifest:\n  m.yaml:4: targets[0].url: looks like it holds a "
                                "credential (put credentials in the environment, a profile or storage_options, never "
                                "in the URL)\n")
    assert "HOSTILEsecret" not in err and s3.requests == []


def test_unknown_target_flag(here, cli, dataset, s3):
    s3_manifest(s3)
    assert cli("apply", "m.yaml", "--target", "wbe") == (1, "", "error: --target wbe: m.yaml has no target of that "
                                                                "name (targets: web)\n")
    assert s3.requests == []


def test_usage_error_with_detailed_exitcode_is_not_exit_2(here, capsys, dataset):
    local_manifest()
    code, out, err = run_main(capsys, "plan", "m.yaml", "--detailed-exitcode", "--jobs", "many")
    assert err.endswith("cartsync plan: error: argument --jobs/-j: invalid int value: 'many'\n")
    assert not (here / "out").exists()
    assert (code, out) == (1, "")


def test_global_flags_after_the_command(here, capsys, dataset):
    local_manifest()
    code, out, err = run_main(capsys, "plan", "m.yaml", "-q", "--debug")
    assert (code, err) == (0, "") and out.endswith("(211.8 KB to send).\n")
    assert not (here / "out").exists()


def test_invalid_bucket_name(here, cli, dataset, s3):
    (here / "m.yaml").write_text("version: 1\nsource: {dir: cartload2}\ntargets:\n  - name: web\n"
                                 "    url: s3://Bad_Bucket!/p\n"
                                 f"    storage_options: {{endpoint_url: \"{s3.endpoint_url}\"}}\n")
    assert cli("apply", "m.yaml") == (1, "", "error: invalid manifest:\n  m.yaml:5: targets[0].url: \"Bad_Bucket!\" is "
                                             "not a valid S3 bucket name (use 3-63 lowercase letters, digits, '.' "
                                             "and '-')\n")
    assert s3.requests == []


# ---- the source folder --------------------------------------------------------------------------

def test_fifo_is_refused_without_blocking(here, cli, s3):
    src = make_src(here / "src", {"a.tsv": "a\n"})
    os.mkfifo(src / "pipe.tsv")                        # opening it for reading would block forever
    s3_manifest(s3, src="src", method="all")
    started = time.monotonic()
    assert cli("apply", "m.yaml") == (1, "", "error: pipe.tsv: not a regular file\n" + hint_inside(src))
    assert time.monotonic() - started < 5 and s3.requests == []


def test_directory_where_the_catalog_names_a_file(here, cli, dataset, s3):
    (dataset / "genes_all.pmtiles").unlink()
    (dataset / "genes_all.pmtiles").mkdir()
    s3_manifest(s3)
    assert cli("apply", "m.yaml") == (1, "", "error: genes_all.pmtiles: not a regular file\n" + hint_inside(dataset))
    assert s3.requests == []


def test_broken_symlink(here, cli, dataset):
    (dataset / "genes_bin1.pmtiles").unlink()
    (dataset / "genes_bin1.pmtiles").symlink_to(dataset / "gone.pmtiles")
    local_manifest()
    assert cli("apply", "m.yaml") == (1, "", "error: genes_bin1.pmtiles: broken symlink\n" + hint_inside(dataset))
    assert not (here / "out").exists()


def _run_as_nobody(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run the CLI in a forked child that dropped root: root reads mode-000 files, nobody does not.

    (A subprocess cannot be used: the interpreter lives under /root, which nobody cannot enter.)"""
    import fsspec.implementations.local  # noqa: F401

    import cartsync.backends.fsspec  # noqa: F401 — import before dropping privileges
    from cartsync.cli import main
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:                                       # child: never returns into pytest
        code = 99
        try:
            os.dup2(w_out, 1)
            os.dup2(w_err, 2)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.environ.update(env)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            code = main(args)
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException as exc:  # noqa: BLE001
            os.write(2, f"child failed: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(w_out)
    os.close(w_err)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if done[0] == 0:
        os.kill(pid, 9)
        done = os.waitpid(pid, 0)
    with os.fdopen(r_out) as out, os.fdopen(r_err) as err:
        return os.waitstatus_to_exitcode(done[1]), out.read(), err.read()


def test_unreadable_file(tmp_path, cli):
    # Tests run as root and root reads a mode-000 file; so the CLI runs as `nobody` in a forked child, in a folder
    # nobody may enter (pytest's tmp_path is root-only).
    root = Path(tempfile.mkdtemp(prefix="cartsync-hostile-"))
    try:
        root.chmod(0o777)
        src = make_src(root / "src", {"a.tsv": "a\n", "b.tsv": "b\n"})
        (src / "b.tsv").chmod(0)
        manifest = root / "m.yaml"
        manifest.write_text("version: 1\nsource: {dir: src, method: all}\ntargets:\n  - {name: local, url: out}\n")
        args, env = ["apply", str(manifest)], {"CARTSYNC_CACHE_DIR": str(root / "cache")}
        got = _run_as_nobody(args, env) if os.geteuid() == 0 else cli(*args)
        assert got == (1, "", "error: b.tsv: not readable (permission denied)\n" + hint_inside(src))
        assert not (root / "out").exists()
    finally:
        shutil.rmtree(root)


@pytest.mark.parametrize("catalog,message", [
    ("id: x\nassets: [unclosed\n", "{cat}:3: catalog is not valid YAML: expected ',' or ']', but got '<stream end>'\n"
     "hint: check indentation and quoting"),
    ("- genes_all.pmtiles\n- genes_bin1.pmtiles\n", "{cat}: catalog must be a mapping, got list"),
    ("", "{cat}: catalog must be a mapping, got an empty file"),
    (b"id: x\nassets: {a: genes_all.pmtiles}\n# \xff\xfe\n",
     "{cat}: cannot read catalog: 'utf-8' codec can't decode byte 0xff in position 39: invalid start byte"),
], ids=["not-yaml", "a-list", "empty", "not-utf8"])
def test_broken_catalog(here, cli, dataset, s3, catalog, message):
    cat = dataset / "catalog.yaml"
    cat.write_bytes(catalog if isinstance(catalog, bytes) else catalog.encode())
    s3_manifest(s3)
    assert cli("apply", "m.yaml") == (1, "", f"error: {message.format(cat=cat.resolve())}\n")
    assert s3.requests == []


def test_catalog_naming_no_files(here, cli, dataset, s3):
    (dataset / "catalog.yaml").write_text("id: x\ntitle: only words here\n")
    s3_manifest(s3)
    assert cli("apply", "m.yaml") == (1, "", f"error: {dataset.resolve()}/catalog.yaml: catalog references no files\n"
                                             + hint_inside(dataset))
    assert s3.requests == []


@pytest.mark.parametrize("ref,message", [
    ("../secret.txt", "../secret.txt: outside the source folder (named in catalog.yaml)"),
    ("sub/../../secret.txt", "sub/../../secret.txt: outside the source folder (named in catalog.yaml)"),
    ("/etc/passwd", "/etc/passwd: absolute path in catalog.yaml (catalog paths are relative to the dataset folder)"),
], ids=["dotdot", "dotdot-inside-a-folder", "absolute"])
def test_catalog_path_leaving_the_source(here, cli, dataset, s3, ref, message):
    (here / "secret.txt").write_text("not for publishing")
    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text() + f"extra: {ref}\n")
    s3_manifest(s3)
    assert cli("apply", "m.yaml") == (1, "", f"error: {message}\n" + hint_inside(dataset))
    assert s3.requests == []


def test_symlink_escape_file_and_folder(here, cli, dataset, s3):
    outside = make_src(here / "outside", {"secret.txt": "not for publishing", "keys/id_rsa": "-----BEGIN"})
    (dataset / "notes.txt").symlink_to(outside / "secret.txt")          # a file symlink the catalog names
    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text() + "notes: notes.txt\n")
    s3_manifest(s3)
    assert cli("apply", "m.yaml") == (1, "", f"error: notes.txt: symlink points outside the source folder (to "
                                             f"{outside / 'secret.txt'})\n" + hint_inside(dataset))
    (dataset / "keys").symlink_to(outside / "keys")                      # a folder symlink, walked by method: all
    (dataset / "notes.txt").unlink()
    s3_manifest(s3, method="all")
    assert cli("apply", "m.yaml") == (1, "", f"error: keys: symlink points outside the source folder (to "
                                             f"{outside / 'keys'})\n" + hint_inside(dataset))
    assert s3.requests == []


def test_symlink_loops(here, cli, dataset, s3):
    (dataset / "l1.tsv").symlink_to(dataset / "l2.tsv")
    (dataset / "l2.tsv").symlink_to(dataset / "l1.tsv")
    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text() + "extra: l1.tsv\n")
    s3_manifest(s3)
    assert cli("apply", "m.yaml") == (1, "", "error: l1.tsv: symlink loop\n" + hint_inside(dataset))
    assert s3.requests == []


def test_non_utf8_file_name_is_refused_by_name(here, cli, s3):
    src = make_src(here / "src", {"ok.tsv": "fine\n"})
    with open(os.path.join(os.fsencode(src), b"r\xe9sum\xe9.tsv"), "wb") as f:   # latin-1 bytes, not UTF-8
        f.write(b"x")
    s3_manifest(s3, src="src", method="all")
    assert cli("apply", "m.yaml") == (1, "", "error: b'r\\xe9sum\\xe9.tsv': file name is not valid UTF-8 (rename it)\n"
                                             + hint_inside(src))
    assert s3.requests == []


ODD_NAMES = {"with space.tsv": "a b\n", "ünïcødé-π.pmtiles": b"\x00pm", "100%#?&+=.txt": "url-special\n",
             "sub dir/日本語 ファイル.json": "{}"}


def test_spaces_and_unicode_names_work_end_to_end(here, cli, s3, zenodo):
    src = make_src(here / "odd", ODD_NAMES)
    s3_manifest(s3, src="odd", method="all")
    code, out, err = cli("apply", "m.yaml")
    assert (code, out.split(";")[0]) == (0, "web: 4 created, 0 replaced, 0 deleted"), err
    objects = s3.list_objects(s3.bucket, "p/")
    assert sorted(objects) == sorted(f"p/{k}" for k in ODD_NAMES)
    assert all(s3.get_object_bytes(s3.bucket, f"p/{k}") == (src / k).read_bytes() for k in ODD_NAMES)
    s3.reset_counts()
    assert cli("apply", "m.yaml") == (0, "web: no changes; 4 file(s) up to date; 0 B sent.\n", "")
    assert s3_writes(s3) == 0

    local_manifest(src="odd", method="all", name="l.yaml")
    code, out, err = cli("apply", "l.yaml")
    assert (code, out.split(";")[0]) == (0, "local: 4 created, 0 replaced, 0 deleted"), err
    assert tree(here / "out") == tree(src)
    assert cli("apply", "l.yaml") == (0, "local: no changes; 4 file(s) up to date; 0 B sent.\n", "")

    shutil.rmtree(src / "sub dir")                     # Zenodo is flat; the other three names go as they are
    zenodo_yaml(zenodo.url, src="odd", method="all", name="z.yaml")
    code, out, err = cli("apply", "z.yaml")
    assert (code, out.split(";")[0]) == (0, "doi: 3 created, 0 replaced, 0 deleted"), err
    (dep,) = zenodo.depositions.values()
    assert {k: f.data for k, f in dep.files.items()} == {k: (src / k).read_bytes() for k in ODD_NAMES if "/" not in k}
    zenodo.reset_log()
    assert cli("apply", "z.yaml") == (0, "doi: no changes; 3 file(s) up to date; 0 B sent.\n", "")
    assert zenodo_writes(zenodo) == [] and len(zenodo.requests) <= 2


def test_catalog_naming_a_file_with_a_space(here, cli, dataset, s3):
    (dataset / "my genes.pmtiles").write_bytes(b"tiles")
    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text() + "extra: my genes.pmtiles\n")
    s3_manifest(s3)
    code, out, err = cli("apply", "m.yaml")
    assert code == 0, err
    assert "p/my genes.pmtiles" in s3.list_objects(s3.bucket, "p/")


def test_empty_files_work_end_to_end(here, cli, s3, zenodo):
    make_src(here / "src", {"empty.tsv": b"", "sub/also-empty.json": b"", "data.tsv": "x\n"})
    empty_md5 = "d41d8cd98f00b204e9800998ecf8427e"
    s3_manifest(s3, src="src", method="all")
    code, out, err = cli("apply", "m.yaml")
    assert (code, out.split(";")[0]) == (0, "web: 3 created, 0 replaced, 0 deleted"), err
    objects = s3.list_objects(s3.bucket, "p/")
    assert objects["p/empty.tsv"] == (0, empty_md5) and objects["p/sub/also-empty.json"] == (0, empty_md5)
    s3.reset_counts()
    assert cli("apply", "m.yaml") == (0, "web: no changes; 3 file(s) up to date; 0 B sent.\n", "")
    assert s3_writes(s3) == 0

    local_manifest(src="src", method="all", name="l.yaml")
    assert cli("apply", "l.yaml")[0] == 0
    assert tree(here / "out") == {"data.tsv": b"x\n", "empty.tsv": b"", "sub/also-empty.json": b""}
    assert cli("apply", "l.yaml") == (0, "local: no changes; 3 file(s) up to date; 0 B sent.\n", "")

    zenodo_yaml(zenodo.url, src="src", method="all", name="z.yaml")
    code, out, err = cli("apply", "z.yaml")
    assert (code, out.split(";")[0]) == (0, "doi: 3 created, 0 replaced, 0 deleted"), err
    (dep,) = zenodo.depositions.values()
    assert {k: (f.size, f.md5) for k, f in dep.files.items() if k != "data.tsv"} == {
        "empty.tsv": (0, empty_md5), "also-empty.json": (0, empty_md5)}
    zenodo.reset_log()
    assert cli("apply", "z.yaml") == (0, "doi: no changes; 3 file(s) up to date; 0 B sent.\n", "")
    assert zenodo_writes(zenodo) == []


def test_empty_source_does_not_wipe_the_target(here, cli, s3):
    (here / "src").mkdir()                             # e.g. a data volume that did not mount
    s3.put_object(s3.bucket, "p/genes_all.pmtiles", b"published")
    s3_manifest(s3, src="src", method="all", extra="    delete: true\n")
    s3.reset_counts()
    code, out, err = cli("apply", "m.yaml")
    assert "p/genes_all.pmtiles" in s3.list_objects(s3.bucket, "p/") and s3_writes(s3) == 0
    assert (code, out, err) == (1, "", f"error: {here / 'src'}: the source selects no files\nhint: check source.dir, "
                                "method and exclude (an empty source with delete: true would delete everything "
                                "published)\n")


# ---- the hash cache ---------------------------------------------------------------------------------

def test_corrupt_hash_cache_costs_time_not_correctness(here, cli, dataset, monkeypatch):
    cache = here / "cache"
    cache.mkdir()
    (cache / "hashes.sqlite3").write_bytes(b"this is not a database " * 50)
    monkeypatch.setenv("CARTSYNC_CACHE_DIR", str(cache))
    local_manifest()
    code, out, err = cli("-q", "apply", "m.yaml")
    assert (code, out.split(";")[0]) == (0, "local: 16 created, 0 replaced, 0 deleted")
    assert err == (f"WARNING: hash cache {cache}/hashes.sqlite3 unusable (file is not a database); hashing "
                   "without it (set CARTSYNC_CACHE_DIR to a writable folder to keep hashes between runs)\n")
    published = tree(here / "out")
    assert len(published) == 16 and all(data == (dataset / key).read_bytes() for key, data in published.items())
    assert cli("-q", "apply", "m.yaml")[1] == "local: no changes; 16 file(s) up to date; 0 B sent.\n"


def test_cache_folder_that_cannot_be_created(here, cli, dataset, monkeypatch):
    """The cache saves time, never correctness: without it the run goes on, and says so (issue 10; this
    used to stop the apply with "cannot be created")."""
    import tempfile
    (here / "afile").write_text("in the way")
    monkeypatch.setenv("CARTSYNC_CACHE_DIR", str(here / "afile" / "cache"))
    local_manifest()
    code, out, err = cli("-q", "apply", "m.yaml")
    assert (code, out.split(";")[0]) == (0, "local: 16 created, 0 replaced, 0 deleted")
    assert err == (f"WARNING: hash cache folder {here}/afile/cache cannot be created (Not a directory); hashing "
                   "without it (set CARTSYNC_CACHE_DIR to a writable folder to keep hashes between runs)\n"
                   f"WARNING: cache folder {here}/afile/cache cannot be written (Not a directory); locking in "
                   f"{tempfile.gettempdir()}/cartsync-{os.getuid()}-locks instead\n")
    published = tree(here / "out")
    assert len(published) == 16 and all(data == (dataset / key).read_bytes() for key, data in published.items())


# ---- the Zenodo token ---------------------------------------------------------------------------

def test_token_file_missing(here, cli, dataset, zenodo):
    zenodo_yaml(zenodo.url, token_file="token")
    assert cli("apply", "m.yaml") == (1, "", f"error: Zenodo token file {here}/token does not exist\nhint: create it "
                                             "with the token from Zenodo's Applications settings, then chmod 600 it\n")
    assert zenodo.requests == []


@pytest.mark.parametrize("content", ["", "\n  \n"], ids=["empty", "blank-lines"])
def test_token_file_empty(here, cli, dataset, zenodo, content):
    (here / "token").write_text(content)
    (here / "token").chmod(0o600)
    zenodo_yaml(zenodo.url, token_file="token")
    assert cli("apply", "m.yaml") == (1, "", f"error: Zenodo token file {here}/token is empty\n"
                                             "hint: put the token (one line) in it\n")
    assert zenodo.requests == []


def test_token_env_not_set(here, cli, dataset, zenodo, monkeypatch):
    monkeypatch.delenv("ZT")
    zenodo_yaml(zenodo.url)
    assert cli("apply", "m.yaml") == (1, "", "error: environment variable ZT is not set (it should hold the Zenodo "
                                             "token)\nhint: export it, or set zenodo.token_file in the manifest\n")
    assert zenodo.requests == []


def test_token_file_readable_by_others_warns_and_works(here, cli, zenodo):
    make_src(here / "src", {"a.tsv": "a\n"})
    (here / "token").write_text(TOKEN + "\n")
    (here / "token").chmod(0o644)
    zenodo_yaml(zenodo.url, src="src", method="all", token_file="token")
    code, out, err = cli("-q", "apply", "m.yaml")
    assert code == 0 and out.startswith("doi: 1 created, 0 replaced, 0 deleted;")
    assert err == (f"WARNING: Zenodo token file {here}/token is readable by group/others; run: chmod 600 "
                   f"{here}/token\n")
    (dep,) = zenodo.depositions.values()
    assert list(dep.files) == ["a.tsv"]


def test_token_with_a_pasted_curly_quote(here, cli, dataset, zenodo):
    (here / "token").write_text(TOKEN + "\u2019\n")
    (here / "token").chmod(0o600)
    zenodo_yaml(zenodo.url, token_file="token")
    assert cli("apply", "m.yaml") == (1, "", f"error: Zenodo token file {here}/token holds characters a token cannot "
                                             "have (spaces, line breaks or non-ASCII)\nhint: put only the token, on "
                                             "one line, in it\n")
    assert zenodo.requests == []


def test_wrong_token_is_one_request_and_one_message(here, cli, dataset, zenodo):
    (here / "token").write_text("not-the-token-42\n")
    (here / "token").chmod(0o600)
    zenodo_yaml(zenodo.url, token_file="token")                  # deposition: new → the first call is the search
    code, out, err = cli("apply", "m.yaml")
    assert (code, out, err) == (1, "", (
        f"error: GET {zenodo.url}/api/deposit/depositions: 403 Permission denied.\n"
        "hint: check the Zenodo token (it needs the deposit:write and deposit:actions scopes) and that the "
        "deposition belongs to its owner\n"))
    assert zenodo.requests == [("GET", "/api/deposit/depositions", 403)]
    assert "not-the-token-42" not in err


def test_401_is_not_retried(here, cli, dataset, zenodo):
    zenodo.fail_next(10, status=401)
    zenodo_yaml(zenodo.url, deposition=123)
    assert cli("apply", "m.yaml") == (1, "", (
        f"error: GET {zenodo.url}/api/deposit/depositions/123: 401 Injected fault.\n"
        "hint: check the Zenodo token (it needs the deposit:write and deposit:actions scopes) and that the "
        "deposition belongs to its owner\n"))
    assert zenodo.requests == [("GET", "/api/deposit/depositions/123", 401)]


# ---- the Zenodo deposition ----------------------------------------------------------------------

def test_deposition_that_does_not_exist(here, cli, dataset, zenodo):
    zenodo_yaml(zenodo.url, deposition=999999)
    assert cli("apply", "m.yaml") == (1, "", "error: target doi: Zenodo deposition 999999 does not exist\n"
                                             "hint: check the id (the number in the deposition's URL) and the server "
                                             "url\n")
    assert zenodo.requests == [("GET", "/api/deposit/depositions/999999", 404)]


def test_deposition_of_someone_else(here, cli, dataset, zenodo):
    zenodo.add_token("someone-elses-token", owner=2)
    import requests
    theirs = requests.post(zenodo.url + "/api/deposit/depositions", json={"metadata": {"title": "Theirs"}},
                           headers={"Authorization": "Bearer someone-elses-token"}).json()["id"]
    zenodo.reset_log()
    zenodo_yaml(zenodo.url, deposition=theirs)
    assert cli("apply", "m.yaml") == (1, "", (
        f"error: GET {zenodo.url}/api/deposit/depositions/{theirs}: 403 Permission denied.\n"
        "hint: check the Zenodo token (it needs the deposit:write and deposit:actions scopes) and that the "
        "deposition belongs to its owner\n"))
    assert zenodo.requests == [("GET", f"/api/deposit/depositions/{theirs}", 403)]


def test_state_file_that_is_not_json(here, cli, dataset, zenodo):
    state = here / "m.cartsync-state.json"
    state.write_text("{half written")
    zenodo_yaml(zenodo.url)
    assert cli("apply", "m.yaml") == (1, "", (
        f"error: state file {state} is unreadable (Expecting property name enclosed in double quotes: line 1 column "
        "2 (char 1))\nhint: fix or remove it; cartsync will find its deposition by its marker\n"))
    assert zenodo.requests == []


def test_state_file_with_a_stale_id_finds_the_deposition_by_marker(here, cli, zenodo):
    import json
    make_src(here / "src", {"a.tsv": "a\n"})
    zenodo_yaml(zenodo.url, src="src", method="all")
    assert cli("apply", "m.yaml")[0] == 0
    state = here / "m.cartsync-state.json"
    data = json.loads(state.read_text())
    data["targets"]["doi"]["deposition_id"] = 999999          # e.g. copied from another project's state file
    state.write_text(json.dumps(data))
    zenodo.reset_log()
    code, out, err = cli("apply", "m.yaml")
    assert zenodo.deposition_count() == 1 and zenodo_writes(zenodo) == []
    assert (code, out) == (0, "doi: no changes; 1 file(s) up to date; 0 B sent.\n")


def test_state_file_that_is_json_but_not_an_object(here, cli, dataset, zenodo):
    state = here / "m.cartsync-state.json"
    state.write_text("[1, 2]\n")
    zenodo_yaml(zenodo.url)
    assert cli("apply", "m.yaml") == (1, "", f"error: state file {state} is unreadable (expected a JSON object)\n"
                                             "hint: fix or remove it; cartsync will find its deposition by its "
                                             "marker\n")
    assert zenodo.requests == []


# ---- Zenodo's limits ----------------------------------------------------------------------------

def test_more_than_100_files_via_upload_zenodo(here, cli, zenodo, monkeypatch):
    make_src(here / "many", {f"f{i:03}.tsv": str(i) for i in range(101)})
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    code, out, err = cli("upload-zenodo", "--in-dir", "many", "--upload-method", "all", "--zenodo-url", zenodo.url,
                         "--create-new-deposition", "--title", "Many", "--creators", "Doe, Jane", "--description", "d")
    assert (code, out) == (1, "")
    assert err.endswith("error: target zenodo: 101 files, but it can hold at most 100\nhint: split the dataset into 2 "
                        "or more targets (e.g. with method: list), or zip small files together\n")
    assert zenodo.requests == []


def test_kept_remote_files_count_towards_100(here, cli, zenodo):
    src = make_src(here / "src", {f"old{i:02}.tsv": str(i) for i in range(60)})
    zenodo_yaml(zenodo.url, src="src", method="all")
    assert cli("apply", "m.yaml")[0] == 0
    shutil.rmtree(src)
    make_src(src, {f"new{i:02}.tsv": str(i) for i in range(50)})          # delete: false keeps the 60 old ones
    zenodo.reset_log()
    assert cli("apply", "m.yaml") == (1, "", "error: target doi: 110 files, but it can hold at most 100\nhint: split the "
                                             "dataset into 2 or more targets (e.g. with method: list), or zip small "
                                             "files together\n")
    assert zenodo_writes(zenodo) == [] and len(zenodo.requests) <= 2


def _sparse_source(root: Path) -> Path:
    """51 GB that cost no disk: three sparse 17 GB files, plus a small one."""
    root.mkdir()
    for i in range(3):
        (root / f"part{i}.pmtiles").touch()
        os.truncate(root / f"part{i}.pmtiles", 17 * 10**9)
    (root / "small.tsv").write_text("x")
    return root


def test_more_than_50_GB_refused_before_any_request(here, cli, zenodo):
    from cartsync.inventory import HashCache, cache_dir
    src = _sparse_source(here / "big")
    cache = HashCache(cache_dir() / "hashes.sqlite3")     # an earlier run hashed them: hashing 51 GB takes minutes
    for p in src.iterdir():
        cache.put(p.resolve(), os.stat(p), "0" * 32)
    cache.close()
    zenodo_yaml(zenodo.url, src="big", method="all")
    assert cli("apply", "m.yaml") == (1, "", "error: target doi: 51.0 GB, but it can hold at most 50.0 GB\n"
                                             "hint: split the dataset into several targets\n")
    assert zenodo.requests == []


def test_more_than_50_GB_refused_before_hashing(here, cli, zenodo, monkeypatch):
    import cartsync.inventory

    def no_hashing(path, on_bytes=None):
        raise AssertionError(f"hashed {path} before checking Zenodo's limits")
    monkeypatch.setattr(cartsync.inventory, "md5_file", no_hashing)
    _sparse_source(here / "big")
    zenodo_yaml(zenodo.url, src="big", method="all")
    assert cli("apply", "m.yaml") == (1, "", "error: target doi: 51.0 GB, but it can hold at most 50.0 GB\n"
                                             "hint: split the dataset into several targets\n")
    assert zenodo.requests == []


def test_same_base_name_via_upload_zenodo_files(here, cli, zenodo, monkeypatch):
    make_src(here / "src", {"a/x.tsv": "1", "b/x.tsv": "2", "y.tsv": "3"})
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    code, out, err = cli("upload-zenodo", "--in-dir", "src", "--upload-method", "files", "--files", "a/x.tsv",
                         "b/x.tsv", "y.tsv", "--zenodo-url", zenodo.url, "--create-new-deposition", "--title", "Clash",
                         "--creators", "Doe, Jane", "--description", "d")
    assert (code, out) == (1, "")
    assert err.endswith("error: target zenodo: Zenodo records are flat, and these files share a name:\n"
                        "  x.tsv: a/x.tsv, b/x.tsv\nhint: rename them, or publish each folder to its own deposition\n")
    assert zenodo.requests == []


def test_upload_zenodo_in_list_missing(here, cli, dataset, zenodo, monkeypatch):
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    code, out, err = cli("upload-zenodo", "--in-dir", "cartload2", "--upload-method", "user_list", "--in-list",
                         "missing.txt", "--zenodo-url", zenodo.url, "--create-new-deposition")
    assert (code, out, err) == (1, "", "error: --in-list missing.txt: cannot read: No such file or directory\n")
    assert zenodo.requests == []


def test_upload_zenodo_bad_deposition_id(here, cli, dataset, zenodo, monkeypatch):
    monkeypatch.setenv("ZENODO_TOKEN", TOKEN)
    code, out, err = cli("upload-zenodo", "--in-dir", "cartload2", "--zenodo-url", zenodo.url,
                         "--zenodo-deposition-id", "abc", "--overwrite")
    assert (code, out, err) == (1, "", "error: --zenodo-deposition-id abc: not a deposition id (use the number in the "
                                       "deposition's URL)\n")
    assert zenodo.requests == []


# ---- S3: the bucket, permissions, the network ---------------------------------------------------

def test_bucket_that_does_not_exist(here, cli, dataset, s3):
    s3.bucket = "no-such-bucket-cartsync"
    s3_manifest(s3)
    s3.reset_counts()
    assert cli("apply", "m.yaml") == (1, "", "error: target web: bucket 'no-such-bucket-cartsync' does not exist\n"
                                             "hint: create it first, or fix the bucket name in the url\n")
    assert s3_writes(s3) == 0


def test_access_denied_listing_is_one_request(here, cli, dataset, s3):
    from faultproxy import FaultProxy
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(lambda method, target: True)                 # 403 AccessDenied, never forwarded
        s3_manifest(s3, endpoint=proxy.url)
        assert cli("apply", "m.yaml") == (1, "", f"error: target web: access denied listing s3://{s3.bucket}/p\n"
                                                 "hint: check the credentials (profile, environment) and the bucket "
                                                 "policy\n")
        # the target's lock (locks.py), then the listing: each once, no retry storm
        assert [(m, outcome) for m, _, outcome in proxy.log] == [("PUT", "fail_always"), ("GET", "fail_always")]
    assert s3.requests == []


def _denied_writes(here, cli, s3, files: int = 2, *flags: str):
    from faultproxy import FaultProxy
    names = [f"f{i}.tsv" for i in range(files)]
    make_src(here / "src", {**{n: n + "\n" for n in names}, "catalog.yaml": "".join(f"{n}: {n}\n" for n in names)})
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(lambda method, target: method in ("PUT", "POST", "DELETE"))
        s3_manifest(s3, src="src", endpoint=proxy.url)
        code, out, err = cli("-q", "apply", "m.yaml", *flags)
        puts = sorted(t.rsplit("/", 1)[-1] for m, t, _ in proxy.log if m == "PUT")
    return code, out, err, puts


def test_access_denied_writing_sends_nothing_and_holds_the_catalog_back(here, cli, s3):
    code, out, err, puts = _denied_writes(here, cli, s3)
    assert (code, err) == (1, "")
    # the lock object and each data file tried once: 403 is never retried
    assert puts == [".cartsync.lock", "f0.tsv", "f1.tsv"]
    lines = out.splitlines()
    assert re.fullmatch(r"web: 0 created, 0 replaced, 0 deleted; 0 B sent in \d+\.\d s \(0 B/s\), 0 retries\.", lines[0])
    assert lines[-1] == "  not done because of the failure(s) above: 3 action(s) (f0.tsv, f1.tsv, catalog.yaml)"
    assert s3_writes(s3) == 0 and s3.list_objects(s3.bucket, "p/") == {}


def test_access_denied_on_every_write_is_one_error_for_the_target(here, cli, s3):
    """Credentials that may list but not write: the second denied upload with none succeeded stops the
    target, and the report says so once, instead of one FAILED line per file (issue 12)."""
    code, out, err, puts = _denied_writes(here, cli, s3, 8, "--jobs", "1")
    assert (code, err) == (1, "")
    assert puts == [".cartsync.lock", "f0.tsv", "f1.tsv"]          # two tried, then no more started
    assert out.splitlines()[1:] == [
        f"  STOPPED: access denied writing to s3://{s3.bucket}/p: the first 2 uploads were denied (f0.tsv, f1.tsv) "
        "and none succeeded, so no more were tried; check the credentials and that they may PutObject here",
        "  not done because of the failure(s) above: 9 action(s) (f0.tsv, f1.tsv, f2.tsv, f3.tsv, f4.tsv, …)"]
    assert "FAILED" not in out


def test_access_denied_on_every_write_with_concurrency_is_still_one_error(here, cli, s3):
    code, out, err, puts = _denied_writes(here, cli, s3, 12, "--jobs", "4")
    assert code == 1 and "FAILED" not in out
    [stopped] = [line for line in out.splitlines() if "STOPPED" in line]
    assert re.fullmatch(rf"  STOPPED: access denied writing to s3://{s3.bucket}/p: the first \d+ uploads were denied "
                        r"\(.*\) and none succeeded, so no more were tried; check the credentials and that they may "
                        r"PutObject here", stopped)
    assert len(puts) - 1 < 12                                       # the rest were never started


def test_endpoint_that_refuses_connections(here, cli, dataset, s3):
    port = free_port()
    s3_manifest(s3, endpoint=f"http://127.0.0.1:{port}")
    assert cli("apply", "m.yaml") == (1, "", f"error: target web: cannot connect to http://127.0.0.1:{port} "
                                             "(tried 6 times)\nhint: check storage_options.endpoint_url, the network "
                                             "and proxy settings\n")


def test_a_local_folder_that_refuses_every_write_is_one_error_for_the_target(tmp_path, cli):
    """The local-folder member of the denied-writes family: a target folder this user may not write into
    stops the target after the second denied file, as S3 does (the CLI runs as nobody: root writes anywhere)."""
    root = Path(tempfile.mkdtemp(prefix="cartsync-hostile-"))
    try:
        root.chmod(0o777)
        make_src(root / "src", {f"f{i}.tsv": f"{i}\n" for i in range(8)})
        (root / "out").mkdir(mode=0o755)                 # root's: nobody may list it, not write into it
        manifest = root / "m.yaml"
        manifest.write_text("version: 1\nsource: {dir: src, method: all}\ntargets:\n  - {name: local, url: out}\n")
        args, env = ["-q", "apply", str(manifest), "--jobs", "1"], {"CARTSYNC_CACHE_DIR": str(root / "cache")}
        if os.geteuid() != 0:
            pytest.skip("needs root to drop to nobody (a non-root user owns what it made)")
        # the same apply as root first, into a folder root may write: whatever an apply imports is then
        # imported before the child drops privileges (the interpreter's files are root's)
        warm = root / "warm.yaml"
        warm.write_text(manifest.read_text().replace("url: out", "url: warm"))
        assert cli("-q", "apply", warm, "--jobs", "1")[0] == 0
        code, out, err = _run_as_nobody(args, env)
        assert (code, err) == (1, "")
        lines = out.splitlines()
        assert lines[1:] == [
            f"  STOPPED: access denied writing to {root / 'out'}: the first 2 uploads were denied (f0.tsv, f1.tsv) "
            f"and none succeeded, so no more were tried; check that this user may write into {root / 'out'}",
            "  not done because of the failure(s) above: 8 action(s) (f0.tsv, f1.tsv, f2.tsv, f3.tsv, f4.tsv, …)"]
        assert list((root / "out").iterdir()) == []
    finally:
        shutil.rmtree(root)
