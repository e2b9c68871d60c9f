"""Size and MD5 of local files: streamed, hashed in parallel, cached on disk.

The cache is an SQLite database (safe under concurrent runs and crashes: each
write is a transaction) keyed by (path, size, mtime_ns, ctime_ns, inode), so
an unchanged tree hashes nothing while any content change — which always moves
ctime — is seen. Location: $CARTSYNC_CACHE_DIR, else $XDG_CACHE_HOME/cartsync,
else ~/.cache/cartsync.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

from .errors import CartsyncError, SourceChanged, SourceError
from .model import LocalFile, SourceFile

log = logging.getLogger(__name__)
CHUNK = 1 << 20


def cache_dir() -> Path:
    explicit = os.environ.get("CARTSYNC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cartsync"


class CacheError(CartsyncError):
    def __init__(self, folder: Path, exc: OSError) -> None:
        super().__init__(f"cache folder {folder} cannot be created ([Errno {exc.errno}] {exc.strerror})",
                         "set CARTSYNC_CACHE_DIR to a writable folder")


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class HashCache:
    """Persistent (path, stat) → digest map. `kind` is "md5" or e.g. "etag:8388608"."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else cache_dir() / "hashes.sqlite3"
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        self.bytes_hashed = 0
        self._loaded: dict[str, dict[str, tuple]] = {}     # kind → path → (stat key, digest), read once
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(self.path.parent, exc) from None
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT, kind TEXT, size INTEGER, mtime_ns INTEGER,"
                " ctime_ns INTEGER, inode INTEGER, digest TEXT, PRIMARY KEY (path, kind))")
        except sqlite3.DatabaseError as exc:
            # A damaged or unwritable cache costs time, never correctness: hash without it.
            log.warning("hash cache %s unusable (%s); hashing without it", self.path, exc)
            self._db = None

    def get(self, path: Path, st: os.stat_result, kind: str = "md5") -> str | None:
        if self._db is None:
            return None
        with self._lock:
            if kind not in self._loaded:
                # one query for the whole cache, not one per file: a re-plan of 100k files does 1 SELECT
                self._loaded[kind] = {p: ((sz, mt, ct, ino), d) for p, sz, mt, ct, ino, d in self._db.execute(
                    "SELECT path, size, mtime_ns, ctime_ns, inode, digest FROM hashes WHERE kind=?", (kind,))}
            hit = self._loaded[kind].get(str(path))
        return hit[1] if hit is not None and hit[0] == _stat_key(st) else None

    def put(self, path: Path, st: os.stat_result, digest: str, kind: str = "md5") -> None:
        if self._db is None:
            return
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO hashes VALUES (?,?,?,?,?,?,?)",
                             (str(path), kind, *_stat_key(st), digest))
            if kind in self._loaded:
                self._loaded[kind][str(path)] = (_stat_key(st), digest)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def md5_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """MD5 of a file, read in 1 MiB chunks (hashlib releases the GIL, so threads use all cores)."""
    h = hashlib.md5()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            if on_bytes:
                on_bytes(n)
    return h.hexdigest()


def multipart_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives a multipart upload with parts of `part_size`: md5(concat(part md5s))-N."""
    digests = []
    with open(path, "rb", buffering=0) as f:
        while True:
            h, left = hashlib.md5(), part_size
            while left and (chunk := f.read(min(CHUNK, left))):
                h.update(chunk)
                left -= len(chunk)
            if left == part_size:
                break
            digests.append(h.digest())
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def cached_digest(cache: HashCache, path: Path, kind: str, compute: Callable[[Path], str]) -> str:
    """A digest of `path` from the cache, or computed and cached if the file held still meanwhile."""
    st = os.stat(path)
    hit = cache.get(path, st, kind)
    if hit is not None:
        cache.hits += 1
        return hit
    cache.misses += 1
    digest = compute(path)
    after = os.stat(path)
    if _stat_key(after) != _stat_key(st):
        raise SourceChanged(f"{path}: changed while it was being hashed", "re-run when the file is complete")
    cache.put(path, st, digest, kind)
    with cache._lock:
        cache.bytes_hashed += st.st_size
    return digest


def inventory(files: Iterable[SourceFile], cache: HashCache, jobs: int | None = None,
              on_bytes: Callable[[int], None] | None = None) -> dict[str, LocalFile]:
    """LocalFile (size, md5, stat) for each selected file, keyed by key; cache hits inline, misses hashed
    in parallel."""
    def stat(sf: SourceFile) -> os.stat_result:
        try:
            return os.stat(sf.path)
        except PermissionError:
            raise SourceError(f"{sf.key}: not readable (permission denied)") from None
        except FileNotFoundError:
            raise SourceError(f"{sf.key}: disappeared while being read") from None

    def one(sf: SourceFile) -> LocalFile:
        try:
            md5 = cached_digest(cache, sf.path, "md5", lambda p: md5_file(p, on_bytes))
        except PermissionError:
            raise SourceError(f"{sf.key}: not readable (permission denied)") from None
        except FileNotFoundError:
            raise SourceError(f"{sf.key}: disappeared while being read") from None
        return _local_file(sf, stat(sf), md5)

    files = list(files)
    found: dict[str, LocalFile] = {}
    todo: list[SourceFile] = []
    for sf in files:
        st = stat(sf)
        md5 = cache.get(sf.path, st)
        if md5 is None:
            todo.append(sf)
        else:
            cache.hits += 1
            found[sf.key] = _local_file(sf, st, md5)
    if todo:
        with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2, thread_name_prefix="hash") as pool:
            found.update((f.key, f) for f in pool.map(one, todo))
    return {sf.key: found[sf.key] for sf in files}


def _local_file(sf: SourceFile, st: os.stat_result, md5: str) -> LocalFile:
    return LocalFile(sf.key, sf.path, st.st_size, md5, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def still_same(local: LocalFile) -> bool:
    """True if the file on disk still has the size and times it was hashed with."""
    try:
        st = os.stat(local.path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (
        local.size, local.mtime_ns, local.ctime_ns, local.inode)
