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

import collections
import threading
import urllib.parse
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
            body = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchUpload</Code><Message>The '
                    b'specified upload does not exist.</Message></Error>')
            owner._record_status(index, "404 Not Found")
            start_response("404 Not Found", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))])
            return [body]
        if op in ("CreateMultipartUpload", "ListMultipartUploads"):
            return owner._initiated_times(op, self.app, environ, start_response, index)

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
            if exc_info is not None:
                return start_response(status, response_headers, exc_info)
            return start_response(status, response_headers)

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
        quiet: bool = True,
    ):
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.strip_null_version_id = strip_null_version_id
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

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "S3Server":
        if self._server is not None:
            return self
        from werkzeug.serving import make_server
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

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
