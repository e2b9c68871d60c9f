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
import hashlib
import logging
import math
import mimetypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from ..errors import AuthError, CartsyncError, RemoteError, SourceChanged, VerifyError
from ..inventory import cached_digest, multipart_etag, still_same
from ..model import Action, KeyRange, LocalFile, Plan, RemoteFile
from ..objects import Facts, ObjectCache
from ..selection import matches
from . import s3_etags, s3_headers, s3_list
from .base import Backend, Progress, unreachable

log = logging.getLogger(__name__)
MiB = 2**20
COMMON_PART_SIZES = [8 * MiB, 5 * MiB, 16 * MiB, 15 * MiB, 32 * MiB, 50 * MiB, 64 * MiB, 100 * MiB, 128 * MiB,
                     256 * MiB, 512 * MiB, 1024 * MiB]
PART_BUDGET = 32 * MiB     # part bytes in flight across all files, so memory stays flat however many upload
MAX_PARTS = 10_000
CONTENT_TYPES = {
    ".pmtiles": "application/vnd.pmtiles", ".yaml": "application/yaml", ".yml": "application/yaml",
    ".json": "application/json", ".tsv": "text/tab-separated-values", ".csv": "text/csv",
    ".png": "image/png", ".gz": "application/gzip", ".txt": "text/plain", ".html": "text/html",
    ".parquet": "application/vnd.apache.parquet", ".tif": "image/tiff", ".tiff": "image/tiff",
}


def content_type(key: str) -> str:
    name = key.rsplit("/", 1)[-1].lower()
    for ext, ctype in CONTENT_TYPES.items():
        if name.endswith(ext):
            return ctype
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def s3fs_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Manifest storage_options → s3fs arguments, with cartsync's retry and timeout defaults."""
    opts = dict(options)
    client_kwargs = dict(opts.pop("client_kwargs", {}) or {})
    if "region" in opts:
        client_kwargs.setdefault("region_name", opts.pop("region"))
    config_kwargs = dict(opts.pop("config_kwargs", {}) or {})
    config_kwargs.setdefault("connect_timeout", 10)
    config_kwargs.setdefault("read_timeout", 120)
    # cartsync's own retry policy is the one place that retries (and counts); botocore and s3fs try once.
    config_kwargs.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
    # integrity comes from Content-MD5 (checked by the server) and the ETag; botocore's extra CRC32 pass
    # over every body costs CPU and a copy of each part in memory
    config_kwargs.setdefault("request_checksum_calculation", "when_required")
    config_kwargs.setdefault("response_checksum_validation", "when_required")
    opts["client_kwargs"], opts["config_kwargs"] = client_kwargs, config_kwargs
    return opts


# storage_options translated to a botocore client exactly as s3fs would; any other key keeps s3fs
BOTOCORE_OPTIONS = {"profile", "endpoint_url", "region", "anon", "requester_pays", "client_kwargs", "config_kwargs"}
_MISSING = {"NoSuchKey", "NoSuchUpload", "NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidSecurity", "InvalidPayer", "403"}


def botocore_client(options: Mapping[str, Any], pool: int) -> Any | None:
    """A thread-safe botocore S3 client for these storage_options, or None where only s3fs can honour them.

    Worker threads call it directly: s3fs would funnel every call through its one event-loop thread,
    which costs about half of cartsync's CPU time in a first sync of many small files.
    """
    if set(options) - BOTOCORE_OPTIONS:
        return None
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config
    opts = s3fs_options(options)
    client_kwargs = dict(opts["client_kwargs"])
    config_kwargs = {"max_pool_connections": pool, **opts["config_kwargs"]}
    # Every data body (PutObject, UploadPart) carries Content-MD5, signed and checked by the server. botocore
    # skips the SHA-256 payload hash for that case on https; on plain http (MinIO or Ceph on a cluster
    # network) it would hash every byte once more.
    config_kwargs.setdefault("s3", {"payload_signing_enabled": False})
    if opts.get("anon"):
        config_kwargs["signature_version"] = UNSIGNED
    if opts.get("endpoint_url"):
        client_kwargs.setdefault("endpoint_url", opts["endpoint_url"])
    session = botocore.session.Session(profile=opts.get("profile"))
    return session.create_client("s3", config=Config(**config_kwargs), **client_kwargs)


def _translated(exc: Exception) -> Exception:
    """botocore's ClientError as the OSError s3fs would raise (denied, missing), else as is."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in _DENIED:
        return PermissionError(f"{code}: {exc}")
    if code in _MISSING:
        return FileNotFoundError(f"{code}: {exc}")
    return exc


class S3Backend(Backend):
    def __init__(self, target, cache) -> None:
        super().__init__(target, cache)
        self.root = target.url.split("://", 1)[1].strip("/")
        self.bucket, _, self.prefix = self.root.partition("/")
        self.part_size = target.part_size
        # at least one file's worth of parts may be in flight, so part_concurrency always takes effect
        self._part_slots = threading.BoundedSemaphore(max(1, PART_BUDGET // self.part_size, target.part_concurrency))
        self._fast = s3_list.endpoint_for(target.storage_options, self.bucket)
        s3_etags.refuse_sse_c(target.name, target.storage_options)

    @functools.cached_property
    def objects(self) -> ObjectCache:
        """What is known about this bucket's objects, by key and ETag (see s3_etags)."""
        opts = self.target.storage_options
        endpoint = (opts.get("endpoint_url") or (opts.get("client_kwargs") or {}).get("endpoint_url")
                    or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "aws")
        return ObjectCache(self.cache.path, f"{endpoint}|{self.bucket}")

    def close(self) -> None:
        if "objects" in self.__dict__:
            self.objects.close()

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
            translated = _translated(exc)
            if translated is exc:
                raise
            raise translated from exc

    @functools.cached_property
    def fs(self):
        """s3fs, for storage_options only it understands (see botocore_client); made on first use."""
        import s3fs
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **s3fs_options(self.target.storage_options))
        fs.retries = 1   # s3fs's own retry loop: once; cartsync's policy retries (and counts)
        return fs

    # ---- reading -------------------------------------------------------------------------------

    def list(self, within: KeyRange | None = None) -> dict[str, RemoteFile]:
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
            digest = cached_digest(self.cache, lf.path, f"etag:{ps}", lambda p, ps=ps: multipart_etag(p, ps))
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

    # ---- writing (executor only) ---------------------------------------------------------------

    def begin(self, plan: Plan):
        """Abort multipart uploads a killed run left under this prefix (they cost money, invisibly)."""
        self._abort_stale("an earlier run")
        return []

    def finish(self, report, ok: bool):
        # An upload whose CreateMultipartUpload answer was lost left an upload we never heard of: abort it.
        # Under the per-target lock, any upload still open under our prefix is ours and finished with.
        self._abort_stale("this run")
        return []

    def _abort_stale(self, who: str) -> None:
        prefix = self.prefix + "/" if self.prefix else ""
        try:
            resp = self.retrying(lambda: self._s3("list_multipart_uploads", Bucket=self.bucket, Prefix=prefix))
        except PermissionError:
            return
        stale = resp.get("Uploads", [])
        for up in stale:
            try:
                self.retrying(lambda up=up: self._s3("abort_multipart_upload", Bucket=self.bucket,
                                                             Key=up["Key"], UploadId=up["UploadId"]))
            except FileNotFoundError:
                pass     # finished or aborted meanwhile
        if stale:
            log.info("aborted %d unfinished multipart upload(s) left by %s", len(stale), who)

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
        try:
            if local.size <= self.part_size:
                resp = self._put_single(local, key)
                expected = local.md5
            else:
                resp, expected = self._put_multipart(local, key, progress)
        except PermissionError:
            raise AuthError(f"{key}: access denied writing to {self.url}",
                            "check the credentials and that they may PutObject here") from None
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
        # each call of a multipart upload is retried on its own: with many parts, starting the whole file
        # over on one failed part would rarely finish on a flaky network. (A create whose answer was lost
        # leaves an upload behind: finish() aborts it.)
        mpu = self.retrying(lambda: self._s3("create_multipart_upload", Bucket=self.bucket, Key=s3key,
                                             **self.extra_args(key, local.md5)))
        upload_id = mpu["UploadId"]
        part_size = self.part_size_for(local.size)
        nparts = math.ceil(local.size / part_size)
        digests: list[bytes] = [b""] * nparts
        read_lock = threading.Lock()
        state = {"next": 0}

        def read_part() -> tuple[int, bytes] | None:
            with read_lock:
                i = state["next"]
                if i >= nparts:
                    return None
                state["next"] = i + 1
                with open(local.path, "rb") as f:
                    f.seek(i * part_size)
                    data = f.read(part_size)
                return i, data

        def worker() -> list[dict[str, Any]]:
            done = []
            while True:
                with self._part_slots:
                    item = read_part()
                    if item is None:
                        return done
                    i, data = item
                    digest = hashlib.md5(data)

                    def send(i: int = i, data: bytes = data, digest: Any = digest) -> Any:
                        resp = self._s3("upload_part", Bucket=self.bucket, Key=s3key, UploadId=upload_id,
                                        PartNumber=i + 1, Body=data,
                                        ContentMD5=base64.b64encode(digest.digest()).decode())
                        if not s3_etags.verified(resp, digest.hexdigest()):
                            raise VerifyError(f"{key}: part {i + 1} ETag mismatch")
                        return resp

                    resp = self.retrying(send)
                    del data, send
                digests[i] = digest.digest()
                done.append({"PartNumber": i + 1, "ETag": resp["ETag"]})
                progress(part_size if (i + 1) * part_size <= local.size else local.size - i * part_size)

        try:
            workers = min(self.target.part_concurrency, nparts)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(worker) for _ in range(workers)]
                parts = sorted((p for fut in futures for p in fut.result()), key=lambda p: p["PartNumber"])
            # every part was checked by the server (Content-MD5); the file must still be the one we hashed
            if not still_same(local):
                raise SourceChanged(f"{key}: changed while it was being uploaded", "re-run when the file is complete")
            expected = f"{hashlib.md5(b''.join(digests)).hexdigest()}-{nparts}"
            resp = self.retrying(lambda: self._complete(s3key, upload_id, parts, expected))
        except BaseException:
            try:
                self.retrying(lambda: self._s3("abort_multipart_upload", Bucket=self.bucket, Key=s3key,
                                               UploadId=upload_id))
            except Exception:  # noqa: BLE001 — finish() and the next run's begin() abort leftovers too
                log.debug("could not abort multipart upload of %s now", key)
            raise
        etag = str(resp.get("ETag", "")).strip('"')
        if etag == expected and still_same(local):
            # the next plan compares this ETag: remember it, so that plan reads nothing
            self.cache.put(local.path, os.stat(local.path), expected, f"etag:{part_size}")
        return resp, expected

    def _complete(self, s3key: str, upload_id: str, parts: list[dict[str, Any]], expected: str) -> dict[str, Any]:
        try:
            return self._s3("complete_multipart_upload", Bucket=self.bucket, Key=s3key, UploadId=upload_id,
                            MultipartUpload={"Parts": parts})
        except FileNotFoundError:
            # NoSuchUpload on a retry: the first complete went through and only its answer was lost
            head = self._s3("head_object", Bucket=self.bucket, Key=s3key)
            if str(head.get("ETag", "")).strip('"') == expected:
                return head
            raise

    def delete(self, remote: RemoteFile) -> None:
        self._s3("delete_object", Bucket=self.bucket, Key=self._key(remote.key))
