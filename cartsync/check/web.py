"""Anonymous HTTP as a browser does it: plain requests, no credentials, bounded waits, bodies read only as far
as a check needs (a server that ignores Range must not make us download a 300 MB file).

No credential is ever sent: the session's `auth` is a no-op, which also keeps requests from reading ~/.netrc;
cookies are not kept. Proxies from the environment are honoured except for loopback hosts.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from .. import __version__

TIMEOUT = (10, 30)          # connect, read: a silent server costs a check half a minute, not hours
_local = threading.local()


class _NoAuth(requests.auth.AuthBase):
    """Anonymous on purpose: drops any Authorization header and stops requests' netrc lookup."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers.pop("Authorization", None)
        return r


@dataclass(frozen=True)
class Answer:
    """What came back: status, headers (lower-case names), the first bytes of the body as sent (no decoding)."""

    method: str
    url: str
    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes = b""
    error: str = ""             # a network failure instead of an answer (status 0)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def line(self) -> str:
        """The evidence: `GET 206 Partial Content` or the network error."""
        return f"{self.method} {self.error}" if self.error else f"{self.method} {self.status} {self.reason}".rstrip()


def _session(loopback: bool) -> requests.Session:
    name = "loop" if loopback else "net"
    s = getattr(_local, name, None)
    if s is None:
        s = requests.Session()
        s.auth = _NoAuth()
        s.trust_env = not loopback
        s.headers["User-Agent"] = f"cartsync/{__version__} (check)"
        setattr(_local, name, s)
    return s


def request(method: str, url: str, headers: Mapping[str, str] | None = None, limit: int = 0) -> Answer:
    """One anonymous request; reads at most `limit` body bytes. Network errors become an Answer with status 0."""
    host = urlsplit(url).hostname or ""
    session = _session(host in ("127.0.0.1", "localhost", "::1"))
    try:
        with session.request(method, url, headers=dict(headers or {}), timeout=TIMEOUT, stream=True,
                             allow_redirects=True) as resp:
            body = resp.raw.read(limit, decode_content=False) if limit and method != "HEAD" else b""
            session.cookies.clear()
            return Answer(method, url, resp.status_code, resp.reason or "",
                          {k.lower(): v for k, v in resp.headers.items()}, body or b"")
    except requests.RequestException as exc:
        return Answer(method, url, 0, "", {}, error=f"{type(exc).__name__} (no answer: {_why(exc)})")


def _why(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.Timeout):
        return f"timed out after {TIMEOUT[1]} s"
    if isinstance(exc, requests.ConnectionError):
        return "cannot connect"
    return "request failed"


def bucket_region(bucket_url: str) -> str | None:
    """The region S3 names for a bucket (`x-amz-bucket-region`, sent even with a 403), or None."""
    answer = request("HEAD", bucket_url)
    return answer.header("x-amz-bucket-region")
