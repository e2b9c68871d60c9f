"""In-process S3 test server: moto's server mode wrapped in a counting WSGI middleware.

Everything listens on 127.0.0.1 only; nothing here talks to the internet.

How it is built
---------------
``moto.server.ThreadedMotoServer._server_entry`` does exactly this::

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(ip, port, app, True, request_handler=MotoRequestHandler)
    server.serve_forever()

We do the same, but put :class:`_CountingMiddleware` between werkzeug and
moto's ``DomainDispatcherApplication`` so that every request that reaches the
server is recorded (method, path, query, classified S3 operation, status) and
so that responses can be patched (see the version-id quirk below).  Binding to
port 0 lets the OS pick a free port with no race.

Moto 5.2.5 quirk (worked around here, switch off with
``S3Server(strip_null_version_id=False)``)
------------------------------------------------------------------------
On an *unversioned* bucket moto answers CompleteMultipartUpload with the header
``x-amz-version-id: null`` (boto3 surfaces ``VersionId == "null"``), and then
answers a HEAD/GET that carries ``versionId=null`` with a bare 400.  Real S3
sends no ``x-amz-version-id`` header at all for unversioned buckets, so the
middleware drops that header when its value is the literal ``null``.

Moto 5.2.5 quirk 2 (worked around here)
---------------------------------------
moto answers every upload in ListMultipartUploads with the same ``Initiated``
time (2010-11-10).  Real S3 gives the time CreateMultipartUpload was received;
cartsync relies on it to recognise an upload whose create answer it lost.  The
middleware notes when each CreateMultipartUpload answered and puts that time
into ListMultipartUploads answers.

Moto 5.2.5 quirk 3 (worked around here)
---------------------------------------
An UploadPart (or ListParts, CompleteMultipartUpload) for an upload that was
aborted makes moto fail with a 500 (a KeyError inside).  Real S3 answers
404 ``NoSuchUpload``; the middleware does so.

Moto 5.2.5 quirk 4 (worked around here, switch off with ``S3Server(crc32_parts=False)``)
--------------------------------------------------------------------------------------
moto takes a multipart part's CRC32 on trust: an UploadPart whose ``x-amz-checksum-crc32`` does not
match its body is stored, ListParts and CompleteMultipartUpload carry no ``ChecksumCRC32``, and a HEAD
with ``x-amz-checksum-mode: ENABLED`` answers the composite value without its ``-N`` suffix nor
``x-amz-checksum-type``.  What AWS does (botocore's s3 service model for the names; the S3 API
reference of UploadPart, ListParts, CompleteMultipartUpload and HeadObject; "Checking object
integrity" for the composite rule; the error wordings as S3-compatible suites that run against AWS
assert them), and so the middleware does:

* UploadPart with ``x-amz-checksum-crc32`` and a plain body (not ``Content-Encoding: aws-chunked`` nor
  ``x-amz-content-sha256: STREAMING-*``, which moto decodes itself): the CRC32 of the body read is
  compared with the header.  Mismatch: ``400 BadDigest`` "The CRC32 you specified did not match the
  calculated checksum." and moto never sees the part; a value that is not base64 of 4 bytes:
  ``400 InvalidRequest`` "Value for x-amz-checksum-crc32 header is invalid.".  Match: forwarded, and
  the answer carries ``x-amz-checksum-crc32`` (the same value); it is remembered per
  (bucket, key, upload id, part number) until the upload completes, and forgotten when the part is
  uploaded again without one.
* ListParts: ``<ChecksumCRC32>`` in each ``<Part>`` remembered so; for an upload created with
  ``x-amz-checksum-algorithm: CRC32``, ``<ChecksumAlgorithm>CRC32</ChecksumAlgorithm>`` and
  ``<ChecksumType>COMPOSITE</ChecksumType>`` after the parts.
* CompleteMultipartUpload of an upload created with CRC32: every listed part must carry
  ``<ChecksumCRC32>`` (else ``400 InvalidRequest`` "The upload was created using a crc32 checksum.
  The complete request must include the checksum for each part. It was missing for part N in the
  request.") equal to the part's (remembered, else the CRC32 of what moto stored) (else
  ``400 InvalidPart``, with the message moto gives for an ETag that does not match).  The answer
  carries ``<ChecksumCRC32>`` = base64(CRC32 of the parts' 4-byte big-endian CRC32s, in the
  request's order) + ``-`` + number of parts, and ``<ChecksumType>COMPOSITE</ChecksumType>``.
* HEAD of an object so completed, with ``x-amz-checksum-mode: ENABLED``: ``x-amz-checksum-crc32:
  <composite>-N`` and ``x-amz-checksum-type: COMPOSITE`` (moto's GET already answers so).

Not modelled: PutObject checksums, other algorithms, FULL_OBJECT uploads, the checksum in an
aws-chunked trailer (moto echoes it unchecked), ``x-amz-checksum-type`` in the CreateMultipartUpload
answer, a whole-object checksum header on Complete, the part-numbers-consecutive rule
(``InvalidPartOrder``) and Complete with checksums on an upload created without an algorithm.

Notes
-----
* moto keeps its backends in module-level globals: every S3Server started in
  the same process sees the SAME buckets.  Use unique bucket names per test, or
  call :meth:`S3Server.reset_state` (wipes all of moto's state).
* Requests made by the helper methods of this class (``create_bucket``,
  ``list_objects``, ``list_multipart_uploads``, ...) carry a marker in the
  User-Agent and are NOT counted in :meth:`counts`, so they can be used freely
  in assertions.  The client returned by :meth:`boto3_client` IS counted
  (pass ``counted=False`` to get an uncounted one).
"""

from __future__ import annotations

import base64
import binascii
import collections
import io
import re
import threading
import urllib.parse
import xml.etree.ElementTree as ET
import zlib
from typing import Any, Callable, Iterable, NamedTuple

AWS_KEY = "testing"
AWS_SECRET = "testing"
AWS_REGION = "us-east-1"

# Marker put into the User-Agent of the helper client; such requests are not counted.
HELPER_UA_MARKER = "cartsync-s3server-helper"

# Operations the classifier knows about (counts() always reports these, 0 if unseen,
# because it returns a Counter).
PUT_OBJECT = "PutObject"
CREATE_MPU = "CreateMultipartUpload"
UPLOAD_PART = "UploadPart"
COMPLETE_MPU = "CompleteMultipartUpload"
ABORT_MPU = "AbortMultipartUpload"
HEAD_OBJECT = "HeadObject"
GET_OBJECT = "GetObject"
LIST_OBJECTS_V2 = "ListObjectsV2"
DELETE_OBJECT = "DeleteObject"
DELETE_OBJECTS = "DeleteObjects"
# requests on cartsync's lock object `<prefix>/.cartsync.lock`: PutObject/GetObject/DeleteObject on that key
LOCK_NAME = ".cartsync.lock"
LOCK_PUT = "LockPut"
LOCK_GET = "LockGet"
LOCK_DELETE = "LockDelete"

# Operations whose request body is object payload (counted in bytes_received).
_PAYLOAD_OPS = {PUT_OBJECT, UPLOAD_PART}
# Operations that are some kind of listing (summed in counts()["list_total"]).
LIST_OPS = {"ListObjectsV2", "ListObjects", "ListObjectVersions", "ListBuckets"}


def aws_env() -> dict[str, str]:
    """Environment variables tests should set (e.g. via monkeypatch.setenv)."""
    return {
        "AWS_ACCESS_KEY_ID": AWS_KEY,
        "AWS_SECRET_ACCESS_KEY": AWS_SECRET,
        "AWS_DEFAULT_REGION": AWS_REGION,
    }


class RequestRecord(NamedTuple):
    method: str
    path: str
    query: str
    op: str
    status: int | None
    counted: bool


def classify_s3_request(
    method: str, path: str, query: str, headers: dict[str, str] | None = None
) -> str:
    """Map a path-style S3 request to its API operation name.

    ``path`` is the URL path (``/bucket`` or ``/bucket/key``), ``query`` the raw
    query string, ``headers`` lower-case header names -> values (optional; used to
    tell CopyObject/UploadPartCopy from PutObject/UploadPart).
    """
    headers = headers or {}
    method = method.upper()
    q = urllib.parse.parse_qs(query, keep_blank_values=True)
    if path.startswith("/moto-api"):
        return "MotoApi"
    parts = path.lstrip("/").split("/", 1)
    bucket = parts[0]
    key = parts[1] if len(parts) > 1 else ""
    copy = "x-amz-copy-source" in headers

    if not bucket:
        return "ListBuckets" if method == "GET" else f"Other:{method}"

    if not key:  # bucket-level
        if method == "GET":
            if q.get("list-type") == ["2"]:
                return LIST_OBJECTS_V2
            for sub, op in (
                ("uploads", "ListMultipartUploads"),
                ("versions", "ListObjectVersions"),
                ("location", "GetBucketLocation"),
                ("versioning", "GetBucketVersioning"),
                ("policy", "GetBucketPolicy"),
                ("acl", "GetBucketAcl"),
                ("tagging", "GetBucketTagging"),
            ):
                if sub in q:
                    return op
            if any(k in q for k in ("prefix", "delimiter", "marker", "max-keys", "encoding-type")) or not q:
                return "ListObjects"
            return "Other:GET-bucket"
        if method == "HEAD":
            return "HeadBucket"
        if method == "PUT":
            if "versioning" in q:
                return "PutBucketVersioning"
            if "policy" in q:
                return "PutBucketPolicy"
            if "acl" in q:
                return "PutBucketAcl"
            if "tagging" in q:
                return "PutBucketTagging"
            return "CreateBucket" if not q else "Other:PUT-bucket"
        if method == "POST" and "delete" in q:
            return DELETE_OBJECTS
        if method == "DELETE":
            return "DeleteBucket" if not q else "Other:DELETE-bucket"
        return f"Other:{method}-bucket"

    # object-level. cartsync's lock object (locks.py) is told apart, so that data counts stay data counts
    if key.rsplit("/", 1)[-1] == LOCK_NAME and method in ("PUT", "GET", "DELETE", "HEAD") and not q:
        return {"PUT": LOCK_PUT, "GET": LOCK_GET, "DELETE": LOCK_DELETE, "HEAD": LOCK_GET}[method]
    if method == "PUT":
        if "uploadId" in q and "partNumber" in q:
            return "UploadPartCopy" if copy else UPLOAD_PART
        if "tagging" in q:
            return "PutObjectTagging"
        if "acl" in q:
            return "PutObjectAcl"
        if copy:
            return "CopyObject"
        return PUT_OBJECT
    if method == "POST":
        if "uploads" in q:
            return CREATE_MPU
        if "uploadId" in q:
            return COMPLETE_MPU
        if "delete" in q:  # virtual-host style would look like this; be lenient
            return DELETE_OBJECTS
        return "Other:POST-object"
    if method == "DELETE":
        if "uploadId" in q:
            return ABORT_MPU
        if "tagging" in q:
            return "DeleteObjectTagging"
        return DELETE_OBJECT
    if method == "HEAD":
        return HEAD_OBJECT
    if method == "GET":
        if "uploadId" in q:
            return "ListParts"
        if "tagging" in q:
            return "GetObjectTagging"
        if "acl" in q:
            return "GetObjectAcl"
        return GET_OBJECT
    return f"Other:{method}"


class _CountingInput:
    """wsgi.input wrapper counting bytes actually read (used only when the request
    carries neither Content-Length nor x-amz-decoded-content-length)."""

    def __init__(self, stream: Any, on_bytes: Callable[[int], None]):
        self._stream = stream
        self._on_bytes = on_bytes

    def read(self, *args: Any) -> bytes:
        data = self._stream.read(*args)
        self._on_bytes(len(data))
        return data

    def readline(self, *args: Any) -> bytes:
        data = self._stream.readline(*args)
        self._on_bytes(len(data))
        return data

    def readlines(self, *args: Any) -> list[bytes]:
        lines = self._stream.readlines(*args)
        self._on_bytes(sum(len(x) for x in lines))
        return lines

    def __iter__(self):
        for line in self._stream:
            self._on_bytes(len(line))
            yield line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _unknown_upload(path: str, query: str) -> bool:
    """Quirk 3: does the request name an upload moto no longer has (in a bucket it has)?"""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    upload_id = urllib.parse.parse_qs(query).get("uploadId", [""])[0]
    bucket = s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets.get(path.lstrip("/").split("/", 1)[0])
    return bucket is not None and upload_id not in bucket.multiparts


def _moto_s3() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    return s3_backends[DEFAULT_ACCOUNT_ID]["global"]


def _crc32_b64(data: bytes) -> str:
    """Quirk 4: S3's x-amz-checksum-crc32 form, base64 of the big-endian 4-byte CRC32."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def _crc32_composite(part_crcs: list[str]) -> str:
    """Quirk 4: S3's COMPOSITE checksum, the CRC32 of the parts' CRC32s, then "-" and the part count."""
    return _crc32_b64(b"".join(base64.b64decode(c) for c in part_crcs)) + f"-{len(part_crcs)}"


def _s3_error(start_response: Any, status: str, code: str, message: str) -> list[bytes]:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "</Error>").encode()
    start_response(status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _set_header(headers: list, name: str, value: str) -> list:
    return [(k, v) for (k, v) in headers if k.lower() != name] + [(name, value)]


def _buffered(app: Any, environ: dict[str, Any]) -> tuple[str, list, bytes]:
    got: list[Any] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: got.append((status, headers))))
    return got[0][0], got[0][1], body


def _with_length(headers: list, body: bytes) -> list:
    return [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]


class _CountingMiddleware:
    """WSGI middleware in front of moto's DomainDispatcherApplication."""

    def __init__(self, app: Any, owner: "S3Server"):
        self.app = app
        self.owner = owner

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        owner = self.owner
        method = environ.get("REQUEST_METHOD", "")
        path = environ.get("PATH_INFO", "")  # werkzeug already percent-decoded it
        query = environ.get("QUERY_STRING", "")
        headers = {
            k[5:].replace("_", "-").lower(): v
            for k, v in environ.items()
            if k.startswith("HTTP_")
        }
        op = classify_s3_request(method, path, query, headers)
        counted = HELPER_UA_MARKER not in environ.get("HTTP_USER_AGENT", "") and op != "MotoApi"

        index = owner._record_request(method, path, query, op, counted)

        payload = 0
        if counted and op in _PAYLOAD_OPS:
            decoded = environ.get("HTTP_X_AMZ_DECODED_CONTENT_LENGTH")
            length = environ.get("CONTENT_LENGTH")
            payload = int(decoded or length or 0)
            if decoded:
                owner._add_bytes(int(decoded))
            elif length:
                owner._add_bytes(int(length))
            elif "wsgi.input" in environ:
                environ["wsgi.input"] = _CountingInput(environ["wsgi.input"], owner._add_bytes)

        if op in (UPLOAD_PART, "ListParts", COMPLETE_MPU) and _unknown_upload(path, query):
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length:
                environ["wsgi.input"].read(length)
            owner._record_status(index, "404 Not Found")
            return _s3_error(start_response, "404 Not Found", "NoSuchUpload", "The specified upload does not exist.")
        if op in ("CreateMultipartUpload", "ListMultipartUploads"):
            return owner._initiated_times(op, self.app, environ, start_response, index)
        crc32_part = None       # quirk 4: (bucket, key, upload id, part number) and the CRC32 it carries
        composite_head = owner.crc32_parts and op == HEAD_OBJECT and headers.get("x-amz-checksum-mode") == "ENABLED"

        strip = owner.strip_null_version_id

        def _start_response(status: str, response_headers: list, exc_info: Any = None):
            owner._record_status(index, status)
            if payload and status.startswith("2"):
                owner._acknowledge(payload)     # the server has the bytes and is answering: acknowledged
            if strip:
                response_headers = [
                    (k, v)
                    for (k, v) in response_headers
                    if not (k.lower() == "x-amz-version-id" and str(v) == "null")
                ]
            if crc32_part is not None and status.startswith("2"):
                response_headers = owner._crc32_part_stored(crc32_part, response_headers)
            if composite_head and status.startswith("2"):
                response_headers = owner._crc32_head(path, query, response_headers)
            if exc_info is not None:
                return start_response(status, response_headers, exc_info)
            return start_response(status, response_headers)

        if owner.crc32_parts and op in ("ListParts", COMPLETE_MPU):
            return owner._crc32_listing(op, self.app, environ, _start_response, path, query)
        if owner.crc32_parts and op == UPLOAD_PART:
            refused, crc32_part = owner._crc32_check_part(environ, _start_response, path, query, headers)
            if refused is not None:
                return refused
        return self.app(environ, _start_response)


class S3Server:
    """moto S3 in a background thread on 127.0.0.1, with request accounting.

    >>> with S3Server() as srv:               # doctest: +SKIP
    ...     srv.create_bucket("my-bucket")
    ...     fs = s3fs.S3FileSystem(**srv.storage_options())
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        strip_null_version_id: bool = True,
        crc32_parts: bool = True,
        quiet: bool = True,
    ):
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.strip_null_version_id = strip_null_version_id
        self.crc32_parts = crc32_parts
        self.quiet = quiet
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._method_counts: collections.Counter[str] = collections.Counter()
        self._bytes_received = 0
        self._bytes_acknowledged = 0
        self._log: list[RequestRecord] = []
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._helper: Any = None
        self._initiated: dict[str, str] = {}     # UploadId -> when CreateMultipartUpload answered (quirk 2)
        self._part_crc32: dict[tuple[str, str, str, int], str] = {}   # quirk 4: part -> its x-amz-checksum-crc32

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "S3Server":
        if self._server is not None:
            return self
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        quiet = self.quiet

        class _Handler(MotoRequestHandler):
            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                if not quiet:
                    super().log_request(code, size)

        app = _CountingMiddleware(DomainDispatcherApplication(create_backend_app), self)
        self._server = make_server(
            self.host, self._requested_port, app, threaded=True, request_handler=_Handler
        )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"moto-s3-{self.port}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._helper = None

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise RuntimeError("S3Server not started")
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ accounting
    def _record_request(self, method: str, path: str, query: str, op: str, counted: bool) -> int:
        with self._lock:
            self._log.append(RequestRecord(method, path, query, op, None, counted))
            if counted:
                self._counts[op] += 1
                self._method_counts[method] += 1
            return len(self._log) - 1

    def _record_status(self, index: int, status: str) -> None:
        try:
            code = int(status.split(None, 1)[0])
        except (ValueError, IndexError):
            code = None
        with self._lock:
            if 0 <= index < len(self._log):
                self._log[index] = self._log[index]._replace(status=code)

    def _acknowledge(self, n: int) -> None:
        with self._lock:
            self._bytes_acknowledged += n

    @property
    def bytes_acknowledged(self) -> int:
        """Payload bytes of counted PutObject/UploadPart requests the server answered with 2xx (as it
        starts its answer, so always at least what any client has heard back about)."""
        with self._lock:
            return self._bytes_acknowledged

    def _add_bytes(self, n: int) -> None:
        with self._lock:
            self._bytes_received += n

    def counts(self) -> collections.Counter:
        """Counted requests per S3 operation (a Counter: unseen ops read as 0).

        Also contains ``"list_total"`` when any listing call was seen (sum of
        ListObjectsV2/ListObjects/ListObjectVersions/ListBuckets)."""
        with self._lock:
            c = collections.Counter(self._counts)
        lt = sum(c[o] for o in LIST_OPS)
        if lt:
            c["list_total"] = lt
        return c

    def method_counts(self) -> collections.Counter:
        """Counted requests per HTTP method."""
        with self._lock:
            return collections.Counter(self._method_counts)

    def reset_counts(self) -> None:
        """Zero counts, method counts, bytes_received and the request log."""
        with self._lock:
            self._counts.clear()
            self._method_counts.clear()
            self._bytes_received = 0
            self._bytes_acknowledged = 0
            self._log.clear()

    @property
    def requests(self) -> list[tuple[str, str, str]]:
        """(method, path, query) of every counted request, in arrival order."""
        with self._lock:
            return [(r.method, r.path, r.query) for r in self._log if r.counted]

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every request (helper ones too, see .counted) with op and status."""
        with self._lock:
            return list(self._log)

    @property
    def bytes_received(self) -> int:
        """Sum of payload sizes of counted PutObject and UploadPart requests."""
        with self._lock:
            return self._bytes_received

    def _initiated_times(self, op: str, app: Any, environ: dict[str, Any], start_response: Any,
                         index: int) -> list[bytes]:
        """Quirk 2: record when each upload was created; report it in ListMultipartUploads."""
        import re
        import time as _time

        got: list[Any] = []
        body = b"".join(app(environ, lambda status, headers, exc_info=None: got.append((status, headers))))
        status, headers = got[0]
        self._record_status(index, status)
        if op == "CreateMultipartUpload":
            m = re.search(rb"<UploadId>([^<]+)</UploadId>", body)
            if m:
                with self._lock:
                    self._initiated[m.group(1).decode()] = _time.strftime(
                        "%Y-%m-%dT%H:%M:%S.000Z", _time.gmtime())
        else:
            def fix(upload: re.Match) -> bytes:
                block = upload.group(0)
                uid = re.search(rb"<UploadId>([^<]+)</UploadId>", block)
                when = self._initiated.get(uid.group(1).decode()) if uid else None
                return re.sub(rb"<Initiated>[^<]*</Initiated>", f"<Initiated>{when}</Initiated>".encode(),
                              block) if when else block
            body = re.sub(rb"<Upload>.*?</Upload>", fix, body, flags=re.S)
            headers = [(k, str(len(body)) if k.lower() == "content-length" else v) for k, v in headers]
        start_response(status, headers)
        return [body]

    # ------------------------------------------------------------------ quirk 4: CRC32 of multipart parts
    def _crc32_check_part(self, environ: dict[str, Any], start_response: Any, path: str, query: str,
                          headers: dict[str, str]) -> tuple[list[bytes] | None, Any]:
        """Check an UploadPart's x-amz-checksum-crc32 against its body, as S3 does.

        Returns (the refusal to answer, or None to forward; the (part, CRC32 or None) to note once
        moto has stored the part, or None to note nothing)."""
        q = urllib.parse.parse_qs(query)
        bucket, _, key = path.lstrip("/").partition("/")
        try:
            part = (bucket, key, q.get("uploadId", [""])[0], int(q.get("partNumber", [""])[0]))
        except ValueError:
            return None, None
        value = headers.get("x-amz-checksum-crc32")
        chunked = ("aws-chunked" in headers.get("content-encoding", "").lower()
                   or headers.get("x-amz-content-sha256", "").upper().startswith("STREAMING-"))
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if value is None or chunked or not length:     # aws-chunked bodies (and trailers) are moto's to decode
            return None, (part, None)
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)
        if len(body) < length:        # the client went away mid-body: moto sees the short body, as before
            return None, None
        try:
            well_formed = len(base64.b64decode(value, validate=True)) == 4
        except (binascii.Error, ValueError):
            well_formed = False
        if not well_formed:
            return _s3_error(start_response, "400 Bad Request", "InvalidRequest",
                             "Value for x-amz-checksum-crc32 header is invalid."), None
        if _crc32_b64(body) != value:
            return _s3_error(start_response, "400 Bad Request", "BadDigest",
                             "The CRC32 you specified did not match the calculated checksum."), None
        return None, (part, value)

    def _crc32_part_stored(self, noted: tuple[tuple[str, str, str, int], str | None], headers: list) -> list:
        """moto stored the part: remember (or forget) its CRC32 and echo it as S3 does."""
        part, value = noted
        with self._lock:
            if value is None:
                self._part_crc32.pop(part, None)
            else:
                self._part_crc32[part] = value
        if value is not None and not any(k.lower() == "x-amz-checksum-crc32" for k, _ in headers):
            headers = [*headers, ("x-amz-checksum-crc32", value)]
        return headers

    def _crc32_head(self, path: str, query: str, headers: list) -> list:
        """HEAD with checksum mode of a CRC32 COMPOSITE object: the value with its -N, and the type."""
        q = urllib.parse.parse_qs(query)
        if "partNumber" in q:
            return headers
        bucket, _, key = path.lstrip("/").partition("/")
        try:
            obj = _moto_s3().get_object(bucket, key, version_id=q.get("versionId", [None])[0])
        except Exception:       # moto answered already; any doubt leaves its answer alone
            return headers
        if obj is None or obj.checksum_algorithm != "CRC32" or obj.checksum_type != "COMPOSITE":
            return headers
        headers = _set_header(headers, "x-amz-checksum-crc32", f"{obj.checksum_value}-{obj.checksum_parts}")
        return _set_header(headers, "x-amz-checksum-type", "COMPOSITE")

    def _crc32_listing(self, op: str, app: Any, environ: dict[str, Any], start_response: Any, path: str,
                       query: str) -> list[bytes]:
        """ListParts and CompleteMultipartUpload with the parts' CRC32s, as S3 answers them."""
        bucket, _, key = path.lstrip("/").partition("/")
        upload_id = urllib.parse.parse_qs(query).get("uploadId", [""])[0]
        moto_bucket = _moto_s3().buckets.get(bucket)
        upload = moto_bucket.multiparts.get(upload_id) if moto_bucket is not None else None
        crc_upload = upload is not None and (upload.metadata.get("x-amz-checksum-algorithm") or "").upper() == "CRC32"
        part_crcs: list[str] = []
        if op == COMPLETE_MPU and crc_upload:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            raw = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(raw)
            try:
                listed = [({c.tag.rsplit("}", 1)[-1]: (c.text or "").strip() for c in p})
                          for p in ET.fromstring(raw) if p.tag.rsplit("}", 1)[-1] == "Part"]
                numbers = [int(p.get("PartNumber", "")) for p in listed]
            except (ET.ParseError, ValueError):
                listed, numbers = [], []        # moto answers a malformed request as it always did
            for fields, number in zip(listed, numbers, strict=True):
                given = fields.get("ChecksumCRC32")
                if not given:
                            return _s3_error(start_response, "400 Bad Request", "InvalidRequest",
                                     "The upload was created using a crc32 checksum. The complete request must "
                                     "include the checksum for each part. It was missing for part "
                                     f"{number} in the request.")
                with self._lock:
                    stored = self._part_crc32.get((bucket, key, upload_id, number))
                if stored is None and number in upload.parts:   # sent without one: S3 computed it
                    stored = _crc32_b64(upload.parts[number].value)
                if given != stored:
                            return _s3_error(start_response, "400 Bad Request", "InvalidPart",
                                     "One or more of the specified parts could not be found. The part might not "
                                     "have been uploaded, or the specified entity tag might not have matched the "
                                     "part's entity tag.")
                part_crcs.append(given)
        status, headers, body = _buffered(app, environ)
        if status.startswith("200") and op == COMPLETE_MPU:
            if part_crcs:
                body = body.replace(b"</ETag>", f"</ETag><ChecksumCRC32>{_crc32_composite(part_crcs)}"
                                    "</ChecksumCRC32><ChecksumType>COMPOSITE</ChecksumType>".encode(), 1)
            with self._lock:        # the upload is gone: so are its parts
                for k in [k for k in self._part_crc32 if k[:3] == (bucket, key, upload_id)]:
                    del self._part_crc32[k]
        elif status.startswith("200") and op == "ListParts":
            def one(m: re.Match) -> bytes:
                number = re.search(rb"<PartNumber>(\d+)</PartNumber>", m.group())
                with self._lock:
                    crc = self._part_crc32.get((bucket, key, upload_id, int(number.group(1)))) if number else None
                return m.group().replace(b"</Part>", f"<ChecksumCRC32>{crc}</ChecksumCRC32></Part>".encode()) \
                    if crc else m.group()
            body = re.sub(rb"<Part>.*?</Part>", one, body, flags=re.S)
            if crc_upload and b"<ChecksumAlgorithm>" not in body:
                body = re.sub(rb"(</ListParts\w*>\s*)$", b"<ChecksumAlgorithm>CRC32</ChecksumAlgorithm>"
                              b"<ChecksumType>COMPOSITE</ChecksumType>\\1", body)
        start_response(status, _with_length(headers, body))
        return [body]

    # ------------------------------------------------------------------ clients
    def storage_options(self, **extra: Any) -> dict[str, Any]:
        """kwargs for s3fs.S3FileSystem / fsspec storage_options; ``extra`` merged on top."""
        opts: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "key": AWS_KEY,
            "secret": AWS_SECRET,
            "client_kwargs": {"region_name": AWS_REGION},
        }
        opts.update(extra)
        return opts

    def boto3_client(self, *, counted: bool = True, endpoint_url: str | None = None, **config: Any):
        """A boto3 S3 client on this server (or on ``endpoint_url``, e.g. a proxy).

        ``config`` goes to botocore.config.Config (e.g. retries={"total_max_attempts": 1},
        connect_timeout=1, read_timeout=2)."""
        import boto3
        from botocore.config import Config

        if not counted:
            ua = config.pop("user_agent_extra", "")
            config["user_agent_extra"] = (ua + " " + HELPER_UA_MARKER).strip()
        return boto3.client(
            "s3",
            endpoint_url=endpoint_url or self.endpoint_url,
            region_name=AWS_REGION,
            aws_access_key_id=AWS_KEY,
            aws_secret_access_key=AWS_SECRET,
            config=Config(**config),
        )

    @property
    def _client(self):
        if self._helper is None:
            self._helper = self.boto3_client(counted=False)
        return self._helper

    # ------------------------------------------------------------------ helpers (uncounted)
    def create_bucket(self, name: str, *, exist_ok: bool = False) -> str:
        try:
            self._client.create_bucket(Bucket=name)
        except self._client.exceptions.BucketAlreadyOwnedByYou:
            if not exist_ok:
                raise
        except self._client.exceptions.BucketAlreadyExists:
            if not exist_ok:
                raise
        return name

    def list_objects(self, bucket: str, prefix: str = "") -> dict[str, tuple[int, str]]:
        """{key: (size, etag_without_quotes)} for every object under ``prefix``
        (plain string prefix, paginated, no delimiter)."""
        out: dict[str, tuple[int, str]] = {}
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out[obj["Key"]] = (int(obj["Size"]), obj["ETag"].strip('"'))
        return out

    def list_multipart_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """In-progress multipart uploads: [{"Key", "UploadId", "Initiated", ...}, ...]."""
        resp = self._client.list_multipart_uploads(Bucket=bucket)
        return list(resp.get("Uploads", []))

    def head_object(self, bucket: str, key: str) -> dict[str, Any]:
        """boto3 head_object (uncounted); includes "Metadata", "ContentType", ..."""
        return self._client.head_object(Bucket=bucket, Key=key)

    def get_object_bytes(self, bucket: str, key: str) -> bytes:
        return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def put_object(self, bucket: str, key: str, body: bytes = b"", **kwargs: Any) -> dict[str, Any]:
        return self._client.put_object(Bucket=bucket, Key=key, Body=body, **kwargs)

    def reset_state(self) -> None:
        """Wipe ALL moto state in this process (every bucket of every S3Server)."""
        import urllib.request

        req = urllib.request.Request(
            self.endpoint_url + "/moto-api/reset", data=b"", method="POST",
            headers={"User-Agent": HELPER_UA_MARKER},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            resp.read()


def start_s3_server(**kwargs: Any) -> S3Server:
    """Start and return an S3Server (caller must .stop() it)."""
    return S3Server(**kwargs).start()
