"""The S3 client: botocore's, built as s3fs would build it, with cartsync's timeouts and retry policy;
the one place botocore's errors are translated; the Content-Type of a key.

Worker threads call botocore's client directly (see botocore_client); its connections wait for an upload's
body to leave the machine before they time the answer (sockets.py).
"""
from __future__ import annotations

import logging
import mimetypes
from collections.abc import Mapping
from typing import Any

from ...retry import Timeouts, transient
from ..sockets import draining_pools

log = logging.getLogger(__name__)

CONTENT_TYPES = {
    ".pmtiles": "application/vnd.pmtiles", ".yaml": "application/yaml", ".yml": "application/yaml",
    ".json": "application/json", ".tsv": "text/tab-separated-values", ".csv": "text/csv",
    ".png": "image/png", ".gz": "application/gzip", ".txt": "text/plain", ".html": "text/html",
    ".parquet": "application/vnd.apache.parquet", ".tif": "image/tiff", ".tiff": "image/tiff",
}


def content_type(key: str) -> str:
    name = key.rsplit("/", 1)[-1].lower()
    for ext, ctype in CONTENT_TYPES.items():
        if name.endswith(ext):
            return ctype
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def s3fs_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Manifest storage_options → s3fs arguments, with cartsync's retry and timeout defaults."""
    opts = dict(options)
    client_kwargs = dict(opts.pop("client_kwargs", {}) or {})
    if "region" in opts:
        client_kwargs.setdefault("region_name", opts.pop("region"))
    config_kwargs = dict(opts.pop("config_kwargs", {}) or {})
    timeouts = Timeouts.from_env()      # a silent server is abandoned after `idle` s; the retry budget ends the run
    config_kwargs.setdefault("connect_timeout", timeouts.connect)
    config_kwargs.setdefault("read_timeout", timeouts.idle)
    # cartsync's own retry policy is the one place that retries (and counts); botocore and s3fs try once.
    config_kwargs.setdefault("retries", {"total_max_attempts": 1, "mode": "standard"})
    # integrity comes from Content-MD5 (checked by the server) and the ETag; botocore's extra CRC32 pass
    # over every body costs CPU and a copy of each part in memory
    config_kwargs.setdefault("request_checksum_calculation", "when_required")
    config_kwargs.setdefault("response_checksum_validation", "when_required")
    opts["client_kwargs"], opts["config_kwargs"] = client_kwargs, config_kwargs
    return opts


# storage_options translated to a botocore client exactly as s3fs would; any other key keeps s3fs
BOTOCORE_OPTIONS = {"profile", "endpoint_url", "region", "anon", "requester_pays", "client_kwargs", "config_kwargs"}
_MISSING = {"NoSuchKey", "NoSuchUpload", "NoSuchBucket", "404", "NotFound"}
_DENIED = {"AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidAccessKeyId", "SignatureDoesNotMatch",
           "ExpiredToken", "InvalidSecurity", "InvalidPayer", "403"}


def botocore_client(options: Mapping[str, Any], pool: int) -> Any | None:
    """A thread-safe botocore S3 client for these storage_options, or None where only s3fs can honour them.

    Worker threads call it directly: s3fs would funnel every call through its one event-loop thread,
    which costs about half of cartsync's CPU time in a first sync of many small files.
    """
    if set(options) - BOTOCORE_OPTIONS:
        return None
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config
    opts = s3fs_options(options)
    client_kwargs = dict(opts["client_kwargs"])
    config_kwargs = {"max_pool_connections": pool, **opts["config_kwargs"]}
    # Every data body (PutObject, UploadPart) carries Content-MD5, signed and checked by the server. botocore
    # skips the SHA-256 payload hash for that case on https; on plain http (MinIO or Ceph on a cluster
    # network) it would hash every byte once more.
    config_kwargs.setdefault("s3", {"payload_signing_enabled": False})
    if opts.get("anon"):
        config_kwargs["signature_version"] = UNSIGNED
    if opts.get("endpoint_url"):
        client_kwargs.setdefault("endpoint_url", opts["endpoint_url"])
    declare_transient_botocore()
    session = botocore.session.Session(profile=opts.get("profile"))
    client = session.create_client("s3", config=Config(**config_kwargs), **client_kwargs)
    _time_answers_from_the_last_byte_sent(client)
    client.meta.events.register("before-send.s3", _no_continue_for_small_bodies)
    return client


CONTINUE_ABOVE = 2 * 1024 * 1024


def _no_continue_for_small_bodies(request: Any, **_: Any) -> None:
    """botocore asks for `100 Continue` before every file body (PutObject, UploadPart): the body waits a
    round trip, and the server writes an answer of its own first (~4% of moto's time per small PUT). That
    wait pays only where a large body would be refused (a denial, a redirect) before it is sent: the AWS SDK
    for Go asks above 2 MB only, and so does cartsync. `Expect` is not signed (botocore's
    SIGNED_HEADERS_BLACKLIST), so dropping it here, after signing, changes nothing else."""
    headers = getattr(request, "headers", None)
    if headers is None or headers.get("Expect") is None:
        return
    try:
        length = int(headers.get("Content-Length", ""))
    except ValueError:
        return
    if length <= CONTINUE_ABOVE:
        del headers["Expect"]


def _time_answers_from_the_last_byte_sent(client: Any) -> None:
    """Give the client's connections the wait of sockets.py. botocore has no option for its connection
    classes: they are the pool classes its URLLib3Session hands to urllib3 (one dict, shared with its
    proxy managers), replaced here before the first request. Where a botocore version lays this out
    otherwise, the client stays as it is (answers timed from the last byte handed to the kernel)."""
    session = getattr(getattr(client, "_endpoint", None), "http_session", None)
    pools = getattr(session, "_pool_classes_by_scheme", None)
    if not isinstance(pools, dict) or set(pools) != {"http", "https"}:
        log.debug("botocore's connection pools are not where cartsync expects them: slow uploads are timed "
                  "from the last byte written")
        return
    pools.update(draining_pools(pools))


def declare_transient_botocore() -> None:
    """botocore's (and urllib3's, underneath) transport faults, for retry.is_retryable."""
    from botocore import exceptions as bce
    from urllib3 import exceptions as u3
    transient(bce.EndpointConnectionError, bce.ConnectionClosedError, bce.ReadTimeoutError, bce.ConnectTimeoutError,
              bce.ResponseStreamingError, bce.IncompleteReadError, bce.ProxyConnectionError, bce.ConnectionError,
              u3.ProtocolError, u3.ReadTimeoutError, u3.ConnectTimeoutError, u3.IncompleteRead, u3.ProxyError,
              never=(bce.SSLError, u3.SSLError))


def declare_transient_aiohttp() -> None:
    """s3fs's transport (aiohttp, through aiobotocore) faults, for retry.is_retryable."""
    import aiohttp
    declare_transient_botocore()
    transient(aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError,
              aiohttp.ServerTimeoutError, aiohttp.ClientConnectorError,
              never=(aiohttp.ClientSSLError,))


def translated(exc: Exception) -> Exception:
    """botocore's ClientError as the OSError s3fs would raise (denied, missing), else as is."""
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    if code in _DENIED:
        return PermissionError(f"{code}: {exc}")
    if code in _MISSING:
        return FileNotFoundError(f"{code}: {exc}")
    return exc
