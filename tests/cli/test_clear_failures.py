"""Every failure is one clear message, and nothing half-done is reported as done (issue 10, "Every failure is
one clear message"): each test here failed on the main branch it was written against, with the exact text."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from faultproxy import FaultProxy
from helpers import REPO, catalog_dataset, s3_md5s, tree, write_manifest


def local_manifest(root: Path, **target) -> Path:
    extra = "".join(f", {k}: {json.dumps(v)}" for k, v in target.items())
    return write_manifest(root, f"""
        version: 1
        source: {{dir: src, method: catalog}}
        targets:
          - {{name: web, url: out{extra}}}
          - {{name: other, url: out2}}
        """, name="m.yaml")


def test_the_same_target_named_twice_is_applied_once(tmp_path, monkeypatch, cli):
    """Today each --target opened (and locked) the target again: the run locked itself out."""
    monkeypatch.chdir(tmp_path)
    catalog_dataset(tmp_path / "src", {"a.pmtiles": b"a" * 100}, "dup")
    local_manifest(tmp_path)
    code, out, err = cli("apply", "m.yaml", "--target", "web", "--target", "web", "--json")
    assert (code, err) == (0, "")
    assert [r["target"] for r in json.loads(out)["reports"]] == ["web"]
    assert sorted(tree(tmp_path / "out")) == ["a.pmtiles", "catalog.yaml"] and not (tmp_path / "out2").exists()
    code, out, err = cli("plan", "m.yaml", "--target", "web", "--target", "web")
    assert (code, out, err) == (0, f"Target web → {tmp_path}/out\nNo changes. 2 file(s) up to date.\n", "")


def test_a_file_deleted_between_plan_and_upload_says_so(tmp_path, monkeypatch, cli):
    """Today: "changed since it was hashed" (the user looks for an edit that never happened)."""
    from cartsync import engine
    monkeypatch.chdir(tmp_path)
    catalog_dataset(tmp_path / "src", {"a.pmtiles": b"a" * 100, "b.pmtiles": b"b" * 200}, "gone")
    local_manifest(tmp_path, delete=True)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_bytes(b"old")
    planned = engine.plan_all

    def plan_then_delete(*args, **kwargs):
        plans = planned(*args, **kwargs)
        (tmp_path / "src" / "b.pmtiles").unlink()       # after the plan, before any upload
        return plans
    monkeypatch.setattr(engine, "plan_all", plan_then_delete)
    code, out, err = cli("apply", "m.yaml", "--target", "web")
    assert code == 1
    assert out.splitlines()[1:] == [
        "  FAILED b.pmtiles: deleted since it was hashed",
        "  not done because of the failure(s) above: 2 action(s) (catalog.yaml, old.txt)"]
    assert tree(tmp_path / "out") == {"a.pmtiles": b"a" * 100, "old.txt": b"old"}   # nothing deleted, no catalog


def test_a_failed_clean_up_after_every_upload_succeeded_is_a_warning(s3, tmp_path, monkeypatch, cli):
    """S3's closing call (list and abort stale multipart uploads) failing used to turn a complete, verified
    publication into "error", exit 1, and no --json report at all. Since cartsync aborts only the uploads it
    recorded itself (issue 10 case 2), S3 makes no closing listing at all: a store whose
    ListMultipartUploads fails on every try publishes with exit 0 and nothing to warn about."""
    monkeypatch.chdir(tmp_path)
    expected = catalog_dataset(tmp_path / "src", {"a.pmtiles": b"a" * 1000, "b.pmtiles": b"b" * 2000}, "tidy")
    seen_put: list[str] = []

    def after_the_uploads(method: str, target: str) -> bool:
        if method == "PUT":
            seen_put.append(target)
        return method == "GET" and "uploads" in target.split("?", 1)[-1] and bool(seen_put)
    with FaultProxy(s3.endpoint_url) as proxy:
        # the closing ListMultipartUploads answers 500 on every try
        proxy.fail_always(after_the_uploads, status=500,
                          body=b"<Error><Code>InternalError</Code><Message>boom</Message></Error>")
        opts = {"endpoint_url": proxy.url}
        write_manifest(tmp_path, f"""
            version: 1
            source: {{dir: src, method: catalog}}
            targets:
              - {{name: web, url: "s3://{s3.bucket}/ds", storage_options: {json.dumps(opts)}}}
            """, name="m.yaml")
        code, out, err = cli("apply", "m.yaml", "--json")
        failed = [t for m, t, d in proxy.log if d == "fail_always"]
        first = s3_md5s(s3, "ds")
        seen_put.clear()                                # again, as text: begin() lists fine, finish() does not
        (tmp_path / "src" / "a.pmtiles").write_bytes(b"A" * 1000)
        code2, out2, _ = cli("apply", "m.yaml")
    assert code == 0, err
    report = json.loads(out)["reports"][0]
    assert report["ok"] and sorted(o["key"] for o in report["outcomes"] if o["ok"]) == sorted(expected)
    assert report["warnings"] == []
    assert failed == [] and first == expected                  # the call is never made
    assert code2 == 0 and out2.splitlines()[1:] == []
    assert s3_md5s(s3, "ds") == {**expected, "a.pmtiles": hashlib.md5(b"A" * 1000).hexdigest()}


def run_with_stdout_closed(tmp_path: Path, *args: str) -> tuple[int, str]:
    """`cartsync … | head` whose head has already exited: the reading end is closed before a byte is written."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "cartsync", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    return proc.wait(timeout=120), err


def test_output_piped_into_a_reader_that_went_away_exits_quietly(tmp_path):
    """Today: a BrokenPipeError traceback ("Exception ignored … BrokenPipeError") and exit 120."""
    catalog_dataset(tmp_path / "src", {f"f{i}.pmtiles": b"x" * i for i in range(1, 40)}, "pipe")
    local_manifest(tmp_path)
    assert run_with_stdout_closed(tmp_path, "plan", "m.yaml") == (0, "")
    assert run_with_stdout_closed(tmp_path, "plan", "m.yaml", "--json") == (0, "")
    # apply goes on to the end although nobody reads its summary: both targets are complete
    assert run_with_stdout_closed(tmp_path, "apply", "m.yaml", "-q") == (0, "")
    assert tree(tmp_path / "out") == tree(tmp_path / "src") == tree(tmp_path / "out2")


def test_a_manifest_in_another_encoding_says_so(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"a")
    text = "version: 1\nsource: {dir: src, method: all}\n# Müller lab\ntargets:\n  - {name: out, url: out}\n"
    utf16 = ("error: invalid manifest:\n  {0}: is UTF-16 text; cartsync reads manifests as UTF-8\nhint: save it as "
             "UTF-8 (e.g. iconv -f UTF-16 -t UTF-8 {0} > utf8.yaml, then use utf8.yaml), or choose UTF-8 in your "
             "editor's save dialog\n")
    for name, encoding in (("bom16.yaml", "utf-16"), ("le16.yaml", "utf-16-le"), ("be16.yaml", "utf-16-be")):
        (tmp_path / name).write_text(text, encoding=encoding)
        assert cli("validate", name) == (1, "", utf16.format(name))
    (tmp_path / "latin.yaml").write_text(text, encoding="latin-1")
    assert cli("validate", "latin.yaml") == (1, "", "error: invalid manifest:\n  latin.yaml:3: is not UTF-8 (byte "
                                             "0xfc); cartsync reads manifests as UTF-8\nhint: save it as UTF-8 (e.g. "
                                             "iconv -f latin1 -t UTF-8 latin.yaml > utf8.yaml, then use utf8.yaml)\n")
    (tmp_path / "bom8.yaml").write_bytes(b"\xef\xbb\xbf" + text.encode())          # UTF-8 with a BOM is fine
    assert cli("validate", "bom8.yaml")[0] == 0


# ---- read-only and full file systems: real ones (a read-only bind mount, a tiny tmpfs) when root, where
# permissions do not stop writes; plain permissions otherwise.
@contextlib.contextmanager
def read_only(folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield folder
        finally:
            folder.chmod(0o755)
        return
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@contextlib.contextmanager
def full_disk(folder: Path):
    """A 256 KiB file system filled to the last block (needs root to mount)."""
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], check=True)
    try:
        with open(folder / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


NO_CACHE = "set CARTSYNC_CACHE_DIR to a writable folder to keep hashes between runs"


def test_a_read_only_cache_does_not_block_apply(tmp_path, monkeypatch, cli):
    """Today: "cache folder … cannot be created", and nothing is applied."""
    monkeypatch.chdir(tmp_path)
    catalog_dataset(tmp_path / "src", {"a.pmtiles": b"a" * 100}, "ro")
    local_manifest(tmp_path)
    with read_only(tmp_path / "cache") as cache:
        monkeypatch.setenv("CARTSYNC_CACHE_DIR", str(cache / "cartsync"))
        code, out, err = cli("-q", "apply", "m.yaml", "--target", "web")
        assert (code, out.split(";")[0]) == (0, "web: 2 created, 0 replaced, 0 deleted"), err
        assert err == (f"WARNING: hash cache folder {cache}/cartsync cannot be created (Read-only file system); "
                       f"hashing without it ({NO_CACHE})\n"
                       f"WARNING: cache folder {cache}/cartsync cannot be written (Read-only file system); locking "
                       f"in {tempfile.gettempdir()}/cartsync-{os.getuid()}-locks instead\n")
        again = cli("-q", "apply", "m.yaml", "--target", "web")
        assert again[1] == "web: no changes; 2 file(s) up to date; 0 B sent.\n"
    assert tree(tmp_path / "out") == tree(tmp_path / "src")


def test_a_cache_on_a_full_disk_does_not_block_apply(tmp_path, monkeypatch, cli):
    """Today: "unexpected OSError: [Errno 28] No space left on device … report it" (the lock file)."""
    monkeypatch.chdir(tmp_path)
    catalog_dataset(tmp_path / "src", {"a.pmtiles": b"a" * 100}, "full")
    local_manifest(tmp_path)
    with full_disk(tmp_path / "cache") as cache:
        monkeypatch.setenv("CARTSYNC_CACHE_DIR", str(cache))
        code, out, err = cli("-q", "apply", "m.yaml", "--target", "web")
        assert (code, out.split(";")[0]) == (0, "web: 2 created, 0 replaced, 0 deleted"), err
        assert err == (f"WARNING: hash cache {cache}/hashes.sqlite3 unusable (database or disk is full); hashing "
                       f"without it ({NO_CACHE})\n")
    assert tree(tmp_path / "out") == tree(tmp_path / "src")


def test_a_read_only_manifest_folder_is_said_before_a_deposition_is_created(tmp_path, monkeypatch, cli, zenodo):
    """Today: "unexpected PermissionError … report it" after the deposition was created (and its id lost)."""
    from helpers import EXAMPLE, zenodo_manifest
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(EXAMPLE, project / "cartload2")
    m = zenodo_manifest(project, zenodo.url)
    monkeypatch.chdir(tmp_path)
    with read_only(project):
        code, out, err = cli("apply", m)
    assert (code, out) == (1, "")
    assert err.endswith(f"error: state file {project}/manifest.cartsync-state.json cannot be written (Read-only file "
                        f"system)\nhint: make {project} writable, or copy the manifest to a writable folder and run it "
                        "from there (adjust source.dir, which is relative to the manifest)\n"), err
    assert zenodo.deposition_count() == 0 and zenodo.count("PUT") == 0


def test_zenodo_with_the_cache_on_a_full_disk(tmp_path, monkeypatch, cli, zenodo):
    """The per-machine Zenodo rate budget lives in the cache folder too: a full disk must not stop the run."""
    from helpers import EXAMPLE, zenodo_manifest
    shutil.copytree(EXAMPLE, tmp_path / "cartload2")
    m = zenodo_manifest(tmp_path, zenodo.url)
    with full_disk(tmp_path / "cache") as cache:
        monkeypatch.setenv("CARTSYNC_CACHE_DIR", str(cache))
        code, out, err = cli("-q", "apply", m)
    assert code == 0, err
    assert err.endswith("WARNING: the Zenodo rate budget cannot be shared (No space left on device); counting in "
                        "this process only\n"), err
    (dep,) = zenodo.depositions
    assert len(zenodo.files_of(dep)) == 16
