"""An in-memory fake of Zenodo's legacy deposit REST API, served over real HTTP.

Follows /work/shared/zenodo-api.md (cited as §N; "spec N" is its numbered
"Fake-server spec"). Where the real server is unclear the fake takes the
stricter behaviour, so a client that passes here also passes there.

    with ZenodoFake() as fake:
        api = fake.url + "/api"
        requests.post(api + "/deposit/depositions", json={},
                      headers={"Authorization": "Bearer test-token"})

Pure stdlib. All state sits behind one lock; request bodies are read outside it.
"""
from __future__ import annotations

import copy
import datetime as _dt
import email.parser
import email.policy
import hashlib
import json
import math
import random
import re
import socket
import struct
import threading
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

NOT_FOUND = "The persistent identifier does not exist."
DENIED = "Permission denied."
VALIDATION = "A validation error occurred."
TOO_MANY_FILES = "Uploading selected files will result in exceeding the max amount per record."
TOO_BIG = "File size limit exceeded."
CHUNK = 64 * 1024
DRAIN_LIMIT = 1 << 20  # unread request bodies up to this size are drained to keep the connection alive


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


def _today() -> str:
    return _dt.date.today().isoformat()


def secure_filename(name: str) -> str:
    """werkzeug's secure_filename, which the legacy POST …/files applies to `name` (§1)."""
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    name = name.replace("/", " ").replace("\\", " ")
    return re.sub(r"[^A-Za-z0-9_.-]", "", "_".join(name.split())).strip("._")


@dataclass
class StoredFile:
    id: str
    key: str
    data: bytes
    md5: str
    created: str = field(default_factory=_now)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Deposition:
    id: int
    concept_id: int
    owner: int
    bucket: str
    metadata: dict
    files: dict = field(default_factory=dict)  # key -> StoredFile, in upload order
    state: str = "unsubmitted"  # unsubmitted | inprogress (published, editing) | done
    submitted: bool = False
    doi: str = ""
    created: str = field(default_factory=_now)
    modified: str = field(default_factory=_now)
    saved_metadata: dict | None = None  # published metadata while editing; restored by discard
    list_lag: int = 0  # listing calls still to miss this deposition (list_lag switch)


@dataclass
class Resp:
    status: int
    body: object = None  # dict/list -> JSON, bytes -> raw, None -> empty
    ctype: str = "application/json"
    headers: dict = field(default_factory=dict)


@dataclass
class _Rule:
    n: int
    status: int
    path_contains: str | None
    method: str | None
    after_success: bool = False

    def matches(self, method: str, path: str) -> bool:
        return (self.n > 0 and (self.method is None or self.method.upper() == method)
                and (self.path_contains is None or self.path_contains in path))


def _err(status: int, message: str, errors: list | None = None) -> Resp:
    body = {"status": status, "message": message}
    if errors is not None:
        body["errors"] = errors  # §6: each entry's `messages` is a list
    return Resp(status, body)


def _invalid(field_: str, message: str) -> Resp:
    return _err(400, VALIDATION, [{"field": field_, "messages": [message]}])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server_version = "ZenodoFake/1.0"
    timeout = 60

    def log_message(self, *args) -> None:  # silence stderr; the fake keeps its own log
        pass

    def _go(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _go


class ZenodoFake:
    """Fake Zenodo on 127.0.0.1:<free port>; API base is `url + "/api"`."""

    def __init__(self, tokens: set[str] | None = None) -> None:
        self._lock = threading.RLock()
        self.tokens: set[str] = set(tokens) if tokens is not None else {"test-token"}
        self.owners: dict[str, int] = {}  # token -> owner id; unmapped tokens are owner 1
        self.depositions: dict[int, Deposition] = {}
        self.max_files = 100  # §4 RDM_RECORDS_MAX_FILES_COUNT
        self.max_bytes = 50 * 10**9  # §4: per record and per file; lower it in tests
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status); 0 = no response
        self.query_log: list[str] = []  # raw query strings, parallel to `requests`
        self.faults_injected = 0
        self.bucket_delete_500 = False  # §1 zr#1408: DELETE deletes, then answers 500
        self.bucket_list_500 = False  # §1: GET {bucket} listing answered 500 before the fix
        self.list_lag = False  # §1 index lag: new depositions show up one listing late
        self.retry_after_on_2xx = True  # §4: real Zenodo sends Retry-After even on 2xx
        self.fault_retry_after = 1  # Retry-After seconds on 429s injected by fail_rate/fail_next
        self._next_id = 100
        self._rules: list[_Rule] = []
        self._resets: list[_Rule] = []
        self._rl: tuple[int, float] | None = None
        self._rl_start = 0.0
        self._rl_count = 0
        self._fr_p = 0.0
        self._fr_statuses: tuple[int, ...] = ()
        self._fr_rng = random.Random()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "ZenodoFake":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="zenodo-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> "ZenodoFake":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- test controls -----------------------------------------------------------------------
    def add_token(self, token: str, owner: int = 1) -> None:
        with self._lock:
            self.tokens.add(token)
            self.owners[token] = owner

    def fail_next(self, n: int, status: int = 500, path_contains: str | None = None,
                  method: str | None = None, after_success: bool = False) -> None:
        """The next n matching requests get `status`; with after_success they are processed first."""
        with self._lock:
            self._rules.append(_Rule(n, status, path_contains, method, after_success))

    def reset_connection_next(self, n: int, path_contains: str | None = None, method: str | None = None) -> None:
        """The next n matching requests get their socket reset, no response (bucket PUTs: mid-body)."""
        with self._lock:
            self._resets.append(_Rule(n, 0, path_contains, method))

    def rate_limit(self, n_per_window: int | None, window_seconds: float = 60.0) -> None:
        """Allow n requests per fixed window, then 429 + Retry-After; None turns it off."""
        with self._lock:
            self._rl = (n_per_window, window_seconds) if n_per_window else None
            self._rl_start, self._rl_count = time.time(), 0

    def fail_rate(self, p: float, statuses: tuple[int, ...] = (500, 503, 429), seed: int | None = None) -> None:
        """Each request fails (before processing) with probability p; counts `faults_injected`."""
        with self._lock:
            self._fr_p, self._fr_statuses, self._fr_rng = p, tuple(statuses), random.Random(seed)

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.query_log.clear()

    def count(self, method: str | None = None, path_prefix: str | None = None, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for m, p, s in self.requests
                       if (method is None or m == method.upper())
                       and (path_prefix is None or p.startswith(path_prefix))
                       and (status is None or s == status))

    def deposition_count(self) -> int:
        with self._lock:
            return len(self.depositions)

    def files_of(self, dep_id: int) -> dict[str, str]:
        with self._lock:
            return {k: f.md5 for k, f in self.depositions[dep_id].files.items()}

    # ---- request plumbing --------------------------------------------------------------------
    def _handle(self, h: _Handler) -> None:
        parts = urlsplit(h.path)
        method, path, query = h.command, parts.path, parts.query
        try:
            h._left = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            h._left = 0
        after = None
        with self._lock:
            pre = self._gate(method, path)
            if isinstance(pre, _Rule):
                if pre.after_success:
                    after = pre.status
                else:  # reset rule
                    self._log(method, path, query, 0)
                    pre = "reset"
        if pre == "reset":
            return self._reset(h, partial=(method == "PUT" and path.startswith("/api/files/")))
        if isinstance(pre, Resp):
            return self._send(h, method, path, query, pre)
        try:
            resp = self._route(h, method, path, parse_qs(query, keep_blank_values=True))
        except Exception as exc:  # a bug in the fake must show up as a 500, not a hung client
            resp = Resp(500, {"message": f"fake error: {exc!r}", "status": 500, "error_id": str(uuid.uuid4())})
        if resp is None:  # client went away mid-body
            with self._lock:
                self._log(method, path, query, 0)
            h.close_connection = True
            return
        if after is not None:  # §7: 502/504 although the request succeeded (zi#2131)
            resp = self._fault(after)
        self._send(h, method, path, query, resp)

    def _gate(self, method: str, path: str):
        """Rate limit and faults injected before processing; caller holds the lock."""
        if self._rl:
            n, window = self._rl
            now = time.time()
            if now >= self._rl_start + window:
                self._rl_start, self._rl_count = now, 0
            if self._rl_count >= n:
                wait = max(1, math.ceil(self._rl_start + window - now))
                return Resp(429, {"status": 429, "message": f"{n} per {window:g} second"},
                            headers={"Retry-After": str(wait)})
            self._rl_count += 1
        if self._fr_p and self._fr_rng.random() < self._fr_p:
            self.faults_injected += 1
            return self._fault(self._fr_rng.choice(self._fr_statuses))
        for rule in self._rules:
            if rule.matches(method, path):
                rule.n -= 1
                if not rule.after_success:
                    self.faults_injected += 1
                    return self._fault(rule.status)
                self.faults_injected += 1
                return rule
        for rule in self._resets:
            if rule.matches(method, path):
                rule.n -= 1
                self.faults_injected += 1
                return rule
        return None

    def _fault(self, status: int) -> Resp:
        if status == 429:
            return Resp(429, {"status": 429, "message": "Too many requests."},
                        headers={"Retry-After": str(self.fault_retry_after)})
        if status == 500:  # §6: 500 body is {message, status, error_id}
            return Resp(500, {"message": "The server encountered an internal error.", "status": 500,
                              "error_id": str(uuid.uuid4())})
        if status in (502, 503, 504):  # gateway errors come from nginx as HTML, not JSON (§7)
            text = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Time-out"}[status]
            return Resp(status, f"<html><body><h1>{status} {text}</h1></body></html>".encode(), "text/html")
        return _err(status, "Injected fault.")

    def _reset(self, h: _Handler, partial: bool) -> None:
        if partial and h._left:  # §7: resets mid-upload; read some of the body first
            h.rfile.read(min(max(h._left // 2, 1), DRAIN_LIMIT))
        # SO_LINGER 0 makes close() send RST instead of FIN: the client sees a reset connection.
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.close_connection = True

    def _log(self, method: str, path: str, query: str, status: int) -> None:
        # Only method, path and status; the Authorization header is never recorded and a
        # query-string token is masked.
        self.requests.append((method, path, status))
        self.query_log.append(re.sub(r"(access_token=)[^&]*", r"\1REDACTED", query))

    def _send(self, h: _Handler, method: str, path: str, query: str, resp: Resp) -> None:
        body = resp.body
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        else:
            data = body or b""
        if resp.status == 204:
            data = b""
        headers = dict(resp.headers)
        with self._lock:
            if self._rl:  # §4: X-RateLimit-* on every response while rate limiting is on
                n, window = self._rl
                headers["X-RateLimit-Limit"] = str(n)
                headers["X-RateLimit-Remaining"] = str(max(0, n - self._rl_count))
                headers["X-RateLimit-Reset"] = str(int(self._rl_start + window))
                if self.retry_after_on_2xx:
                    headers.setdefault("Retry-After", str(int(window)))
            self._log(method, path, query, resp.status)  # before replying, so tests see it at once
        if "Transfer-Encoding" in h.headers:  # chunked bodies are not decoded: end the connection
            headers["Connection"] = "close"
        elif h._left:  # body left unread (early error): drain it, or give up on keep-alive
            if h._left <= DRAIN_LIMIT:
                h.rfile.read(h._left)
                h._left = 0
            else:
                headers["Connection"] = "close"
        h.send_response(resp.status)
        h.send_header("Content-Type", resp.ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if data:
            h.wfile.write(data)

    def _read_body(self, h: _Handler) -> bytes:
        data = h.rfile.read(h._left) if h._left else b""
        h._left = 0
        return data

    def _auth(self, h: _Handler, query: dict) -> int | None:
        # §5 says ?access_token= works on the real server; this fake rejects it on purpose so
        # the client must use the header and tokens never appear in URLs or logs.
        if "access_token" in query:
            return None
        auth = h.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        token = auth[len("Bearer "):].strip()
        with self._lock:
            return self.owners.get(token, 1) if token in self.tokens else None

    # ---- routing -----------------------------------------------------------------------------
    def _route(self, h: _Handler, method: str, path: str, query: dict) -> Resp | None:
        owner = self._auth(h, query)
        if owner is None:
            return _err(403, DENIED)  # §5: anonymous -> 403
        m = re.fullmatch(r"/api/files/([^/]+)/([^/]+)", path)
        if m and method == "PUT":
            return self._bucket_put(h, m[1], unquote(m[2]), owner)
        m_files = re.fullmatch(r"/api/deposit/depositions/(\d+)/files/?", path)
        if m_files and method == "POST" and h._left > self.max_bytes:
            return _err(400, TOO_BIG)  # checked against Content-Length, before reading (§4)
        body = self._read_body(h)
        with self._lock:
            if m:
                return self._bucket_obj(method, m[1], unquote(m[2]), owner)
            if m_b := re.fullmatch(r"/api/files/([^/]+)/?", path):
                if method != "GET":
                    return _err(405, "Method not allowed.")
                dep, err = self._by_bucket(m_b[1], owner)
                if err or self.bucket_list_500:
                    return err or self._fault(500)
                return Resp(200, {"contents": [self._bucket_json(dep, f) for f in dep.files.values()]})
            if re.fullmatch(r"/api/deposit/depositions/?", path):
                if method == "GET":
                    return self._list(owner, query)
                if method == "POST":
                    return self._create(owner, body)
                return _err(405, "Method not allowed.")
            if m := re.fullmatch(r"/api/records/(\d+)(?:/draft)?/files/([^/]+)/content", path):
                dep, err = self._get(int(m[1]), owner)
                f = dep and dep.files.get(unquote(m[2]))
                return err or (Resp(200, f.data, "application/octet-stream") if f else _err(404, NOT_FOUND))
            m = re.fullmatch(r"/api/deposit/depositions/(\d+)(/.*)?", path)
            if not m:
                return _err(404, "Not found.")
            dep, err = self._get(int(m[1]), owner)
            if err:
                return err
            return self._dep_route(dep, method, (m[2] or "").rstrip("/"), body, h.headers.get("Content-Type", ""))

    def _dep_route(self, dep: Deposition, method: str, sub: str, body: bytes, ctype: str) -> Resp:
        if sub == "":
            if method == "GET":  # §1: falls back to the published record if there is no draft
                return Resp(200, self._dep_json(dep))
            if method == "PUT":
                return self._put_metadata(dep, body)
            if method == "DELETE":
                if dep.submitted:  # §1: published -> 404
                    return _err(404, NOT_FOUND)
                del self.depositions[dep.id]
                return Resp(204)  # §1: 204 (the docs say 201)
        elif sub == "/files":
            if method == "GET":
                return Resp(200, [self._file_json(dep, f, listing=True) for f in dep.files.values()])
            if method == "POST":
                return self._post_file(dep, body, ctype)
            if method == "PUT":
                return _err(405, "Method not allowed.")  # §1: sorting files -> 405 (RT)
        elif m := re.fullmatch(r"/files/([^/]+)", sub):
            f = next((f for f in dep.files.values() if f.id == m[1]), None)
            if method == "PUT":
                return _err(405, "Method not allowed.")  # §1: renaming -> 405 (RT)
            if f is None:
                return _err(404, NOT_FOUND)
            if method == "GET":
                return Resp(200, self._file_json(dep, f, listing=True))
            if method == "DELETE":
                if dep.state != "unsubmitted":
                    return _err(403, DENIED)  # §3: published (and edit mode, files locked) -> 403
                del dep.files[f.key]
                dep.modified = _now()
                return Resp(204)
        elif m := re.fullmatch(r"/actions/(publish|edit|discard|newversion)", sub):
            if method != "POST":
                return _err(405, "Method not allowed.")
            return getattr(self, "_" + m[1])(dep)
        else:
            return _err(404, "Not found.")
        return _err(405, "Method not allowed.")

    # ---- state helpers (caller holds the lock) ------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _get(self, dep_id: int, owner: int) -> tuple[Deposition | None, Resp | None]:
        dep = self.depositions.get(dep_id)
        if dep is None:
            return None, _err(404, NOT_FOUND)
        if dep.owner != owner:
            return None, _err(403, DENIED)
        return dep, None

    def _by_bucket(self, bucket: str, owner: int) -> tuple[Deposition | None, Resp | None]:
        dep = next((d for d in self.depositions.values() if d.bucket == bucket), None)
        if dep is None:
            return None, _err(404, NOT_FOUND)
        return self._get(dep.id, owner)

    def _concept(self, dep: Deposition) -> list[Deposition]:
        return sorted((d for d in self.depositions.values() if d.concept_id == dep.concept_id), key=lambda d: d.id)

    def _parse_json(self, body: bytes) -> tuple[dict | None, Resp | None]:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return None, _err(400, "The request body is not valid JSON.")
        if not isinstance(data, dict):
            return None, _err(400, VALIDATION, [{"field": "_schema", "messages": ["Invalid input type."]}])
        unknown = sorted(set(data) - {"metadata"})  # §1: unknown top-level keys -> 400 (unknown=RAISE)
        if unknown:
            return None, _err(400, VALIDATION, [{"field": k, "messages": ["Unknown field."]} for k in unknown])
        meta = data.get("metadata", {})
        if not isinstance(meta, dict):
            return None, _invalid("metadata", "Invalid input type.")
        meta = copy.deepcopy(meta)
        meta.pop("prereserve_doi", None)  # output-only; tolerated so GET-modify-PUT works
        meta.setdefault("publication_date", _today())  # §6: defaults to today
        return meta, None

    def _check_quota(self, dep: Deposition, key: str, size: int) -> Resp | None:
        # §4: a replace does not count towards the file limit; empty files are fine.
        if key not in dep.files and len(dep.files) >= self.max_files:
            return _err(400, TOO_MANY_FILES)
        others = sum(f.size for k, f in dep.files.items() if k != key)
        if size > self.max_bytes or others + size > self.max_bytes:
            return _err(400, TOO_BIG)
        return None

    def _store(self, dep: Deposition, key: str, data: bytes, md5: str) -> StoredFile:
        dep.files.pop(key, None)  # §3: replace = delete then upload; the file id changes
        f = dep.files[key] = StoredFile(str(uuid.uuid4()), key, data, md5)
        dep.modified = _now()
        return f

    # ---- JSON shapes (§2) --------------------------------------------------------------------
    def _dep_json(self, dep: Deposition, listing: bool = False) -> dict:
        api = self.url + "/api"
        self_url = f"{api}/deposit/depositions/{dep.id}"
        links = {"self": self_url, "html": f"{self.url}/uploads/{dep.id}", "files": self_url + "/files",
                 # §2: latest_draft is always the deposition's own URL, never a pending new version
                 "latest_draft": self_url, "latest_draft_html": f"{self.url}/uploads/{dep.id}",
                 "publish": self_url + "/actions/publish", "edit": self_url + "/actions/edit",
                 "discard": self_url + "/actions/discard", "newversion": self_url + "/actions/newversion"}
        if dep.state != "done" and not listing:  # spec 4: bucket only on drafts, never in list hits
            links["bucket"] = f"{api}/files/{dep.bucket}"
        if dep.submitted:
            latest = max(d.id for d in self._concept(dep) if d.submitted)
            links.update(record=f"{api}/records/{dep.id}", record_html=f"{self.url}/records/{dep.id}",
                         latest=f"{api}/records/{latest}", latest_html=f"{self.url}/records/{latest}")
        meta = copy.deepcopy(dep.metadata)
        meta["prereserve_doi"] = {"doi": f"10.5072/zenodo.{dep.id}", "recid": dep.id}
        if dep.doi:
            meta["doi"] = dep.doi
        out = {"id": dep.id, "record_id": dep.id, "conceptrecid": str(dep.concept_id),
               "doi": dep.doi, "doi_url": f"https://doi.org/{dep.doi}" if dep.doi else "",
               "conceptdoi": f"10.5072/zenodo.{dep.concept_id}" if dep.submitted else "",
               "created": dep.created, "modified": dep.modified, "owner": dep.owner,
               "title": dep.metadata.get("title", ""), "metadata": meta, "state": dep.state,
               "submitted": dep.submitted, "files": [self._file_json(dep, f) for f in dep.files.values()],
               "links": links}
        return out

    def _file_json(self, dep: Deposition, f: StoredFile, listing: bool = False) -> dict:
        api = self.url + "/api"
        part = "files" if dep.state == "done" else "draft/files"
        return {"id": f.id, "filename": f.key,
                # §2: GET …/files serialises filesize as a float (marshmallow Number)
                "filesize": float(f.size) if listing else f.size,
                "checksum": f.md5,  # bare hex here, "md5:<hex>" in bucket responses
                "links": {"self": f"{api}/deposit/depositions/{dep.id}/files/{f.id}",
                          "download": f"{api}/records/{dep.id}/{part}/{quote(f.key)}/content"}}

    def _bucket_json(self, dep: Deposition, f: StoredFile) -> dict:
        obj = f"{self.url}/api/files/{dep.bucket}/{quote(f.key)}"
        return {"created": f.created, "updated": f.created, "version_id": f.id, "key": f.key,
                "size": f.size, "mimetype": "application/octet-stream", "checksum": "md5:" + f.md5,
                "is_head": True, "delete_marker": False,
                "links": {"self": obj, "version": f"{obj}?versionId={f.id}", "uploads": obj + "?uploads"}}

    # ---- endpoints ---------------------------------------------------------------------------
    def _list(self, owner: int, query: dict) -> Resp:
        def arg(name: str, default: str = "") -> str:
            return query.get(name, [default])[-1]
        try:
            page, size = int(arg("page", "1")), int(arg("size", "25"))  # §1: default 25 (RR)
        except ValueError:
            return _invalid("page", "Not a valid integer.")
        if page < 1 or not 1 <= size <= 100:  # §1: max 100 (D _list.md)
            return _invalid("size" if page >= 1 else "page", "Must be between 1 and 100.")
        # §1: DR names it allversions, the docs all_versions; accept both.
        allv = any(arg(k).lower() in ("", "1", "true", "yes") for k in ("allversions", "all_versions") if k in query)
        visible = [d for d in self.depositions.values() if d.owner == owner and d.list_lag == 0]
        for d in self.depositions.values():  # list_lag: each listing call ages the lag by one
            d.list_lag = max(0, d.list_lag - 1)
        hits = [d for d in visible if self._matches(d, arg("q"))]
        if not allv:  # only the newest version/draft per concept (DR AllVersionsParam)
            newest: dict[int, Deposition] = {}
            for d in hits:
                if d.concept_id not in newest or d.id > newest[d.concept_id].id:
                    newest[d.concept_id] = d
            hits = list(newest.values())
        hits.sort(key=lambda d: d.id, reverse=True)
        page_hits = hits[(page - 1) * size: page * size]
        return Resp(200, [self._dep_json(d, listing=True) for d in page_hits])  # bare array, no total

    @staticmethod
    def _matches(dep: Deposition, q: str) -> bool:
        """Legacy q: conceptrecid:N, recid:N, doi:X, title:"…" / title:word, plus free text (ANDed)."""
        md = dep.metadata
        for fld, quoted, bare in re.findall(r'(\w+):(?:"([^"]*)"|(\S+))', q):
            val = (quoted or bare).lower()
            if fld == "conceptrecid" and val != str(dep.concept_id):
                return False
            if fld in ("recid", "id") and val != str(dep.id):
                return False
            if fld == "doi" and val != dep.doi.lower():
                return False
            if fld == "title" and val not in str(md.get("title", "")).lower():
                return False
        text = " ".join(str(md.get(k, "")) for k in ("title", "description", "notes", "keywords")).lower()
        free = re.sub(r'\w+:(?:"[^"]*"|\S+)', " ", q)
        words = [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', free.lower())]
        return all(w in text for w in words if w not in ("and", "*"))

    def _create(self, owner: int, body: bytes) -> Resp:
        meta, err = self._parse_json(body)
        if err:
            return err
        concept = self._new_id()  # spec 1: one counter; the parent takes an id, so id = concept + 1
        dep = Deposition(self._new_id(), concept, owner, str(uuid.uuid4()), meta,
                         list_lag=1 if self.list_lag else 0)
        self.depositions[dep.id] = dep
        return Resp(201, self._dep_json(dep))

    def _put_metadata(self, dep: Deposition, body: bytes) -> Resp:
        if dep.state == "done":
            return _err(404, NOT_FOUND)  # §1: published and not editing -> 404 (RT)
        meta, err = self._parse_json(body)
        if err:
            return err
        dep.metadata = meta  # §1: replaces metadata wholesale; incomplete is fine until publish
        dep.modified = _now()
        return Resp(200, self._dep_json(dep))

    def _post_file(self, dep: Deposition, body: bytes, ctype: str) -> Resp:
        if dep.state == "done":
            return _err(404, NOT_FOUND)  # §3: POST file on a published record -> 404 (RT)
        if dep.state == "inprogress":
            return _err(403, DENIED)  # §3: files stay locked in edit mode
        if not ctype.startswith("multipart/form-data"):
            return _invalid("file", "Missing data for required field.")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        fields = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
        part = fields.get("file")
        if part is None:
            return _invalid("file", "Missing data for required field.")
        name_part = fields.get("name")
        name = name_part.get_content().strip() if name_part is not None else (part.get_filename() or "")
        if isinstance(name, bytes):
            name = name.decode()
        key = secure_filename(name)  # §1: legacy POST applies secure_filename
        if not key:
            return _invalid("name", "Invalid file name.")
        data = part.get_payload(decode=True) or b""
        err = self._check_quota(dep, key, len(data))
        if err:
            return err
        f = self._store(dep, key, data, hashlib.md5(data).hexdigest())
        return Resp(201, self._file_json(dep, f, listing=True))

    def _bucket_put(self, h: _Handler, bucket: str, key: str, owner: int) -> Resp | None:
        """Streamed raw-body upload (§1 RR request_stream); the body is read outside the lock."""
        with self._lock:
            dep, err = self._by_bucket(bucket, owner)
            if err:
                return err
            if dep.state != "unsubmitted":
                return _err(403, DENIED)  # §3: published files are frozen, locked in edit mode
            if "/" in key or not key:
                return _invalid("key", "Invalid file name.")  # §4: no folders
            if "Content-Length" not in h.headers:
                return _err(411, "Length required.")
            err = self._check_quota(dep, key, h._left)  # §4: against Content-Length, before reading
            if err:
                return err
        md5, chunks, left = hashlib.md5(), [], h._left
        while left:
            chunk = h.rfile.read(min(CHUNK, left))
            if not chunk:
                return None  # client gave up mid-body: nothing is stored
            md5.update(chunk)
            chunks.append(chunk)
            left -= len(chunk)
        h._left = 0
        with self._lock:
            dep, err = self._by_bucket(bucket, owner)  # may have been discarded meanwhile
            if err or dep.state != "unsubmitted":
                return err or _err(403, DENIED)
            data = b"".join(chunks)
            err = self._check_quota(dep, key, len(data))
            if err:
                return err
            f = self._store(dep, key, data, md5.hexdigest())
            return Resp(201, self._bucket_json(dep, f))

    def _bucket_obj(self, method: str, bucket: str, key: str, owner: int) -> Resp:
        dep, err = self._by_bucket(bucket, owner)
        if err:
            return err
        f = dep.files.get(key)
        if method == "GET":
            return Resp(200, f.data, "application/octet-stream") if f else _err(404, NOT_FOUND)
        if method != "DELETE":
            return _err(405, "Method not allowed.")
        if dep.state != "unsubmitted":
            return _err(403, DENIED)
        if f is None:
            return _err(404, NOT_FOUND)
        del dep.files[key]
        dep.modified = _now()
        if self.bucket_delete_500:  # §1 zr#1408: the file is gone, yet the answer is 500
            return self._fault(500)
        return Resp(204)

    def _publish(self, dep: Deposition) -> Resp:
        if dep.state == "done":
            return _err(404, NOT_FOUND)  # no draft left to publish (e.g. a retry after a 504)
        md = dep.metadata
        errors = []
        if not dep.files:  # §3: DR refuses to publish without files
            errors.append({"field": "files.enabled", "messages": [
                "Missing uploaded files. To disable files for this record please mark it as metadata-only."]})
        title = md.get("title")
        if not isinstance(title, str) or not title.strip():
            errors.append({"field": "metadata.title", "messages": ["Missing data for required field."]})
        elif len(title.strip()) < 3:  # §6: title must have at least 3 characters
            errors.append({"field": "metadata.title", "messages": ["Title must be at least 3 characters long."]})
        creators = md.get("creators")
        if not isinstance(creators, list) or not creators:
            errors.append({"field": "metadata.creators", "messages": ["Missing data for required field."]})
        else:
            for i, c in enumerate(creators):
                if not isinstance(c, dict) or not str(c.get("name", "")).strip():
                    errors.append({"field": f"metadata.creators.{i}.name",
                                   "messages": ["Missing data for required field."]})
        utype = md.get("upload_type")
        if not utype:
            errors.append({"field": "metadata.upload_type", "messages": ["Missing data for required field."]})
        elif utype in ("publication", "image") and not md.get(f"{utype}_type"):  # §6: +<type>_type
            errors.append({"field": f"metadata.{utype}_type", "messages": ["Missing data for required field."]})
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(md.get("publication_date", ""))):
            errors.append({"field": "metadata.publication_date", "messages": ["Not a valid date."]})
        if errors:
            return _err(400, VALIDATION, errors)
        dep.state, dep.submitted, dep.saved_metadata = "done", True, None
        dep.doi = f"10.5072/zenodo.{dep.id}"  # sandbox-style prefix (§5)
        dep.modified = _now()
        return Resp(202, self._dep_json(dep))  # §1: 202, same id as the draft

    def _edit(self, dep: Deposition) -> Resp:
        if dep.state == "done":
            dep.saved_metadata = copy.deepcopy(dep.metadata)
            dep.state = "inprogress"
            dep.modified = _now()
        return Resp(201, self._dep_json(dep))  # §1: idempotent, returns the existing draft

    def _discard(self, dep: Deposition) -> Resp:
        if dep.state == "done":
            return _err(404, NOT_FOUND)  # no draft to discard
        if dep.state == "inprogress":
            dep.metadata, dep.saved_metadata, dep.state = dep.saved_metadata, None, "done"
        else:
            del self.depositions[dep.id]
        return Resp(204)  # §1: 204 empty (the docs say 201 + body)

    def _newversion(self, dep: Deposition) -> Resp:
        if not dep.submitted:
            return _err(404, NOT_FOUND)  # only a published record has versions
        versions = self._concept(dep)
        latest = max((d for d in versions if d.submitted), key=lambda d: d.id)
        draft = next((d for d in versions if not d.submitted), None)
        if draft is not None:  # §3: the existing draft is returned and import_files reruns
            if draft.files:
                return _invalid("files.enabled", "Please remove all files first.")
        else:
            source = dep.saved_metadata if dep.state == "inprogress" else dep.metadata
            meta = {k: copy.deepcopy(v) for k, v in source.items() if k not in ("version", "doi")}
            meta["publication_date"] = _today()  # §3: version and DOI dropped, date = today
            draft = Deposition(self._new_id(), dep.concept_id, dep.owner, str(uuid.uuid4()), meta,
                               list_lag=1 if self.list_lag else 0)
            self.depositions[draft.id] = draft
        for f in latest.files.values():  # §3: all files of the latest version; new file ids
            draft.files[f.key] = StoredFile(str(uuid.uuid4()), f.key, f.data, f.md5)
        return Resp(201, self._dep_json(draft))  # §1: the body is the NEW draft
