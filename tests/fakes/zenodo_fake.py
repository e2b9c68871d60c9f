"""An in-memory fake of Zenodo's legacy deposit REST API, served over real HTTP.

Follows the project's shared/zenodo-api.md (cited as §N; "spec N" is its numbered "Fake-server
spec"). Where the real server is unclear the fake takes the stricter behaviour, so a
client that passes here should pass there. Pure stdlib; all state sits behind one lock,
and upload bodies are read outside it.

    with ZenodoFake() as fake:
        requests.post(fake.url + "/api/deposit/depositions", json={},
                      headers={"Authorization": "Bearer test-token"})
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
REQUIRED = "Missing data for required field."
CHUNK = 64 * 1024
DRAIN_LIMIT = 1 << 28  # unread bodies up to this size are drained (like nginx) to keep the connection

# (path regex, {method: handler}). A known path with another method gets 405, which covers
# PUT …/files (sort) and PUT …/files/:id (rename) (§1, RT).
_DEP = r"/api/deposit/depositions/(?P<id>\d+)"
_ROUTES = [(re.compile(p), m) for p, m in [
    (r"/api/deposit/depositions", {"GET": "list", "POST": "create"}),
    (_DEP, {"GET": "read", "PUT": "update", "DELETE": "delete"}),
    (_DEP + r"/files", {"GET": "list_files", "POST": "post_file"}),
    (_DEP + r"/files/(?P<fid>[^/]+)", {"GET": "get_file", "DELETE": "delete_file"}),
    (_DEP + r"/actions/(?P<action>publish|edit|discard|newversion)", {"POST": "action"}),
    (r"/api/files/(?P<bucket>[^/]+)", {"GET": "bucket_list"}),
    (r"/api/files/(?P<bucket>[^/]+)/(?P<key>[^/]+)", {"PUT": "bucket_put", "GET": "bucket_get",
                                                      "DELETE": "bucket_delete"}),
    (r"/api/records/(?P<id>\d+)/draft/files/(?P<key>[^/]+)/content", {"GET": "download"}),
    # A published record's files, anonymously, at the two public URLs (zenodo/zenodo#2593, see _public_file)
    (r"/api/records/(?P<id>\d+)/files/(?P<key>[^/]+)/content", {"GET": "api_content", "HEAD": "api_content"}),
    (r"/records/(?P<id>\d+)/files/(?P<key>[^/]+)", {"GET": "record_file", "HEAD": "record_file"}),
]]
_PUBLIC = {"api_content", "record_file"}
# invenio-rest's CORS answer on the API (Access-Control-Allow-Origin: * for any Origin; exposed headers as its
# default configuration lists them: inferred)
API_EXPOSE = "Content-Type, ETag, Link, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


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
    state: str = "unsubmitted"  # unsubmitted | inprogress (published, being edited) | done
    submitted: bool = False
    doi: str = ""
    created: str = field(default_factory=_now)
    modified: str = field(default_factory=_now)
    saved_metadata: dict | None = None  # the published metadata while editing; discard restores it
    list_lag: int = 0  # listing calls that still miss this deposition (list_lag switch)


@dataclass
class Resp:
    status: int
    body: object = None  # dict/list -> JSON, bytes -> as is, None -> empty
    ctype: str = "application/json"
    headers: dict = field(default_factory=dict)


class _Abort(Exception):
    """Raised by helpers to answer at once with an error response."""

    def __init__(self, resp: Resp) -> None:
        super().__init__(resp.status)
        self.resp = resp


@dataclass
class _Rule:
    n: int
    status: int
    path_contains: str | None
    method: str | None
    after_success: bool = False
    reset: bool = False

    def matches(self, method: str, path: str) -> bool:
        return (self.n > 0 and (self.method is None or self.method.upper() == method)
                and (self.path_contains is None or self.path_contains in path))


def _err(status: int, message: str, errors: list | None = None) -> Resp:
    body = {"status": status, "message": message}
    if errors is not None:
        body["errors"] = errors  # §6: `messages` is a list (the docs show `message`)
    return Resp(status, body)


def _invalid(*pairs: tuple[str, str]) -> Resp:
    return _err(400, VALIDATION, [{"field": f, "messages": [m]} for f, m in pairs])


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries Content-Length
    server_version = "ZenodoFake/1.0"
    timeout = 60

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle + delayed ACK add 40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args) -> None:  # silent; the fake keeps its own log
        pass

    def _go(self) -> None:
        self.server.fake._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _go


class ZenodoFake:
    """Fake Zenodo on 127.0.0.1:<free port>; the API base is `url + "/api"`."""

    def __init__(self, tokens: set[str] | None = None) -> None:
        self._lock = threading.RLock()
        self.tokens: set[str] = set(tokens) if tokens is not None else {"test-token"}
        self.owners: dict[str, int] = {}  # token -> owner id; unmapped tokens belong to owner 1
        self.depositions: dict[int, Deposition] = {}
        self.max_files = 100  # §4 RDM_RECORDS_MAX_FILES_COUNT
        self.max_bytes = 50 * 10**9  # §4: per record and per file; tests may lower it
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status); 0 = no response
        self.query_log: list[str] = []  # raw query strings, parallel to `requests`
        self.request_times: list[float] = []  # time.time() of each request, parallel to `requests`
        self.faults_injected = 0
        self.bucket_delete_500 = False  # §1 zr#1408: bucket DELETE deletes, then answers 500
        self.bucket_list_500 = False  # §1: GET {bucket} listing answered 500 before the fix
        self.list_lag = False  # §1 index lag: new depositions reach the listing one call late
        self.retry_after_on_2xx = True  # §4: with rate limiting on, Retry-After comes even on 2xx
        self.fault_retry_after = 1  # Retry-After seconds on 429s from fail_rate/fail_next
        # Answers that lack what a client relies on (a proxy or an incomplete re-implementation):
        self.upload_without_checksum = False  # bucket PUT answers carry no `checksum`
        self.listing_without_checksum = False  # files[] and GET …/files entries carry no `checksum`
        self.newversion_without_id = False  # the newversion answer lacks the new draft's `id`/`record_id`
        self.url = ""
        self._next_id = 100
        self._rules: list[_Rule] = []
        self._rl: tuple[int, float] | None = None
        self._rl_start, self._rl_count = 0.0, 0
        self._fr_p, self._fr_statuses, self._fr_rng = 0.0, (), random.Random()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "ZenodoFake":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.fake = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name="zenodo-fake", daemon=True)
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

    def reset_connection_next(self, n: int, path_contains: str | None = None,
                              method: str | None = None) -> None:
        """The next n matching requests get a reset socket and no response (bucket PUTs: mid-body)."""
        with self._lock:
            self._rules.append(_Rule(n, 0, path_contains, method, reset=True))

    def rate_limit(self, n_per_window: int | None, window_seconds: float = 60.0) -> None:
        """Allow n requests per fixed window, then 429 with Retry-After; None turns it off."""
        with self._lock:
            self._rl = (n_per_window, window_seconds) if n_per_window else None
            self._rl_start, self._rl_count = time.time(), 0

    def fail_rate(self, p: float, statuses: tuple[int, ...] = (500, 503, 429), seed: int | None = None) -> None:
        """Each request fails before processing with probability p (0 turns it off)."""
        with self._lock:
            self._fr_p, self._fr_statuses, self._fr_rng = p, tuple(statuses), random.Random(seed)

    def reset_log(self) -> None:
        with self._lock:
            self.requests.clear()
            self.query_log.clear()
            self.request_times.clear()

    def count(self, method: str | None = None, path_prefix: str | None = None,
              status: int | None = None) -> int:
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
        length = h.headers.get("Content-Length", "")
        h.left = int(length) if length.isdigit() else 0
        with self._lock:
            pre = self._gate(method, path)
            if isinstance(pre, _Rule) and pre.reset:
                self._log(method, path, query, 0)
        if isinstance(pre, Resp):
            return self._send(h, method, path, query, pre)
        if isinstance(pre, _Rule) and pre.reset:
            if method == "PUT" and path.startswith("/api/files/") and h.left:
                h.rfile.read(min(max(h.left // 2, 1), 16 * CHUNK))  # §7: resets mid-upload
            # SO_LINGER 0: close() sends RST, not FIN, so the client sees a reset connection.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.close_connection = True
            return
        try:
            resp = self._dispatch(h, method, path.rstrip("/") or "/", parse_qs(query, keep_blank_values=True))
        except _Abort as exc:
            resp = exc.resp
        except Exception as exc:  # a bug in the fake must surface as a 500, not a hung client
            resp = Resp(500, {"message": f"fake error: {exc!r}", "status": 500, "error_id": str(uuid.uuid4())})
        if resp is None:  # the client went away mid-body
            with self._lock:
                self._log(method, path, query, 0)
            h.close_connection = True
            return
        if isinstance(pre, _Rule):  # after_success: §7, e.g. a 504 although publish succeeded
            resp = self._fault(pre.status)
        self._send(h, method, path, query, resp)

    def _gate(self, method: str, path: str) -> Resp | _Rule | None:
        """Rate limiting and faults decided before processing; the caller holds the lock."""
        if self._rl:
            n, window = self._rl
            now = time.time()
            if now >= self._rl_start + window:
                self._rl_start, self._rl_count = now, 0
            if self._rl_count >= n:  # §4: 429 body seen as "100 per 1 minute"
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
                self.faults_injected += 1
                return rule if rule.after_success or rule.reset else self._fault(rule.status)
        return None

    def _fault(self, status: int) -> Resp:
        if status == 429:
            return Resp(429, {"status": 429, "message": "Too many requests."},
                        headers={"Retry-After": str(self.fault_retry_after)})
        if status == 500:  # §6: {message, status, error_id}
            return Resp(500, {"message": "The server encountered an internal error.", "status": 500,
                              "error_id": str(uuid.uuid4())})
        if status in (502, 503, 504):  # these come from the nginx in front, as HTML (§7)
            text = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Time-out"}[status]
            return Resp(status, f"<html><body><h1>{status} {text}</h1></body></html>".encode(), "text/html")
        return _err(status, "Injected fault.")

    def _log(self, method: str, path: str, query: str, status: int) -> None:
        # Headers (Authorization included) are never recorded; a query-string token is masked.
        self.requests.append((method, path, status))
        self.request_times.append(time.time())
        self.query_log.append(re.sub(r"(access_token=)[^&]*", r"\1REDACTED", query))

    def _send(self, h: _Handler, method: str, path: str, query: str, resp: Resp) -> None:
        body = resp.body
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body or b""
        if resp.status == 204:
            data = b""
        headers = dict(resp.headers)
        with self._lock:
            if self._rl:  # §4: X-RateLimit-* (Reset = epoch) on every response while limiting
                n, window = self._rl
                headers["X-RateLimit-Limit"] = str(n)
                headers["X-RateLimit-Remaining"] = str(max(0, n - self._rl_count))
                headers["X-RateLimit-Reset"] = str(int(self._rl_start + window))
                if self.retry_after_on_2xx:
                    headers.setdefault("Retry-After", str(int(window)))
            self._log(method, path, query, resp.status)  # before replying: tests see it at once
        if "Transfer-Encoding" in h.headers:  # chunked bodies are not decoded: drop the connection
            headers["Connection"] = "close"
        elif h.left:  # body left unread by an early error: drain it, or give up keep-alive
            while 0 < h.left <= DRAIN_LIMIT:
                chunk = h.rfile.read(min(CHUNK, h.left))
                h.left = h.left - len(chunk) if chunk else 0
            if h.left:
                headers["Connection"] = "close"
        h.send_response(resp.status)
        h.send_header("Content-Type", resp.ctype)
        h.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if data and method != "HEAD":
            h.wfile.write(data)

    def _owner(self, h: _Handler, query: dict) -> int:
        # §5: the real server also takes ?access_token=; this fake refuses it on purpose so
        # the client must use the Bearer header and tokens never land in URLs or logs.
        auth = h.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else None
        with self._lock:
            if "access_token" in query or token not in self.tokens:
                raise _Abort(_err(403, DENIED))  # §5: anonymous -> 403 (RT)
            return self.owners.get(token, 1)

    def _dispatch(self, h: _Handler, method: str, path: str, query: dict) -> Resp | None:
        for rx, methods in _ROUTES:
            if m := rx.fullmatch(path):
                break
        else:
            return _err(404, "Not found.")
        if method not in methods:
            return _err(405, "Method not allowed.")
        name, args = methods[method], m.groupdict()
        if name in _PUBLIC:  # anonymous, as a browser reads a published record
            return self._public_file(h, int(args["id"]), unquote(args["key"]), ranges=name == "record_file")
        owner = self._owner(h, query)
        if "key" in args:
            args["key"] = unquote(args["key"])
        if name == "bucket_put":
            return self._bucket_put(h, args["bucket"], args["key"], owner)
        if name == "post_file" and h.left > self.max_bytes:
            return _err(400, TOO_BIG)  # §4: judged on Content-Length, before reading the body
        body = h.rfile.read(h.left) if h.left else b""
        h.left = 0
        with self._lock:
            if "id" in args:
                args["dep"] = self._get(int(args.pop("id")), owner)
            elif "bucket" in args:
                args["dep"] = self._by_bucket(args.pop("bucket"), owner)
            if name in ("list", "create"):
                args["owner"] = owner
            return getattr(self, "_h_" + name)(body=body, query=query, ctype=h.headers.get("Content-Type", ""),
                                               **args)

    # ---- state helpers (the caller holds the lock) -------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _get(self, dep_id: int, owner: int) -> Deposition:
        dep = self.depositions.get(dep_id)
        if dep is None:
            raise _Abort(_err(404, NOT_FOUND))
        if dep.owner != owner:
            raise _Abort(_err(403, DENIED))
        return dep

    def _by_bucket(self, bucket: str, owner: int) -> Deposition:
        dep = next((d for d in self.depositions.values() if d.bucket == bucket), None)
        if dep is None:
            raise _Abort(_err(404, NOT_FOUND))
        return self._get(dep.id, owner)

    def _versions(self, dep: Deposition) -> list[Deposition]:
        return sorted((d for d in self.depositions.values() if d.concept_id == dep.concept_id),
                      key=lambda d: d.id)

    @staticmethod
    def _unlocked(dep: Deposition, published: Resp) -> None:
        """Files change only in a never-published draft: §3 locks them after publish and in edit mode."""
        if dep.state == "done":
            raise _Abort(published)
        if dep.state == "inprogress":
            raise _Abort(_err(403, DENIED))

    @staticmethod
    def _parse_metadata(body: bytes) -> dict:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            raise _Abort(_err(400, "The request body is not valid JSON.")) from None
        if not isinstance(data, dict) or not isinstance(data.get("metadata", {}), dict):
            raise _Abort(_invalid(("metadata", "Invalid input type.")))
        unknown = sorted(set(data) - {"metadata"})  # §1: unknown top-level keys -> 400 (unknown=RAISE)
        if unknown:
            raise _Abort(_invalid(*[(k, "Unknown field.") for k in unknown]))
        meta = copy.deepcopy(data.get("metadata", {}))
        meta.pop("prereserve_doi", None)  # output-only; tolerated so GET-modify-PUT works
        meta.setdefault("publication_date", _today())  # §6: defaults to today (R)
        return meta

    def _check_quota(self, dep: Deposition, key: str, size: int) -> None:
        # §4: a replace does not count towards the file limit; empty files are fine.
        if key not in dep.files and len(dep.files) >= self.max_files:
            raise _Abort(_err(400, TOO_MANY_FILES))
        if sum(f.size for k, f in dep.files.items() if k != key) + size > self.max_bytes:
            raise _Abort(_err(400, TOO_BIG))

    def _store(self, dep: Deposition, key: str, data: bytes, md5: str) -> StoredFile:
        self._check_quota(dep, key, len(data))
        dep.files.pop(key, None)  # §3: replace = delete, then upload; the file id changes
        f = dep.files[key] = StoredFile(str(uuid.uuid4()), key, data, md5)
        dep.modified = _now()
        return f

    # ---- JSON shapes (§2) --------------------------------------------------------------------
    def _dep_json(self, dep: Deposition, listing: bool = False) -> dict:
        api, own = self.url + "/api", f"{self.url}/api/deposit/depositions/{dep.id}"
        links = {"self": own, "html": f"{self.url}/uploads/{dep.id}", "files": own + "/files",
                 # §2: latest_draft is always the deposition's own URL, never a pending new version
                 "latest_draft": own, "latest_draft_html": f"{self.url}/uploads/{dep.id}",
                 **{a: f"{own}/actions/{a}" for a in ("publish", "edit", "discard", "newversion")}}
        if dep.state != "done" and not listing:  # spec 4: bucket on drafts only, never in list hits
            links["bucket"] = f"{api}/files/{dep.bucket}"
        if dep.submitted:
            latest = max(d.id for d in self._versions(dep) if d.submitted)
            links.update(record=f"{api}/records/{dep.id}", record_html=f"{self.url}/records/{dep.id}",
                         latest=f"{api}/records/{latest}", latest_html=f"{self.url}/records/{latest}")
        meta = copy.deepcopy(dep.metadata)
        meta["prereserve_doi"] = {"doi": f"10.5072/zenodo.{dep.id}", "recid": dep.id}
        if dep.doi:
            meta["doi"] = dep.doi
        return {"id": dep.id, "record_id": dep.id, "conceptrecid": str(dep.concept_id),
                "doi": dep.doi, "doi_url": f"https://doi.org/{dep.doi}" if dep.doi else "",
                "conceptdoi": f"10.5072/zenodo.{dep.concept_id}" if dep.submitted else "",
                "created": dep.created, "modified": dep.modified, "owner": dep.owner,
                "title": dep.metadata.get("title", ""), "metadata": meta, "state": dep.state,
                "submitted": dep.submitted, "files": [self._file_json(dep, f) for f in dep.files.values()],
                "links": links}

    def _file_json(self, dep: Deposition, f: StoredFile, as_float: bool = False) -> dict:
        api = self.url + "/api"
        part = "files" if dep.state == "done" else "draft/files"
        out = {"id": f.id, "filename": f.key,
               # §2: GET …/files (LegacyFileSchema) gives filesize as a float; files[] an int
               "filesize": float(f.size) if as_float else f.size,
               "checksum": f.md5,  # bare hex here; bucket responses say "md5:<hex>"
               "links": {"self": f"{api}/deposit/depositions/{dep.id}/files/{f.id}",
                         "download": f"{api}/records/{dep.id}/{part}/{quote(f.key)}/content"}}
        if self.listing_without_checksum:
            del out["checksum"]
        return out

    def _bucket_json(self, dep: Deposition, f: StoredFile) -> dict:
        obj = f"{self.url}/api/files/{dep.bucket}/{quote(f.key)}"
        return {"created": f.created, "updated": f.created, "version_id": f.id, "key": f.key,
                "size": f.size, "mimetype": "application/octet-stream", "checksum": "md5:" + f.md5,
                "is_head": True, "delete_marker": False,
                "links": {"self": obj, "version": f"{obj}?versionId={f.id}", "uploads": obj + "?uploads"}}

    # ---- depositions -------------------------------------------------------------------------
    def _h_list(self, owner: int, query: dict, **_) -> Resp:
        def arg(name: str, default: str = "") -> str:
            return query.get(name, [default])[-1]
        try:
            page, size = int(arg("page", "1")), int(arg("size", "25"))  # §1: default 25 (RR)
        except ValueError:
            return _invalid(("page", "Not a valid integer."))
        if page < 1 or not 1 <= size <= 100:  # §1: max 100 (D _list.md)
            return _invalid(("size", "Must be between 1 and 100.") if page >= 1 else ("page", "Must be at least 1."))
        # §1: DR calls it allversions, the docs all_versions; accept both.
        allv = any(arg(k).lower() in ("", "1", "true", "yes") for k in ("allversions", "all_versions")
                   if k in query)
        visible = [d for d in self.depositions.values() if d.owner == owner and not d.list_lag]
        for d in self.depositions.values():  # list_lag: every listing call ages the lag by one
            d.list_lag = max(0, d.list_lag - 1)
        hits = [d for d in visible if self._matches(d, arg("q"))]
        if not allv:  # only the newest version or draft per concept (DR AllVersionsParam)
            newest: dict[int, Deposition] = {}
            for d in hits:
                if d.concept_id not in newest or d.id > newest[d.concept_id].id:
                    newest[d.concept_id] = d
            hits = list(newest.values())
        hits.sort(key=lambda d: d.id, reverse=True)
        return Resp(200, [self._dep_json(d, listing=True) for d in hits[(page - 1) * size:page * size]])

    @staticmethod
    def _matches(dep: Deposition, q: str) -> bool:
        """Legacy q (§1): conceptrecid:N, recid:N, doi:X, title:"…"; any other term is free
        text looked up in title/description/notes/keywords. All terms must match."""
        md = dep.metadata
        exact = {"conceptrecid": str(dep.concept_id), "recid": str(dep.id), "doi": dep.doi.lower()}
        text = " ".join(str(md.get(k, "")) for k in ("title", "description", "notes", "keywords")).lower()
        for fld, fval, phrase, word in re.findall(r'(?:(\w+):("[^"]*"|\S+))|"([^"]*)"|(\S+)', q.lower()):
            fval = fval.strip('"')
            if fld in exact:
                ok = fval == exact[fld]
            elif fld == "title":
                ok = fval in str(md.get("title", "")).lower()
            else:
                term = f"{fld}:{fval}" if fld else (phrase or word)
                ok = term in ("and", "*") or term in text
            if not ok:
                return False
        return True

    def _h_create(self, owner: int, body: bytes, **_) -> Resp:
        meta = self._parse_metadata(body)
        concept = self._new_id()  # spec 1: one counter; the parent takes an id, so id = concept + 1
        dep = Deposition(self._new_id(), concept, owner, str(uuid.uuid4()), meta,
                         list_lag=1 if self.list_lag else 0)
        self.depositions[dep.id] = dep
        return Resp(201, self._dep_json(dep))

    def _h_read(self, dep: Deposition, **_) -> Resp:
        return Resp(200, self._dep_json(dep))  # §1: a published record is its own fallback

    def _h_update(self, dep: Deposition, body: bytes, **_) -> Resp:
        if dep.state == "done":
            return _err(404, NOT_FOUND)  # §1: published and not being edited -> 404 (RT)
        dep.metadata = self._parse_metadata(body)  # §1: replaced wholesale; may be incomplete
        dep.modified = _now()
        return Resp(200, self._dep_json(dep))

    def _h_delete(self, dep: Deposition, **_) -> Resp:
        if dep.submitted:
            return _err(404, NOT_FOUND)  # §1: published -> 404
        del self.depositions[dep.id]
        return Resp(204)  # §1: 204 (the docs say 201)

    # ---- files -------------------------------------------------------------------------------
    def _h_list_files(self, dep: Deposition, **_) -> Resp:
        return Resp(200, [self._file_json(dep, f, as_float=True) for f in dep.files.values()])

    def _h_get_file(self, dep: Deposition, fid: str, **_) -> Resp:
        f = next((f for f in dep.files.values() if f.id == fid), None)
        return Resp(200, self._file_json(dep, f, as_float=True)) if f else _err(404, NOT_FOUND)

    def _h_delete_file(self, dep: Deposition, fid: str, **_) -> Resp:
        f = next((f for f in dep.files.values() if f.id == fid), None)
        if f is None:
            return _err(404, NOT_FOUND)
        self._unlocked(dep, _err(403, DENIED))  # §3: DELETE on a published record -> 403 (RT)
        del dep.files[f.key]
        dep.modified = _now()
        return Resp(204)

    def _h_post_file(self, dep: Deposition, body: bytes, ctype: str, **_) -> Resp:
        self._unlocked(dep, _err(404, NOT_FOUND))  # §3: POST on a published record -> 404 (RT)
        if not ctype.startswith("multipart/form-data"):
            return _invalid(("file", REQUIRED))
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
        parts = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
        if "file" not in parts:
            return _invalid(("file", REQUIRED))
        name = (parts["name"].get_payload(decode=True).decode("utf-8", "replace").strip()
                if "name" in parts else parts["file"].get_filename() or "")
        key = secure_filename(name)  # §1: the legacy POST applies secure_filename
        if not key:
            return _invalid(("name", "Invalid file name."))
        data = parts["file"].get_payload(decode=True) or b""
        f = self._store(dep, key, data, hashlib.md5(data).hexdigest())
        return Resp(201, self._file_json(dep, f, as_float=True))

    def _bucket_put(self, h: _Handler, bucket: str, key: str, owner: int) -> Resp | None:
        """Streamed raw-body upload (§1, RR request_stream), read in chunks outside the lock."""
        with self._lock:
            dep = self._by_bucket(bucket, owner)
            self._unlocked(dep, _err(403, DENIED))
            if "/" in key:
                return _invalid(("key", "Invalid file name."))  # §4: flat records, no folders
            if "Content-Length" not in h.headers:
                return _err(411, "Length required.")
            # §4: count and size are judged on Content-Length, before a byte of the body is read
            self._check_quota(dep, key, h.left)
        md5, chunks, left = hashlib.md5(), [], h.left
        while left:
            chunk = h.rfile.read(min(CHUNK, left))
            if not chunk:
                return None  # the client gave up mid-body: nothing is stored
            md5.update(chunk)
            chunks.append(chunk)
            left -= len(chunk)
        h.left = 0
        with self._lock:
            dep = self._by_bucket(bucket, owner)  # it may have been discarded meanwhile
            self._unlocked(dep, _err(403, DENIED))
            body = self._bucket_json(dep, self._store(dep, key, b"".join(chunks), md5.hexdigest()))
            if self.upload_without_checksum:
                del body["checksum"]
            return Resp(201, body)

    def _h_bucket_list(self, dep: Deposition, **_) -> Resp:
        if self.bucket_list_500:
            return self._fault(500)
        return Resp(200, {"contents": [self._bucket_json(dep, f) for f in dep.files.values()]})

    def _h_bucket_get(self, dep: Deposition, key: str, **_) -> Resp:
        f = dep.files.get(key)
        return Resp(200, f.data, "application/octet-stream") if f else _err(404, NOT_FOUND)

    _h_download = _h_bucket_get

    def _public_file(self, h: _Handler, dep_id: int, key: str, ranges: bool) -> Resp:
        """A published record's file, anonymously (a draft has no public URL: 404). The two URLs behave as
        Zenodo's do (zenodo/zenodo#2593): the record URL (/records/<id>/files/<key>) answers Range with 206
        and sends no CORS headers; the API URL (/api/records/<id>/files/<key>/content) sends CORS headers and
        ignores Range (200, the whole file). ETag "md5:<hex>" as Zenodo sends it."""
        with self._lock:
            dep = self.depositions.get(dep_id)
            f = dep.files.get(key) if dep is not None and dep.submitted else None
        if f is None:
            return _err(404, NOT_FOUND)
        headers = {"ETag": f'"md5:{f.md5}"', "Content-Disposition": f"attachment; filename={quote(key)}"}
        if not ranges:
            if h.headers.get("Origin"):
                headers.update({"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": API_EXPOSE})
            return Resp(200, f.data, "application/octet-stream", headers)
        headers["Accept-Ranges"] = "bytes"
        m = _RANGE.match(h.headers.get("Range", ""))
        if m and (m.group(1) or m.group(2)):
            size = len(f.data)
            start = int(m.group(1)) if m.group(1) else max(0, size - int(m.group(2)))
            end = min(int(m.group(2)), size - 1) if m.group(1) and m.group(2) else size - 1
            if start >= size or start > end:
                return Resp(416, b"", "application/octet-stream", {"Content-Range": f"bytes */{size}"})
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return Resp(206, f.data[start:end + 1], "application/octet-stream", headers)
        return Resp(200, f.data, "application/octet-stream", headers)

    def _h_bucket_delete(self, dep: Deposition, key: str, **_) -> Resp:
        self._unlocked(dep, _err(403, DENIED))
        if key not in dep.files:
            return _err(404, NOT_FOUND)
        del dep.files[key]
        dep.modified = _now()
        if self.bucket_delete_500:  # §1 zr#1408: the file is gone, yet the answer is 500
            return self._fault(500)
        return Resp(204)

    # ---- actions -----------------------------------------------------------------------------
    def _h_action(self, dep: Deposition, action: str, **_) -> Resp:
        return getattr(self, "_" + action)(dep)

    def _publish(self, dep: Deposition) -> Resp:
        if dep.state == "done":
            return _err(404, NOT_FOUND)  # no draft left, e.g. a retry after a 504 that succeeded
        md, errors = dep.metadata, []
        if not dep.files:  # §3: DR refuses to publish without files
            errors.append(("files.enabled",
                           "Missing uploaded files. To disable files for this record please mark it as metadata-only."))
        title = md.get("title")
        if not isinstance(title, str) or not title.strip():
            errors.append(("metadata.title", REQUIRED))
        elif len(title.strip()) < 3:  # §6: at least 3 characters
            errors.append(("metadata.title", "Title must be at least 3 characters long."))
        creators = md.get("creators")
        if not isinstance(creators, list) or not creators:
            errors.append(("metadata.creators", REQUIRED))
        else:
            errors += [(f"metadata.creators.{i}.name", REQUIRED) for i, c in enumerate(creators)
                       if not isinstance(c, dict) or not str(c.get("name", "")).strip()]
        utype = md.get("upload_type")
        if not utype:
            errors.append(("metadata.upload_type", REQUIRED))
        elif utype in ("publication", "image") and not md.get(f"{utype}_type"):  # §6: + <type>_type
            errors.append((f"metadata.{utype}_type", REQUIRED))
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(md.get("publication_date", ""))):
            errors.append(("metadata.publication_date", "Not a valid date."))
        if errors:
            return _invalid(*errors)
        dep.state, dep.submitted, dep.saved_metadata = "done", True, None
        dep.doi = f"10.5072/zenodo.{dep.id}"  # the sandbox prefix (§5)
        dep.modified = _now()
        return Resp(202, self._dep_json(dep))  # §1: 202, same id as the draft

    def _edit(self, dep: Deposition) -> Resp:
        if dep.state == "done":
            dep.saved_metadata, dep.state, dep.modified = copy.deepcopy(dep.metadata), "inprogress", _now()
        return Resp(201, self._dep_json(dep))  # §1: idempotent, returns the existing draft

    def _discard(self, dep: Deposition) -> Resp:
        if dep.state == "done":
            return _err(404, NOT_FOUND)  # there is no draft to discard
        if dep.state == "inprogress":
            dep.metadata, dep.saved_metadata, dep.state = dep.saved_metadata, None, "done"
        else:
            del self.depositions[dep.id]
        return Resp(204)  # §1: 204, empty (the docs say 201 and a body)

    def _newversion(self, dep: Deposition) -> Resp:
        if not dep.submitted:
            return _err(404, NOT_FOUND)  # only a published record has versions
        versions = self._versions(dep)
        latest = max((d for d in versions if d.submitted), key=lambda d: d.id)
        draft = next((d for d in versions if not d.submitted), None)
        if draft is None:  # §3: metadata without version or DOI, publication_date today
            source = dep.saved_metadata if dep.state == "inprogress" else dep.metadata
            meta = {k: copy.deepcopy(v) for k, v in source.items() if k not in ("version", "doi")}
            meta["publication_date"] = _today()
            draft = Deposition(self._new_id(), dep.concept_id, dep.owner, str(uuid.uuid4()), meta,
                               list_lag=1 if self.list_lag else 0)
            self.depositions[draft.id] = draft
        elif draft.files:  # §3: the existing draft comes back and import_files reruns
            return _invalid(("files.enabled", "Please remove all files first."))
        for f in latest.files.values():  # §3: all files of the latest version, with new file ids
            draft.files[f.key] = StoredFile(str(uuid.uuid4()), f.key, f.data, f.md5)
        body = self._dep_json(draft)  # §1: the body is the NEW draft (the docs say the old one)
        if self.newversion_without_id:
            del body["id"], body["record_id"]
        return Resp(201, body)
