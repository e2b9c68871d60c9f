"""Per-part integrity by CRC32, so that a multipart file is hashed by MD5 once (its identity), not twice.

S3 checks a part's body against the checksum it is sent with (`x-amz-checksum-crc32`, AWS's flexible
checksums) exactly as it checks `Content-MD5`, and answers BadDigest on a mismatch; zlib's CRC32 costs a
small fraction of an MD5 pass. The whole file's MD5 is still computed once (the cache, the plan,
`x-amz-meta-md5`, Zenodo); the multipart ETag that adoption compares is then built from the MD5s the
server reports for the parts it checked (their ETags), without hashing the bytes again.

An upload uses CRC32 only where its CreateMultipartUpload answer says `ChecksumAlgorithm: CRC32`; a store
that ignores the request (or a resumed upload created without it) gets Content-MD5 parts, as before. The
object's COMPOSITE checksum in the CompleteMultipartUpload answer (the CRC32 of the parts' CRC32s, "-N")
is compared with the one computed here: for SSE-KMS, whose ETags are not MD5s, it is the whole-object check.
"""
from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from .compat import error_fields

ALGORITHM = "CRC32"
_MD5_HEX = re.compile(r"[0-9a-f]{32}")
# what a store that lacks flexible checksums may answer a CreateMultipartUpload that asks for one
_UNSUPPORTED = {"NotImplemented", "InvalidArgument", "InvalidRequest", "XNotImplemented"}


def crc32(data: bytes) -> int:
    return zlib.crc32(data)


def encoded(crc: int) -> str:
    """As S3 writes a CRC32: base64 of its 4 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def composite(crcs: Sequence[int]) -> str:
    """S3's COMPOSITE checksum of a multipart object: the CRC32 of the parts' CRC32s, then "-<parts>"."""
    return f"{encoded(zlib.crc32(b''.join(c.to_bytes(4, 'big') for c in crcs)))}-{len(crcs)}"


def uses_crc32(resp: Mapping[str, Any]) -> bool:
    """The upload (CreateMultipartUpload or ListParts answer) was created with CRC32 part checksums."""
    return str(resp.get("ChecksumAlgorithm") or "").upper() == ALGORITHM


def digest_from_etag(etag: str) -> bytes | None:
    """A part's MD5 as the server reports it (its ETag), where the ETag can be one."""
    return bytes.fromhex(etag) if _MD5_HEX.fullmatch(etag) else None


def multipart_etag(digests: Sequence[bytes | None]) -> str | None:
    """The object's ETag from its parts' MD5s (`<md5 of the MD5s>-N`); None where one is not known."""
    if any(d is None for d in digests):
        return None
    return f"{hashlib.md5(b''.join(d for d in digests if d is not None)).hexdigest()}-{len(digests)}"


def refused(exc: BaseException) -> bool:
    """A CreateMultipartUpload refused for asking for a checksum algorithm the store lacks."""
    code, status, _ = error_fields(exc)
    return status in (400, 501) and code in _UNSUPPORTED
