"""The multipart uploads cartsync itself started: the only ones it ever resumes or aborts.

S3 cannot tell whose an open multipart upload is (ListMultipartUploads names key, id and time, never
the tool), so cartsync writes each UploadId down the moment CreateMultipartUpload answers, and before
it asks, an *intent* row (key and time, no id yet): a run killed between the two leaves an intent that
the next run resolves by the upload's key and start time alone (see `S3Backend`). Rows are per
`scope` (endpoint, bucket and target prefix): `s3://b/p` never touches the rows of `s3://b/p/sub`.

Each row names the run that owns it (host, pid, a token per run). A row is *stale* — free to be resumed
or aborted — only when that run is over: same host and the pid is gone, or the pid is this process's
own with another run token (sequential in-process runs, as in the tests). A row of a live run on this
host, or of any run on another host sharing the cache folder, is never touched.

Storage: `uploads.sqlite3` beside the hash cache; every change is its own committed transaction, since
a row must survive a SIGKILL the instant after the server answered. An unusable file costs resume and
clean-up (logged once), never correctness: nothing is then resumed and nothing aborted.
"""
from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
_SCHEMA = ("CREATE TABLE IF NOT EXISTS uploads (scope TEXT, key TEXT, upload_id TEXT, md5 TEXT, size INTEGER,"
           " part_size INTEGER, started REAL, stat TEXT, host TEXT, pid INTEGER, run TEXT, row TEXT PRIMARY KEY)")


@dataclass(frozen=True)
class Entry:
    """One upload (or, with `upload_id` None, one CreateMultipartUpload whose answer never came back)."""

    row: str
    scope: str
    key: str                  # the full S3 key
    upload_id: str | None
    md5: str                  # of the whole local file the upload is of
    size: int
    part_size: int
    started: float            # local time.time() of the create request
    stat: str                 # the file's size, mtime_ns, ctime_ns and inode then (a plan may not know the md5)


class UploadRegistry:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.run = uuid.uuid4().hex
        self.host = socket.gethostname()
        self._lock = threading.Lock()
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(path), timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            log.warning("upload registry %s unusable (%s): big uploads will not resume, and uploads a killed "
                        "run left open will not be aborted", path, exc)
            self._db = None

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            if self._db is None:
                return []
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                log.warning("upload registry %s: %s", self.path, exc)
                return []

    def intend(self, scope: str, key: str, md5: str, size: int, part_size: int, stat: str) -> Entry:
        """Record a CreateMultipartUpload about to be sent; `created()` or `remove()` its row next."""
        entry = Entry(uuid.uuid4().hex, scope, key, None, md5, size, part_size, time.time(), stat)
        self._run("INSERT INTO uploads VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                  (scope, key, None, md5, size, part_size, entry.started, stat, self.host, os.getpid(), self.run,
                   entry.row))
        return entry

    def created(self, row: str, upload_id: str) -> None:
        self._run("UPDATE uploads SET upload_id=? WHERE row=?", (upload_id, row))

    def remove(self, row: str) -> None:
        self._run("DELETE FROM uploads WHERE row=?", (row,))

    def stale(self, scope: str) -> list[Entry]:
        """Rows of this scope whose run is over, oldest first."""
        rows = self._run("SELECT row, scope, key, upload_id, md5, size, part_size, started, stat, host, pid, run "
                         "FROM uploads WHERE scope=? ORDER BY started", (scope,))
        return [Entry(*r[:9]) for r in rows if self._over(r[9], r[10], r[11])]

    def for_key(self, scope: str, key: str) -> list[Entry]:
        """Rows of this key that this run may resume: its own, or those of runs that are over."""
        rows = self._run("SELECT row, scope, key, upload_id, md5, size, part_size, started, stat, host, pid, run "
                         "FROM uploads WHERE scope=? AND key=? AND upload_id IS NOT NULL ORDER BY started",
                         (scope, key))
        return [Entry(*r[:9]) for r in rows if r[11] == self.run or self._over(r[9], r[10], r[11])]

    def known(self, scope: str | None = None) -> set[str]:
        """Every UploadId any run has written down (of `scope`, or of all scopes)."""
        rows = self._run("SELECT upload_id FROM uploads WHERE upload_id IS NOT NULL" +
                         (" AND scope=?" if scope else ""), (scope,) if scope else ())
        return {r[0] for r in rows}

    def claim(self, entry: Entry) -> None:
        """Make a stale row this run's (it is about to be resumed)."""
        self._run("UPDATE uploads SET host=?, pid=?, run=? WHERE row=?", (self.host, os.getpid(), self.run, entry.row))

    def _over(self, host: str, pid: int, run: str) -> bool:
        if host != self.host:
            return False               # another machine's run: we cannot tell, so never touch it
        if pid == os.getpid():
            return run != self.run
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False               # alive, someone else's process
        return False

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
