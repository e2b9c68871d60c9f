"""A small threaded HTTP/1.1 reverse proxy on 127.0.0.1 that injects faults.

Put it in front of the moto S3 server (or any plain-HTTP server) and point the
client's endpoint_url at ``proxy.url``::

    with FaultProxy(srv.endpoint_url, seed=1) as proxy:
        proxy.configure(rate=0.2, faults={"503": 1, "reset": 1}, methods={"PUT", "POST"})
        fs = s3fs.S3FileSystem(**srv.storage_options(endpoint_url=proxy.url))

Only the standard library is used.  Request bodies are streamed to the upstream
chunk by chunk (Content-Length or chunked framing), never read whole; response
bodies are streamed back the same way.  Client connections are kept alive
(HTTP/1.1); every request uses a fresh upstream connection (moto's werkzeug
server closes after each response anyway).  The Host header and all end-to-end
headers are forwarded unchanged, so SigV4 signatures made for the proxy's
host:port stay what the client signed.  ``Expect: 100-continue`` is answered by
the proxy itself (and not forwarded).

Fault kinds (``faults`` weights; a faulted request picks one by weight):

- "500":      request body drained, then 500 + S3 ``InternalError`` XML.      Not forwarded.
- "503":      request body drained, then 503 + S3 ``ServiceUnavailable`` XML. Not forwarded.
- "slowdown": request body drained, then 503 + S3 ``SlowDown`` XML.           Not forwarded.
- "reset":    about half of the request body read, then TCP RST, no response. Not forwarded.
- "stall":    body drained, then silence for ``stall_seconds``, then close.   Not forwarded.
- "truncate": FORWARDED (upstream state changes, like a lost response); the
              client gets status + headers (original Content-Length) + half of
              the body, then the connection is closed.  When there is no body
              to cut (HEAD, empty PUT/POST/DELETE answers) nothing at all is
              sent before the close.

Error responses keep the client connection alive (like S3 does); HEAD error
responses carry no body.  ``fail_always`` rules (permanent failures, default
403 AccessDenied) are checked before the random faults and ignore
``rate``/``methods``/``path_filter``.

Paths given to predicates/filters are the raw request target *including* the
query string, e.g. ``"/bucket/key?partNumber=2&uploadId=abc"``.
"""

from __future__ import annotations

import http.client
import random
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable

FAULT_KINDS = ("500", "503", "slowdown", "reset", "stall", "truncate")
_BODY_CHUNK = 64 * 1024
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "upgrade",
    "expect",
}


def s3_error_xml(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>FAULTPROXY</RequestId><HostId>faultproxy</HostId></Error>"
    ).encode()


ACCESS_DENIED_XML = s3_error_xml("AccessDenied", "Access Denied")
_ERROR_FAULTS = {
    "500": (500, "Internal Server Error", s3_error_xml("InternalError", "We encountered an internal error. Please try again.")),
    "503": (503, "Service Unavailable", s3_error_xml("ServiceUnavailable", "Service is unable to handle request.")),
    "slowdown": (503, "Slow Down", s3_error_xml("SlowDown", "Please reduce your request rate.")),
}


class _ClientGone(Exception):
    """The client connection broke (or must be dropped without a response)."""


class _Request:
    __slots__ = ("method", "target", "version", "headers", "rfile", "sock", "chunk")

    def __init__(self, method: str, target: str, version: str, headers: http.client.HTTPMessage, rfile: Any, sock: socket.socket):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.rfile = rfile
        self.sock = sock
        self.chunk = _BODY_CHUNK

    @property
    def chunked(self) -> bool:
        te = self.headers.get("Transfer-Encoding", "")
        return "chunked" in te.lower()

    @property
    def content_length(self) -> int:
        if self.chunked:
            return -1
        try:
            return int(self.headers.get("Content-Length", "0") or 0)
        except ValueError:
            return 0

    def wants_close(self) -> bool:
        conn = ",".join(self.headers.get_all("Connection") or []).lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" not in conn
        return "close" in conn

    def iter_body_raw(self, limit: int | None = None) -> Iterable[bytes]:
        """Yield the request body as it is on the wire (chunked framing kept).

        ``limit``: stop after roughly this many bytes (for the "reset" fault)."""
        seen = 0
        if self.chunked:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise _ClientGone("eof in chunk size")
                yield line
                seen += len(line)
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while True:
                        t = self.rfile.readline(65537)
                        if not t:
                            raise _ClientGone("eof in trailers")
                        yield t
                        if t in (b"\r\n", b"\n"):
                            return
                remaining = size + 2  # data + CRLF
                while remaining:
                    data = self.rfile.read(min(remaining, _BODY_CHUNK))
                    if not data:
                        raise _ClientGone("eof in chunk")
                    remaining -= len(data)
                    seen += len(data)
                    yield data
                    if limit is not None and seen >= limit:
                        return
                if limit is not None and seen >= limit:
                    return
        else:
            remaining = self.content_length
            if limit is not None:
                remaining = min(remaining, limit)
            while remaining > 0:
                data = self.rfile.read(min(remaining, self.chunk))
                if not data:
                    raise _ClientGone("eof in body")
                remaining -= len(data)
                yield data

    def drain(self) -> None:
        for _ in self.iter_body_raw():
            pass


class _Rule:
    def __init__(self, predicate: Callable[[str, str], bool], status: int, body: bytes, headers: dict[str, str], reason: str,
                 times: int | None = None):
        self.times = times  # None: every matching request; else how many more
        self.predicate = predicate
        self.status = status
        self.body = body
        self.headers = headers
        self.reason = reason


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, addr: tuple[str, int], handler: Any, proxy: "FaultProxy"):
        self.proxy = proxy
        super().__init__(addr, handler)

    def server_bind(self) -> None:
        if self.proxy.throttle:
            # a small receive window, as on a slow link: the client's sends wait for the link, instead of
            # megabytes vanishing into loopback buffers at once (accepted sockets inherit it)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        super().server_bind()


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def setup(self) -> None:
        self.sock: socket.socket = self.request
        self.proxy = self.server.proxy
        self.sock.settimeout(self.proxy.idle_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile = self.sock.makefile("rb", buffering=_BODY_CHUNK)
        self.proxy._track(self.sock, True)

    def finish(self) -> None:
        self.proxy._track(self.sock, False)
        try:
            self.rfile.close()
        except OSError:
            pass

    # --------------------------------------------------------------- connection loop
    def handle(self) -> None:
        try:
            while not self.proxy._stopping.is_set():
                req = self._read_request()
                if req is None:
                    return
                keep = self._serve(req)
                if not keep:
                    return
        except (_ClientGone, OSError, ValueError, http.client.HTTPException):
            return
        finally:
            self._close()

    def _close(self, rst: bool = False) -> None:
        try:
            self.rfile.close()
        except OSError:
            pass
        try:
            if rst:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass

    def _read_request(self) -> _Request | None:
        line = self.rfile.readline(65537)
        while line in (b"\r\n", b"\n"):  # tolerate stray CRLF between requests
            line = self.rfile.readline(65537)
        if not line:
            return None
        parts = line.decode("latin-1").rstrip("\r\n").split()
        if len(parts) != 3:
            raise ValueError(f"bad request line {line!r}")
        method, target, version = parts
        headers = http.client.parse_headers(self.rfile)
        if target.startswith(("http://", "https://")):  # absolute-form: keep path+query
            u = urllib.parse.urlsplit(target)
            target = (u.path or "/") + (("?" + u.query) if u.query else "")
        req = _Request(method.upper(), target, version, headers, self.rfile, self.sock)
        if self.proxy.throttle:
            req.chunk = 1024
        return req

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise _ClientGone(str(e)) from e

    # --------------------------------------------------------------- per request
    def _serve(self, req: _Request) -> bool:
        """Handle one request; return True to keep the client connection open."""
        proxy = self.proxy
        if req.headers.get("Expect", "").lower().strip() == "100-continue":
            with proxy._lock:
                proxy._continued.append((req.method, req.target))
            self._send(b"HTTP/1.1 100 Continue\r\n\r\n")

        proxy._run_hooks(req.method, req.target)
        decision, rule = proxy._decide(req.method, req.target)
        keep = not req.wants_close()

        if decision == "fail_always":
            assert rule is not None
            req.drain()
            self._send_simple(req, rule.status, rule.reason, rule.body, rule.headers, keep)
            return keep
        if decision in _ERROR_FAULTS:
            status, reason, body = _ERROR_FAULTS[decision]
            req.drain()
            self._send_simple(req, status, reason, body, {"Content-Type": "application/xml"}, keep)
            return keep
        if decision == "reset":
            cl = req.content_length
            limit = max(1, cl // 2) if cl > 0 else (_BODY_CHUNK if cl < 0 else 0)
            if limit:
                for _ in req.iter_body_raw(limit=limit):
                    pass
            self._close(rst=True)
            return False
        if decision == "stall":
            req.drain()
            proxy._stopping.wait(proxy.stall_seconds)
            self._close()
            return False
        return self._forward(req, keep, truncate=(decision == "truncate"))

    def _send_simple(self, req: _Request, status: int, reason: str, body: bytes, headers: dict[str, str], keep: bool) -> None:
        lines = [f"HTTP/1.1 {status} {reason}"]
        hdrs = {"Date": _http_date(), "Server": "FaultProxy", "x-amz-request-id": "FAULTPROXY"}
        hdrs.update(headers)
        if req.method == "HEAD":
            body = b""
        hdrs["Content-Length"] = str(len(body))
        hdrs["Connection"] = "keep-alive" if keep else "close"
        lines += [f"{k}: {v}" for k, v in hdrs.items()]
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def _forward(self, req: _Request, keep: bool, truncate: bool) -> bool:
        proxy = self.proxy
        conn = http.client.HTTPConnection(proxy._up_host, proxy._up_port, timeout=proxy.upstream_timeout)
        try:
            try:
                conn.putrequest(req.method, proxy._up_base + req.target, skip_host=True, skip_accept_encoding=True)
                if req.headers.get("Host") is None:
                    conn.putheader("Host", f"{proxy._up_host}:{proxy._up_port}")
                for name, value in req.headers.items():
                    if name.lower() in _HOP_BY_HOP:
                        continue
                    conn.putheader(name, value)
                conn.endheaders()
                flip = proxy._take_corrupt(req.method, req.target)
                for data in req.iter_body_raw():
                    if flip and data:           # one bit of the body flipped on the wire, length kept
                        data, flip = bytes([data[0] ^ 0x01]) + data[1:], False
                    conn.send(data)
                    if proxy.throttle:          # a slow link: the client's body moves at `throttle` B/s
                        time.sleep(len(data) / proxy.throttle)
            except _ClientGone:
                raise
            except OSError:
                # upstream refused/broke while we sent; try to get its answer anyway
                pass
            try:
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                body = f"FaultProxy: upstream error: {e!r}".encode()
                self._send_simple(req, 502, "Bad Gateway", body, {"Content-Type": "text/plain"}, False)
                return False
            return self._relay(req, resp, keep, truncate)
        finally:
            conn.close()

    def _relay(self, req: _Request, resp: http.client.HTTPResponse, keep: bool, truncate: bool) -> bool:
        no_body = req.method == "HEAD" or 100 <= resp.status < 200 or resp.status in (204, 304)
        out_headers: list[tuple[str, str]] = []
        for name, value in resp.getheaders():
            ln = name.lower()
            if ln in _HOP_BY_HOP or ln == "transfer-encoding":
                continue
            if ln == "content-length" and resp.chunked:
                continue
            out_headers.append((name, value))
        length = resp.length if not resp.chunked else None  # None: chunked or until-EOF
        if resp.getheader("Content-Length") is None and not resp.chunked and not no_body:
            keep = False  # body delimited by upstream EOF: we must close too

        if truncate:
            if no_body:
                body, total = b"", 0
            elif length is None:
                body = resp.read()  # chunked / EOF-delimited: buffer (small in practice)
                total = len(body)
                out_headers = [h for h in out_headers if h[0].lower() != "content-length"]
                out_headers.append(("Content-Length", str(total)))
            else:
                total = length
                body = resp.read(total // 2) if total else b""
            if total > 0:
                # status + headers (original Content-Length) + first half of the body
                self._send(self._head_block(resp, out_headers, None, keep=False) + body[: total // 2])
            # else: nothing to cut (HEAD, 204, empty body): the whole response is lost
            self._close()
            return False

        if no_body or length is not None:
            self._send(self._head_block(resp, out_headers, None, keep))
            if not no_body:
                while True:
                    data = resp.read(_BODY_CHUNK)
                    if not data:
                        break
                    self._send(data)
            return keep
        if resp.chunked:
            self._send(self._head_block(resp, out_headers, "chunked", keep))
            while True:
                data = resp.read1(_BODY_CHUNK) if hasattr(resp, "read1") else resp.read(_BODY_CHUNK)
                if not data:
                    break
                self._send(b"%x\r\n" % len(data) + data + b"\r\n")
            self._send(b"0\r\n\r\n")
            return keep
        # EOF-delimited
        self._send(self._head_block(resp, out_headers, None, False))
        while True:
            data = resp.read(_BODY_CHUNK)
            if not data:
                break
            self._send(data)
        return False

    @staticmethod
    def _head_block(resp: http.client.HTTPResponse, headers: list[tuple[str, str]], te: str | None, keep: bool) -> bytes:
        lines = [f"HTTP/1.1 {resp.status} {resp.reason}"]
        lines += [f"{k}: {v}" for k, v in headers]
        if te:
            lines.append(f"Transfer-Encoding: {te}")
        lines.append("Connection: " + ("keep-alive" if keep else "close"))
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _http_date() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())


class FaultProxy:
    """Fault-injecting reverse proxy on 127.0.0.1.

    Parameters (all but upstream_url/seed/host/port can be changed at runtime
    with :meth:`configure` or by assigning the attribute):

    rate           probability in [0, 1] that an eligible request is faulted
    faults         {kind: weight}; kinds in FAULT_KINDS
    methods        None (all) or a set of HTTP methods that may be faulted
    path_filter    None or callable(target) -> bool; only matching targets may be faulted
    stall_seconds  how long "stall" keeps the client waiting before closing
    throttle       (at construction) request bodies move at this many bytes/s, through a small
                   receive window: a slow link
    max_faults     None or a cap on the number of random faults injected in total
    """

    def __init__(
        self,
        upstream_url: str,
        seed: int | None = 0,
        *,
        rate: float = 0.0,
        faults: dict[str, float] | None = None,
        methods: Iterable[str] | None = None,
        path_filter: Callable[[str], bool] | None = None,
        stall_seconds: float = 30.0,
        max_faults: int | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        idle_timeout: float = 120.0,
        upstream_timeout: float = 120.0,
        throttle: float | None = None,
    ):
        u = urllib.parse.urlsplit(upstream_url)
        if u.scheme != "http":
            raise ValueError("FaultProxy only proxies plain http:// upstreams")
        self.upstream_url = upstream_url
        self._up_host = u.hostname or "127.0.0.1"
        self._up_port = u.port or 80
        self._up_base = u.path.rstrip("/")
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self.idle_timeout = idle_timeout
        self.upstream_timeout = upstream_timeout
        self.throttle = throttle   # bytes/s for request bodies (read in 1 KiB steps), None: full speed

        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rate = 0.0
        self._faults: dict[str, float] = {}
        self._methods: frozenset[str] | None = None
        self._path_filter: Callable[[str], bool] | None = None
        self.stall_seconds = stall_seconds
        self._max_faults: int | None = None
        self._rules: list[_Rule] = []
        self._hooks: list[list[Any]] = []  # [predicate, fn, remaining]
        self._corrupt: list[list[Any]] = []  # [predicate, remaining]
        self._scheduled: list[list[Any]] = []  # [kind, remaining, predicate]
        self._faults_injected: dict[str, int] = {}
        self._random_faults = 0
        self._requests_total = 0
        self._connections_total = 0
        self._log: list[tuple[str, str, str]] = []
        self._continued: list[tuple[str, str]] = []      # requests that asked for 100 Continue
        self.configure(rate=rate, faults=faults or {"503": 1.0}, methods=methods,
                       path_filter=path_filter, max_faults=max_faults)

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()

    # ------------------------------------------------------------------ config
    _UNSET: Any = object()

    def configure(
        self,
        *,
        rate: float | None = None,
        faults: dict[str, float] | None = None,
        methods: Any = _UNSET,
        path_filter: Any = _UNSET,
        stall_seconds: float | None = None,
        max_faults: Any = _UNSET,
    ) -> "FaultProxy":
        """Atomically change several settings (omitted ones are left as they are;
        pass methods=None / path_filter=None / max_faults=None to clear them)."""
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be in [0, 1]")
        if faults is not None:
            bad = set(faults) - set(FAULT_KINDS)
            if bad:
                raise ValueError(f"unknown fault kinds {sorted(bad)}; known: {FAULT_KINDS}")
            if not any(w > 0 for w in faults.values()):
                raise ValueError("faults needs at least one positive weight")
        with self._lock:
            if rate is not None:
                self._rate = float(rate)
            if faults is not None:
                self._faults = {k: float(w) for k, w in faults.items() if w > 0}
            if methods is not FaultProxy._UNSET:
                self._methods = None if methods is None else frozenset(m.upper() for m in methods)
            if path_filter is not FaultProxy._UNSET:
                self._path_filter = path_filter
            if stall_seconds is not None:
                self.stall_seconds = float(stall_seconds)
            if max_faults is not FaultProxy._UNSET:
                self._max_faults = max_faults
        return self

    rate = property(lambda self: self._rate, lambda self, v: self.configure(rate=v))
    faults = property(lambda self: dict(self._faults), lambda self, v: self.configure(faults=v))
    methods = property(lambda self: self._methods, lambda self, v: self.configure(methods=v))
    path_filter = property(lambda self: self._path_filter, lambda self, v: self.configure(path_filter=v))
    max_faults = property(lambda self: self._max_faults, lambda self, v: self.configure(max_faults=v))

    def fail_always(
        self,
        predicate: Callable[[str, str], bool],
        status: int = 403,
        body: bytes | str = ACCESS_DENIED_XML,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
        times: int | None = None,
    ) -> _Rule:
        """Permanently answer requests with predicate(method, target) true with
        ``status``/``body`` (default 403 AccessDenied XML) without forwarding them
        (with ``times``, only the next that many matching requests).
        Returns a handle for :meth:`remove_rule`."""
        if isinstance(body, str):
            body = body.encode()
        hdrs = {"Content-Type": "application/xml"}
        hdrs.update(headers or {})
        rule = _Rule(predicate, status, body, hdrs, reason or http.client.responses.get(status, "Error"), times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def before(self, predicate: Callable[[str, str], bool], fn: Callable[[str, str], None], times: int = 1) -> None:
        """Call fn(method, target) in the proxy's thread before the next ``times`` requests matching
        predicate(method, target) are handled (e.g. to abort an upload under the client, to kill the
        client at an exact point, or to hold a request until an event is set)."""
        with self._lock:
            self._hooks.append([predicate, fn, times])

    def corrupt(self, predicate: Callable[[str, str], bool], times: int = 1) -> None:
        """Flip one bit of the request body of the next ``times`` requests matching predicate(method, target)
        on its way upstream (bad memory, a broken middlebox): what a body checksum must catch."""
        with self._lock:
            self._corrupt.append([predicate, times])

    def _take_corrupt(self, method: str, target: str) -> bool:
        with self._lock:
            for rule in self._corrupt:
                if rule[1] > 0 and rule[0](method, target):
                    rule[1] -= 1
                    return True
        return False

    def _run_hooks(self, method: str, target: str) -> None:
        with self._lock:
            due = []
            for hook in self._hooks:
                if hook[2] > 0 and hook[0](method, target):
                    hook[2] -= 1
                    due.append(hook[1])
            self._hooks = [h for h in self._hooks if h[2] > 0]
        for fn in due:
            fn(method, target)

    def remove_rule(self, rule: _Rule) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    def clear_rules(self) -> None:
        with self._lock:
            self._rules = []
            self._scheduled = []
            self._hooks = []

    def schedule(self, kind: str, count: int = 1, predicate: Callable[[str, str], bool] | None = None) -> None:
        """Deterministically fault the next ``count`` requests matching
        predicate(method, target) (all requests if None) with ``kind``, regardless
        of rate/methods/path_filter.  Checked after fail_always rules."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._scheduled.append([kind, int(count), predicate])

    # ------------------------------------------------------------------ counters
    @property
    def faults_injected(self) -> dict[str, int]:
        """{kind: count} of faults injected so far ("fail_always" counts rule hits)."""
        with self._lock:
            return dict(self._faults_injected)

    @property
    def requests_total(self) -> int:
        with self._lock:
            return self._requests_total

    @property
    def connections_total(self) -> int:
        """Client TCP connections accepted so far (keep-alive reuse => fewer than requests)."""
        with self._lock:
            return self._connections_total

    @property
    def continued(self) -> list[tuple[str, str]]:
        """(method, target) of every request that asked `Expect: 100-continue`."""
        with self._lock:
            return list(self._continued)

    @property
    def log(self) -> list[tuple[str, str, str]]:
        """(method, target, outcome) per request; outcome is "forward" or a fault kind."""
        with self._lock:
            return list(self._log)

    def reset_counters(self) -> None:
        with self._lock:
            self._faults_injected = {}
            self._random_faults = 0
            self._requests_total = 0
            self._connections_total = 0
            self._log = []

    def _decide(self, method: str, target: str) -> tuple[str, _Rule | None]:
        with self._lock:
            self._requests_total += 1
            decision, rule = "forward", None
            for r in self._rules:
                if r.predicate(method, target):
                    decision, rule = "fail_always", r
                    if r.times is not None:
                        r.times -= 1
                        if r.times <= 0:
                            self._rules = [x for x in self._rules if x is not r]
                    break
            if decision == "forward":
                for entry in self._scheduled:
                    kind, remaining, pred = entry
                    if remaining > 0 and (pred is None or pred(method, target)):
                        entry[1] -= 1
                        decision = kind
                        break
                self._scheduled = [e for e in self._scheduled if e[1] > 0]
            if decision == "forward" and self._rate > 0 and self._faults:
                eligible = (self._methods is None or method in self._methods) and (
                    self._path_filter is None or self._path_filter(target)
                ) and (self._max_faults is None or self._random_faults < self._max_faults)
                if eligible and self._rng.random() < self._rate:
                    kinds = list(self._faults)
                    decision = self._rng.choices(kinds, weights=[self._faults[k] for k in kinds])[0]
                    self._random_faults += 1
            if decision != "forward":
                self._faults_injected[decision] = self._faults_injected.get(decision, 0) + 1
            self._log.append((method, target, decision))
            return decision, rule

    # ------------------------------------------------------------------ lifecycle
    def _track(self, sock: socket.socket, add: bool) -> None:
        with self._lock:
            if add:
                self._connections_total += 1
                self._conns.add(sock)
            else:
                self._conns.discard(sock)

    def start(self) -> "FaultProxy":
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), _Handler, self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"faultproxy-{self.port}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("FaultProxy not started")
        return f"http://{self.host}:{self.port}"
