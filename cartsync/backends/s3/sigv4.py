"""AWS Signature V4 over plain HTTP(S), without botocore's start-up: where it applies, the signer, a connection.

A no-op re-run is one listing (listing.py) and the target's lock object (lock.py); through botocore it
paid ~0.3 s of imports and client set-up before the first byte went out. This module signs with AWS
Signature V4 itself (tests check every header against botocore's signer).

It is used only where it does exactly what botocore would: static credentials from the environment
(or anon), a known region, no proxy, no client/config options. `endpoint_for` returns None
otherwise, and the request goes through botocore as before.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit
from urllib.request import getproxies_environment, proxy_bypass_environment  # type: ignore[attr-defined]
from xml.etree import ElementTree

from ...retry import Timeouts
from ..sockets import WATCHDOG

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_DNS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
# environment settings that change how botocore reaches S3: with any of them set, botocore lists
_ENV_CHANGES_ENDPOINT = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_USE_FIPS_ENDPOINT",
                         "AWS_USE_DUALSTACK_ENDPOINT", "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT")
_OPTION_KEYS = {"endpoint_url", "region", "anon", "client_kwargs"}



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


def sign_v4(method: str, ep: Endpoint, path: str, query: Mapping[str, str], now: datetime.datetime,
            headers: Mapping[str, str] | None = None, payload_sha256: str = EMPTY_SHA256) -> dict[str, str]:
    """The request's headers, `headers` included, signed with AWS Signature V4 for service s3.

    Every header given is signed (as botocore signs every header it sends but User-Agent and Expect);
    `payload_sha256` is the body's SHA-256 (the empty body's by default: a GET or a DELETE)."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    out = {k.lower(): v for k, v in (headers or {}).items()}
    out.update({"host": ep.netloc, "x-amz-content-sha256": payload_sha256, "x-amz-date": amz_date})
    if ep.creds is None:
        return out
    if ep.creds.token:
        out["x-amz-security-token"] = ep.creds.token
    names = sorted(out)
    canonical = "\n".join([method, _quote(path, "/-_.~"), canonical_query(query),
                           "".join(f"{n}:{out[n].strip()}\n" for n in names), ";".join(names), payload_sha256])
    scope = f"{amz_date[:8]}/{ep.region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + ep.creds.secret_key).encode()
    for part in (amz_date[:8], ep.region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={ep.creds.access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out


@dataclass
class Answer:
    status: int
    headers: dict[str, str]      # lower-case names
    body: bytes


class Connection:
    """One HTTP(S) connection to an Endpoint, reused across requests, each signed and bounded by timeouts."""

    def __init__(self, ep: Endpoint, connect_timeout: float | None = None, read_timeout: float | None = None,
                 user_agent: str = "cartsync") -> None:
        self.ep = ep     # by default the same timeouts as botocore's (s3.s3fs_options): idle = read
        timeouts = Timeouts.from_env()
        self.connect_timeout = timeouts.connect if connect_timeout is None else connect_timeout
        self.read_timeout = timeouts.idle if read_timeout is None else read_timeout
        self.answer_timeout = timeouts.answer
        self.user_agent = user_agent
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.ep.scheme == "https":
                ctx = ssl.create_default_context(cafile=self.ep.cafile or default_cafile())
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

    def request(self, method: str, key: str | None, query: Mapping[str, str],
                headers: Mapping[str, str] | None = None, body: bytes = b"") -> Answer:
        """`method` on the bucket (key None) or on one of its objects; the whole answer. For small bodies
        only (a listing page, a lock object): the body is signed by its SHA-256, in memory."""
        path = (self.ep.bucket_path or "") + (f"/{key}" if key is not None else "") or "/"
        signed = sign_v4(method, self.ep, path, query, datetime.datetime.now(datetime.timezone.utc), headers,
                         hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256)
        signed.pop("host")
        signed["User-Agent"] = self.user_agent
        target = _quote(path, "/-_.~") + (f"?{canonical_query(query)}" if query else "")
        try:
            conn = self._connection()
            conn.request(method, target, body=body or None, headers=signed)
            WATCHDOG.arm(conn.sock, self.answer_timeout)      # a server dripping its answer is cut too
            try:
                resp = conn.getresponse()
                data = resp.read()
            finally:
                WATCHDOG.disarm(conn.sock)
        except BaseException:
            self.close()     # a half-read answer poisons the connection
            raise
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)

    @property
    def bucket(self) -> str:
        return self.ep.bucket_path.lstrip("/") or self.ep.netloc.split(".s3.", 1)[0]


def error_code(body: bytes) -> str:
    try:
        return ElementTree.fromstring(body).findtext("Code") or ""
    except ElementTree.ParseError:
        return ""


def default_cafile() -> str | None:
    try:
        import certifi  # what botocore verifies against
    except ImportError:
        return None
    return certifi.where()
