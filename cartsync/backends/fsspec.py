"""Any fsspec store: local folders, file://, memory://, and (via s3.py) s3://.

Local folders and memory stores list no checksums, so `resolve` hashes the
remote copy (local folders through the hash cache, so a re-plan is free).
Local writes go to a temporary name and are renamed into place: a reader
never sees half a file.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import RemoteError, VerifyError
from ..inventory import CHUNK, cached_digest, md5_file
from ..model import KeyRange, LocalFile, RemoteFile
from .base import Backend, Progress, unreachable

log = logging.getLogger(__name__)
TMP_SUFFIX = ".cartsync-tmp"


def md5_from_info(info: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(md5, etag) from an fsspec listing entry, where the store reports one."""
    etag = info.get("ETag") or info.get("etag")
    if isinstance(etag, str):
        etag = etag.strip('"')
        return (None if "-" in etag else etag.lower()), etag
    gcs = info.get("md5Hash")
    if isinstance(gcs, str):
        return base64.b64decode(gcs).hex(), None
    return None, None


class FsspecBackend(Backend):
    def __init__(self, target, cache, fs: fsspec.AbstractFileSystem | None = None, root: str | None = None) -> None:
        super().__init__(target, cache)
        if fs is None:
            try:
                fs, root = fsspec.core.url_to_fs(target.url, **target.storage_options)
            except ImportError as exc:
                raise RemoteError(f"target {target.name}: {exc}", "install the fsspec driver it names") from None
            except (ValueError, TypeError) as exc:
                raise RemoteError(f"target {target.name}: cannot open {target.url}: {exc}") from None
        self.fs = fs
        self.root = (root or "").rstrip("/")
        self.local = isinstance(fs, LocalFileSystem)

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def list(self, within: KeyRange | None = None) -> dict[str, RemoteFile]:
        def find() -> dict[str, Any]:
            self.fs.invalidate_cache()
            try:
                return self.fs.find(self.root, detail=True, withdirs=False)
            except FileNotFoundError:
                return {}

        try:
            entries = self.retrying(find)
        except Exception as exc:  # noqa: BLE001 — translated into one clear message, or re-raised
            raise unreachable(self, exc) from None
        prefix = self.root + "/"
        out: dict[str, RemoteFile] = {}
        for path, info in entries.items():
            path = path if not self.local else Path(path).as_posix()
            # never touch anything outside the prefix: s3://b/sample1 must not see s3://b/sample10/…
            if not path.startswith(prefix) or path.endswith(TMP_SUFFIX) or info.get("type") == "directory":
                continue
            md5, etag = md5_from_info(info)
            out[path[len(prefix):]] = RemoteFile(path[len(prefix):], int(info.get("size") or 0), md5, etag)
        return out

    def remote_md5(self, key: str) -> str:
        """MD5 of a stored file by reading it back (cached for local folders)."""
        if self.local:
            return cached_digest(self.cache, Path(self.path(key)), "md5", md5_file)
        h = hashlib.md5()
        with self.fs.open(self.path(key), "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def resolve(self, remote: dict[str, RemoteFile], local: Mapping[str, LocalFile]) -> dict[str, RemoteFile]:
        todo = [r for k, r in remote.items() if r.md5 is None and k in local and local[k].size == r.size]
        if not todo:
            return remote
        if not self.local:
            log.info("%s lists no checksums: reading %d file(s) back to compare content", self.url, len(todo))
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            digests = dict(zip((r.key for r in todo), pool.map(lambda r: self.remote_md5(r.key), todo)))
        return {k: (RemoteFile(k, r.size, digests[k], r.etag, r.extra) if k in digests else r)
                for k, r in remote.items()}

    def upload(self, local: LocalFile, key: str, progress: Progress) -> RemoteFile:
        dest = self.path(key)
        if self.local:
            self._put_local(local, Path(dest), progress)
        else:
            parent = dest.rsplit("/", 1)[0]
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.put_file(str(local.path), dest)
            progress(local.size)
        self.fs.invalidate_cache(dest)
        size = int(self.fs.info(dest)["size"])
        md5 = self.remote_md5(key)
        if size != local.size or md5 != local.md5:
            raise VerifyError(f"{key}: stored copy differs (size {size}, md5 {md5}; expected {local.size}, {local.md5})")
        return RemoteFile(key, size, md5)

    def _put_local(self, local: LocalFile, dest: Path, progress: Progress) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + TMP_SUFFIX)
        try:
            with open(local.path, "rb") as src, open(tmp, "wb") as out:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()

    def delete(self, remote: RemoteFile) -> None:
        self.fs.rm_file(self.path(remote.key))
