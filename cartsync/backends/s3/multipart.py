"""One S3 multipart upload as an object: create, send parts, complete, abort; resumable across runs.

The upload is written down in the `UploadRegistry` when it is created (an intent row before the
request, the UploadId the moment it answers), so whatever happens next — a failed part, a failed
run, SIGKILL, Ctrl-C — it stays known as cartsync's own: the next run resumes it or aborts it, and
nothing else (another tool's upload under the same prefix) is ever aborted. `complete()` and
`abort()` remove the row; nothing else does.

Each part is checked by the server against a CRC32 (checksums.py) where the upload was created with
one, else against its Content-MD5. Resuming: `stored_parts()` (ListParts) says what the server holds;
`send()` reads every local part and sends only those whose stored checksum (CRC32, or the ETag as MD5)
or size differs. An upload the server no longer has (NoSuchUpload: aborted under us, or
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

from ...errors import VerifyError
from . import checksums, etags
from .registry import Entry, UploadRegistry

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
    crc32: str | None = None          # as S3 writes it (base64), where the upload has CRC32 checksums


@dataclass(frozen=True)
class Sent:
    """What `send()` did: the parts to complete with; in order, their MD5s (as the server reports them under
    CRC32 checksums: None where the ETag is not one) and CRC32s (CRC32 uploads only); how many were sent now."""

    parts: list[dict[str, Any]]
    digests: list[bytes | None]
    crcs: list[int]
    sent: int


class MultipartUpload:
    def __init__(self, call: Call, retrying: Retrying, registry: UploadRegistry, bucket: str, entry: Entry,
                 crc32: bool = False) -> None:
        assert entry.upload_id is not None
        self.call, self.retrying, self.registry = call, retrying, registry
        self.bucket, self.entry = bucket, entry
        self.key, self.upload_id = entry.key, entry.upload_id
        self.crc32 = crc32     # parts carry CRC32 checksums (known from Create, or from ListParts on resume)

    @classmethod
    def create(cls, call: Call, retrying: Retrying, registry: UploadRegistry, scope: str, bucket: str, key: str,
               md5: str, size: int, part_size: int, stat: str, extra: Mapping[str, Any],
               checksum: bool = True) -> MultipartUpload:
        """CreateMultipartUpload, registered before it is sent; lost answers' uploads are aborted. With
        `checksum`, CRC32 part checksums are asked for (and done without where the store refuses them)."""
        intent = registry.intend(scope, key, md5, size, part_size, stat)
        row, started, tries, ask = intent.row, intent.started, [0], [checksum]

        def create() -> Any:
            tries[0] += 1
            if ask[0]:
                try:
                    return call("create_multipart_upload", Bucket=bucket, Key=key,
                                ChecksumAlgorithm=checksums.ALGORITHM, **extra)
                except Exception as exc:
                    if not checksums.refused(exc):
                        raise
                    log.info("%s: the store refuses CRC32 part checksums; the parts carry Content-MD5", key)
                    ask[0] = False
            return call("create_multipart_upload", Bucket=bucket, Key=key, **extra)

        try:
            resp = retrying(create)
            upload_id = str(resp["UploadId"])
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
        return cls(call, retrying, registry, bucket, dataclasses.replace(intent, upload_id=upload_id),
                   crc32=checksums.uses_crc32(resp))

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
            self.crc32 = checksums.uses_crc32(page)
            for p in page.get("Parts", []):
                out[int(p["PartNumber"])] = StoredPart(int(p["PartNumber"]), str(p.get("ETag", "")).strip('"'),
                                                       int(p.get("Size") or 0), p.get("ChecksumCRC32"))
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
        digests: list[bytes | None] = [None] * nparts
        crcs: list[int] = [0] * nparts
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
                    n = len(data)
                    etag, digests[i], crcs[i], now = self._one_part(i + 1, data, stored.get(i + 1))
                    del data
                with out_lock:
                    state["sent"] += now
                    parts.append({"PartNumber": i + 1, "ETag": f'"{etag}"',
                                  **({"ChecksumCRC32": checksums.encoded(crcs[i])} if self.crc32 else {})})
                progress(n)

        workers = max(1, min(concurrency, nparts))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="part") as pool:
            futures = [pool.submit(worker) for _ in range(workers)]
            for fut in futures:
                fut.result()
        return Sent(sorted(parts, key=lambda p: p["PartNumber"]), digests, crcs if self.crc32 else [], state["sent"])

    def _send_part(self, number: int, data: bytes, digest: Any) -> str:
        try:
            resp = self.call("upload_part", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                             PartNumber=number, Body=data, ContentMD5=base64.b64encode(digest.digest()).decode())
        except FileNotFoundError:
            raise UploadGone(self.upload_id) from None
        etag = str(resp.get("ETag", "")).strip('"')
        # under SSE-KMS a part's ETag is not its MD5: the server checked Content-MD5 instead (etags.py)
        if not etags.verified(resp, digest.hexdigest()):
            raise VerifyError(f"{self.key}: part {number} ETag mismatch")
        return etag

    def _one_part(self, number: int, data: bytes, have: StoredPart | None) -> tuple[str, bytes | None, int, bool]:
        """(ETag, MD5 where known, CRC32 or 0, sent now) of part `number`; reused where the server holds it
        intact (same size and checksum). One checksum per byte: CRC32 where the upload has them, else MD5."""
        if self.crc32:
            crc = checksums.crc32(data)
            if have is not None and have.size == len(data) and have.crc32 == checksums.encoded(crc):
                return have.etag, checksums.digest_from_etag(have.etag), crc, False
            etag = self.retrying(functools.partial(self._send_part_crc, number, data, crc))
            return etag, checksums.digest_from_etag(etag), crc, True
        digest = hashlib.md5(data)
        if have is not None and have.size == len(data) and have.etag == digest.hexdigest():
            return have.etag, digest.digest(), 0, False
        return self.retrying(functools.partial(self._send_part, number, data, digest)), digest.digest(), 0, True

    def _send_part_crc(self, number: int, data: bytes, crc: int) -> str:
        checksum = checksums.encoded(crc)
        try:
            resp = self.call("upload_part", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                             PartNumber=number, Body=data, ChecksumCRC32=checksum)
        except FileNotFoundError:
            raise UploadGone(self.upload_id) from None
        echoed = resp.get("ChecksumCRC32")
        if echoed is None:
            # the store took the part without checking a CRC32 (it ignores checksums): this part is checked by
            # its MD5, and the rest of the upload carries Content-MD5
            self.crc32 = False
            digest = hashlib.md5(data)
            if not etags.etag_is_md5(resp):      # an ETag that says nothing (KMS): send it again, checked
                return self._send_part(number, data, digest)
            if str(resp.get("ETag", "")).strip('"') != digest.hexdigest():
                raise VerifyError(f"{self.key}: part {number} ETag mismatch")
        elif echoed != checksum:   # the server checked the body against it (BadDigest otherwise) and echoes it
            raise VerifyError(f"{self.key}: part {number}: the server reports CRC32 {echoed}, sent {checksum}")
        return str(resp.get("ETag", "")).strip('"')

    def complete(self, parts: list[dict[str, Any]], expected: str | None) -> dict[str, Any]:
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
                if expected is not None and str(head.get("ETag", "")).strip('"') == expected:
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
