"""Object headers as desired state: what is compared, and the in-place copy that fixes them.

Compared, per object the plan keeps: Content-Type (from the extension table, or `headers:`),
Cache-Control, Content-Encoding, Content-Disposition, Content-Language (each as `headers:` sets it;
one the manifest does not set is wanted absent) and `x-amz-meta-md5`, the metadata cartsync owns (a
wrong value is drift; a missing one is not, since other tools never write it). Not compared: ACL
(S3 shows it only through another request), StorageClass, ServerSideEncryption, tags, Expires and
other tools' metadata — a fix carries storage class, encryption and other metadata over unchanged,
and sends the manifest's ACL if it sets one.

A fix is a server-side copy of the object onto itself with MetadataDirective=REPLACE (CopyObject up
to 5 GB, else a multipart upload of UploadPartCopy ranges), conditional on the ETag the plan saw
(`CopySourceIfMatch`), so bytes never travel and an object changed since the plan is not stamped.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from ...model import Action
from ...objects import Facts

log = logging.getLogger(__name__)
# manifest/botocore name → header name as shown in plans
COMPARED = {"ContentType": "Content-Type", "CacheControl": "Cache-Control", "ContentEncoding": "Content-Encoding",
            "ContentDisposition": "Content-Disposition", "ContentLanguage": "Content-Language"}
META_MD5 = "x-amz-meta-md5"
COPY_LIMIT = 5 * 1024**3                 # CopyObject's ceiling; larger objects are copied in parts
COPY_PART = 512 * 1024**2
MAX_PARTS = 10_000


def wanted(args: Mapping[str, Any]) -> dict[str, str]:
    """The compared headers an upload with these arguments sets (as `extra_args` builds them)."""
    out = {shown: str(args[name]) for name, shown in COMPARED.items() if args.get(name) is not None}
    md5 = (args.get("Metadata") or {}).get("md5")
    if md5:
        out[META_MD5] = md5
    return out


def carried(args: Mapping[str, Any], resp: Mapping[str, Any]) -> dict[str, str]:
    """What a later metadata-replacing copy must keep, from an upload's arguments and the server's answer."""
    out = {name: str(v) for name in ("StorageClass",) if (v := args.get(name))}
    for name in ("ServerSideEncryption", "SSEKMSKeyId"):
        if resp.get(name):
            out[name] = str(resp[name])
    return out


def from_head(head: Mapping[str, Any]) -> Facts:
    """Headers and carried settings as a HEAD answer shows them (md5 left to the caller)."""
    headers = {shown: str(head[name]) for name, shown in COMPARED.items() if head.get(name)}
    meta = dict(head.get("Metadata") or {})
    if meta.get("md5"):
        headers[META_MD5] = meta.pop("md5")
    carry = {name: str(head[name]) for name in ("StorageClass", "ServerSideEncryption", "SSEKMSKeyId")
             if head.get(name)}
    carry.update({f"meta:{k}": str(v) for k, v in meta.items()})
    return Facts(None, headers, carry)


def copy_args(args: Mapping[str, Any], carry: Mapping[str, str]) -> dict[str, Any]:
    """CopyObject/CreateMultipartUpload arguments: the upload's headers and metadata, plus what is carried."""
    out = {k: v for k, v in args.items() if k != "Metadata"}
    meta = {k[5:]: v for k, v in carry.items() if k.startswith("meta:")}
    out["Metadata"] = {**meta, **dict(args.get("Metadata") or {})}
    for name in ("StorageClass", "ServerSideEncryption", "SSEKMSKeyId"):
        if name in carry and name not in args and not (name == "SSEKMSKeyId" and "ServerSideEncryption" in args):
            out[name] = carry[name]
    if out.get("StorageClass") == "STANDARD":
        del out["StorageClass"]
    return out


def copy_in_place(call: Callable[..., Any], bucket: str, key: str, action: Action, args: dict[str, Any],
                  part_size: int) -> Mapping[str, Any]:
    """Replace the object's metadata by copying it onto itself; returns the answer carrying the new ETag
    (CopyObjectResult, or the completed multipart upload's answer). `call(op, **kwargs)` is one S3 call."""
    assert action.remote is not None and action.remote.etag
    source = {"Bucket": bucket, "Key": key}
    etag = f'"{action.remote.etag}"'
    if action.size <= COPY_LIMIT:
        resp = call("copy_object", Bucket=bucket, Key=key, CopySource=source, CopySourceIfMatch=etag,
                    MetadataDirective="REPLACE", **args)
        result = dict(resp.get("CopyObjectResult") or {})
        return {**resp, "ETag": result.get("ETag", "")}
    size = max(part_size, COPY_PART, math.ceil(action.size / MAX_PARTS))
    upload_id = call("create_multipart_upload", Bucket=bucket, Key=key, **args)["UploadId"]
    try:
        parts = []
        for n, start in enumerate(range(0, action.size, size), 1):
            end = min(start + size, action.size) - 1
            resp = call("upload_part_copy", Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=n,
                        CopySource=source, CopySourceIfMatch=etag, CopySourceRange=f"bytes={start}-{end}")
            parts.append({"PartNumber": n, "ETag": resp["CopyPartResult"]["ETag"]})
        return call("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts})
    except BaseException:
        try:
            call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # noqa: BLE001 — the original failure is the one to report
            log.debug("could not abort the copy of %s now (%s)", key, exc)
        raise
