"""s3:// targets through s3fs: exact change detection at listing cost, verified streamed uploads.

What is compared: size, then the ETag. A single-part ETag is the MD5. A
multipart ETag (`<md5 of part md5s>-N`) is matched by computing it locally for
the part sizes that give N parts for this file size (cartsync's own, 8 MiB as
the aws CLI uses, and other common sizes); the result is cached. Uploads carry
the MD5 in `x-amz-meta-md5` too, as a fallback for part sizes we cannot guess
and for SSE-KMS, whose ETags are not MD5s (s3_etags). Headers are compared too
and fixed in place (s3_headers); what is known about each object version is
remembered (objects.ObjectCache), so a no-op re-run is the listing alone.
"""
from __future__ import annotations

import base64
import functools
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..errors import AuthError, CartsyncError, RemoteError, SourceChanged, VerifyError
from ..inventory import cached_digest, multipart_etag, still_same
from ..model import Action, Change, KeyRange, LocalFile, Plan, RemoteFile
from ..objects import Facts, ObjectCache
from ..selection import matches
from . import s3_checksums, s3_etags, s3_headers, s3_list, s3_sigv4
from .base import Backend, Features, Progress, unreachable
from .s3_client import botocore_client, content_type, declare_transient_aiohttp, s3fs_options, translated
from .s3_compat import FeatureRejected, describe, feature_rejected, unsupported
from .s3_lock import S3LockStore
from .s3_multipart import MultipartUpload, StoredPart, UploadGone, abort_orphans
from .s3_registry import UploadRegistry

log = logging.getLogger(__name__)
MiB = 2**20
COMMON_PART_SIZES = [8 * MiB, 5 * MiB, 16 * MiB, 15 * MiB, 32 * MiB, 50 * MiB, 64 * MiB, 100 * MiB, 128 * MiB,
                     256 * MiB, 512 * MiB, 1024 * MiB]
PART_BUDGET = 32 * MiB     # part bytes in flight across all files, so memory stays flat however many upload
MAX_PARTS = 10_000
ABORT_STEP = "aborting an unfinished multipart upload (AbortMultipartUpload)"
LIST_PARTS_STEP = "reading the parts of an unfinished upload (ListParts)"
RESTARTS = 3               # fresh multipart uploads of one file, when the server keeps losing them (NoSuchUpload)
T = TypeVar("T")


def _stat_of(local: LocalFile) -> str:
    return f"{local.size}:{local.mtime_ns}:{local.ctime_ns}:{local.inode}"


class S3Backend(Backend):
    features = Features(max_key_bytes=1024)     # S3 refuses longer keys (KeyTooLongError), mid-apply
    def __init__(self, target, cache) -> None:
        super().__init__(target, cache)
        self.root = target.url.split("://", 1)[1].strip("/")
        self.bucket, _, self.prefix = self.root.partition("/")
        self.part_size = target.part_size
        # at least one file's worth of parts may be in flight, so part_concurrency always takes effect
        self._part_slots = threading.BoundedSemaphore(max(1, PART_BUDGET // self.part_size, target.part_concurrency))
        self._fast = s3_sigv4.endpoint_for(target.storage_options, self.bucket)
        # whose multipart uploads are whose (s3_registry): per endpoint, bucket and prefix
        self.scope = f"{target.storage_options.get('endpoint_url') or 'aws'} {self.root}"
        self._mp_lock = threading.Lock()
        self._open: dict[str, MultipartUpload] = {}       # being sent now, by registry row
        self._resumed: dict[str, Change] = {}             # for the report, by key
        self._noted: set[str] = set()                     # best-effort steps already noted once
        self._unsupported: set[str] = set()               # best-effort steps the store lacks (501, 405)
        self._aborting = False                            # abort_open_uploads() was called
        self._rejected: FeatureRejected | None = None      # a feature the store refuses: stops the target
        self._crc_parts = True                            # ask for CRC32 part checksums (s3_checksums)
        s3_etags.refuse_sse_c(target.name, target.storage_options)

    @functools.cached_property
    def objects(self) -> ObjectCache:
        """What is known about this bucket's objects, by key and ETag (see s3_etags)."""
        opts = self.target.storage_options
        endpoint = (opts.get("endpoint_url") or (opts.get("client_kwargs") or {}).get("endpoint_url")
                    or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "aws")
        return ObjectCache(self.cache.path, f"{endpoint}|{self.bucket}")

    @functools.cached_property
    def client(self) -> Any | None:
        try:
            return botocore_client(self.target.storage_options, pool=64)
        except Exception as exc:
            if type(exc).__name__ != "ProfileNotFound":
                raise
            raise AuthError(f"target {self.target.name}: AWS profile {self.target.storage_options.get('profile')!r} "
                            "not found", "check storage_options.profile against ~/.aws/config") from None

    def _s3(self, op: str, **kwargs: Any) -> Any:
        """One S3 API call: botocore's client where it can honour the storage_options, else s3fs."""
        if self.target.storage_options.get("requester_pays"):
            kwargs.setdefault("RequestPayer", "requester")
        client = self.client
        if client is None:
            return self.fs.call_s3(op, **kwargs)
        try:
            return getattr(client, op)(**kwargs)
        except Exception as exc:
            if not isinstance(getattr(exc, "response", None), dict):    # not a ClientError (or subclass)
                raise
            plain = translated(exc)
            if plain is exc:
                raise
            raise plain from exc

    def call(self, op: str, **kwargs: Any) -> Any:
        """One S3 API call, as the writes make it (for the target's lock object, see locks.py)."""
        return self._s3(op, **kwargs)

    def lock_store(self, name: str) -> S3LockStore:
        """The target's lock object `<prefix>/<name>` (s3_lock.py), signed without botocore where it can be."""
        return S3LockStore(self, f"{self.prefix}/{name}" if self.prefix else name, self._fast)

    @functools.cached_property
    def fs(self):
        """s3fs, for storage_options only it understands (see botocore_client); made on first use."""
        import s3fs
        declare_transient_aiohttp()
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3fs_options(self.target.storage_options))
        fs.retries = 1   # s3fs's own retry loop: once; cartsync's policy retries (and counts)
        return fs

    # ---- reading -------------------------------------------------------------------------------

    def listing(self, within: KeyRange | None = None) -> dict[str, RemoteFile]:
        prefix = self.prefix + "/" if self.prefix else ""
        # a shard lists only its run of datasets: from just after `start_after` to `stop_at`, in key order
        span = (prefix + within.start_after, prefix + within.stop_at) if within else None
        try:
            # the fast path reads NoSuchBucket from its answer; botocore's listing of a missing bucket is empty
            entries = self._list_fast(prefix, span) if self._fast else None
            if entries is None:
                entries = self.retrying(lambda: self._list_botocore(span))
                if not entries and not self.retrying(self._bucket_exists):
                    raise RemoteError(f"target {self.target.name}: bucket {self.bucket!r} does not exist",
                                      "create it first, or fix the bucket name in the url")
        except AuthError as exc:
            if exc.message.startswith(f"target {self.target.name}:"):
                raise                                   # already says what is wrong (e.g. an unknown profile)
            raise self._denied() from None
        except CartsyncError as exc:
            if isinstance(exc, RemoteError) and exc.retryable:     # still failing after the retries
                raise unreachable(self, exc) from None
            if exc.message.startswith(f"target {self.target.name}:"):
                raise
            raise RemoteError(f"target {self.target.name}: {exc.message}", exc.hint) from None
        except OSError as exc:
            if isinstance(exc, PermissionError):
                raise self._denied() from None
            raise unreachable(self, exc) from None
        except Exception as exc:  # noqa: BLE001 — translated into one clear message, or re-raised
            if type(exc).__name__ == "NoCredentialsError":
                raise AuthError(f"target {self.target.name}: no AWS credentials found",
                                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile (AWS_PROFILE or "
                                "storage_options.profile), or anon: true for a public bucket") from None
            raise unreachable(self, exc) from None
        # never touch anything outside the prefix: s3://b/sample1 must not see s3://b/sample10/…
        return {key[len(prefix):]: RemoteFile(key[len(prefix):], size, None if "-" in etag else etag.lower() or None,
                                              etag or None)
                for key, size, etag in entries if key.startswith(prefix) and not key.endswith("/")}

    def _denied(self) -> AuthError:
        return AuthError(f"target {self.target.name}: access denied listing {self.url}",
                         "check the credentials (profile, environment) and the bucket policy")

    def _list_fast(self, prefix: str, span: tuple[str, str] | None) -> list[tuple[str, int, str]] | None:
        """The listing through s3_list; None where botocore must list instead."""
        assert self._fast is not None
        lister = s3_list.Lister(self._fast)
        try:
            return self.retrying(lambda: list(lister.objects(prefix, *(span or ()))))
        except s3_list.Fallback as exc:
            log.debug("listing through botocore instead (%s)", exc)
            self._fast = None
            return None
        finally:
            lister.close()

    def _list_botocore(self, span: tuple[str, str] | None = None) -> list[tuple[str, int, str]]:
        prefix = self.prefix + "/" if self.prefix else ""
        out: list[tuple[str, int, str]] = []
        token: dict[str, str] = {"StartAfter": span[0]} if span else {}
        while True:
            try:
                page = self._s3("list_objects_v2", Bucket=self.bucket, Prefix=prefix, **token)
            except FileNotFoundError:
                return []
            if "Name" not in page:       # every ListObjectsV2 answer names its bucket; an HTML page parses to {}
                raise s3_list.not_s3(self.target.storage_options.get("endpoint_url") or "the S3 endpoint")
            entries = [(o["Key"], int(o.get("Size") or 0), str(o.get("ETag") or "").strip('"'))
                       for o in page.get("Contents", [])]
            out += [e for e in entries if not span or e[0] < span[1]]
            if not page.get("IsTruncated") or not page.get("NextContinuationToken") or (
                    span and entries and entries[-1][0] >= span[1]):
                return out
            if token.get("ContinuationToken") == page["NextContinuationToken"]:
                raise RemoteError(f"target {self.target.name}: the store answered the same listing page twice",
                                  "report this to the store's operators")
            token = {"ContinuationToken": page["NextContinuationToken"]}   # (StartAfter only counts once)

    def _bucket_exists(self) -> bool:
        try:
            self._s3("head_bucket", Bucket=self.bucket)
        except FileNotFoundError:
            return False
        return True

    def resolve(self, remote: dict[str, RemoteFile], local: Mapping[str, LocalFile]) -> dict[str, RemoteFile]:
        """MD5 and headers of the objects the plan compares: remembered, computed (multipart ETags) or, once
        per object version, read with HEAD (see s3_etags)."""
        resolver = s3_etags.Resolver(self.objects, self._head, self._multipart_matches, self._key)
        out = resolver.resolve(remote, local)
        if resolver.heads:
            log.info("read %d object header(s) not seen before (remembered for the next run)", resolver.heads)
        return out

    def wanted_headers(self, local: Mapping[str, LocalFile]) -> dict[str, dict[str, str]]:
        return {key: s3_headers.wanted(self.extra_args(key, lf.md5)) for key, lf in local.items() if lf.md5}

    def part_size_for(self, size: int) -> int:
        """The configured part size, grown (in MiB steps) where S3's 10,000-part limit needs it."""
        return max(self.part_size, math.ceil(size / MAX_PARTS / MiB) * MiB)

    def _multipart_matches(self, lf: LocalFile, etag: str) -> bool:
        parts = int(etag.rsplit("-", 1)[1])
        candidates = [self.part_size_for(lf.size)] + COMMON_PART_SIZES
        derived = math.ceil(lf.size / parts / MiB) * MiB       # e.g. tools that pick size/N rounded up
        candidates += [derived, derived + MiB]
        for ps in dict.fromkeys(candidates):
            if math.ceil(lf.size / ps) != parts:
                continue
            digest = cached_digest(self.cache, lf.path, f"etag:{ps}", functools.partial(multipart_etag, part_size=ps))
            if digest == etag:
                return True
        return False

    def _head(self, key: str) -> dict[str, Any] | None:
        """One HEAD (retried); None if the object is gone or may not be read; SSE-C refused."""
        try:
            return self.retrying(lambda: self._s3("head_object", Bucket=self.bucket, Key=self._key(key)))
        except (FileNotFoundError, PermissionError):
            return None
        except Exception as exc:
            meta = getattr(exc, "response", {}).get("ResponseMetadata", {}) if isinstance(
                getattr(exc, "response", None), dict) else {}
            if meta.get("HTTPStatusCode") == 400:     # what S3 answers a HEAD of an SSE-C object without its key
                raise s3_etags.sse_c_object(self.target.name, key) from None
            raise

    def plan_changes(self, plan: Plan) -> tuple[Change, ...]:
        """Big uploads a killed or failed run left that apply will resume (one ListParts each)."""
        out = []
        for a in plan.uploads:
            if a.local is None or a.size <= self.part_size:
                continue
            upload = self._resumable(a.local, self._key(a.key), self.part_size_for(a.size), claim=False)
            if upload is not None:
                nparts = -(-a.size // upload.entry.part_size)
                stored = self._best_effort(LIST_PARTS_STEP,
                                           upload.stored_parts, default=None)
                if stored:
                    out.append(Change("=", f"resume {a.key}", f"{len(stored)} of {nparts} parts stored"))
        return tuple(out)

    # ---- writing (executor only) ---------------------------------------------------------------

    @functools.cached_property
    def registry(self) -> UploadRegistry:
        return UploadRegistry(self.cache.path.parent / "uploads.sqlite3")

    def begin(self, plan: Plan):
        """Abort the multipart uploads earlier runs of this target left, except those this plan resumes.

        Only uploads cartsync wrote down (s3_registry) are ever aborted; another tool's under the same
        prefix, or another target's (nested prefixes), are left alone. Best-effort: never blocks the sync.
        """
        resumable = {self._key(a.key): a.size for a in plan.uploads if a.size > self.part_size}
        aborted = 0
        for entry in self.registry.stale(self.scope):
            if entry.upload_id is None:      # a create whose answer a killed run never got
                found = self._best_effort("looking for an upload a killed run left (ListMultipartUploads)",
                                          functools.partial(abort_orphans, self._s3, self.retrying,
                                                            self.registry, self.bucket, entry.key, entry.started,
                                                            entry.started, keep=set()), default=None)
                if found is not None:
                    aborted += found
                    self.registry.remove(entry.row)
                continue
            if resumable.get(entry.key) == entry.size and entry.part_size == self.part_size_for(entry.size):
                continue                     # upload() resumes it (or aborts it, if the file changed)
            upload = MultipartUpload(self._s3, self.retrying, self.registry, self.bucket, entry)
            if self._best_effort(ABORT_STEP, upload.abort,
                                 default=False):
                aborted += 1
        if aborted:
            log.info("aborted %d unfinished multipart upload(s) an earlier run left", aborted)
        return []

    def finish(self, report, ok: bool):
        with self._mp_lock:
            resumed, self._resumed = self._resumed, {}
        return list(resumed.values())

    def interrupted(self) -> None:
        """Ctrl-C: abort the uploads this run has open (they are cartsync's own); see abort_open_uploads."""
        self.abort_open_uploads()

    def abort_open_uploads(self) -> None:
        """Abort the multipart uploads being sent right now (for an interrupt handler that wants them gone;
        without it they stay written down and the next apply resumes them)."""
        with self._mp_lock:
            self._aborting = True             # their parts now answer NoSuchUpload: do not start them over
            open_now = list(self._open.values())
        for upload in open_now:
            self._best_effort(ABORT_STEP, upload.abort, default=None)

    def _best_effort(self, step: str, fn: Callable[[], T], default: T) -> T | None:
        """Run an optional step; a store that lacks the call, or any failure, is a one-line note, not an error.
        Returns fn()'s result, or `default` when skipped."""
        if step in self._unsupported:
            return default
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 — optional steps never block the sync
            if unsupported(exc):
                with self._mp_lock:
                    self._unsupported.add(step)      # it never clears: not asked again this run
                self._note_once(step, f"target {self.target.name}: the store does not support {step}; skipped")
            else:
                self._note_once(step, f"target {self.target.name}: {step} failed, skipped ({describe(exc)})")
            return default

    def _note_once(self, step: str, text: str) -> None:
        with self._mp_lock:
            if step in self._noted:
                return
            self._noted.add(step)
        log.warning("%s", text)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def extra_args(self, key: str, md5: str) -> dict[str, Any]:
        args: dict[str, Any] = {"ContentType": content_type(key), "Metadata": {"md5": md5}}
        for pattern, headers in self.target.headers:
            if matches(key, pattern):
                args.update(headers)
        return args

    def upload(self, local: LocalFile, key: str, progress: Progress) -> RemoteFile:
        assert local.md5 is not None
        if self._rejected is not None:
            raise self._rejected.repeated()
        try:
            if local.size <= self.part_size:
                resp = self._put_single(local, key)
                expected = local.md5
            else:
                resp, expected = self._put_multipart(local, key, progress)
        except PermissionError:
            raise AuthError(f"{key}: access denied writing to {self.url}",
                            "check the credentials and that they may PutObject here") from None
        except Exception as exc:
            rejected = feature_rejected(self.target.name, exc, self.extra_args(key, local.md5 or ""))
            if rejected is None:
                raise
            with self._mp_lock:       # every file would fail alike: one message, and the target stops
                first, self._rejected = self._rejected is None, self._rejected or rejected
            raise (rejected if first else rejected.repeated()) from None
        if local.size <= self.part_size:
            progress(local.size)
        etag = s3_etags.etag_of(resp)
        # under SSE-KMS the ETag is not an MD5: the server checked every body's Content-MD5 instead
        if not s3_etags.verified(resp, expected):
            raise VerifyError(f"{key}: server reports ETag {etag}, expected {expected}")
        self._remember(key, etag, local.md5, self.extra_args(key, local.md5), resp)
        return RemoteFile(key, local.size, local.md5, etag)

    def _remember(self, key: str, etag: str, md5: str, args: Mapping[str, Any], resp: Mapping[str, Any],
                  carry: Mapping[str, str] | None = None) -> None:
        """The next plan recognises this object version from the listing alone."""
        self.objects.put(self._key(key), etag, Facts(md5, s3_headers.wanted(args),
                                                     {**(carry or {}), **s3_headers.carried(args, resp)}))

    def update_headers(self, action: Action) -> None:
        """A metadata-replacing copy onto itself (s3_headers.copy_in_place): no bytes sent."""
        assert action.local is not None and action.local.md5 is not None and action.remote is not None
        args = self.extra_args(action.key, action.local.md5)
        known = self.objects.get(self._key(action.key), action.remote.etag)
        copy = s3_headers.copy_args(args, known.carry if known else {})
        try:
            resp = s3_headers.copy_in_place(self._s3, self.bucket, self._key(action.key), action, copy,
                                            self.part_size_for(action.size))
        except PermissionError:
            raise AuthError(f"{action.key}: access denied copying onto itself in {self.url}",
                            "check that the credentials may GetObject and PutObject here") from None
        except Exception as exc:
            if str(getattr(exc, "response", {}).get("Error", {}).get("Code")) not in ("PreconditionFailed", "412"):
                raise
            raise SourceChanged(f"{action.key}: changed on the target since the plan; its headers were left alone",
                                "re-run to plan it afresh") from None
        etag = s3_etags.etag_of(resp)
        # a copy in one piece has the data's MD5 as ETag (unless KMS); one in parts cannot be checked locally
        if action.size <= s3_headers.COPY_LIMIT and not s3_etags.verified(resp, action.local.md5):
            raise VerifyError(f"{action.key}: server reports ETag {etag} after the copy, expected {action.local.md5}")
        self._remember(action.key, etag, action.local.md5, args, resp, known.carry if known else None)

    def _put_single(self, local: LocalFile, key: str) -> dict[str, Any]:
        assert local.md5 is not None
        md5_b64 = base64.b64encode(bytes.fromhex(local.md5)).decode()
        with open(local.path, "rb") as body:
            # Content-MD5 makes the server refuse a body that is not what we hashed (BadDigest).
            return self._s3("put_object", Bucket=self.bucket, Key=self._key(key), Body=body,
                            ContentMD5=md5_b64, **self.extra_args(key, local.md5))

    def _put_multipart(self, local: LocalFile, key: str, progress: Progress) -> tuple[dict[str, Any], str]:
        s3key = self._key(key)
        part_size = self.part_size_for(local.size)
        reported = [0]

        def counted(n: int) -> None:
            reported[0] += n
            progress(n)

        for _ in range(RESTARTS):
            upload = self._resumable(local, s3key, part_size, claim=True)
            stored: dict[int, StoredPart] | None = None
            if upload is not None:
                stored = self._best_effort(LIST_PARTS_STEP,
                                           upload.stored_parts, default=None)
                if stored is None:       # cannot tell what it holds: it is ours, and of no more use
                    self._best_effort(ABORT_STEP, upload.abort,
                                      default=False)
            if upload is None or stored is None:
                upload, stored = MultipartUpload.create(
                    self._s3, self.retrying, self.registry, self.scope, self.bucket, s3key, local.md5 or "",
                    local.size, part_size, _stat_of(local), self.extra_args(key, local.md5 or ""),
                    checksum=self._crc_parts), {}
                self._crc_parts = upload.crc32      # a store without them is not asked again
            try:
                return self._send(upload, stored, local, key, counted)
            except UploadGone:
                if self._aborting:
                    raise RemoteError(f"{key}: upload aborted (interrupted)") from None
                # aborted under us (another tool, a lifecycle rule): this file starts over, the others go on
                log.info("%s: its multipart upload is gone from the server; starting it again", key)
                upload.forget()
                progress(-reported[0])
                reported[0] = 0
        raise RemoteError(f"{key}: its multipart upload was aborted on the server {RESTARTS} times while it was "
                          "being sent", f"check for a lifecycle rule or another tool aborting uploads in "
                          f"{self.bucket!r}, then re-run")

    def _resumable(self, local: LocalFile, s3key: str, part_size: int, claim: bool) -> MultipartUpload | None:
        """The upload an earlier (or this) run left for exactly this file and part size, if any. With
        `claim`, uploads of another version of the file or part size are aborted (they are ours)."""
        for entry in self.registry.for_key(self.scope, s3key):
            upload = MultipartUpload(self._s3, self.retrying, self.registry, self.bucket, entry)
            # a plan may not have hashed the file: then the stat it was uploaded with tells
            same = entry.size == local.size and entry.part_size == part_size and (
                entry.md5 == local.md5 if local.md5 is not None else entry.stat == _stat_of(local))
            if not claim:
                if same:
                    return upload
                continue
            if not same or not entry.md5:
                self._best_effort(ABORT_STEP, upload.abort,
                                  default=False)
                continue
            self.registry.claim(entry)
            return upload
        return None

    def _send(self, upload: MultipartUpload, stored: dict[int, StoredPart], local: LocalFile, key: str,
              progress: Progress) -> tuple[dict[str, Any], str]:
        """Send what the server lacks of this upload, then complete it. On failure the upload stays open
        (and written down) for the next try or run to resume, unless the file changed."""
        nparts = -(-local.size // upload.entry.part_size)
        with self._mp_lock:
            self._open[upload.entry.row] = upload
        try:
            sent = upload.send(local.path, local.size, self._part_slots, self.target.part_concurrency, progress,
                               stored)
            self._crc_parts = upload.crc32         # a store that ignores part checksums is not asked again
            # every part was checked by the server (CRC32 or Content-MD5); the file must still be the one we hashed
            if not still_same(local):
                self._best_effort(ABORT_STEP, upload.abort, default=False)
                raise SourceChanged(f"{key}: changed while it was being uploaded", "re-run when the file is complete")
            expected = s3_checksums.multipart_etag(sent.digests)
            resp = upload.complete(sent.parts, expected)
        except (UploadGone, SourceChanged):
            raise
        except BaseException:
            with self._mp_lock:
                self._resumed[key] = Change("=", f"resumable {key}", "multipart upload left open; the next apply "
                                            "sends only the parts it lacks")
            raise
        finally:
            with self._mp_lock:
                self._open.pop(upload.entry.row, None)
        with self._mp_lock:
            self._resumed.pop(key, None)
            if nparts - sent.sent:
                self._resumed[key] = Change("=", f"resumed {key}", f"{nparts - sent.sent} of {nparts} parts were "
                                            f"already stored; sent {sent.sent}")
        etag = s3_etags.etag_of(resp)
        if sent.crcs:
            want, got = s3_checksums.composite(sent.crcs), resp.get("ChecksumCRC32")
            if got is not None and got != want:
                raise VerifyError(f"{key}: server reports checksum {got} for the whole object, expected {want}")
        if expected is None or not s3_etags.etag_is_md5(resp):
            # SSE-KMS (the ETag is not an MD5): every part was checked by the server, by CRC32 or Content-MD5
            return resp, etag
        if etag == expected and still_same(local):
            # the next plan compares this ETag: remember it, so that plan reads nothing
            self.cache.put(local.path, os.stat(local.path), expected, f"etag:{upload.entry.part_size}")
        return resp, expected

    def delete(self, remote: RemoteFile) -> None:
        self._s3("delete_object", Bucket=self.bucket, Key=self._key(remote.key))

    def close(self) -> None:
        if "registry" in self.__dict__:
            self.registry.close()
        if "objects" in self.__dict__:
            self.objects.close()

