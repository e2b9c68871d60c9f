"""What cartsync knows about remote objects, remembered per store: (key, ETag) → MD5 and headers.

An ETag alone does not always say what an object holds: under SSE-KMS it is not the MD5 of the data,
and a listing never shows the headers. So every fact cartsync learns about an object — from its own
upload (the ETag the server returned for the MD5 it sent, and the headers it set) or from one HEAD —
is recorded against the object's key *and ETag*. Any change to the object gives it a new ETag, so a
remembered fact can go stale only by being ignored: a no-op re-run reads the listing and this table,
nothing else. Losing the table costs requests (one HEAD per object, once), never correctness.

Stored in the hash cache's SQLite file (table `objects`, its own connection): one SELECT per store and
run, writes batched and flushed at close, as HashCache does.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .inventory import write_rows

log = logging.getLogger(__name__)
WRITE_BATCH = 256


@dataclass(frozen=True)
class Facts:
    """What one version (ETag) of an object holds.

    `md5`: of its data, None when unknown (e.g. SSE-KMS without `x-amz-meta-md5`). `headers`: the
    compared headers as the store has them (absent = not set). `carry`: settings a metadata-replacing
    copy must hand on unchanged (encryption, KMS key id, storage class, other tools' metadata)."""

    md5: str | None
    headers: dict[str, str] = field(default_factory=dict)
    carry: dict[str, str] = field(default_factory=dict)


class ObjectCache:
    """Per-store facts about objects; `store` names the endpoint and bucket, keys are full object keys."""

    def __init__(self, path: Path, store: str) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str, str, str]] = []
        self._known: dict[str, tuple[str, Facts]] | None = None
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(path), timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("CREATE TABLE IF NOT EXISTS objects (store TEXT, key TEXT, etag TEXT, facts TEXT,"
                             " PRIMARY KEY (store, key))")
        except sqlite3.Error as exc:      # (HashCache already warned about a damaged file)
            log.debug("object cache %s unusable (%s)", path, exc)
            self._db = None

    def _load(self) -> dict[str, tuple[str, Facts]]:
        if self._known is None:
            rows: list[tuple[str, str, str]] = []
            if self._db is not None:
                try:
                    rows = self._db.execute("SELECT key, etag, facts FROM objects WHERE store=?",
                                            (self.store,)).fetchall()
                except sqlite3.Error as exc:
                    log.debug("object cache unreadable (%s)", exc)
            self._known = {}
            for key, etag, text in rows:
                try:
                    raw = json.loads(text)
                    self._known[key] = (etag, Facts(raw.get("md5"), dict(raw.get("headers") or {}),
                                                    dict(raw.get("carry") or {})))
                except (ValueError, AttributeError, TypeError):
                    continue          # a row this version cannot read: as if unknown
        return self._known

    def get(self, key: str, etag: str | None) -> Facts | None:
        """The facts recorded for this very version of the object, or None."""
        if not etag:
            return None
        with self._lock:
            hit = self._load().get(key)
        return hit[1] if hit is not None and hit[0] == etag else None

    def put(self, key: str, etag: str, facts: Facts) -> None:
        text = json.dumps({"md5": facts.md5, "headers": facts.headers, "carry": facts.carry}, sort_keys=True)
        with self._lock:
            self._load()[key] = (etag, facts)
            self._pending.append((self.store, key, etag, text))
            if len(self._pending) < WRITE_BATCH:
                return
            rows, self._pending = self._pending, []
            self._write(rows)

    def _write(self, rows: list[tuple[str, str, str, str]]) -> None:
        if self._db is None or not rows:
            return
        exc = write_rows(self._db, "INSERT OR REPLACE INTO objects VALUES (?,?,?,?)", rows)
        if exc is not None:
            log.debug("object cache: could not record %d object(s) (%s)", len(rows), exc)

    def close(self) -> None:
        with self._lock:
            rows, self._pending = self._pending, []
            self._write(rows)
            if self._db is not None:
                self._db.close()
                self._db = None
