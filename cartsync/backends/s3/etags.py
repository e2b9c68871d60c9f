"""What an S3 ETag proves, and the at-most-one HEAD per object version that fills in what it does not.

An ETag is the MD5 of the data for a single-part object stored unencrypted or with SSE-S3. It is not
under SSE-KMS or SSE-C (AWS documents this, single-part and per part alike), and the store says which
applies in the `x-amz-server-side-encryption` header of every write and read answer (for a bucket's
default encryption too). So:

- upload: the server already checked each body against its Content-MD5; where the answer says the
  ETag is not an MD5, that ETag is kept, not compared (`verified`).
- listing: an ETag cartsync saw returned for data whose MD5 it knew is remembered with that MD5 and the
  headers it set (objects.ObjectCache); such objects are resolved from the listing alone. Any other
  object whose plan depends on it (same key, same size as a local file) is read once with HEAD: its
  encryption, `x-amz-meta-md5` and headers, remembered against its ETag. A second no-op run of a KMS
  bucket is therefore the listing alone.
- SSE-C (a customer-provided key) is refused: the key would be needed on every read, and would have to
  sit in the manifest (`refuse_sse_c`, and a HEAD answering 400 for want of the key).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...errors import PlanError
from ...inventory import HashCache, cached_digest, multipart_etag
from ...model import LocalFile, RemoteFile
from ...objects import Facts, ObjectCache
from . import headers

MiB = 2**20

KMS = ("aws:kms", "aws:kms:dsse")
HEAD_JOBS = 16
SSE_C_HINT = ("use SSE-KMS instead (the bucket's default encryption, or headers: ServerSideEncryption: aws:kms); "
              "a key you hold yourself cannot be used without putting it in the manifest")


def etag_of(resp: Mapping[str, Any]) -> str:
    return str(resp.get("ETag") or "").strip('"')


def etag_is_md5(resp: Mapping[str, Any]) -> bool:
    """False where the answer says the object is encrypted so that its ETag is not an MD5 (SSE-KMS, SSE-C)."""
    return resp.get("ServerSideEncryption") not in KMS and not resp.get("SSECustomerAlgorithm")


def verified(resp: Mapping[str, Any], expected: str) -> bool:
    """The write answered with the ETag the data should have, or with one that is not an MD5 (KMS)."""
    etag = etag_of(resp)
    return etag == expected or (bool(etag) and not etag_is_md5(resp))


def refuse_sse_c(target_name: str, options: Mapping[str, Any]) -> None:
    """storage_options asking s3fs for SSE-C: refused, naming only the option keys (values may be keys)."""
    extra = options.get("s3_additional_kwargs")
    asked = sorted(k for k in extra if "SSECustomer" in str(k)) if isinstance(extra, dict) else []
    if asked:
        raise PlanError(f"target {target_name}: storage_options.s3_additional_kwargs sets {', '.join(asked)}: "
                        "SSE-C (customer-provided keys) is not supported", SSE_C_HINT)


def sse_c_object(target_name: str, key: str) -> PlanError:
    return PlanError(f"target {target_name}: {key}: the store will not show this object without its "
                     "encryption key (HTTP 400): it is encrypted with a customer-provided key (SSE-C), which "
                     "cartsync does not support", "re-upload it with SSE-KMS or SSE-S3, or remove it; " + SSE_C_HINT)


def with_facts(r: RemoteFile, facts: Facts) -> RemoteFile:
    return dataclasses.replace(r, md5=facts.md5, headers=tuple(sorted(facts.headers.items())))


class Resolver:
    """Fills `md5` and `headers` of listed objects whose plan depends on them; writes nothing remotely.

    `head(key)` is one (retried) HEAD by relative key, None if the object is gone or may not be read,
    raising PlanError for SSE-C; `etag_matches(local, etag)` tells whether a multipart ETag is the
    local file's (hashing it locally, cached); `s3key(key)` is the full object key the cache is keyed by.
    The HEAD comes first: under KMS no local multipart ETag could match, so none is computed."""

    def __init__(self, cache: ObjectCache, head: Callable[[str], Mapping[str, Any] | None],
                 etag_matches: Callable[[LocalFile, str], bool], s3key: Callable[[str], str]) -> None:
        self.cache, self.head, self.etag_matches, self.s3key = cache, head, etag_matches, s3key
        self.heads = 0

    def resolve(self, remote: dict[str, RemoteFile], local: Mapping[str, LocalFile]) -> dict[str, RemoteFile]:
        out = dict(remote)
        todo: list[tuple[RemoteFile, LocalFile]] = []
        for key, r in remote.items():
            lf = local.get(key)
            if lf is None or lf.size != r.size or lf.md5 is None or not r.etag:
                continue                                   # replaced or created anyway: nothing to learn
            known = self.cache.get(self.s3key(key), r.etag)
            if known is not None:
                out[key] = with_facts(r, known)
            else:
                todo.append((r, lf))
        if todo:
            with ThreadPoolExecutor(max_workers=min(HEAD_JOBS, len(todo)), thread_name_prefix="head") as pool:
                for r, facts in zip([r for r, _ in todo], pool.map(lambda t: self._learn(*t), todo), strict=True):
                    self.heads += 1
                    out[r.key] = facts if isinstance(facts, RemoteFile) else with_facts(r, facts)
        return out

    def _learn(self, r: RemoteFile, lf: LocalFile) -> Facts | RemoteFile:
        """Facts from one HEAD (remembered); the listing alone if the object is gone, unreadable or changed."""
        assert r.etag is not None
        head = self.head(r.key)
        if head is None or etag_of(head) != r.etag:
            same = r.md5 == lf.md5 or ("-" in r.etag and self.etag_matches(lf, r.etag))
            return dataclasses.replace(r, md5=lf.md5) if same else r
        facts = headers.from_head(head)
        meta = facts.headers.get(headers.META_MD5)
        if not etag_is_md5(head):
            md5 = meta                     # KMS: the ETag proves nothing; what cartsync recorded at upload does
        elif "-" in r.etag:
            md5 = lf.md5 if self.etag_matches(lf, r.etag) else meta
        else:
            md5 = r.etag.lower()
        facts = dataclasses.replace(facts, md5=md5)
        self.cache.put(self.s3key(r.key), r.etag, facts)
        return facts


def multipart_matches(cache: HashCache, lf: LocalFile, etag: str, part_sizes: list[int]) -> bool:
    """Whether `lf` uploaded in parts of one of `part_sizes` (or of size/N rounded up to a MiB, as some tools
    choose) has this multipart ETag; each computed ETag cached by file and part size."""
    parts = int(etag.rsplit("-", 1)[1])
    derived = math.ceil(lf.size / parts / MiB) * MiB
    for ps in dict.fromkeys([*part_sizes, derived, derived + MiB]):
        if math.ceil(lf.size / ps) != parts:
            continue
        if cached_digest(cache, lf.path, f"etag:{ps}", functools.partial(multipart_etag, part_size=ps)) == etag:
            return True
    return False
