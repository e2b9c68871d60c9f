"""The public-side checks, each one anonymous request (or two) and one Finding.

catalog  GET the catalog: 200, parses as a YAML mapping, and its MD5 equals the local catalog's.
files    HEAD each file: 200 and Content-Length equal to the local size.
pmtiles  GET `Range: bytes=0-126`: 206, `Content-Range: bytes 0-126/<local size>`, the 127 bytes parse as a
         PMTiles v3 header (protomaps' `pmtiles` reader) whose root directory lies inside the file, no
         Content-Encoding, Content-Type application/vnd.pmtiles (octet-stream: a warning; viewers tolerate it).
cors     OPTIONS preflight as a browser sends it for a ranged fetch (Origin, Access-Control-Request-Method GET,
         Access-Control-Request-Headers range) must allow the origin, GET and Range; then a ranged GET with Origin
         must allow the origin and expose ETag and Content-Range (Content-Length: a warning, browsers expose it
         anyway as a CORS-safelisted response header).
"""
from __future__ import annotations

import hashlib

import yaml

from .model import Finding, Verdict, worst
from .web import Answer, request

CATALOG_LIMIT = 16 * 2**20
HEADER_LEN = 127                     # a PMTiles v3 header
PMTILES_TYPE = "application/vnd.pmtiles"
OCTET_TYPES = ("application/octet-stream", "binary/octet-stream")
APPLY = "run `cartsync apply` for this target (it sends what is missing or differs), then check again"


def _refused(check: str, subject: str, a: Answer, what: str) -> Finding:
    """A request that did not get the expected answer at all."""
    if a.status in (401, 403):
        return Finding(check, subject, Verdict.FAILED, f"{a.line}: anonymous {what} refused",
                       "allow anonymous reads of the dataset (see the bucket policy below)", a.status)
    if a.status == 404:
        return Finding(check, subject, Verdict.FAILED, f"{a.line}: not found at {a.url}", APPLY, a.status)
    if a.status == 0:
        return Finding(check, subject, Verdict.FAILED, a.line, "check the public URL (public_url:) and the network")
    return Finding(check, subject, Verdict.FAILED, f"{a.line}: {what} failed", "check the server's logs", a.status)


def catalog(url: str, subject: str, local_md5: str) -> Finding:
    a = request("GET", url, limit=CATALOG_LIMIT + 1)
    if a.status != 200:
        return _refused("catalog", subject, a, "read")
    if len(a.body) > CATALOG_LIMIT:
        return Finding("catalog", subject, Verdict.FAILED, f"{a.line}: larger than 16 MiB; not a catalog",
                       "check that the target's catalog.yaml is the dataset's catalog", a.status)
    problems, fixes = [], []
    try:
        data = yaml.safe_load(a.body)
        if not isinstance(data, dict):
            problems.append("is not a YAML mapping")
    except yaml.YAMLError as exc:
        problems.append(f"does not parse as YAML ({getattr(exc, 'problem', None) or 'invalid'})")
    remote_md5 = hashlib.md5(a.body).hexdigest()
    if remote_md5 != local_md5:
        problems.append(f"differs from the local catalog (md5 {remote_md5}, local {local_md5})")
        fixes.append(APPLY)
    encoding = a.header("content-encoding")
    if encoding and problems:
        problems.append(f"served with Content-Encoding: {encoding}")
    if problems:
        return Finding("catalog", subject, Verdict.FAILED, f"{a.line}; " + "; ".join(problems),
                       fixes[0] if fixes else "publish a valid catalog.yaml", a.status)
    return Finding("catalog", subject, Verdict.PASSED, f"{a.line}; parses; identical to the local catalog "
                   f"({len(a.body)} B)", status=a.status)


def file_present(url: str, subject: str, size: int) -> Finding:
    a = request("HEAD", url)
    if a.status != 200:
        return _refused("files", subject, a, "HEAD")
    length = a.header("content-length")
    if length != str(size):
        return Finding("files", subject, Verdict.FAILED, f"{a.line}; Content-Length: {length}, local size {size}",
                       APPLY, a.status)
    return Finding("files", subject, Verdict.PASSED, f"{a.line}; Content-Length: {length}", status=a.status)


def _header_problem(body: bytes, total: int) -> str | None:
    """None if `body` is a PMTiles v3 header whose root directory lies inside a file of `total` bytes."""
    from pmtiles.tile import (
        MagicNumberNotFound,
        SpecVersionUnsupported,
        deserialize_header,
    )
    if len(body) < HEADER_LEN:
        return f"only {len(body)} of the {HEADER_LEN} header bytes came back"
    try:
        h = deserialize_header(body[:HEADER_LEN])
    except MagicNumberNotFound:
        return "not a PMTiles file (no PMTiles magic in its first bytes)"
    except SpecVersionUnsupported:
        return f"PMTiles version {body[7]}, viewers read v3"
    except ValueError as exc:
        return f"the PMTiles header does not parse ({exc})"
    start, length = h["root_offset"], h["root_length"]
    if start < HEADER_LEN or start + length > total:
        return f"root directory at {start}+{length} lies outside the {total} B file (truncated or corrupt)"
    return None


def pmtiles(url: str, subject: str, size: int, want_type: bool = True) -> Finding:
    last = min(size, HEADER_LEN) - 1
    a = request("GET", url, {"Range": f"bytes=0-{last}"}, limit=HEADER_LEN)
    if a.status not in (200, 206):
        return _refused("pmtiles", subject, a, "ranged GET")
    bad: list[tuple[Verdict, str, str]] = []       # (verdict, problem, fix)
    seen = [a.line]
    if a.status == 200:
        bad.append((Verdict.FAILED, "the server ignored Range (200 with the whole file)",
                    "serve the files from a store that answers HTTP Range requests (S3, GCS, R2 do; a CDN or "
                    "proxy in front must pass Range through)"))
    else:
        got, want = a.header("content-range"), f"bytes 0-{last}/{size}"
        seen.append(f"Content-Range: {got}")
        if got != want:
            bad.append((Verdict.FAILED, f"expected Content-Range: {want}", APPLY))
    encoding = a.header("content-encoding")
    if encoding and encoding.lower() != "identity":
        bad.append((Verdict.FAILED, f"Content-Encoding: {encoding} (range reads need the bytes as stored)",
                    "serve .pmtiles without Content-Encoding (S3: no ContentEncoding for *.pmtiles in the target's "
                    "headers, then apply; a web server or CDN: no compression for .pmtiles)"))
    total = size
    if a.status == 206 and "/" in (a.header("content-range") or ""):
        tail = (a.header("content-range") or "").rsplit("/", 1)[1]
        total = int(tail) if tail.isdigit() else size
    problem = _header_problem(a.body, total)
    if problem:
        bad.append((Verdict.FAILED, problem, APPLY))
    else:
        seen.append("PMTiles v3 header, root directory inside the file")
    ctype = (a.header("content-type") or "").split(";", 1)[0].strip().lower()
    if want_type:
        seen.append(f"Content-Type: {ctype or '(none)'}")
        if ctype != PMTILES_TYPE:
            tolerated = ctype in OCTET_TYPES
            bad.append((Verdict.WARNING, f"Content-Type {ctype or '(none)'}, not {PMTILES_TYPE}"
                        + (" (viewers tolerate it)" if tolerated else ""),
                        f"set Content-Type {PMTILES_TYPE} (cartsync sets it on S3 uploads; re-run apply)"))
    verdict = worst([v for v, _, _ in bad])
    evidence = "; ".join(seen + [p for _, p, _ in bad])
    fix = "; and ".join(dict.fromkeys(f for v, _, f in bad if v is verdict))
    return Finding("pmtiles", subject, verdict, evidence, fix, a.status)


def _listed(value: str | None, wanted: str) -> bool:
    items = [v.strip().lower() for v in (value or "").split(",")]
    return wanted.lower() in items or "*" in items


def _origin_ok(a: Answer, origin: str) -> str | None:
    allow = a.header("access-control-allow-origin")
    if allow is None:
        return "no Access-Control-Allow-Origin"
    if allow not in ("*", origin):
        return f"Access-Control-Allow-Origin: {allow} (not {origin})"
    return None


CORS_FIX = "set the CORS rule below"


def cors(url: str, subject: str, origin: str) -> list[Finding]:
    pre = request("OPTIONS", url, {"Origin": origin, "Access-Control-Request-Method": "GET",
                                   "Access-Control-Request-Headers": "range"})
    problems = []
    if not 200 <= pre.status < 300:
        problems.append("preflight refused" if pre.status else "no answer")
    else:
        problems += filter(None, [_origin_ok(pre, origin)])
        methods = pre.header("access-control-allow-methods")
        if methods is not None and not _listed(methods, "GET"):
            problems.append(f"Access-Control-Allow-Methods: {methods} (no GET)")
        if not _listed(pre.header("access-control-allow-headers"), "range"):
            problems.append("Access-Control-Allow-Headers does not allow Range")
    shown = ", ".join(f"{h}: {pre.header(h)}" for h in ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods",
                                                           "Access-Control-Allow-Headers") if pre.header(h) is not None)
    evidence = f"{pre.line} for Origin {origin}" + (f"; {shown}" if shown else "")
    out = [Finding("cors", f"preflight {subject}", Verdict.FAILED if problems else Verdict.PASSED,
                   "; ".join([evidence] + problems), CORS_FIX if problems else "", pre.status)]
    got = request("GET", url, {"Origin": origin, "Range": f"bytes=0-{HEADER_LEN - 1}"}, limit=HEADER_LEN)
    expose = got.header("access-control-expose-headers")
    if got.status in (200, 206):
        failed = list(filter(None, [_origin_ok(got, origin)]))
        failed += [f"{h} not exposed" for h in ("ETag", "Content-Range") if not _listed(expose, h)]
        warned = [] if _listed(expose, "Content-Length") else ["Content-Length not exposed (browsers expose it anyway)"]
    else:
        failed, warned = ["no answer to judge" if not got.status else "the GET itself was refused"], []
    verdict = Verdict.FAILED if failed else (Verdict.WARNING if warned else Verdict.PASSED)
    evidence = f"{got.line} with Origin; Access-Control-Expose-Headers: {expose if expose is not None else '(none)'}"
    out.append(Finding("cors", f"ranged GET {subject}", verdict, "; ".join([evidence] + failed + warned),
                       CORS_FIX if verdict is not Verdict.PASSED else "", got.status))
    return out
