"""ListObjectsV2 over plain HTTP(S): the listing every plan starts with, without botocore's start-up.

A no-op re-run is one listing; through s3fs it paid ~0.3 s of imports and client set-up before the
first byte went out. This module signs with AWS Signature V4 itself (tests check every header
against botocore's signer) and parses the XML with ElementTree.

It is used only where it does exactly what botocore would: static credentials from the environment
(or anon), a known region, no proxy, no client/config options. `endpoint_for` returns None
otherwise, and the listing goes through s3fs/botocore as before. Any answer it does not expect
(a redirect, a region or signature complaint) also falls back to botocore (`Fallback`), so errors
read the same whichever path listed.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import os
import re
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]
from xml.etree import ElementTree

from ..errors import AuthError, RemoteError
from ..retry import Timeouts

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# environment settings that change how botocore reaches S3: with any of them set, botocore lists
_ENV_CHANGES_ENDPOINT = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_USE_FIPS_ENDPOINT",
                         "AWS_USE_DUALSTACK_ENDPOINT", "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT")
_OPTION_KEYS = {"endpoint_url", "region", "anon", "client_kwargs"}


class Fallback(Exception):
    """The fast path cannot answer this as botocore would: list through botocore instead."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = field(repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Endpoint:
    scheme: str               # http | https
    netloc: str               # host[:port], also the Host header
    bucket_path: str          # "/bucket" (path style) or "" (virtual-hosted)
    region: str
    creds: Credentials | None = field(repr=False)   # None: anonymous
    cafile: str | None = None


def env_credentials(env: Mapping[str, str]) -> Credentials | None:
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return None
    # botocore's EnvProvider looks at AWS_SECURITY_TOKEN first
    return Credentials(key, secret, env.get("AWS_SECURITY_TOKEN") or env.get("AWS_SESSION_TOKEN") or None)


# settings of the active profile in the AWS config file that change nothing here (credentials come from
# the environment, which botocore prefers over the profile's); any other key (endpoint_url, ca_bundle,
# s3 = …, services, use_fips_endpoint …) leaves the listing to botocore
_CONFIG_KEYS_HARMLESS = {
    "region", "output", "retry_mode", "max_attempts", "parameter_validation", "tcp_keepalive",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "role_arn", "source_profile",
    "credential_source", "credential_process", "role_session_name", "external_id", "mfa_serial",
    "duration_seconds", "web_identity_token_file", "sso_session", "sso_account_id", "sso_role_name",
    "sso_region", "sso_start_url", "sso_registration_scopes", "metadata_service_timeout",
    "metadata_service_num_attempts", "cli_pager", "cli_history", "cli_timestamp_format", "cli_binary_format",
    "cli_auto_prompt", "cli_follow_urlparam",
}


def config_profile(env: Mapping[str, str]) -> dict[str, str] | None:
    """The active profile's settings in the AWS config file ({} without one); None if it cannot be read."""
    path = env.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
    if not os.path.exists(path):
        return {}
    import configparser
    parser = configparser.RawConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None
    name = env.get("AWS_DEFAULT_PROFILE") or env.get("AWS_PROFILE") or "default"    # botocore's order
    for section in ([f"profile {name}"] if name != "default" else ["default", "profile default"]):
        if parser.has_section(section):
            return dict(parser.items(section))
    return {}


def endpoint_for(options: Mapping[str, Any], bucket: str, env: Mapping[str, str] = os.environ) -> Endpoint | None:
    """Where to list `bucket` with these storage_options, or None where botocore must do it."""
    client_kwargs = options.get("client_kwargs") or {}
    if set(options) - _OPTION_KEYS or not isinstance(client_kwargs, dict) \
            or set(client_kwargs) - {"region_name", "endpoint_url"}:
        return None
    if any(env.get(name) for name in _ENV_CHANGES_ENDPOINT):
        return None
    anon = options.get("anon") is True
    creds = None if anon else env_credentials(env)
    if creds is None and not anon:
        return None
    profile = config_profile(env)
    if profile is None or set(profile) - _CONFIG_KEYS_HARMLESS:
        return None
    endpoint = options.get("endpoint_url") or client_kwargs.get("endpoint_url")
    # botocore's order: the client's region (s3fs puts `region` there unless client_kwargs has one),
    # then AWS_DEFAULT_REGION, then the profile
    region = (client_kwargs.get("region_name") or options.get("region") or env.get("AWS_DEFAULT_REGION")
              or profile.get("region"))
    if endpoint:
        parts = urlsplit(str(endpoint))
        if parts.scheme not in ("http", "https") or not parts.hostname or ":" in parts.hostname \
                or parts.path not in ("", "/") or parts.query or parts.username or parts.password:
            return None
        # http.client leaves a default port out of the Host header, and the signature must match it
        default_port = 443 if parts.scheme == "https" else 80
        netloc = parts.hostname if parts.port in (None, default_port) else f"{parts.hostname}:{parts.port}"
        scheme, bucket_path = parts.scheme, f"/{bucket}"
        region = region or "us-east-1"        # what botocore signs with for an endpoint and no region
    else:
        if not region or region.startswith("cn-") or not _DNS_BUCKET.match(bucket):
            return None
        scheme, netloc, bucket_path = "https", f"{bucket}.s3.{region}.amazonaws.com", ""
    if getproxies_environment().get(scheme) and not proxy_bypass_environment(netloc.rsplit(":", 1)[0]):
        return None
    return Endpoint(scheme, netloc, bucket_path, str(region), creds, env.get("AWS_CA_BUNDLE") or None)


def _quote(text: str, safe: str = "-_.~") -> str:
    return quote(text, safe=safe)


def canonical_query(query: Mapping[str, str]) -> str:
    return "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(query.items()))


def sign_v4(method: str, ep: Endpoint, path: str, query: Mapping[str, str],
            now: datetime.datetime) -> dict[str, str]:
    """Headers for an unsigned-body request (GET), signed with AWS Signature V4 for service s3."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    headers = {"host": ep.netloc, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": amz_date}
    if ep.creds is None:
        return headers
    if ep.creds.token:
        headers["x-amz-security-token"] = ep.creds.token
    names = sorted(headers)
    canonical = "\n".join([method, _quote(path, "/-_.~"), canonical_query(query),
                           "".join(f"{n}:{headers[n].strip()}\n" for n in names), ";".join(names), EMPTY_SHA256])
    scope = f"{amz_date[:8]}/{ep.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + ep.creds.secret_key).encode()
    for part in (amz_date[:8], ep.region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={ep.creds.access_key}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return headers


def _error_code(body: bytes) -> str:
    try:
        return ElementTree.fromstring(body).findtext("Code") or ""
    except ElementTree.ParseError:
        return ""


def not_s3(where: str) -> RemoteError:
    """A 200 answer that is not an S3 listing: a captive portal, a login page, another service. Not retried."""
    return RemoteError(f"{where} is not an S3 server: it answered the listing with something else (a captive "
                       "portal or a login page?)", "check storage_options.endpoint_url, and whether this network "
                       "needs a sign-in first")


class Lister:
    """One connection, reused across the pages of one listing."""

    def __init__(self, ep: Endpoint, connect_timeout: float | None = None, read_timeout: float | None = None) -> None:
        self.ep = ep     # by default the same timeouts as botocore's (s3.s3fs_options): idle = read
        timeouts = Timeouts.from_env()
        self.connect_timeout = timeouts.connect if connect_timeout is None else connect_timeout
        self.read_timeout = timeouts.idle if read_timeout is None else read_timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.ep.scheme == "https":
                ctx = ssl.create_default_context(cafile=self.ep.cafile or _default_cafile())
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    self.ep.netloc, timeout=self.connect_timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(self.ep.netloc, timeout=self.connect_timeout)
            conn.connect()       # (TLS handshake included) within the connect timeout; reads get longer
            assert conn.sock is not None
            conn.sock.settimeout(self.read_timeout)
            self._conn = conn
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _get(self, query: dict[str, str]) -> bytes:
        path = self.ep.bucket_path or "/"
        headers = sign_v4("GET", self.ep, path, query, datetime.datetime.now(datetime.timezone.utc))
        headers.pop("host")
        headers["User-Agent"] = "cartsync-list"
        try:
            conn = self._connection()
            conn.request("GET", f"{_quote(path, '/-_.~')}?{canonical_query(query)}", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except BaseException:
            self.close()     # a half-read answer poisons the connection
            raise
        if resp.status == 200:
            return body
        code = _error_code(body)
        if resp.status == 404 and code == "NoSuchBucket":
            raise RemoteError(f"bucket {self.bucket!r} does not exist",
                              "create it first, or fix the bucket name in the url")
        if resp.status == 403 and code in ("AccessDenied", "AllAccessDisabled", "AccountProblem"):
            raise AuthError("access denied")
        if resp.status >= 500 or resp.status in (408, 429) or code in ("SlowDown", "RequestTimeout"):
            raise RemoteError(f"listing answered HTTP {resp.status} {code}".rstrip(), retryable=True,
                              status=resp.status)
        raise Fallback(f"HTTP {resp.status} {code}")

    @property
    def bucket(self) -> str:
        return self.ep.bucket_path.lstrip("/") or self.ep.netloc.split(".s3.", 1)[0]

    def objects(self, prefix: str, start_after: str | None = None,
                stop_at: str | None = None) -> Iterator[tuple[str, int, str]]:
        """(key, size, etag without quotes) of every object under `prefix`, in key order; with `start_after`
        and `stop_at`, only the keys strictly between them (fewer pages for a shard's run of datasets)."""
        token = None
        while True:
            query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
            if token:
                query["continuation-token"] = token
            elif start_after:
                query["start-after"] = start_after
            body = self._get(query)
            try:
                root = ElementTree.fromstring(body)
            except ElementTree.ParseError as exc:
                if body.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html")):
                    raise not_s3(f"{self.ep.scheme}://{self.ep.netloc}") from None
                raise Fallback(f"unreadable listing: {exc}") from None
            ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            if root.tag[len(ns):] != "ListBucketResult":
                raise not_s3(f"{self.ep.scheme}://{self.ep.netloc}")
            decode = unquote_plus if root.findtext(f"{ns}EncodingType") == "url" else str
            for item in root.iterfind(f"{ns}Contents"):
                key = decode(item.findtext(f"{ns}Key") or "")
                if stop_at is not None and key.encode("utf-8") >= stop_at.encode("utf-8"):
                    return
                yield key, int(item.findtext(f"{ns}Size") or 0), (item.findtext(f"{ns}ETag") or "").strip('"')
            token = root.findtext(f"{ns}NextContinuationToken")
            if root.findtext(f"{ns}IsTruncated") != "true":
                return
            if not token or token == query.get("continuation-token"):
                # a V1-style answer, or a store going round in circles: botocore's paging decides
                raise Fallback("truncated listing without a new continuation token")


def _default_cafile() -> str | None:
    try:
        import certifi  # what botocore verifies against
    except ImportError:
        return None
    return certifi.where()
