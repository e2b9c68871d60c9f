"""A loopback proxy in front of moto's S3 server that gives encrypted objects ETags as AWS does.

AWS documents that an object stored with SSE-KMS or SSE-C has an ETag that is not the MD5 of its
data (single-part and each part alike); moto answers with the MD5 regardless. Between the client
and moto this proxy:

- replaces the ETag of every SSE-KMS or SSE-C object by a value that is not its MD5 (stable for one
  write, new for each write: derived from moto's ETag, key and write time) in PUT, UploadPart, ListParts,
  CompleteMultipartUpload, CopyObject, UploadPartCopy, HEAD, GET and ListObjectsV2 answers, adding
  `x-amz-server-side-encryption` where AWS sends it; part ETags sent back in a Complete are mapped
  back to moto's, as AWS's own part ETags would be accepted;
- applies the bucket's default encryption to copies and new multipart uploads that name none (AWS
  does; moto copies as AES256);
- honours `x-amz-copy-source-if-match` (moto 5.2.5 ignores it) with 412 PreconditionFailed;
- keeps SSE-C objects (written with x-amz-server-side-encryption-customer-algorithm) unreadable
  without that header: HEAD answers a bare 400, GET and copies 400 InvalidRequest, as AWS does.

Whether an object is KMS-encrypted is read from moto's own store (same process), so objects written
past the proxy are seen too. Request bodies are read whole (test objects are small); nothing is
counted here: moto's counting middleware (tests/fakes/s3server.py) still sees every forwarded request.
"""
from __future__ import annotations

import hashlib
import http.client
import http.server
import re
import threading
import urllib.parse
from typing import Any

_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "trailer",
        "upgrade", "expect"}
_ETAG_XML = re.compile(rb"(<ETag>(?:&quot;|&#34;|\")?)([0-9a-f]{32}(?:-\d+)?)((?:&quot;|&#34;|\")?</ETag>)")
_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.S)
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.S)
SSE_C = "x-amz-server-side-encryption-customer-algorithm"


def _store() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


class KmsProxy:
    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.sse_c: set[tuple[str, str]] = set()          # (bucket, key) written with a customer key
        self._parts: dict[str, str] = {}                  # fake part ETag → moto's
        self._kms_uploads: set[str] = set()               # UploadIds of KMS multipart uploads
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                proxy._handle(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.handle_error = lambda request, address: None     # clients hanging up on kept-alive sockets
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> KmsProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ---- what AWS would say ---------------------------------------------------------------------

    @staticmethod
    def _object(bucket: str, key: str) -> Any:
        b = _store().buckets.get(bucket)
        return b.keys.get(key) if b is not None else None

    @staticmethod
    def default_kms(bucket: str) -> bool:
        b = _store().buckets.get(bucket)
        return b is not None and "aws:kms" in repr(getattr(b, "encryption", None) or "")

    def encrypted(self, bucket: str, key: str) -> bool:
        """The object's ETag is not an MD5 on AWS: SSE-KMS (explicit or the bucket default) or SSE-C."""
        obj = self._object(bucket, key)
        return obj is not None and ((obj.encryption or "").startswith("aws:kms") or (bucket, key) in self.sse_c)

    def fake_etag(self, bucket: str, key: str, real: str) -> str:
        obj = self._object(bucket, key)
        stamp = obj.last_modified.isoformat() if obj is not None else ""
        fake = hashlib.md5(f"kms|{bucket}|{key}|{real}|{stamp}".encode()).hexdigest()
        return fake + (real[real.index("-"):] if "-" in real else "")

    def etag_of(self, bucket: str, key: str) -> str:
        """The object's ETag as clients see it through the proxy."""
        real = self._object(bucket, key).etag.strip('"')
        return self.fake_etag(bucket, key, real) if self.encrypted(bucket, key) else real

    def _fake_part(self, real: str) -> str:
        fake = hashlib.md5(f"kms-part|{real}".encode()).hexdigest()
        with self._lock:
            self._parts[fake] = real
        return fake

    # ---- the proxying ---------------------------------------------------------------------------

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        path = urllib.parse.unquote(url.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        bucket, _, key = path.lstrip("/").partition("/")
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
        lower = {k.lower(): v for k, v in headers.items()}
        copy = "x-amz-copy-source" in lower
        if copy:
            source = urllib.parse.unquote(lower["x-amz-copy-source"].split("?")[0]).lstrip("/")
            src_bucket, _, src_key = source.partition("/")
            if (src_bucket, src_key) in self.sse_c and \
                    "x-amz-copy-source-server-side-encryption-customer-algorithm" not in lower:
                return self._error(h, 400, "InvalidRequest", "The object was stored using a form of Server Side "
                                   "Encryption. The correct parameters must be provided to retrieve the object.")
            wanted = lower.get("x-amz-copy-source-if-match", "").strip('"')
            if wanted and self._object(src_bucket, src_key) is not None and wanted != self.etag_of(src_bucket, src_key):
                return self._error(h, 412, "PreconditionFailed", "At least one of the pre-conditions you "
                                   "specified did not hold")
        if key and h.command in ("GET", "HEAD") and (bucket, key) in self.sse_c and SSE_C not in lower \
                and "uploadId" not in query:
            return self._error(h, 400, "InvalidRequest", "The object was stored using a form of Server Side "
                               "Encryption. The correct parameters must be provided to retrieve the object.")
        creating = h.command == "POST" and "uploads" in query
        if key and (copy and "partNumber" not in query or creating) and \
                "x-amz-server-side-encryption" not in lower and self.default_kms(bucket):
            headers["x-amz-server-side-encryption"] = "aws:kms"       # AWS applies the bucket default
        sse_c_write = h.command == "PUT" and key and SSE_C in lower and "partNumber" not in query
        if SSE_C in lower:
            # moto would not ask for the key again; the proxy plays that part
            headers = {k: v for k, v in headers.items()
                       if not k.lower().startswith("x-amz-server-side-encryption-customer")}
        if key and "if-match" in lower and self._object(bucket, key) is not None:
            # AWS compares If-Match with the (non-MD5) ETag it showed: map the one we showed back to moto's
            name = next(k for k in headers if k.lower() == "if-match")
            if lower["if-match"].strip('"') == self.etag_of(bucket, key):
                headers[name] = '"' + self._object(bucket, key).etag.strip('"') + '"'
        if h.command == "POST" and "uploadId" in query:                # Complete: our part ETags back to moto's
            with self._lock:
                body = re.sub(rb"[0-9a-f]{32}",
                              lambda m: self._parts.get(m.group().decode(), m.group().decode()).encode(), body)
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(h.command, h.path, body=body, headers={**headers, "Content-Length": str(len(body))})
            resp = conn.getresponse()
            data = resp.read()
            status, reason, out = resp.status, resp.reason, resp.getheaders()
        finally:
            conn.close()
        if sse_c_write and status == 200:
            self.sse_c.add((bucket, key))
        elif h.command == "PUT" and key and status == 200 and not copy and "partNumber" not in query:
            self.sse_c.discard((bucket, key))
        if h.command == "DELETE" and key and "uploadId" not in query:
            self.sse_c.discard((bucket, key))
        out, data = self._rewrite(h.command, bucket, key, query, copy, status, out, data)
        h.send_response(status, reason)
        for k, v in out:
            if k.lower() not in _HOP:
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)) if h.command != "HEAD" else
                      dict((k.lower(), v) for k, v in out).get("content-length", "0"))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def _rewrite(self, method: str, bucket: str, key: str, query: dict, copy: bool, status: int,
                 headers: list[tuple[str, str]], data: bytes) -> tuple[list[tuple[str, str]], bytes]:
        if status >= 300:
            return headers, data
        if not key:
            if method == "GET" and query.get("list-type") == ["2"]:
                decode = urllib.parse.unquote_plus if query.get("encoding-type") == ["url"] else (lambda s: s)

                def one(m: re.Match) -> bytes:
                    block = m.group()
                    k = _KEY.search(block)
                    name = decode(k.group(1).decode()) if k else ""
                    if not self.encrypted(bucket, name):
                        return block
                    return _ETAG_XML.sub(lambda e: e.group(1) + self.fake_etag(bucket, name, e.group(2).decode())
                                         .encode() + e.group(3), block)
                data = _CONTENTS.sub(one, data)
            return headers, data
        part = "partNumber" in query and "uploadId" in query
        if method == "GET" and "uploadId" in query and not part:      # ListParts: the part ETags it answered
            if query["uploadId"][0] in self._kms_uploads:
                data = _ETAG_XML.sub(lambda e: e.group(1) + self._fake_part(e.group(2).decode()).encode()
                                     + e.group(3), data)
            return headers, data
        if method == "POST" and "uploads" in query:
            if any(k.lower() == "x-amz-server-side-encryption" and v.startswith("aws:kms") for k, v in headers):
                upload = re.search(rb"<UploadId>(.*?)</UploadId>", data)
                if upload:
                    self._kms_uploads.add(upload.group(1).decode())
            return headers, data
        if part:
            if query["uploadId"][0] not in self._kms_uploads:
                return headers, data
            headers = [(k, f'"{self._fake_part(v.strip(chr(34)))}"' if k.lower() == "etag" else v) for k, v in headers]
            data = _ETAG_XML.sub(lambda e: e.group(1) + self._fake_part(e.group(2).decode()).encode() + e.group(3),
                                 data)
            return self._sse(headers), data
        if method == "DELETE" or not self.encrypted(bucket, key):
            return headers, data
        headers = [(k, f'"{self.fake_etag(bucket, key, v.strip(chr(34)))}"' if k.lower() == "etag" else v)
                   for k, v in headers]
        if method == "POST" or copy:            # CompleteMultipartUploadResult, CopyObjectResult
            data = _ETAG_XML.sub(lambda e: e.group(1) + self.fake_etag(bucket, key, e.group(2).decode()).encode()
                                 + e.group(3), data)
        return (self._sse(headers) if (bucket, key) not in self.sse_c else headers), data

    @staticmethod
    def _sse(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if any(k.lower() == "x-amz-server-side-encryption" for k, _ in headers):
            return headers
        return [*headers, ("x-amz-server-side-encryption", "aws:kms")]

    @staticmethod
    def _error(h: http.server.BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        body = b"" if h.command == "HEAD" else (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>KMSPROXY</RequestId></Error>").encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
