"""A file's multipart upload from start to finish: resume what an earlier run left, or create one; send what
the server lacks; complete and verify it; start over when the server lost it (NoSuchUpload).

multipart.py is one upload (create / send parts / complete / abort); this module decides which upload a
file gets and what its outcome means. The backend supplies the calls (one S3 request, the retry policy, a
best-effort runner) and shares `OpenUploads` with its interrupt handler and its report.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ...errors import RemoteError, SourceChanged, VerifyError
from ...inventory import HashCache, still_same
from ...model import Change, LocalFile
from ..base import Progress
from . import checksums, etags
from .multipart import Call, MultipartUpload, Retrying, StoredPart, UploadGone, abort_orphans
from .registry import UploadRegistry

log = logging.getLogger(__name__)
T = TypeVar("T")
ABORT_STEP = "aborting an unfinished multipart upload (AbortMultipartUpload)"
LIST_PARTS_STEP = "reading the parts of an unfinished upload (ListParts)"
RESTARTS = 3               # fresh multipart uploads of one file, when the server keeps losing them (NoSuchUpload)
BestEffort = Callable[[str, Callable[[], Any], Any], Any]     # (step, fn, default) → fn() or default


def stat_of(local: LocalFile) -> str:
    """What the registry keeps of a file's stat: a plan that did not hash it still finds its upload."""
    return f"{local.size}:{local.mtime_ns}:{local.ctime_ns}:{local.inode}"


@dataclass
class OpenUploads:
    """The uploads being sent now and what the report will say of them, shared by the backend's threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    open: dict[str, MultipartUpload] = field(default_factory=dict)     # being sent now, by registry row
    resumed: dict[str, Change] = field(default_factory=dict)            # for the report, by key
    aborting: bool = False                                              # the interrupt handler aborts them
    crc_parts: bool = True                      # ask for CRC32 part checksums (a store without them: no more)


class MultipartSender:
    def __init__(self, call: Call, retrying: Retrying, registry: UploadRegistry, scope: str, bucket: str,
                 slots: threading.BoundedSemaphore, concurrency: int, cache: HashCache, best_effort: BestEffort,
                 state: OpenUploads) -> None:
        self.call, self.retrying, self.registry = call, retrying, registry
        self.scope, self.bucket, self.slots, self.concurrency = scope, bucket, slots, concurrency
        self.cache, self.best_effort, self.state = cache, best_effort, state

    def resumable(self, local: LocalFile, s3key: str, part_size: int, claim: bool) -> MultipartUpload | None:
        """The upload an earlier (or this) run left for exactly this file and part size, if any. With
        `claim`, uploads of another version of the file or part size are aborted (they are ours)."""
        for entry in self.registry.for_key(self.scope, s3key):
            upload = MultipartUpload(self.call, self.retrying, self.registry, self.bucket, entry)
            # a plan may not have hashed the file: then the stat it was uploaded with tells
            same = entry.size == local.size and entry.part_size == part_size and (
                entry.md5 == local.md5 if local.md5 is not None else entry.stat == stat_of(local))
            if not claim:
                if same:
                    return upload
                continue
            if not same or not entry.md5:
                self.best_effort(ABORT_STEP, upload.abort, False)
                continue
            self.registry.claim(entry)
            return upload
        return None

    def resumable_changes(self, files: list[tuple[str, str, LocalFile, int]]) -> tuple[Change, ...]:
        """For the plan: which of these (key, S3 key, file, part size) have an upload to resume, and how far."""
        out = []
        for key, s3key, local, part_size in files:
            upload = self.resumable(local, s3key, part_size, claim=False)
            if upload is None:
                continue
            stored = self.best_effort(LIST_PARTS_STEP, upload.stored_parts, None)
            if stored:
                nparts = -(-local.size // upload.entry.part_size)
                out.append(Change("=", f"resume {key}", f"{len(stored)} of {nparts} parts stored"))
        return tuple(out)

    def abort_stale(self, resumable: Mapping[str, int], part_size_for: Callable[[int], int],
                    owns: Callable[[str], bool] = lambda s3key: True) -> int:
        """Abort the uploads earlier runs of this target left, except those of `resumable` (S3 key → size)
        that this plan resumes, and those of keys this run does not `own` (another shard's datasets); how
        many. Only uploads cartsync wrote down (registry.py) are ever aborted; another tool's under the same
        prefix, or another target's (nested prefixes), are left alone."""
        aborted = 0
        for entry in self.registry.stale(self.scope):
            if not owns(entry.key):
                continue
            if entry.upload_id is None:      # a create whose answer a killed run never got
                found = self.best_effort("looking for an upload a killed run left (ListMultipartUploads)",
                                         functools.partial(abort_orphans, self.call, self.retrying, self.registry,
                                                           self.bucket, entry.key, entry.started, entry.started,
                                                           keep=set()), None)
                if found is not None:
                    aborted += found
                    self.registry.remove(entry.row)
                continue
            if resumable.get(entry.key) == entry.size and entry.part_size == part_size_for(entry.size):
                continue                     # put() resumes it (or aborts it, if the file changed)
            upload = MultipartUpload(self.call, self.retrying, self.registry, self.bucket, entry)
            if self.best_effort(ABORT_STEP, upload.abort, False):
                aborted += 1
        return aborted

    def put(self, local: LocalFile, key: str, s3key: str, part_size: int, extra: Mapping[str, Any],
            progress: Progress) -> tuple[dict[str, Any], str]:
        """Upload `local` as `s3key` in parts; (the Complete answer, the ETag it must have)."""
        reported = [0]

        def counted(n: int) -> None:
            reported[0] += n
            progress(n)

        for _ in range(RESTARTS):
            upload = self.resumable(local, s3key, part_size, claim=True)
            stored: dict[int, StoredPart] | None = None
            if upload is not None:
                stored = self.best_effort(LIST_PARTS_STEP, upload.stored_parts, None)
                if stored is None:       # cannot tell what it holds: it is ours, and of no more use
                    self.best_effort(ABORT_STEP, upload.abort, False)
            if upload is None or stored is None:
                upload, stored = MultipartUpload.create(
                    self.call, self.retrying, self.registry, self.scope, self.bucket, s3key, local.md5 or "",
                    local.size, part_size, stat_of(local), extra, checksum=self.state.crc_parts), {}
                self.state.crc_parts = upload.crc32      # a store without them is not asked again
            try:
                return self._send(upload, stored, local, key, counted)
            except UploadGone:
                if self.state.aborting:
                    raise RemoteError(f"{key}: upload aborted (interrupted)") from None
                # aborted under us (another tool, a lifecycle rule): this file starts over, the others go on
                log.info("%s: its multipart upload is gone from the server; starting it again", key)
                upload.forget()
                progress(-reported[0])
                reported[0] = 0
        raise RemoteError(f"{key}: its multipart upload was aborted on the server {RESTARTS} times while it was "
                          "being sent", f"check for a lifecycle rule or another tool aborting uploads in "
                          f"{self.bucket!r}, then re-run")

    def _send(self, upload: MultipartUpload, stored: dict[int, StoredPart], local: LocalFile, key: str,
              progress: Progress) -> tuple[dict[str, Any], str]:
        """Send what the server lacks of this upload, then complete it. On failure the upload stays open
        (and written down) for the next try or run to resume, unless the file changed."""
        nparts = -(-local.size // upload.entry.part_size)
        state = self.state
        with state.lock:
            state.open[upload.entry.row] = upload
        try:
            sent = upload.send(local.path, local.size, self.slots, self.concurrency, progress, stored)
            state.crc_parts = upload.crc32         # a store that ignores part checksums is not asked again
            # every part was checked by the server (CRC32 or Content-MD5); the file must still be the one we hashed
            if not still_same(local):
                self.best_effort(ABORT_STEP, upload.abort, False)
                raise SourceChanged(f"{key}: changed while it was being uploaded", "re-run when the file is complete")
            expected = checksums.multipart_etag(sent.digests)
            resp = upload.complete(sent.parts, expected)
        except (UploadGone, SourceChanged):
            raise
        except BaseException:
            with state.lock:
                state.resumed[key] = Change("=", f"resumable {key}", "multipart upload left open; the next apply "
                                            "sends only the parts it lacks")
            raise
        finally:
            with state.lock:
                state.open.pop(upload.entry.row, None)
        with state.lock:
            state.resumed.pop(key, None)
            if nparts - sent.sent:
                state.resumed[key] = Change("=", f"resumed {key}", f"{nparts - sent.sent} of {nparts} parts were "
                                            f"already stored; sent {sent.sent}")
        etag = etags.etag_of(resp)
        if sent.crcs:
            want, got = checksums.composite(sent.crcs), resp.get("ChecksumCRC32")
            if got is not None and got != want:
                raise VerifyError(f"{key}: server reports checksum {got} for the whole object, expected {want}")
        if expected is None or not etags.etag_is_md5(resp):
            # SSE-KMS (the ETag is not an MD5): every part was checked by the server, by CRC32 or Content-MD5
            return resp, etag
        if etag == expected and still_same(local):
            # the next plan compares this ETag: remember it, so that plan reads nothing
            self.cache.put(local.path, os.stat(local.path), expected, f"etag:{upload.entry.part_size}")
        return resp, expected
