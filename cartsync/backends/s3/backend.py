"""S3Backend: exact change detection at listing cost, verified streamed uploads (the parts: __init__.py).

What is compared: size, then the ETag. A single-part ETag is the MD5. A
multipart ETag (`<md5 of part md5s>-N`) is matched by computing it locally for
the part sizes that give N parts for this file size (cartsync's own, 8 MiB as
the aws CLI uses, and other common sizes); the result is cached. Uploads carry
the MD5 in `x-amz-meta-md5` too, as a fallback for part sizes we cannot guess
and for SSE-KMS, whose ETags are not MD5s (etags.py). Headers are compared too
and fixed in place (headers.py); what is known about each object version is
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

from ...errors import AuthError, CartsyncError, RemoteError, SourceChanged, VerifyError
from ...model import Action, Change, KeyRange, LocalFile, Plan, RemoteFile
from ...objects import Facts, ObjectCache
from ...selection import matches
from ..base import Backend, Features, Progress, unreachable
from . import etags, headers, listing, sigv4
from .client import botocore_client, content_type, declare_transient_aiohttp, s3fs_options, translated
from .compat import FeatureRejected, OptionalSteps, feature_rejected
from .lock import S3LockStore
from .registry import UploadRegistry
from .uploads import ABORT_STEP, MultipartSender, OpenUploads

log = logging.getLogger(__name__)
MiB = 2**20
COMMON_PART_SIZES = [8 * MiB, 5 * MiB, 16 * MiB, 15 * MiB, 32 * MiB, 50 * MiB, 64 * MiB, 100 * MiB, 128 * MiB,
                     256 * MiB, 512 * MiB, 1024 * MiB]
PART_BUDGET = 32 * MiB     # part bytes in flight across all files, so memory stays flat however many upload
MAX_PARTS = 10_000
T = TypeVar("T")


class S3Backend(Backend):
    features = Features(max_key_bytes=1024)     # S3 refuses longer keys (KeyTooLongError), mid-apply
    def __init__(self, target, cache) -> None:
        super().__init__(target, cache)
        self.root = target.url.split("://", 1)[1].strip("/")
        self.bucket, _, self.prefix = self.root.partition("/")
        self.part_size = target.part_size
        # at least one file's worth of parts may be in flight, so part_concurrency always takes effect
        self._part_slots = threading.BoundedSemaphore(max(1, PART_BUDGET // self.part_size, target.part_concurrency))
        self._fast = sigv4.endpoint_for(target.storage_options, self.bucket)
        # whose multipart uploads are whose (registry.py): per endpoint, bucket and prefix
        self.scope = f"{target.storage_options.get('endpoint_url') or 'aws'} {self.root}"
        self._mp_lock = threading.Lock()
        self._uploads = OpenUploads()                     # multipart uploads being sent (uploads.py)
        self._optional = OptionalSteps(target.name)      # best-effort steps: noted once, skipped if lacking
        self._rejected: FeatureRejected | None = None      # a feature the store refuses: stops the target
        etags.refuse_sse_c(target.name, target.storage_options)

    @functools.cached_property
    def objects(self) -> ObjectCache:
        """What is known about this bucket's objects, by key and ETag (see etags.py)."""
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
        """The target's lock object `<prefix>/<name>` (lock.py), signed without botocore where it can be."""
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
                where = self.target.storage_options.get("endpoint_url") or "the S3 endpoint"
                entries = self.retrying(lambda: listing.through_botocore(self._s3, self.bucket, prefix, span, where))
                if not entries and not self.retrying(lambda: listing.bucket_exists(self._s3, self.bucket)):
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
        """The listing through listing.py; None where botocore must list instead."""
        assert self._fast is not None
        lister = listing.Lister(self._fast)
        try:
            return self.retrying(lambda: list(lister.objects(prefix, *(span or ()))))
        except listing.Fallback as exc:
            log.debug("listing through botocore instead (%s)", exc)
            self._fast = None
            return None
        finally:
            lister.close()

    def resolve(self, remote: dict[str, RemoteFile], local: Mapping[str, LocalFile]) -> dict[str, RemoteFile]:
        """MD5 and headers of the objects the plan compares: remembered, computed (multipart ETags) or, once
        per object version, read with HEAD (see etags.py)."""
        resolver = etags.Resolver(self.objects, self._head, self._multipart_matches, self._key)
        out = resolver.resolve(remote, local)
        if resolver.heads:
            log.info("read %d object header(s) not seen before (remembered for the next run)", resolver.heads)
        return out

    def wanted_headers(self, local: Mapping[str, LocalFile]) -> dict[str, dict[str, str]]:
        return {key: headers.wanted(self.extra_args(key, lf.md5)) for key, lf in local.items() if lf.md5}

    def part_size_for(self, size: int) -> int:
        """The configured part size, grown (in MiB steps) where S3's 10,000-part limit needs it."""
        return max(self.part_size, math.ceil(size / MAX_PARTS / MiB) * MiB)

    def _multipart_matches(self, lf: LocalFile, etag: str) -> bool:
        return etags.multipart_matches(self.cache, lf, etag, [self.part_size_for(lf.size)] + COMMON_PART_SIZES)

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
                raise etags.sse_c_object(self.target.name, key) from None
            raise

    def plan_changes(self, plan: Plan) -> tuple[Change, ...]:
        """Big uploads a killed or failed run left that apply will resume (one ListParts each)."""
        big = [a for a in plan.uploads if a.local is not None and a.size > self.part_size]
        return self.multipart.resumable_changes([(a.key, self._key(a.key), a.local, self.part_size_for(a.size))
                                                 for a in big if a.local is not None])

    # ---- writing (executor only) ---------------------------------------------------------------

    @functools.cached_property
    def registry(self) -> UploadRegistry:
        return UploadRegistry(self.cache.path.parent / "uploads.sqlite3")

    @functools.cached_property
    def multipart(self) -> MultipartSender:
        return MultipartSender(self._s3, self.retrying, self.registry, self.scope, self.bucket, self._part_slots,
                               self.target.part_concurrency, self.cache, self._best_effort, self._uploads)

    def begin(self, plan: Plan):
        """Abort the multipart uploads earlier runs of this target left, except those this plan resumes.

        Only uploads cartsync wrote down (registry.py) are ever aborted; another tool's under the same
        prefix, or another target's (nested prefixes), are left alone. Best-effort: never blocks the sync.
        """
        resumable = {self._key(a.key): a.size for a in plan.uploads if a.size > self.part_size}
        inside = len(self.prefix) + 1 if self.prefix else 0
        # a shard aborts only its own datasets' leftovers: another shard's next run resumes its own
        aborted = self.multipart.abort_stale(resumable, self.part_size_for,
                                             owns=lambda s3key: plan.scope.owns(s3key[inside:]))
        if aborted:
            log.info("aborted %d unfinished multipart upload(s) an earlier run left", aborted)
        return []

    def finish(self, report, ok: bool):
        with self._uploads.lock:
            resumed, self._uploads.resumed = self._uploads.resumed, {}
        return list(resumed.values())

    def interrupted(self) -> None:
        """Ctrl-C: abort the uploads this run has open (they are cartsync's own); see abort_open_uploads."""
        self.abort_open_uploads()

    def abort_open_uploads(self) -> None:
        """Abort the multipart uploads being sent right now (for an interrupt handler that wants them gone;
        without it they stay written down and the next apply resumes them)."""
        with self._uploads.lock:
            self._uploads.aborting = True     # their parts now answer NoSuchUpload: do not start them over
            open_now = list(self._uploads.open.values())
        for upload in open_now:
            self._best_effort(ABORT_STEP, upload.abort, default=None)

    def _best_effort(self, step: str, fn: Callable[[], T], default: T) -> T | None:
        """An optional step (compat.OptionalSteps): a store that lacks it, or any failure, is a one-line note."""
        return self._optional.run(step, fn, default)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def extra_args(self, key: str, md5: str) -> dict[str, Any]:
        args: dict[str, Any] = {"ContentType": content_type(key), "Metadata": {"md5": md5}}
        for pattern, wanted in self.target.headers:
            if matches(key, pattern):
                args.update(wanted)
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
        etag = etags.etag_of(resp)
        # under SSE-KMS the ETag is not an MD5: the server checked every body's Content-MD5 instead
        if not etags.verified(resp, expected):
            raise VerifyError(f"{key}: server reports ETag {etag}, expected {expected}")
        self._remember(key, etag, local.md5, self.extra_args(key, local.md5), resp)
        return RemoteFile(key, local.size, local.md5, etag)

    def _remember(self, key: str, etag: str, md5: str, args: Mapping[str, Any], resp: Mapping[str, Any],
                  carry: Mapping[str, str] | None = None) -> None:
        """The next plan recognises this object version from the listing alone."""
        self.objects.put(self._key(key), etag, Facts(md5, headers.wanted(args),
                                                     {**(carry or {}), **headers.carried(args, resp)}))

    def update_headers(self, action: Action) -> None:
        """A metadata-replacing copy onto itself (headers.copy_in_place): no bytes sent."""
        assert action.local is not None and action.local.md5 is not None and action.remote is not None
        args = self.extra_args(action.key, action.local.md5)
        known = self.objects.get(self._key(action.key), action.remote.etag)
        copy = headers.copy_args(args, known.carry if known else {})
        try:
            resp = headers.copy_in_place(self._s3, self.bucket, self._key(action.key), action, copy,
                                            self.part_size_for(action.size))
        except PermissionError:
            raise AuthError(f"{action.key}: access denied copying onto itself in {self.url}",
                            "check that the credentials may GetObject and PutObject here") from None
        except Exception as exc:
            if str(getattr(exc, "response", {}).get("Error", {}).get("Code")) not in ("PreconditionFailed", "412"):
                raise
            raise SourceChanged(f"{action.key}: changed on the target since the plan; its headers were left alone",
                                "re-run to plan it afresh") from None
        etag = etags.etag_of(resp)
        # a copy in one piece has the data's MD5 as ETag (unless KMS); one in parts cannot be checked locally
        if action.size <= headers.COPY_LIMIT and not etags.verified(resp, action.local.md5):
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
        return self.multipart.put(local, key, self._key(key), self.part_size_for(local.size),
                                  self.extra_args(key, local.md5 or ""), progress)

    def delete(self, remote: RemoteFile) -> None:
        self._s3("delete_object", Bucket=self.bucket, Key=self._key(remote.key))

    def close(self) -> None:
        if "registry" in self.__dict__:
            self.registry.close()
        if "objects" in self.__dict__:
            self.objects.close()

