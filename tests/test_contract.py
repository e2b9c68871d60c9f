"""One contract suite, run against every backend (memory, local disk; S3 and Zenodo join in their files)."""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from cartsync.backends import open_backend
from cartsync.inventory import HashCache
from cartsync.manifest import TargetConfig
from cartsync.model import LocalFile


def local_file(tmp_path: Path, key: str, data: bytes) -> LocalFile:
    p = tmp_path / "src" / key
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    st = p.stat()
    return LocalFile(key, p, len(data), hashlib.md5(data).hexdigest(), st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def memory_target(tmp_path: Path) -> TargetConfig:
    return TargetConfig(name="mem", url=f"memory://contract-{uuid.uuid4().hex}/data")


def local_target(tmp_path: Path) -> TargetConfig:
    return TargetConfig(name="disk", url=str(tmp_path / "target"))


TARGETS = {"memory": memory_target, "local": local_target}


@pytest.fixture(params=list(TARGETS))
def backend(request, tmp_path):
    b = open_backend(TARGETS[request.param](tmp_path), HashCache(tmp_path / "h.sqlite3"))
    yield b
    b.close()


def run_contract(backend, tmp_path: Path) -> None:
    """The contract every backend keeps; also called by test_s3.py and test_zenodo.py."""
    assert backend.listing() == {}
    a = local_file(tmp_path, "a.pmtiles", os.urandom(5000))
    b = local_file(tmp_path, "sub/b.tsv", b"x\ty\n")
    e = local_file(tmp_path, "empty.txt", b"")
    noop = lambda n: None  # noqa: E731
    keys = backend.map_keys(backend.target, ["a.pmtiles", "sub/b.tsv", "empty.txt"])
    for f in (a, b, e):
        got = backend.upload(f, keys[f.key], noop)
        assert (got.key, got.size) == (keys[f.key], f.size)
    listing = backend.resolve(backend.listing(), {keys[f.key]: f for f in (a, b, e)})
    assert {k: (r.size, r.md5) for k, r in listing.items()} == {
        keys[f.key]: (f.size, f.md5) for f in (a, b, e)}
    # replace with same-size different content: exactly one file with the new content
    a2 = local_file(tmp_path, "a.pmtiles", os.urandom(5000))
    backend.upload(a2, keys["a.pmtiles"], noop)
    listing = backend.resolve(backend.listing(), {keys[f.key]: f for f in (a2, b, e)})
    assert listing[keys["a.pmtiles"]].md5 == a2.md5 and len(listing) == 3
    backend.delete(listing[keys["sub/b.tsv"]])
    assert set(backend.listing()) == {keys["a.pmtiles"], keys["empty.txt"]}


def test_backend_contract(backend, tmp_path):
    run_contract(backend, tmp_path)


def test_listing_stays_inside_prefix(tmp_path):
    cache = HashCache(tmp_path / "h.sqlite3")
    (tmp_path / "sample10").mkdir()
    (tmp_path / "sample10" / "x.txt").write_text("other dataset")
    (tmp_path / "sample1").mkdir()
    b = open_backend(TargetConfig(name="s", url=str(tmp_path / "sample1")), cache)
    assert b.listing() == {}
