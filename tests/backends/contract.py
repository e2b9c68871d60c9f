"""The Backend contract (cartsync/backends/base.py) as a class, one named test per rule.

A backend's test class inherits `BackendContract` and provides a `backend` fixture that yields a fresh,
empty target, ready to be written to; pytest then runs every rule against it, and one broken rule does
not hide the others (fsspec's tests/abstract does the same). Classes: tests/test_contract.py (memory,
local disk), tests/test_s3.py (each way the S3 backend talks to the server), tests/test_zenodo.py.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cartsync.model import LocalFile


def local_file(tmp_path: Path, key: str, data: bytes) -> LocalFile:
    p = tmp_path / "src" / key
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    st = p.stat()
    return LocalFile(key, p, len(data), hashlib.md5(data).hexdigest(), st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _noop(n: int) -> None:
    pass


class BackendContract:
    """Every backend keeps these; subclasses provide the `backend` fixture."""

    @staticmethod
    def put(backend, tmp_path: Path, key: str, data: bytes) -> tuple[str, LocalFile]:
        """Upload `data` as `key`; (the key as the target stores it, the local file)."""
        [stored] = backend.map_keys(backend.target, [key]).values()
        f = local_file(tmp_path, key, data)
        got = backend.upload(f, stored, _noop)
        assert (got.key, got.size) == (stored, f.size)
        return stored, f

    def test_a_new_target_lists_nothing(self, backend):
        assert backend.listing() == {}

    def test_the_listing_shows_each_upload_with_its_size_and_md5(self, backend, tmp_path):
        a = self.put(backend, tmp_path, "a.pmtiles", os.urandom(5000))
        b = self.put(backend, tmp_path, "sub/b.tsv", b"x\ty\n")
        listing = backend.resolve(backend.listing(), {a[0]: a[1], b[0]: b[1]})
        assert {k: (r.size, r.md5) for k, r in listing.items()} == {a[0]: (5000, a[1].md5), b[0]: (4, b[1].md5)}

    def test_an_empty_file_is_an_object_of_size_zero(self, backend, tmp_path):
        key, f = self.put(backend, tmp_path, "empty.txt", b"")
        listing = backend.resolve(backend.listing(), {key: f})
        assert (listing[key].size, listing[key].md5) == (0, hashlib.md5(b"").hexdigest())

    def test_a_same_size_replacement_leaves_one_object_with_the_new_content(self, backend, tmp_path):
        key, _ = self.put(backend, tmp_path, "a.pmtiles", os.urandom(5000))
        _, new = self.put(backend, tmp_path, "a.pmtiles", os.urandom(5000))
        listing = backend.resolve(backend.listing(), {key: new})
        assert list(listing) == [key] and listing[key].md5 == new.md5

    def test_a_delete_removes_exactly_that_object(self, backend, tmp_path):
        keep, f = self.put(backend, tmp_path, "keep.tsv", b"keep\n")
        gone, g = self.put(backend, tmp_path, "sub/gone.tsv", b"gone\n")
        listing = backend.resolve(backend.listing(), {keep: f, gone: g})
        backend.delete(listing[gone])
        assert set(backend.listing()) == {keep}
