"""A small client for Zenodo's legacy deposit REST API: auth, errors, rate limits. No sync logic.

The token is only ever sent in the `Authorization: Bearer` header; it never
appears in a URL, a log line or an error message.
"""
from __future__ import annotations

import codecs
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import requests
import urllib3

from ... import __version__
from ...config import ZenodoConfig
from ...errors import AuthError, CartsyncError, RemoteError
from ...inventory import cache_dir
from ...retry import Timeouts, dns_failure, is_retryable, transient
from ..base import PROXY_HINT, proxy_for
from ..requests_drain import mount_draining
from .budget import RateBudget

log = logging.getLogger(__name__)

# requests' (and urllib3's, underneath) transport faults, for retry.is_retryable
transient(requests.exceptions.ConnectionError, requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError,
          urllib3.exceptions.ProtocolError, urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.IncompleteRead,
          never=(requests.exceptions.SSLError, urllib3.exceptions.SSLError))
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")     # printable ASCII, no spaces: what an HTTP header can carry


def _token_text(data: bytes) -> str:
    """A token file's text. Editors on Windows write a byte-order mark (UTF-8's, or UTF-16 for
    "Unicode"): it is not part of the token, so it is dropped rather than refused."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    return data.decode("utf-8-sig")


def read_token(cfg: ZenodoConfig) -> str:
    if cfg.token_file is not None:
        path = cfg.token_file
        try:
            mode = path.stat().st_mode
            token = _token_text(path.read_bytes()).strip()
        except FileNotFoundError:
            raise AuthError(f"Zenodo token file {path} does not exist",
                            "create it with the token from Zenodo's Applications settings, then chmod 600 it") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise AuthError(f"Zenodo token file {path} cannot be read ({type(exc).__name__})") from None
        if not token:
            raise AuthError(f"Zenodo token file {path} is empty", "put the token (one line) in it")
        if not _TOKEN_RE.fullmatch(token):
            # never echo it: the value goes nowhere but the Authorization header
            raise AuthError(f"Zenodo token file {path} holds characters a token cannot have (spaces, line breaks "
                            "or non-ASCII)", "put only the token, on one line, in it")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("Zenodo token file %s is readable by group/others; run: chmod 600 %s", path, path)
        return token
    token = os.environ.get(cfg.token_env, "").strip()
    if not token:
        raise AuthError(f"environment variable {cfg.token_env} is not set (it should hold the Zenodo token)",
                        "export it, or set zenodo.token_file in the manifest")
    if not _TOKEN_RE.fullmatch(token):
        raise AuthError(f"environment variable {cfg.token_env} holds characters a token cannot have (spaces, line "
                        "breaks or non-ASCII)", "set it to the token alone")
    return token


class _Reader:
    """A file wrapper that reports bytes as requests streams them (and keeps Content-Length known)."""

    def __init__(self, f: BinaryIO, size: int, progress: Callable[[int], None]) -> None:
        self.f, self.size, self.progress = f, size, progress

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n if n and n > 0 else 1 << 20)
        self.progress(len(data))
        return data


class ZenodoClient:
    def __init__(self, cfg: ZenodoConfig) -> None:
        self.base = cfg.url.rstrip("/") + "/api"
        self.session = requests.Session()
        mount_draining(self.session)       # a slow upload is timed from its last byte sent (sockets.py)
        token = read_token(cfg)
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.budget = RateBudget(cache_dir(), cfg.url, token)     # shared by this machine's processes
        # Zenodo throttles anonymous python-requests traffic; say who we are.
        self.session.headers["User-Agent"] = f"cartsync/{__version__} (+zenodo deposit sync)"
        self.session.trust_env = not cfg.url.startswith("http://127.0.0.1")
        self._pause_until = 0.0
        self.timeouts = Timeouts.from_env()

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.base + path

    def call(self, method: str, path: str, *, expect: tuple[int, ...] = (200, 201, 202, 204), **kwargs: Any) -> Any:
        """One request; returns parsed JSON (or None). Raises RemoteError/AuthError, classified.

        Every request, bucket PUTs included, is abandoned after the idle timeout without a byte
        (requests' read timeout is per read, so a long upload that keeps moving is not cut)."""
        wait = self._pause_until - time.monotonic()
        if wait > 0:
            if wait > 2:
                log.info("Zenodo rate limit reached: waiting %.0f s before %s", min(wait, 60), method)
            time.sleep(min(wait, 60))
        url = self.url(path)
        shown = f"{method} {url.split('?', 1)[0]}"
        self.budget.acquire()
        try:
            resp = self.session.request(method, url, timeout=(self.timeouts.connect, self.timeouts.idle), **kwargs)
        except requests.exceptions.ChunkedEncodingError:
            # the answer started and broke off (or was abandoned: CARTSYNC_ANSWER_TIMEOUT, sockets.py)
            raise RemoteError(f"{shown}: the answer broke off before its end (network)", retryable=True) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            gai = dns_failure(exc)
            if gai is not None:
                raise RemoteError(f"{shown}: cannot resolve the host name {urlsplit(url).hostname!r} ({gai.strerror})",
                                  "check zenodo.url and the network's DNS", retryable=is_retryable(gai)) from None
            if isinstance(exc, requests.exceptions.ProxyError):
                raise RemoteError(f"{shown}: cannot reach the proxy {proxy_for(url)}", PROXY_HINT,
                                  retryable=True) from None
            raise RemoteError(f"{shown}: {type(exc).__name__} (network)", retryable=True) from None
        except requests.exceptions.InvalidHeader:
            # its text would hold the header's value, i.e. the token: say nothing of it
            raise AuthError("the Zenodo token cannot be sent in an HTTP header", "check the token") from None
        self._note_rate_limit(resp)
        if resp.status_code in expect:
            if resp.status_code == 204 or not resp.content:
                return None
            try:
                return resp.json()
            except ValueError:
                if "html" in resp.headers.get("Content-Type", "").lower() or resp.content.lstrip()[:1] == b"<":
                    # a login page, a captive portal, a web site: asking again will not make it Zenodo
                    raise RemoteError(f"{self.base[:-4]} is not a Zenodo server: {shown} answered {resp.status_code} "
                                      "with an HTML page, not Zenodo's API (a login page or a captive portal?)",
                                      "check zenodo.url (https://zenodo.org or https://sandbox.zenodo.org), and "
                                      "whether this network needs a sign-in first") from None
                raise RemoteError(f"{shown}: answered {resp.status_code} with a body that is not JSON",
                                  retryable=True) from None
        raise self._error(shown, resp)

    def _note_rate_limit(self, resp: requests.Response) -> None:
        remaining, reset = resp.headers.get("X-RateLimit-Remaining"), resp.headers.get("X-RateLimit-Reset")
        if remaining == "0" and reset and reset.isdigit():
            self._pause_until = time.monotonic() + max(0.0, min(float(reset) - time.time(), 60.0))

    def _error(self, shown: str, resp: requests.Response) -> CartsyncError:
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = {}
        message = str(body.get("message") or resp.reason or "") if isinstance(body, dict) else ""
        details = []
        for err in (body.get("errors") or []) if isinstance(body, dict) else []:
            msgs = err.get("messages") or [err.get("message", "")]
            details.append(f"{err.get('field', '?')}: {'; '.join(str(m) for m in msgs)}")
        text = f"{shown}: {status} {message}".rstrip() + (f" ({', '.join(details)})" if details else "")
        if status in (401, 403):
            return AuthError(text, "check the Zenodo token (it needs the deposit:write and deposit:actions "
                             "scopes) and that the deposition belongs to its owner")
        retry_after = resp.headers.get("Retry-After")
        after = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
        if status == 429:
            return RemoteError(text, retryable=True, status=status, retry_after=after if after is not None else 5.0)
        return RemoteError(text, retryable=status >= 500 or status == 408, status=status)

    def put_file(self, bucket_url: str, key: str, path: Path, size: int,
                 progress: Callable[[int], None]) -> dict[str, Any]:
        from urllib.parse import quote
        with open(path, "rb") as f:
            return self.call("PUT", f"{bucket_url}/{quote(key)}", data=_Reader(f, size, progress),
                             headers={"Content-Type": "application/octet-stream"}, expect=(200, 201))

    def close(self) -> None:
        self.session.close()
