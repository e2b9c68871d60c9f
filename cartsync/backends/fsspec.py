"""Any fsspec store: local folders, file://, memory://, and (via s3.py) s3://.

Local folders and memory stores list no checksums, so `resolve` hashes the
remote copy (local folders through the hash cache, so a re-plan is free).
Local writes go to a temporary name (`<name>.cartsync-tmp`, or a hashed short
name where that would be too long for the file system) and are renamed into
place: a reader never sees half a file. Temp files a killed run left behind
are never listed as data; the plan shows them and `begin` removes them (they
are cartsync's own, so this needs no `delete: true`). A local target is a real
folder tree (`features.folders`): the planner clears a file standing where a
folder must go, or the reverse, before the uploads; deleting a file also
removes the folders it leaves empty.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from ..errors import AuthError, RemoteError, VerifyError
from ..inventory import CHUNK, cached_digest, md5_file
from ..model import TMP_SUFFIX, Change, KeyRange, LocalFile, Plan, RemoteFile
from .base import Backend, Features, Progress, unreachable

log = logging.getLogger(__name__)
NAME_MAX = 255     # bytes in one file name on the usual local file systems (ext4, xfs, apfs, ntfs)


def tmp_name(name: str) -> str:
    """The temp file a copy of `name` is written to, in the same folder; short enough for the file system."""
    tmp = name + TMP_SUFFIX
    if len(os.fsencode(tmp)) <= NAME_MAX:
        return tmp
    return "." + hashlib.sha1(os.fsencode(name)).hexdigest() + TMP_SUFFIX


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
        if self.local:
            self.features = Features(folders=True)
        self.stale: tuple[str, ...] = ()     # temp files of an interrupted copy, found by list(), removed by begin()

    def path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def listing(self, within: KeyRange | None = None) -> dict[str, RemoteFile]:
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
        self.stale = ()
        for path, info in entries.items():
            path = path if not self.local else Path(path).as_posix()
            # never touch anything outside the prefix: s3://b/sample1 must not see s3://b/sample10/…
            if not path.startswith(prefix) or info.get("type") == "directory":
                continue
            if self.local and path.endswith(TMP_SUFFIX):      # only local copies go through a temp file
                key = path[len(prefix):]
                # a shard cleans up only in its own datasets: another shard may be copying that file now
                if within is None or within.start_after < key < within.stop_at:
                    self.stale += (key,)
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
            digests = dict(zip((r.key for r in todo), pool.map(lambda r: self.remote_md5(r.key), todo), strict=False))
        return {k: (RemoteFile(k, r.size, digests[k], r.etag, r.extra) if k in digests else r)
                for k, r in remote.items()}

    def plan_changes(self, plan: Plan) -> tuple[Change, ...]:
        return tuple(Change("-", f"temp file {key}", "left by an interrupted copy; removed on apply")
                     for key in sorted(self.stale))

    def begin(self, plan: Plan) -> list[Change]:
        """Remove the temp files an interrupted copy left (cartsync's own: no delete: true needed)."""
        done = []
        for change, key in zip(self.plan_changes(plan), sorted(self.stale), strict=True):
            with contextlib.suppress(FileNotFoundError):     # gone already (another run finished that copy)
                self.fs.rm_file(self.path(key))
            done.append(change)
        self.stale = ()
        return done

    def upload(self, local: LocalFile, key: str, progress: Progress) -> RemoteFile:
        dest = self.path(key)
        try:
            if self.local:
                self._put_local(local, Path(dest), progress)
            else:
                parent = dest.rsplit("/", 1)[0]
                self.fs.makedirs(parent, exist_ok=True)
                self.fs.put_file(str(local.path), dest)
                progress(local.size)
        except PermissionError as exc:
            if exc.filename is not None and os.fspath(exc.filename) == os.fspath(local.path):
                raise                    # the source file: said as such by the executor
            raise AuthError(f"{key}: access denied writing to {self.url}",
                            f"check that this user may write into {self.root}" if self.local else
                            "check the credentials and that they may write here") from None
        self.fs.invalidate_cache(dest)
        size = int(self.fs.info(dest)["size"])
        md5 = self.remote_md5(key)
        if size != local.size or md5 != local.md5:
            raise VerifyError(f"{key}: stored copy differs (size {size}, md5 {md5}; "
                              f"expected {local.size}, {local.md5})")
        return RemoteFile(key, size, md5)

    def _put_local(self, local: LocalFile, dest: Path, progress: Progress) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_dir() and not dest.is_symlink():
            dest.rmdir()       # an empty folder where the file goes (its files were cleared first); holds nothing
        tmp = dest.with_name(tmp_name(dest.name))
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
        if self.local:
            self._prune(Path(self.path(remote.key)).parent)

    def _prune(self, folder: Path) -> None:
        """Remove the folders a delete left empty, up to (not including) the target's root: an empty
        folder would stand where the source may now have a file of that name."""
        root = Path(self.root)
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return               # not empty (or already gone): nothing more to prune
            folder = folder.parent
