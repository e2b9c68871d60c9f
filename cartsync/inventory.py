"""Size and MD5 of local files: streamed, hashed in parallel, cached on disk.

The cache is an SQLite database (safe under concurrent runs and crashes: each
write is a transaction) keyed by (path, size, mtime_ns, ctime_ns, inode), so
an unchanged tree hashes nothing while any content change — which always moves
ctime — is seen. Location: $CARTSYNC_CACHE_DIR, else $XDG_CACHE_HOME/cartsync,
else ~/.cache/cartsync.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from .errors import CartsyncError, SourceChanged, SourceError
from .model import LocalFile, SourceFile

log = logging.getLogger(__name__)
CHUNK = 1 << 20
WRITE_BATCH = 256


def cache_dir() -> Path:
    explicit = os.environ.get("CARTSYNC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cartsync"


class CacheError(CartsyncError):
    def __init__(self, folder: Path, exc: OSError) -> None:
        super().__init__(f"cache folder {folder} cannot be written ([Errno {exc.errno}] {exc.strerror})",
                         "set CARTSYNC_CACHE_DIR to a writable folder")


_NO_CACHE = "set CARTSYNC_CACHE_DIR to a writable folder to keep hashes between runs"


def lock_file(name: str) -> IO[bytes]:
    """An open lock file (binary, unbuffered) for `name`: in the cache folder, or — when that is
    read-only or full — in the system's temp folder (a lock needs no space once the file exists; the
    cache is an optimisation and must not stop a run). Raises CacheError if neither can hold it."""
    fallback = Path(tempfile.gettempdir()) / f"cartsync-{os.getuid()}-locks"
    first: OSError | None = None
    for folder in (cache_dir() / "locks", fallback):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # unbuffered: close() flushes nothing. Returned open: the caller's `with` closes it.
            fh = open(folder / f"{name}.lock", "a+b", buffering=0)  # noqa: SIM115
        except OSError as exc:
            first = first or exc
            continue
        if first is not None:
            log.warning("cache folder %s cannot be written (%s); locking in %s instead", cache_dir(),
                        first.strerror, folder)
        return fh
    assert first is not None
    raise CacheError(cache_dir(), first)


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class HashCache:
    """Persistent (path, stat) → digest map. `kind` is "md5" or e.g. "etag:8388608"."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path if path is not None else cache_dir() / "hashes.sqlite3"
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()      # guards the connection; taken after _lock, never before
        self._pending: list[tuple] = []
        self.hits = self.misses = 0
        self.bytes_hashed = 0
        self._loaded: dict[str, dict[str, tuple]] = {}     # kind → path → (stat key, digest), read once
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # read-only or full: the cache saves time, never correctness, so the run goes on without it
            log.warning("hash cache folder %s cannot be created (%s); hashing without it (%s)", self.path.parent,
                        exc.strerror, _NO_CACHE)
            return
        db: sqlite3.Connection | None = None
        try:
            db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (path TEXT, kind TEXT, size INTEGER, mtime_ns INTEGER,"
                " ctime_ns INTEGER, inode INTEGER, digest TEXT, PRIMARY KEY (path, kind))")
        except sqlite3.DatabaseError as exc:
            # A damaged or unwritable cache costs time, never correctness: hash without it.
            log.warning("hash cache %s unusable (%s); hashing without it (%s)", self.path, exc, _NO_CACHE)
            if db is not None:
                db.close()      # now, not when the traceback's cycle is collected: it holds the file open
            return
        self._db = db

    def get(self, path: Path, st: os.stat_result, kind: str = "md5") -> str | None:
        if self._db is None:
            return None
        with self._lock:
            if kind not in self._loaded:
                # one query for the whole cache, not one per file: a re-plan of 100k files does 1 SELECT
                with self._write_lock:      # one statement at a time on the shared connection
                    rows = self._db.execute("SELECT path, size, mtime_ns, ctime_ns, inode, digest FROM hashes "
                                            "WHERE kind=?", (kind,)).fetchall()
                self._loaded[kind] = {p: ((sz, mt, ct, ino), d) for p, sz, mt, ct, ino, d in rows}
                self._loaded[kind].update((r[0], (r[2:6], r[6])) for r in self._pending if r[1] == kind)
            hit = self._loaded[kind].get(str(path))
        return hit[1] if hit is not None and hit[0] == _stat_key(st) else None

    def put(self, path: Path, st: os.stat_result, digest: str, kind: str = "md5") -> None:
        """Remember a digest. Written in batches (and at close): a per-file transaction under the lock
        held every upload thread up; a killed run loses at most one batch, which costs a re-hash."""
        if self._db is None:
            return
        row = (str(path), kind, *_stat_key(st), digest)
        with self._lock:
            self._pending.append(row)
            if kind in self._loaded:
                self._loaded[kind][row[0]] = (_stat_key(st), digest)
            if len(self._pending) < WRITE_BATCH:
                return
            rows, self._pending = self._pending, []
        self._write(rows)

    def _write(self, rows: list[tuple]) -> None:
        with self._write_lock:
            if self._db is None or not rows:
                return
            exc = write_rows(self._db, "INSERT OR REPLACE INTO hashes VALUES (?,?,?,?,?,?,?)", rows)
            if exc is not None:
                log.warning("hash cache %s: could not record %d digest(s) (%s)", self.path, len(rows), exc)

    def close(self) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
        self._write(rows)
        with self._write_lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def write_rows(db: sqlite3.Connection, statement: str, rows: list[tuple]) -> sqlite3.Error | None:
    """`statement` for every row, in one transaction; the error (after rolling back) if it failed."""
    try:
        db.execute("BEGIN")
        db.executemany(statement, rows)
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        if db.in_transaction:
            db.execute("ROLLBACK")
        return exc
    return None


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
    """LocalFile (size, md5, stat) for each selected file, keyed by key, every one hashed."""
    return hash_missing(survey(files, cache), cache, jobs, on_bytes=on_bytes)


@contextmanager
def _reading(key: str) -> Iterator[None]:
    """A source file that cannot be read, as the error that names it."""
    try:
        yield
    except PermissionError:
        raise SourceError(f"{key}: not readable (permission denied)") from None
    except FileNotFoundError:
        raise SourceError(f"{key}: disappeared while being read") from None


def _stat(key: str, path: Path) -> os.stat_result:
    with _reading(key):
        return os.stat(path)


def survey(files: Iterable[SourceFile], cache: HashCache) -> dict[str, LocalFile]:
    """Size and stat of each file, with its md5 where the cache has it for this very stat (else None)."""
    out: dict[str, LocalFile] = {}
    for sf in files:
        st = _stat(sf.key, sf.path)
        md5 = cache.get(sf.path, st)
        if md5 is not None:
            cache.hits += 1
        out[sf.key] = _local_file(sf, st, md5)
    return out


def hash_missing(local: dict[str, LocalFile], cache: HashCache, jobs: int | None = None,
                 keys: Collection[str] | None = None,
                 on_bytes: Callable[[int], None] | None = None) -> dict[str, LocalFile]:
    """`local` with the md5 filled in, hashed in parallel, for `keys` (default: every file) that lack one."""
    def one(lf: LocalFile) -> LocalFile:
        with _reading(lf.key):
            md5 = cached_digest(cache, lf.path, "md5", lambda p: md5_file(p, on_bytes))
        return _local_file(SourceFile(lf.key, lf.path, lf.catalog), _stat(lf.key, lf.path), md5)

    todo = [lf for k, lf in local.items() if lf.md5 is None and (keys is None or k in keys)]
    if not todo:
        return local
    with ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 2, thread_name_prefix="hash") as pool:
        done = {f.key: f for f in pool.map(one, todo)}
    return {k: done.get(k, lf) for k, lf in local.items()}


def hashed(local: LocalFile, cache: HashCache) -> LocalFile:
    """`local` with its md5: hashed now if the plan did not need it (through the cache, like the rest).
    Raises SourceChanged if the file is no longer the one surveyed."""
    if local.md5 is not None:
        return local
    md5 = cached_digest(cache, local.path, "md5", md5_file)
    if not still_same(local):
        raise SourceChanged(f"{local.key}: changed since the plan was made", "re-run to pick up the new content")
    return dataclasses.replace(local, md5=md5)


def _local_file(sf: SourceFile, st: os.stat_result, md5: str | None) -> LocalFile:
    return LocalFile(sf.key, sf.path, st.st_size, md5, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, sf.catalog)


def unchanged_or_raise(local: LocalFile, when: str) -> None:
    """Raise SourceChanged unless the file is still the one surveyed; `when` is e.g. "since it was
    hashed". A file that is gone says so: "changed" would send the user looking for an edit."""
    if still_same(local):
        return
    if not os.path.lexists(local.path):
        raise SourceChanged(f"{local.key}: deleted {when}", "re-run: the new plan leaves it out (or restore the file)")
    raise SourceChanged(f"{local.key}: changed {when}", "re-run when the file is complete" if when.startswith(
        "while") else "re-run to pick up the new content")


def still_same(local: LocalFile) -> bool:
    """True if the file on disk still has the size and times it was hashed with."""
    try:
        st = os.stat(local.path)
    except OSError:
        return False
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino) == (
        local.size, local.mtime_ns, local.ctime_ns, local.inode)
