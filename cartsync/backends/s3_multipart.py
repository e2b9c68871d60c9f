"""One S3 multipart upload as an object: create, send parts, complete, abort; resumable across runs.

The upload is written down in the `UploadRegistry` when it is created (an intent row before the
request, the UploadId the moment it answers), so whatever happens next — a failed part, a failed
run, SIGKILL, Ctrl-C — it stays known as cartsync's own: the next run resumes it or aborts it, and
nothing else (another tool's upload under the same prefix) is ever aborted. `complete()` and
`abort()` remove the row; nothing else does.

Resuming: `stored_parts()` (ListParts) says what the server holds; `send()` reads every local part
(the whole-file ETag needs each part's MD5 anyway), and sends only those whose stored ETag is not that
MD5 or whose size differs. An upload the server no longer has (NoSuchUpload: aborted under us, or
expired by a lifecycle rule) raises `UploadGone`, and the caller starts a fresh one.

Each call is retried on its own (with many parts, starting a file over on one failed part would
rarely finish on a flaky network). Memory: at most one part per slot of the shared semaphore.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..errors import VerifyError
from . import s3_etags
from .s3_registry import Entry, UploadRegistry

log = logging.getLogger(__name__)
T = TypeVar("T")
Call = Callable[..., Any]                        # one S3 request: call("upload_part", Bucket=..., ...)
Retrying = Callable[[Callable[[], T]], T]        # the backend's retry policy around one request
ORPHAN_MARGIN = 120.0                            # seconds of clock difference tolerated when matching orphans


class UploadGone(Exception):
    """The server no longer has this multipart upload (NoSuchUpload)."""


@dataclass(frozen=True)
class StoredPart:
    number: int
    etag: str
    size: int


@dataclass(frozen=True)
class Sent:
    """What `send()` did: the parts to complete with, their MD5s in order, and how many were sent now."""

    parts: list[dict[str, Any]]
    digests: list[bytes]
    sent: int


class MultipartUpload:
    def __init__(self, call: Call, retrying: Retrying, registry: UploadRegistry, bucket: str, entry: Entry) -> None:
        assert entry.upload_id is not None
        self.call, self.retrying, self.registry = call, retrying, registry
        self.bucket, self.entry = bucket, entry
        self.key, self.upload_id = entry.key, entry.upload_id

    @classmethod
    def create(cls, call: Call, retrying: Retrying, registry: UploadRegistry, scope: str, bucket: str, key: str,
               md5: str, size: int, part_size: int, stat: str, extra: Mapping[str, Any]) -> MultipartUpload:
        """CreateMultipartUpload, registered before it is sent; lost answers' uploads are aborted."""
        intent = registry.intend(scope, key, md5, size, part_size, stat)
        row, started, tries = intent.row, intent.started, [0]

        def create() -> Any:
            tries[0] += 1
            return call("create_multipart_upload", Bucket=bucket, Key=key, **extra)

        try:
            upload_id = str(retrying(create)["UploadId"])
        except Exception:
            # any of the tries may have reached the server: look now; if even that fails, the intent row
            # stays and the next run's clean-up looks for it by key and time
            try:
                abort_orphans(call, retrying, registry, bucket, key, started, time.time(), keep=set())
                registry.remove(row)
            except Exception:  # noqa: BLE001 — the create's own error is the one to report
                log.debug("could not look for uploads of %s left by a failed create", key, exc_info=True)
            raise
        registry.created(row, upload_id)
        if tries[0] > 1:
            # an earlier try's answer was lost: the server may hold an upload we never heard of
            abort_orphans(call, retrying, registry, bucket, key, started, time.time(), keep={upload_id})
        return cls(call, retrying, registry, bucket, dataclasses.replace(intent, upload_id=upload_id))

    def stored_parts(self) -> dict[int, StoredPart]:
        """The parts the server holds (ListParts, every page)."""
        out: dict[int, StoredPart] = {}
        marker: dict[str, Any] = {}
        while True:
            try:
                page = self.retrying(functools.partial(self.call, "list_parts", Bucket=self.bucket, Key=self.key,
                                                       UploadId=self.upload_id, **marker))
            except FileNotFoundError:
                raise UploadGone(self.upload_id) from None
            for p in page.get("Parts", []):
                out[int(p["PartNumber"])] = StoredPart(int(p["PartNumber"]), str(p.get("ETag", "")).strip('"'),
                                                       int(p.get("Size") or 0))
            nxt = page.get("NextPartNumberMarker")
            if not page.get("IsTruncated") or not nxt or marker.get("PartNumberMarker") == nxt:
                return out
            marker = {"PartNumberMarker": nxt}

    def send(self, path: Path, size: int, slots: threading.BoundedSemaphore, concurrency: int,
             progress: Callable[[int], None], stored: Mapping[int, StoredPart] | None = None) -> Sent:
        """Every part of `path` not already stored intact, `concurrency` at a time; each verified."""
        part_size = self.entry.part_size
        nparts = -(-size // part_size)
        stored = stored or {}
        digests: list[bytes] = [b""] * nparts
        parts: list[dict[str, Any]] = []
        read_lock, out_lock = threading.Lock(), threading.Lock()
        state = {"next": 0, "sent": 0}
        failed = threading.Event()        # one part failed for good: the other workers stop reading

        def read_part() -> tuple[int, bytes] | None:
            with read_lock:
                i = state["next"]
                if i >= nparts or failed.is_set():
                    return None
                state["next"] = i + 1
                with open(path, "rb") as f:
                    f.seek(i * part_size)
                    return i, f.read(part_size)

        def worker() -> None:
            try:
                work()
            except BaseException:
                failed.set()
                raise

        def work() -> None:
            while True:
                with slots:
                    item = read_part()
                    if item is None:
                        return
                    i, data = item
                    digest = hashlib.md5(data)
                    have = stored.get(i + 1)
                    if have is not None and have.etag == digest.hexdigest() and have.size == len(data):
                        etag = have.etag
                    else:
                        etag = self.retrying(functools.partial(self._send_part, i + 1, data, digest))
                        with out_lock:
                            state["sent"] += 1
                    n = len(data)
                    del data
                digests[i] = digest.digest()
                with out_lock:
                    parts.append({"PartNumber": i + 1, "ETag": f'"{etag}"'})
                progress(n)

        workers = max(1, min(concurrency, nparts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="part") as pool:
            futures = [pool.submit(worker) for _ in range(workers)]
            for fut in futures:
                fut.result()
        return Sent(sorted(parts, key=lambda p: p["PartNumber"]), digests, state["sent"])

    def _send_part(self, number: int, data: bytes, digest: Any) -> str:
        try:
            resp = self.call("upload_part", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                             PartNumber=number, Body=data, ContentMD5=base64.b64encode(digest.digest()).decode())
        except FileNotFoundError:
            raise UploadGone(self.upload_id) from None
        etag = str(resp.get("ETag", "")).strip('"')
        # under SSE-KMS a part's ETag is not its MD5: the server checked Content-MD5 instead (s3_etags)
        if not s3_etags.verified(resp, digest.hexdigest()):
            raise VerifyError(f"{self.key}: part {number} ETag mismatch")
        return etag

    def complete(self, parts: list[dict[str, Any]], expected: str) -> dict[str, Any]:
        """CompleteMultipartUpload; an answer lost on the way (NoSuchUpload on the retry, and the object
        is there with the expected ETag) counts as done. Unregisters the upload."""
        def once() -> dict[str, Any]:
            try:
                return self.call("complete_multipart_upload", Bucket=self.bucket, Key=self.key,
                                 UploadId=self.upload_id, MultipartUpload={"Parts": parts})
            except FileNotFoundError:
                try:
                    head = self.call("head_object", Bucket=self.bucket, Key=self.key)
                except FileNotFoundError:
                    raise UploadGone(self.upload_id) from None
                if str(head.get("ETag", "")).strip('"') == expected:
                    return head
                raise UploadGone(self.upload_id) from None

        try:
            resp = self.retrying(once)
        except UploadGone:
            self.registry.remove(self.entry.row)
            raise
        self.registry.remove(self.entry.row)
        return resp

    def abort(self) -> bool:
        """AbortMultipartUpload (already gone counts as done); unregisters the upload. Raises on failure,
        leaving the row for the next run."""
        with contextlib.suppress(FileNotFoundError):        # already gone
            self.retrying(lambda: self.call("abort_multipart_upload", Bucket=self.bucket, Key=self.key,
                                            UploadId=self.upload_id))
        self.registry.remove(self.entry.row)
        return True

    def forget(self) -> None:
        """The server no longer has it: drop the row."""
        self.registry.remove(self.entry.row)


def abort_orphans(call: Call, retrying: Retrying, registry: UploadRegistry, bucket: str, key: str,
                  since: float, until: float, keep: set[str]) -> int:
    """Abort uploads of exactly `key` that a create of ours made but whose answer we never got: not written
    down by any run, started between `since` and `until` (± ORPHAN_MARGIN). Returns how many."""
    from datetime import timezone
    resp = retrying(lambda: call("list_multipart_uploads", Bucket=bucket, Prefix=key))
    known = registry.known() | keep
    aborted = 0
    for up in resp.get("Uploads", []):
        initiated = up.get("Initiated")
        if up.get("Key") != key or up.get("UploadId") in known or initiated is None:
            continue
        when = initiated.replace(tzinfo=initiated.tzinfo or timezone.utc).timestamp()
        if not since - ORPHAN_MARGIN <= when <= until + ORPHAN_MARGIN:
            continue
        try:
            retrying(functools.partial(call, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=up["UploadId"]))
            aborted += 1
        except FileNotFoundError:
            pass
    return aborted
