"""Issue 10, "must never destroy", at plan and apply time: a catalog under another name is the catalog
(case 4), a file and a folder swap places on a local target (case 5), keys S3 would refuse (case 7) and
temp files a killed copy left (case 8).

Remote state is checked independently: the target folder read from disk, S3 through the loopback server's
own listing (tests/fakes/s3server.py), with faults injected on the wire by tests/fakes/faultproxy.py.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from helpers import s3_md5s, tree, write_manifest


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def local_manifest(tmp_path: Path, source: str, **target) -> Path:
    extra = "".join(f", {k}: {json.dumps(v)}" for k, v in target.items())
    return write_manifest(tmp_path, f"version: 1\nsource: {source}\ntargets:\n  - {{name: out, url: out{extra}}}\n")


def s3_manifest(tmp_path: Path, s3, source: str, endpoint: str | None = None, prefix: str = "ds", **target) -> Path:
    extra = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in target.items())
    return write_manifest(tmp_path, f"""
        version: 1
        source: {source}
        targets:
          - name: web
            url: s3://{s3.bucket}/{prefix}
            storage_options: {{endpoint_url: "{endpoint or s3.endpoint_url}"}}
        """ + extra)


# ---- case 4: the catalog, whatever its local name, is published as catalog.yaml, last -------------------

def catalog_source(root: Path, name: str = "mycatalog.yaml") -> dict[str, bytes]:
    files = {f"f{i}.tsv": os.urandom(500 + i) for i in range(6)}
    root.mkdir()
    for key, data in files.items():
        (root / key).write_bytes(data)
    catalog = ("id: ds\nassets:\n" + "".join(f"  a{i}: {k}\n" for i, k in enumerate(files))).encode()
    (root / name).write_bytes(catalog)
    return {**files, "catalog.yaml": catalog}


def test_a_renamed_catalog_is_held_back_when_a_data_upload_fails(s3, tmp_path, cli):
    """`source.catalog: mycatalog.yaml` went up with the data, even when a data file failed."""
    expected = catalog_source(tmp_path / "src")
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(lambda method, target: method == "PUT" and "/ds/f3.tsv" in target)
        m = s3_manifest(tmp_path, s3, "{dir: src, catalog: mycatalog.yaml}", endpoint=proxy.url)
        code, out, _ = cli("apply", m)
    assert code == 1
    assert "not done because of the failure(s) above: 1 action(s) (catalog.yaml)" in out
    stored = s3_md5s(s3, "ds")
    assert stored == {k: md5(v) for k, v in expected.items() if k not in ("f3.tsv", "catalog.yaml")}
    # once the fault is gone, the catalog goes, as catalog.yaml (the name viewers open), and last
    m = s3_manifest(tmp_path, s3, "{dir: src, catalog: mycatalog.yaml}")
    code, out, err = cli("apply", m)
    assert code == 0, out + err
    assert s3_md5s(s3, "ds") == {k: md5(v) for k, v in expected.items()}


def test_a_renamed_catalog_is_written_last_on_a_local_target(tmp_path, cli):
    expected = catalog_source(tmp_path / "src", name="catalog_v2.yaml")
    m = local_manifest(tmp_path, "{dir: src, catalog: catalog_v2.yaml}")
    code, out, _ = cli("apply", m, "--jobs", "4")
    assert code == 0
    out_dir = tmp_path / "out"
    assert tree(out_dir) == expected
    times = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    assert max(times, key=times.get) == "catalog.yaml"


def test_catalog_as_publishes_under_the_name_asked_for(tmp_path, cli):
    expected = catalog_source(tmp_path / "src")
    m = local_manifest(tmp_path, "{dir: src, catalog: mycatalog.yaml, catalog_as: mycatalog.yaml}")
    assert cli("apply", m)[0] == 0
    expected["mycatalog.yaml"] = expected.pop("catalog.yaml")
    assert tree(tmp_path / "out") == expected


def test_a_catalog_outside_the_source_is_published_at_its_root(tmp_path, cli):
    """What upload-aws --catalog-yaml outside --in-dir needs: data from the source, the catalog from elsewhere."""
    expected = catalog_source(tmp_path / "src")
    (tmp_path / "meta").mkdir()
    os.replace(tmp_path / "src" / "mycatalog.yaml", tmp_path / "meta" / "cat.yaml")
    m = local_manifest(tmp_path, "{dir: src, catalog: ../meta/cat.yaml}")
    assert cli("apply", m)[0] == 0
    assert tree(tmp_path / "out") == expected


# ---- case 5: a file that becomes a folder (and back) on a local target converges --------------------------

def test_file_becomes_folder_and_back_converges_with_delete(tmp_path, cli):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.tsv").write_text("keep\n")
    (src / "res").write_text("a file\n")
    m = local_manifest(tmp_path, "{dir: src, method: all}", delete=True)
    assert cli("apply", m)[0] == 0
    (src / "res").unlink()
    (src / "res").mkdir()
    (src / "res" / "x.tsv").write_text("now a folder\n")
    (src / "res" / "deep").mkdir()
    (src / "res" / "deep" / "y.tsv").write_text("deeper\n")
    code, out, err = cli("plan", m)
    assert out.splitlines()[1:4] == ["  - delete   res              7 B", "  + create   res/deep/y.tsv   7 B",
                                     "  + create   res/x.tsv       13 B"]
    code, out, err = cli("apply", m)
    assert code == 0, out + err
    assert tree(tmp_path / "out") == tree(src)
    assert cli("apply", m)[1] == "out: no changes; 3 file(s) up to date; 0 B sent.\n"
    # and back: the folder becomes a file again (its files cleared, then the empty folders)
    for p in (src / "res" / "deep" / "y.tsv", src / "res" / "x.tsv"):
        p.unlink()
    (src / "res" / "deep").rmdir()
    (src / "res").rmdir()
    (src / "res").write_text("a file again\n")
    code, out, err = cli("apply", m)
    assert code == 0, out + err
    assert tree(tmp_path / "out") == tree(src) and (tmp_path / "out" / "res").is_file()
    assert cli("apply", m)[1] == "out: no changes; 2 file(s) up to date; 0 B sent.\n"


def test_file_in_the_way_without_delete_is_a_clear_error(tmp_path, cli):
    src = tmp_path / "src"
    (src / "res").mkdir(parents=True)
    (src / "res" / "x.tsv").write_text("x\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "res").write_text("someone's file\n")
    m = local_manifest(tmp_path, "{dir: src, method: all}")
    for command in ("plan", "apply"):
        assert cli(command, m) == (1, "", "error: target out: res on the target is a file where the source has a "
                                          "folder (res/x.tsv)\nhint: set delete: true on the target to let cartsync "
                                          "remove it first, or remove it yourself\n")
    assert tree(tmp_path / "out") == {"res": b"someone's file\n"}


def test_folder_in_the_way_without_delete_is_a_clear_error(tmp_path, cli):
    src = tmp_path / "src"
    src.mkdir()
    (src / "res").write_text("x\n")
    (tmp_path / "out" / "res").mkdir(parents=True)
    (tmp_path / "out" / "res" / "theirs.tsv").write_text("keep\n")
    m = local_manifest(tmp_path, "{dir: src, method: all}")
    assert cli("apply", m) == (1, "", "error: target out: res/theirs.tsv on the target is inside a folder where "
                                      "the source has a file (res)\nhint: set delete: true on the target to let "
                                      "cartsync remove it first, or remove it yourself\n")
    assert tree(tmp_path / "out") == {"res/theirs.tsv": b"keep\n"}


def test_an_empty_folder_where_a_file_goes_is_replaced(tmp_path, cli):
    """An empty folder holds nothing, so it needs no delete: true."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "res").write_text("x\n")
    (tmp_path / "out" / "res").mkdir(parents=True)
    assert cli("apply", local_manifest(tmp_path, "{dir: src, method: all}"))[0] == 0
    assert tree(tmp_path / "out") == {"res": b"x\n"}


# ---- case 8: cartsync's own temp files are cleaned up on the next apply ------------------------------------

def test_temp_files_of_a_killed_copy_are_removed_on_the_next_apply(tmp_path, cli):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.tsv").write_text("a\n")
    m = local_manifest(tmp_path, "{dir: src, method: all}")
    assert cli("apply", m)[0] == 0
    out_dir = tmp_path / "out"
    # what a copy killed half-way leaves (the name _put_local writes to), here and in a sub-folder
    (out_dir / "big.bin.cartsync-tmp").write_bytes(os.urandom(180 * 1024))
    (out_dir / "sub").mkdir()
    (out_dir / "sub" / "c.tsv.cartsync-tmp").write_bytes(b"half")
    code, out, _ = cli("plan", m, "--detailed-exitcode")
    assert code == 2
    assert out.splitlines()[1:] == [
        "  - temp file big.bin.cartsync-tmp: left by an interrupted copy; removed on apply",
        "  - temp file sub/c.tsv.cartsync-tmp: left by an interrupted copy; removed on apply",
        "Plan: 0 to create, 0 to replace, 0 to delete, 1 unchanged, 2 other change(s) (0 B to send)."]
    assert (out_dir / "big.bin.cartsync-tmp").exists()                 # plan changes nothing
    code, out, err = cli("apply", m)
    assert code == 0, out + err
    assert tree(out_dir) == {"a.tsv": b"a\n"}                             # without delete: true: they are ours
    assert cli("plan", m, "--detailed-exitcode")[0] == 0


def test_a_name_too_long_for_a_temp_suffix_still_copies(tmp_path, cli):
    """A 250-byte file name plus '.cartsync-tmp' is over the 255 bytes a file name may have."""
    src = tmp_path / "src"
    src.mkdir()
    name = "n" * 246 + ".tsv"
    (src / name).write_text("long\n")
    assert cli("apply", local_manifest(tmp_path, "{dir: src, method: all}"))[0] == 0
    assert tree(tmp_path / "out") == {name: b"long\n"}


# ---- case 7: keys S3 would refuse are refused at plan time, before any upload ------------------------------

def test_a_key_over_1024_bytes_is_refused_before_any_upload(s3, tmp_path, cli):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.tsv").write_text("a\n")
    deep = src / ("d" * 200) / ("é" * 100) / ("e" * 200) / ("f" * 200)      # é is 2 bytes in UTF-8
    deep.mkdir(parents=True)
    (deep / ("g" * 200 + ".tsv")).write_text("g\n")
    key = "/".join(p for p in (deep / ("g" * 200 + ".tsv")).relative_to(src).parts)
    assert len(key.encode()) == 1008 and len(f"ds/{key}".encode()) == 1011
    m = s3_manifest(tmp_path, s3, "{dir: src, method: all}", prefix="ds/" + "p" * 20)
    for command in ("plan", "apply"):
        assert cli(command, m) == (1, "", (
            "error: target web: 1 key(s) longer than the store's limit of 1,024 bytes (UTF-8, with the prefix): "
            f"{key[:57]}... (1,032 bytes)\nhint: shorten those file or folder names, or the target prefix; nothing "
            "was uploaded\n"))
    assert s3.requests == [] and s3.list_objects(s3.bucket, "") == {}
    # the same source fits under a shorter prefix
    m = s3_manifest(tmp_path, s3, "{dir: src, method: all}", prefix="ds")
    assert cli("apply", m)[0] == 0
    assert sorted(s3_md5s(s3, "ds")) == ["a.tsv", key]


@pytest.mark.parametrize("last,ok", [(217, True), (218, False)])
def test_the_limit_is_1024_bytes_with_the_prefix(s3, tmp_path, cli, last, ok):
    src = tmp_path / "src"
    folder = src.joinpath(*[c * 200 for c in "abcd"])
    folder.mkdir(parents=True)
    (folder / ("z" * last)).write_text("y\n")
    key = "/".join([c * 200 for c in "abcd"] + ["z" * last])
    m = s3_manifest(tmp_path, s3, "{dir: src, method: all}", prefix="ds")
    code, out, err = cli("apply", m)
    if ok:
        assert code == 0, out + err
        assert list(s3.list_objects(s3.bucket, "")) == [f"ds/{key}"] and len(f"ds/{key}".encode()) == 1024
    else:
        assert (code, err) == (1, "error: target web: 1 key(s) longer than the store's limit of 1,024 bytes (UTF-8, "
                                  f"with the prefix): {key[:57]}... (1,025 bytes)\nhint: shorten those file or folder "
                                  "names, or the target prefix; nothing was uploaded\n")
        assert s3.requests == []
