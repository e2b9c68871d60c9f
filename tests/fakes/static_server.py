"""A small static HTTP server on 127.0.0.1 for `cartsync check` tests, switchable between right and wrong.

It serves a folder the way S3 serves a bucket to a browser (GET/HEAD with single byte ranges, an MD5 ETag,
CORS answered per rule, 403 AccessDenied XML when anonymous reads are refused), and each switch breaks one
thing a viewer depends on. Switches are plain attributes; change them between requests:

    ranges = False            ignore Range: 200 with the whole file
    cors_origin = None        no CORS at all (preflight 403, as S3 without a CORS configuration)
    cors_origin = "https://x" CORS for another origin only
    fixed_origin = "https://x" every answer carries this Access-Control-Allow-Origin, whatever the Origin (a
                              hand-written server config; preflights are then answered 200)
    allow_headers = ()        preflight does not allow the Range header (403, as S3 does)
    expose = ()               no Access-Control-Expose-Headers
    encodings = {"*.pmtiles": "gzip"}   a Content-Encoding header on matching keys (bytes unchanged, as S3 with
                              ContentEncoding metadata)
    types = {"*.pmtiles": "binary/octet-stream"}   Content-Type per glob (default: by extension)
    truncate = {"a.pmtiles"}  serve only the first half of these files
    bodies = {"a.pmtiles": b"..."}   serve other bytes for these keys
    missing = {"a.tsv"}       404 for these keys (a lost file)
    refuse = True             403 AccessDenied for every request (anonymous reads blocked)

`requests` records (method, path, headers) of every request, to check what clients send.
Pure standard library.
"""
from __future__ import annotations

import fnmatch
import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

TYPES = {".pmtiles": "application/vnd.pmtiles", ".yaml": "application/yaml", ".json": "application/json",
         ".tsv": "text/tab-separated-values", ".gz": "application/gzip", ".png": "image/png"}
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message></Error>")
CORS_DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessForbidden</Code>'
               b"<Message>CORSResponse: This CORS request is not allowed.</Message></Error>")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # a client that stops reading (a check reads 127 bytes of a file served whole) is normal here
        import sys
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class StaticServer:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.ranges = True
        self.cors_origin: str | None = "*"
        self.fixed_origin: str | None = None
        self.allow_headers: tuple[str, ...] = ("Range", "If-Match")
        self.expose: tuple[str, ...] = ("ETag", "Content-Length", "Content-Range")
        self.encodings: dict[str, str] = {}
        self.types: dict[str, str] = {}
        self.truncate: set[str] = set()
        self.bodies: dict[str, bytes] = {}
        self.missing: set[str] = set()
        self.refuse = False
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self.url = ""

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> StaticServer:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True, name="static").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StaticServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what a key serves ---------------------------------------------------------------
    def body(self, key: str) -> bytes | None:
        if key in self.missing:
            return None
        if key in self.bodies:
            return self.bodies[key]
        path = self.root / key
        if not path.is_file() or self.root.resolve() not in path.resolve().parents:
            return None
        data = path.read_bytes()          # test files are small
        return data[: len(data) // 2] if key in self.truncate else data

    def _by_glob(self, table: dict[str, str], key: str) -> str | None:
        found = None
        for glob, value in table.items():
            if fnmatch.fnmatch(key, glob):
                found = value
        return found

    def content_type(self, key: str) -> str:
        chosen = self._by_glob(self.types, key)
        if chosen is not None:
            return chosen
        return next((t for ext, t in TYPES.items() if key.endswith(ext)), "application/octet-stream")

    def encoding(self, key: str) -> str | None:
        return self._by_glob(self.encodings, key)

    def cors_allows(self, origin: str | None) -> bool:
        return origin is not None and self.cors_origin in ("*", origin)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "StaticFake/1.0"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: object) -> None:
        pass

    @property
    def owner(self) -> StaticServer:
        return self.server.owner  # type: ignore[attr-defined]

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"", send_body: bool = True) -> None:
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    def _record(self) -> str:
        key = unquote(urlsplit(self.path).path).lstrip("/")
        with self.owner._lock:
            self.owner.requests.append((self.command, self.path, dict(self.headers.items())))
        return key

    def do_OPTIONS(self) -> None:
        self._record()
        o = self.owner
        origin = self.headers.get("Origin")
        asked = self.headers.get("Access-Control-Request-Headers", "")
        wanted = [h.strip().lower() for h in asked.split(",") if h.strip()]
        allowed = {h.lower() for h in o.allow_headers}
        method = self.headers.get("Access-Control-Request-Method", "")
        if o.fixed_origin is not None:
            return self._reply(200, {"Access-Control-Allow-Origin": o.fixed_origin, "Access-Control-Allow-Methods":
                                     "GET, HEAD", "Access-Control-Allow-Headers": "Range"})
        if o.refuse or not o.cors_allows(origin) or method not in ("GET", "HEAD") or not set(wanted) <= allowed:
            return self._reply(403, {"Content-Type": "application/xml"}, CORS_DENIED)
        headers = {"Access-Control-Allow-Origin": str(origin), "Access-Control-Allow-Methods": "GET, HEAD",
                   "Vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"}
        if wanted:
            headers["Access-Control-Allow-Headers"] = ", ".join(wanted)
        self._reply(200, headers)

    def do_HEAD(self) -> None:
        self._get(send_body=False)

    def do_GET(self) -> None:
        self._get(send_body=True)

    def _get(self, send_body: bool) -> None:
        key = self._record()
        o = self.owner
        if o.refuse:
            return self._reply(403, {"Content-Type": "application/xml"}, DENIED, send_body)
        data = o.body(key)
        if data is None:
            return self._reply(404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchKey</Code></Error>",
                               send_body)
        headers = {"Content-Type": o.content_type(key), "ETag": f'"{hashlib.md5(data).hexdigest()}"',
                   "Accept-Ranges": "bytes" if o.ranges else "none"}
        if o.encoding(key):
            headers["Content-Encoding"] = str(o.encoding(key))
        origin = self.headers.get("Origin")
        if o.fixed_origin is not None or o.cors_allows(origin):
            headers["Access-Control-Allow-Origin"] = o.fixed_origin or str(origin)
            if o.expose:
                headers["Access-Control-Expose-Headers"] = ", ".join(o.expose)
        status, body = 200, data
        m = _RANGE.match(self.headers.get("Range", ""))
        if o.ranges and m and (m.group(1) or m.group(2)):
            size = len(data)
            if m.group(1):
                start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
            else:
                start, end = max(0, size - int(m.group(2))), size - 1
            if start >= size or start > end:
                return self._reply(416, {"Content-Range": f"bytes */{size}"}, b"", send_body)
            status, body = 206, data[start:end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        self._reply(status, headers, body, send_body)
