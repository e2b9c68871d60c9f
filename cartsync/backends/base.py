"""The interface every target implements. Small required core; optional abilities as flags.

Contract (checked by tests/test_contract.py against every backend):
- `list()` reads the whole target once and never writes.
- `upload()` leaves exactly one file at the key with the local content, or raises.
- only the executor calls the write methods (`begin`, `upload`, `update_headers`, `delete`, `finish`).
"""
from __future__ import annotations

import ssl
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from ..config import TargetConfig
from ..errors import CartsyncError, RemoteError
from ..inventory import HashCache
from ..model import Action, Change, KeyRange, LocalFile, Plan, RemoteFile, Report
from ..retry import RetryPolicy, dns_failure, is_retryable

Progress = Callable[[int], None]
T = TypeVar("T")


@dataclass(frozen=True)
class Features:
    flat: bool = False               # keys cannot hold folders (Zenodo); keys are mapped to base names
    max_files: int | None = None     # most files a target may hold
    max_bytes: int | None = None     # most bytes a target may hold
    folders: bool = False            # a real folder tree (local): a file and a folder cannot share a name
    max_key_bytes: int | None = None # longest key (prefix included, UTF-8) the store accepts


class Backend(ABC):
    features = Features()
    # True: finish() only tidies up (e.g. aborts stale multipart uploads), so if it fails after every
    # transfer succeeded the run reports the transfers and warns. False: finish() is part of the job.
    finish_is_cleanup = True

    def __init__(self, target: TargetConfig, cache: HashCache) -> None:
        self.target = target
        self.cache = cache
        self.policy = RetryPolicy.from_env()
        self.retries = 0          # retries of the backend's own calls (listing, lifecycle, parts), for the report
        self._count_lock = threading.Lock()

    def retrying(self, fn: Callable[[], T]) -> T:
        """Run one remote call under the shared retry policy, counting retries."""
        def counted(exc: BaseException) -> None:
            with self._count_lock:      # transfer threads retry their calls concurrently
                self.retries += 1
        return self.policy.call(fn, counted, what=f"target {self.target.name}")

    @property
    def url(self) -> str:
        """Where the target is, for humans (never holds a secret)."""
        return self.target.url

    @classmethod
    def map_keys(cls, target: TargetConfig, keys: list[str]) -> dict[str, str]:
        """Source key → target key. Default: identity. Raise PlanError on a clash. No I/O."""
        return {k: k for k in keys}

    @abstractmethod
    def listing(self, within: KeyRange | None = None) -> dict[str, RemoteFile]:
        """Every file under the target, keyed by relative key, from one (paginated) listing.

        `within`: the caller needs only keys in that range (a shard's datasets); a backend may list just
        that range (S3 does) or everything (the planner ignores keys outside its scope).
        A target that does not exist yet lists as empty. Never writes.
        """

    def resolve(self, remote: dict[str, RemoteFile], local: Mapping[str, LocalFile]) -> dict[str, RemoteFile]:
        """Fill `md5` for remote files whose listing lacks it, where a local file of the same key and size
        exists (e.g. hash a local-folder target, or match a multipart ETag). Never writes."""
        return remote

    def wanted_headers(self, local: Mapping[str, LocalFile]) -> dict[str, dict[str, str]]:
        """key → the headers each file should have, for targets that compare headers (S3; the listed side
        is `RemoteFile.headers`, filled by `resolve`). Default: none compared. Never writes."""
        return {}

    def plan_changes(self, plan: Plan) -> tuple[Change, ...]:
        """Non-file changes apply would make (Zenodo: deposition, metadata, publish). Never writes."""
        return ()

    def begin(self, plan: Plan) -> list[Change]:
        """Prepare for writes (e.g. create a draft); called once before any upload."""
        return []

    @abstractmethod
    def upload(self, local: LocalFile, key: str, progress: Progress) -> RemoteFile:
        """Write `local` to `key` (replacing any file there), stream it, and verify it against what the
        store reports. Raise VerifyError on a checksum/size mismatch, RemoteError otherwise."""

    def update_headers(self, action: Action) -> None:
        """Kind.HEADERS: give the object at `action.key` the wanted headers without sending its bytes.
        Only planned by targets whose `wanted_headers` returns something."""
        raise NotImplementedError(f"{type(self).__name__} plans no header changes")

    @abstractmethod
    def delete(self, remote: RemoteFile) -> None:
        """Remove one file. Only called for keys inside the target, after every upload succeeded."""

    def interrupted(self) -> None:  # noqa: B027 — optional: most backends have nothing to abort
        """Ctrl-C during the transfers: abort what this run left open (called once, from another thread,
        while transfers may still run, shortly before the process exits). Default: nothing to do."""

    def finish(self, report: Report, ok: bool) -> list[Change]:
        """Called once after all transfers (Zenodo: publish when asked and ok)."""
        return []

    def close(self) -> None:  # noqa: B027 — optional: a backend without connections has nothing to release
        """Release connections."""


_CONNECT_ERRORS = {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionRefusedError",
                   "ConnectionError", "ConnectTimeout"}


def proxy_for(url: str) -> str:
    """host:port of the proxy the environment sets for `url` (never its user or password)."""
    from urllib.request import getproxies
    proxy = getproxies().get(urlsplit(url).scheme or "https", "")
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


PROXY_HINT = "check HTTPS_PROXY / HTTP_PROXY (and NO_PROXY) in the environment, or unset them"


def unreachable(backend: Backend, exc: BaseException) -> BaseException:
    """After the retries: a network failure as one message that says where and what to check."""
    where = backend.target.storage_options.get("endpoint_url") or backend.url
    if isinstance(exc, ssl.SSLError) or type(exc).__name__ == "SSLError":
        return RemoteError(f"target {backend.target.name}: TLS connection to {where} failed: {exc}",
                           "check the endpoint_url (https vs http); for a private CA set AWS_CA_BUNDLE")
    tries = backend.policy.attempts
    gai = dns_failure(exc)
    if gai is not None:
        host = urlsplit(where).hostname if "://" in where else where
        again = f"; tried {tries} times" if is_retryable(gai) else ""
        return RemoteError(f"target {backend.target.name}: cannot resolve the host name {host!r} "
                           f"({gai.strerror}{again})",
                           "check the host in storage_options.endpoint_url (or the url), and the network's DNS")
    if "Proxy" in type(exc).__name__:
        return RemoteError(f"target {backend.target.name}: cannot reach the proxy {proxy_for(where)} on the way to "
                           f"{where} (tried {tries} times)", PROXY_HINT)
    if not is_retryable(exc) or (isinstance(exc, CartsyncError) and not isinstance(exc, RemoteError)):
        return exc
    if type(exc).__name__ in _CONNECT_ERRORS or isinstance(exc, ConnectionError):
        return RemoteError(f"target {backend.target.name}: cannot connect to {where} (tried {tries} times)",
                           "check storage_options.endpoint_url, the network and proxy settings")
    last = str(exc) if isinstance(exc, CartsyncError) else f"{type(exc).__name__}: {exc}"
    return RemoteError(f"target {backend.target.name}: listing {backend.url} failed {tries} times, last: {last}",
                       "re-run later; the store may be overloaded")
