"""ListObjectsV2 over plain HTTP(S) (sigv4.py): the listing every plan starts with, without botocore.

The XML is parsed with ElementTree. Any answer the lister does not expect (a redirect, a region or
signature complaint) falls back to botocore (`Fallback`), so errors read the same whichever path listed.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote_plus
from xml.etree import ElementTree

from ...errors import AuthError, RemoteError
from .sigv4 import Connection, error_code


class Fallback(Exception):
    """The fast path cannot answer this as botocore would: list through botocore instead."""


def not_s3(where: str) -> RemoteError:
    """A 200 answer that is not an S3 listing: a captive portal, a login page, another service. Not retried."""
    return RemoteError(f"{where} is not an S3 server: it answered the listing with something else (a captive "
                       "portal or a login page?)", "check storage_options.endpoint_url, and whether this network "
                       "needs a sign-in first")


class Lister(Connection):
    """One connection, reused across the pages of one listing."""

    def _get(self, query: dict[str, str]) -> bytes:
        resp = self.request("GET", None, query)
        body = resp.body
        if resp.status == 200:
            return body
        code = error_code(body)
        if resp.status == 404 and code == "NoSuchBucket":
            raise RemoteError(f"bucket {self.bucket!r} does not exist",
                              "create it first, or fix the bucket name in the url")
        if resp.status == 403 and code in ("AccessDenied", "AllAccessDisabled", "AccountProblem"):
            raise AuthError("access denied")
        if resp.status >= 500 or resp.status in (408, 429) or code in ("SlowDown", "RequestTimeout"):
            raise RemoteError(f"listing answered HTTP {resp.status} {code}".rstrip(), retryable=True,
                              status=resp.status)
        raise Fallback(f"HTTP {resp.status} {code}")

    def objects(self, prefix: str, start_after: str | None = None,
                stop_at: str | None = None) -> Iterator[tuple[str, int, str]]:
        """(key, size, etag without quotes) of every object under `prefix`, in key order; with `start_after`
        and `stop_at`, only the keys strictly between them (fewer pages for a shard's run of datasets)."""
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
            if token:
                query["continuation-token"] = token
            elif start_after:
                query["start-after"] = start_after
            body = self._get(query)
            try:
                root = ElementTree.fromstring(body)
            except ElementTree.ParseError as exc:
                if body.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
                    raise not_s3(f"{self.ep.scheme}://{self.ep.netloc}") from None
                raise Fallback(f"unreadable listing: {exc}") from None
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            if root.tag[len(ns):] != "ListBucketResult":
                raise not_s3(f"{self.ep.scheme}://{self.ep.netloc}")
            decode = unquote_plus if root.findtext(f"{ns}EncodingType") == "url" else str
            for item in root.iterfind(f"{ns}Contents"):
                key = decode(item.findtext(f"{ns}Key") or "")
                if stop_at is not None and key.encode("utf-8") >= stop_at.encode("utf-8"):
                    return
                yield key, int(item.findtext(f"{ns}Size") or 0), (item.findtext(f"{ns}ETag") or "").strip('"')
            token = root.findtext(f"{ns}NextContinuationToken")
            if root.findtext(f"{ns}IsTruncated") != "true":
                return
            if not token or token == query.get("continuation-token"):
                # a V1-style answer, or a store going round in circles: botocore's paging decides
                raise Fallback("truncated listing without a new continuation token")


# ---- the same listing through botocore (where the signed path does not apply, or fell back) ---------------

Call = Callable[..., Any]


def through_botocore(call: Call, bucket: str, prefix: str, span: tuple[str, str] | None,
                     where: str) -> list[tuple[str, int, str]]:
    """(key, size, etag) under `prefix` by ListObjectsV2 through `call`; with `span`, only the keys strictly
    between its two ends. A missing bucket lists empty (see bucket_exists); `where` names the endpoint."""
    out: list[tuple[str, int, str]] = []
    token: dict[str, str] = {"StartAfter": span[0]} if span else {}
    while True:
        try:
            page = call("list_objects_v2", Bucket=bucket, Prefix=prefix, **token)
        except FileNotFoundError:
            return []
        if "Name" not in page:       # every ListObjectsV2 answer names its bucket; an HTML page parses to {}
            raise not_s3(where)
        entries = [(o["Key"], int(o.get("Size") or 0), str(o.get("ETag") or "").strip('"'))
                   for o in page.get("Contents", [])]
        out += [e for e in entries if not span or e[0] < span[1]]
        if not page.get("IsTruncated") or not page.get("NextContinuationToken") or (
                span and entries and entries[-1][0] >= span[1]):
            return out
        if token.get("ContinuationToken") == page["NextContinuationToken"]:
            raise RemoteError("the store answered the same listing page twice", "report this to the store's operators")
        token = {"ContinuationToken": page["NextContinuationToken"]}   # (StartAfter only counts once)


def bucket_exists(call: Call, bucket: str) -> bool:
    try:
        call("head_bucket", Bucket=bucket)
    except FileNotFoundError:
        return False
    return True
