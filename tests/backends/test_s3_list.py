"""The S3 listing fast path (cartsync.backends.s3.listing) against its references.

The references are botocore's own signer and listing, a real S3 server (moto, on 127.0.0.1) and a
scripted stub S3 (below) that answers the way AWS does where moto differs (keys form-encoded, tokens
with '/', '+' and '='). Nothing here mocks the code under test; the only thing fixed is botocore's clock.
Note that moto does not check signatures: that the signing is right is shown against botocore's signer,
on the very bytes the lister sends.
"""
from __future__ import annotations

import datetime
import hashlib
import http.server
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import traceback
import uuid
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, quote, quote_plus, urlsplit

import pytest
from faultproxy import FaultProxy, s3_error_xml
from helpers import write_manifest

from cartsync.backends.s3 import S3Backend
from cartsync.backends.s3 import listing as s3_list
from cartsync.backends.s3.sigv4 import Credentials, Endpoint, canonical_query, endpoint_for, sign_v4
from cartsync.config import TargetConfig
from cartsync.inventory import HashCache
from cartsync.model import RemoteFile

MiB = 2**20
NOW = datetime.datetime(2026, 11, 24, 13, 5, 9, tzinfo=datetime.timezone.utc)
AK = "AKIDEXAMPLE"
SECRET = "SENTINEL-k9vw/secret+key=0004"      # '/', '+' and '=' as real secret keys have
TOKEN = "SENTINEL-k9vw-session/token+0005=="
PREFIX = "data set+é"                        # the target's folder: a space, a '+' and a non-ASCII letter


# ---- helpers ------------------------------------------------------------------------------------------

def botocore_headers(monkeypatch, region: str, url: str, params: dict | None = None,
                     token: str | None = None, now: datetime.datetime = NOW) -> dict[str, str]:
    """The headers botocore's S3 SigV4 signer puts on GET `url` (lower-case names), its clock set to `now`."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: now.replace(tzinfo=None))
    request = botocore.awsrequest.AWSRequest(method="GET", url=url, params=params or {})
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(AK, SECRET, token), "s3", region).add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()}


def backend_for(url: str, storage_options: dict, tmp_path: Path, botocore: bool = False) -> S3Backend:
    """An S3Backend as the CLI makes it; botocore=True forces the listing through botocore (its own client)."""
    backend = S3Backend(TargetConfig(name="web", url=url, storage_options=storage_options),
                        HashCache(tmp_path / "hashes.sqlite3"))
    if botocore:
        backend._fast = None
    return backend


def botocore_made(backend: S3Backend) -> set[str]:
    """Which of the backend's botocore clients (both functools.cached_property, made on first use) exist."""
    return {"client", "fs"} & set(vars(backend))


def scope_of(authorization: str) -> tuple[str, str]:
    """(access key, region) from an Authorization header's credential scope."""
    m = re.search(r"Credential=([^/]+)/\d{8}/([^/]+)/s3/aws4_request", authorization)
    assert m, authorization
    return m.group(1), m.group(2)


class StubS3:
    """A scripted S3 on 127.0.0.1: ListObjectsV2 from a fixed key list, `page_size` keys a page, keys
    form-encoded as AWS does for encoding-type=url (space as '+'), a continuation token in AWS's base64
    alphabet; or one fixed error for every request. Records each request as it arrived (raw target, headers)."""

    TOKEN = "/Ab+c=d=="        # a token is "<index of the next key>" + this

    def __init__(self, keys: list[str], page_size: int = 2, error: tuple[int, str] | None = None) -> None:
        self.keys, self.page_size, self.error = sorted(keys), page_size, error
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"        # keep-alive, as S3

            def log_message(self, *args) -> None:
                pass

            def _answer(self, with_body: bool) -> None:
                stub.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                status, body = stub.answer(self.command, self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body) if with_body else 0))
                if status == 301:
                    self.send_header("x-amz-bucket-region", "eu-central-1")
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(True)

            def do_HEAD(self) -> None:
                self._answer(False)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.netloc = self.url.split("://", 1)[1]

    def answer(self, method: str, target: str) -> tuple[int, bytes]:
        if self.error:
            return self.error[0], s3_error_xml(self.error[1], "scripted")
        q = {k: v[0] for k, v in parse_qs(urlsplit(target).query, keep_blank_values=True).items()}
        if method != "GET" or q.get("list-type") != "2":
            return 404, s3_error_xml("NoSuchKey", "The specified key does not exist.")
        start = 0
        if "continuation-token" in q:
            index, _, rest = q["continuation-token"].partition("/")
            if not index.isdigit() or "/" + rest != self.TOKEN:
                return 400, s3_error_xml("InvalidArgument", "The continuation token provided is incorrect")
            start = int(index)
        keys = [k for k in self.keys if k.startswith(q.get("prefix", ""))]
        page, more = keys[start:start + self.page_size], start + self.page_size < len(keys)
        enc = (lambda s: quote_plus(s, safe="")) if q.get("encoding-type") == "url" else (lambda s: s)
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="http://s3.amazonaws.com/doc/'
                f'2006-03-01/"><Name>stub</Name><Prefix>{enc(q.get("prefix", ""))}</Prefix><KeyCount>{len(page)}'
                f'</KeyCount><MaxKeys>1000</MaxKeys>'
                + ("<EncodingType>url</EncodingType>" if q.get("encoding-type") == "url" else "")
                + f"<IsTruncated>{'true' if more else 'false'}</IsTruncated>"
                + (f"<NextContinuationToken>{start + self.page_size}{self.TOKEN}</NextContinuationToken>"
                   if more else "")
                + "".join(f"<Contents><Key>{enc(k)}</Key><LastModified>2026-11-24T13:05:09.000Z</LastModified>"
                          f"<ETag>&quot;{hashlib.md5(k.encode()).hexdigest()}&quot;</ETag><Size>{len(k.encode())}"
                          "</Size><StorageClass>STANDARD</StorageClass></Contents>" for k in page)
                + "</ListBucketResult>")
        return 200, body.encode()

    def __enter__(self) -> StubS3:
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Only the AWS settings a test gives: static keys, no config or credentials file, no proxy, no CA."""
    for name in list(os.environ):
        if name.startswith("AWS_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# ---- 1. signing: what botocore signs, on the bytes that go on the wire ------------------------------------

PREFIXES = {
    "empty": "",
    "space": "data set/",
    "unicode": "é/日本/",
    "plus-percent-equals-amp": "a+b%20c=d&e/",
    "tilde-slash": "~user/x=1&y=2/z",
    "sub-delims": "it's (1)! *",
}
ENDPOINTS = {
    "path-style-port-us-east-1": ("http", "127.0.0.1:9000", "/my-bucket", "us-east-1"),
    "path-style-https-dotted-eu-west-2": ("https", "minio.example.org:9443", "/my.bucket", "eu-west-2"),
    "virtual-hosted-eu-west-2": ("https", "my-bucket.s3.eu-west-2.amazonaws.com", "", "eu-west-2"),
}


@pytest.mark.parametrize("prefix", PREFIXES.values(), ids=PREFIXES.keys())
@pytest.mark.parametrize("where", ENDPOINTS.values(), ids=ENDPOINTS.keys())
def test_signature_equals_botocores(monkeypatch, prefix, where):
    """Every header sign_v4 makes is the one botocore's S3 signer makes for the same request, whether botocore
    encodes the query itself or signs the query string exactly as the lister sends it."""
    scheme, netloc, bucket_path, region = where
    path = bucket_path or "/"                   # what Lister._get requests
    for token in (None, TOKEN):
        for continuation in (None, "1/Ab+c=d==xyz"):
            query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
            if continuation:
                query["continuation-token"] = continuation
            ep = Endpoint(scheme, netloc, bucket_path, region, Credentials(AK, SECRET, token))
            ours = {k.lower(): v for k, v in sign_v4("GET", ep, path, query, NOW).items()}
            base = f"{scheme}://{netloc}{quote(path, safe='/-_.~')}"
            by_params = botocore_headers(monkeypatch, region, base, params=query, token=token)
            on_the_wire = botocore_headers(monkeypatch, region, f"{base}?{canonical_query(query)}", token=token)
            assert ours.pop("host") == netloc
            assert ours == by_params == on_the_wire, (token, continuation)
            # and the server reads back exactly the values that were signed
            assert dict(parse_qsl(canonical_query(query), keep_blank_values=True, strict_parsing=True)) == query


@pytest.mark.parametrize("method,headers,body", [
    ("PUT", {"content-type": "application/json", "if-none-match": "*"}, b'{"who": "ci@runner"}'),
    ("PUT", {"content-type": "application/json", "if-match": '"9b2cf535f27731c974343645a3985328"'}, b"{}"),
    ("GET", {}, b""),
    ("DELETE", {"if-match": '"9b2cf535f27731c974343645a3985328"'}, b""),
])
def test_lock_requests_are_signed_as_botocore_signs_them(monkeypatch, method, headers, body):
    """The lock object's requests (backends/s3/lock.py): a body signed by its SHA-256 and the conditional headers
    signed with the rest, as botocore's S3 signer does for the same request."""
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: NOW.replace(tzinfo=None))
    ep = Endpoint("http", "127.0.0.1:9000", "/b", "eu-west-2", Credentials(AK, SECRET, TOKEN))
    path = f"/b/{quote(PREFIX)}/.cartsync.lock"
    payload = hashlib.sha256(body).hexdigest()
    ours = {k.lower(): v for k, v in sign_v4(method, ep, f"/b/{PREFIX}/.cartsync.lock", {}, NOW, headers,
                                            payload).items()}
    request = botocore.awsrequest.AWSRequest(method=method, url=f"http://127.0.0.1:9000{path}", data=body,
                                             headers=dict(headers))
    request.context["payload_signing_enabled"] = True
    botocore.auth.S3SigV4Auth(botocore.credentials.Credentials(AK, SECRET, TOKEN), "s3", "eu-west-2").add_auth(request)
    theirs = {k.lower(): v for k, v in request.headers.items()}
    assert ours.pop("host") == "127.0.0.1:9000"
    assert ours == theirs


def test_explicit_default_port_is_signed_as_sent(monkeypatch, tmp_path):
    """endpoint_url "https://host:443": http.client sends `Host: host` (it drops a default port), and botocore
    signs exactly that; a signature over "host:443" is one a real server rejects (SignatureDoesNotMatch)."""
    ep = endpoint_for({"endpoint_url": "https://minio.example.org:443", "region": "us-east-1"}, "my-bucket",
                      no_config(tmp_path))
    query = {"list-type": "2", "prefix": "p/", "encoding-type": "url"}
    ours = sign_v4("GET", ep, "/my-bucket", query, NOW)
    theirs = botocore_headers(monkeypatch, "us-east-1", f"https://minio.example.org:443/my-bucket?{canonical_query(query)}")
    assert ours["Authorization"] == theirs["authorization"]
    assert ours["host"] == "minio.example.org"


def test_anonymous_requests_are_not_signed():
    """anon: true lists like botocore's UNSIGNED: no Authorization, no token, whatever the environment holds."""
    ep = Endpoint("http", "127.0.0.1:9000", "/b", "us-east-1", None)
    headers = sign_v4("GET", ep, "/b", {"list-type": "2", "prefix": "p/"}, NOW)
    assert set(headers) == {"host", "x-amz-content-sha256", "x-amz-date"}


def test_lister_wire_requests_verify_with_botocore(monkeypatch, aws_env):
    """The requests the Lister really sends (raw request line and headers, as a server receives them) carry
    the signature botocore computes for exactly those bytes; the base64 continuation token and the prefix
    arrive unchanged; the keys decode as botocore's own listing of the same answers decodes them."""
    prefix = "data set+é/"
    keys = [prefix + k for k in ("a b+c.txt", "日本/x~y=z&w.txt", "100%20.txt", "sub/", "it's (1)!")]
    with StubS3(keys + ["data set+é10/x"], page_size=2) as stub:
        ep = Endpoint("http", stub.netloc, "/stub", "eu-west-2", Credentials(AK, SECRET, TOKEN))
        lister = s3_list.Lister(ep)
        try:
            ours = [key for key, _, _ in lister.objects(prefix)]
        finally:
            lister.close()
        sent = list(stub.requests)
        stub.requests.clear()
        import boto3
        client = boto3.client("s3", endpoint_url=stub.url, region_name="eu-west-2", aws_access_key_id=AK,
                              aws_secret_access_key=SECRET, aws_session_token=TOKEN)
        theirs = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="stub", Prefix=prefix)
                  for o in page.get("Contents", [])]
    assert ours == theirs == sorted(keys)
    assert len(sent) == 3                                       # 5 keys, 2 a page
    for i, (method, target, headers) in enumerate(sent):
        q = dict(parse_qsl(urlsplit(target).query, keep_blank_values=True, strict_parsing=True))
        assert q["prefix"] == prefix and q.get("continuation-token") == (f"{2 * i}{StubS3.TOKEN}" if i else None)
        assert headers["host"] == stub.netloc
        when = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
        ref = botocore_headers(monkeypatch, "eu-west-2", f"http://{headers['host']}{target}", token=TOKEN,
                               now=when.replace(tzinfo=datetime.timezone.utc))
        assert headers["authorization"] == ref["authorization"]
        assert headers["x-amz-security-token"] == TOKEN
        assert headers["x-amz-content-sha256"] == ref["x-amz-content-sha256"]


# ---- 2./3. listing: the same answer as botocore from a real S3 server, and the fast path really used ----------

AWKWARD = ["a b.txt", "a+b.txt", "a%20b.txt", "café.txt", "日本/地図.pmtiles", "~tilde", "k=v&x=y.tsv",
           "sub/inner.txt", "x//double", "trailing ", "it's (1)!"]
MARKERS = ["", "sub/", "日本/"]               # directory markers: "PREFIX/" itself and two below it
OUTSIDE = [PREFIX, PREFIX + "10/x", PREFIX + "-old.txt", "other/a b.txt"]
BULK = 1050                                  # moto answers 1000 keys a page: two pages


@pytest.fixture(scope="module")
def listed(s3_server):
    """One bucket for the listing tests (filled once: ~1100 objects): awkward keys, directory markers, keys
    just outside the prefix and one multipart object through boto3; the bulk of small objects straight into
    moto's store (1000 PUTs over HTTP take ~6 s; how an object got there does not change how it lists).
    Returns (bucket, the listing expected below PREFIX)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    bucket = s3_server.create_bucket(f"list-{uuid.uuid4().hex[:12]}")
    client = s3_server.boto3_client(counted=False)
    expected: dict[str, RemoteFile] = {}
    for key in AWKWARD:
        body = f"content of {key}".encode()
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=body)
        expected[key] = RemoteFile(key, len(body), hashlib.md5(body).hexdigest(), hashlib.md5(body).hexdigest())
    for key in MARKERS:
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=b"")
    for key in OUTSIDE:
        client.put_object(Bucket=bucket, Key=key, Body=b"not ours")
    store = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for i in range(BULK):
        body = f"{i}\n".encode() * (i % 7)
        store.put_object(bucket, f"{PREFIX}/bulk/{i:04}", body)
        md5 = hashlib.md5(body).hexdigest()
        expected[f"bulk/{i:04}"] = RemoteFile(f"bulk/{i:04}", len(body), md5, md5)
    parts = [os.urandom(5 * MiB), os.urandom(1000)]
    up = client.create_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/big.pmtiles")
    etags = [client.upload_part(Bucket=bucket, Key=f"{PREFIX}/big.pmtiles", UploadId=up["UploadId"], PartNumber=n,
                                Body=data)["ETag"] for n, data in enumerate(parts, 1)]
    client.complete_multipart_upload(Bucket=bucket, Key=f"{PREFIX}/big.pmtiles", UploadId=up["UploadId"],
                                     MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                                                for n, e in enumerate(etags, 1)]})
    etag = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
    expected["big.pmtiles"] = RemoteFile("big.pmtiles", 5 * MiB + 1000, None, etag)
    return bucket, expected


def test_fast_listing_equals_botocore_listing(s3, listed, tmp_path):
    """Same dict, key for key (sizes, md5, ETags), through the fast path and through botocore; both exactly
    the objects below the prefix: no directory markers, nothing from `data set+é10/` or `data set+é-old.txt`;
    a multipart object keeps its ETag and has no md5."""
    bucket, expected = listed
    opts = {"endpoint_url": s3.endpoint_url}
    fast = backend_for(f"s3://{bucket}/{PREFIX}", opts, tmp_path).listing()
    slow = backend_for(f"s3://{bucket}/{PREFIX}", opts, tmp_path, botocore=True).listing()
    assert fast == slow
    assert fast == expected
    assert fast["big.pmtiles"] == RemoteFile("big.pmtiles", 5 * MiB + 1000, None, expected["big.pmtiles"].etag)


def test_fast_path_is_used_by_default(s3, listed, tmp_path):
    """With the environment the s3 fixture sets (static keys, endpoint_url, no proxy) the listing is two
    ListObjectsV2 pages from s3_list and nothing else: no botocore client (nor s3fs) is made."""
    bucket, expected = listed
    backend = backend_for(f"s3://{bucket}/{PREFIX}", {"endpoint_url": s3.endpoint_url}, tmp_path)
    assert backend._fast is not None
    s3.reset_counts()
    assert backend.listing() == expected
    assert botocore_made(backend) == set() and backend._fast is not None
    assert [r.op for r in s3.request_log] == ["ListObjectsV2", "ListObjectsV2"]
    first, second = (dict(parse_qsl(r.query, keep_blank_values=True)) for r in s3.request_log)
    assert first == {"list-type": "2", "prefix": PREFIX + "/", "encoding-type": "url"}
    assert second == {**first, "continuation-token": second["continuation-token"]}


def test_noop_plan_never_imports_botocore(s3, tmp_path):
    """What the fast path is for: `cartsync plan` of an up-to-date S3 target imports neither s3fs nor botocore.
    (Up to date includes headers: an object another tool wrote is read once, by the first plan, with HEAD.)"""
    from cartsync.cli import main
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"hello")
    s3.put_object(s3.bucket, "ds/a.txt", b"hello", ContentType="text/plain")
    m = write_manifest(tmp_path, f"""
        version: 1
        source: {{dir: src, method: all}}
        targets:
          - name: web
            url: s3://{s3.bucket}/ds
            storage_options: {{endpoint_url: "{s3.endpoint_url}"}}
        """)
    code = ("import sys; from cartsync.cli import main; rc = main(['plan', sys.argv[1]]); "
            "print('IMPORTED', sorted({m.split('.')[0] for m in sys.modules} & "
            "{'s3fs', 'botocore', 'boto3', 'aiobotocore', 'fsspec'})); sys.exit(rc)")
    assert main(["-q", "plan", str(m)]) == 0 and s3.counts()["HeadObject"] == 1
    s3.reset_counts()
    r = subprocess.run([sys.executable, "-c", code, str(m)], capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "No changes. 1 file(s) up to date." in r.stdout
    assert "IMPORTED []" in r.stdout
    assert s3.counts()["ListObjectsV2"] == 1


def test_anonymous_listing_matches_botocore(s3, tmp_path):
    """anon: true lists through the fast path, unsigned, as botocore does. moto does not enforce bucket
    policies, so its private bucket lists anonymously; what real S3 answers (403 AccessDenied) is
    test_access_denied_reads_the_same."""
    s3.put_object(s3.bucket, "ds/a b.txt", b"one")
    s3.put_object(s3.bucket, "ds/é.txt", b"two!")
    opts = {"endpoint_url": s3.endpoint_url, "anon": True}
    backend = backend_for(f"s3://{s3.bucket}/ds", opts, tmp_path)
    assert backend._fast is not None and backend._fast.creds is None
    fast = backend.listing()
    assert botocore_made(backend) == set()
    assert fast == backend_for(f"s3://{s3.bucket}/ds", opts, tmp_path, botocore=True).listing()
    assert {k: r.size for k, r in fast.items()} == {"a b.txt": 3, "é.txt": 4}


# ---- 4. when the fast path is taken ------------------------------------------------------------------

ENV = {"AWS_ACCESS_KEY_ID": AK, "AWS_SECRET_ACCESS_KEY": SECRET}
LOCAL = "http://127.0.0.1:9000"


def no_config(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**ENV, "AWS_CONFIG_FILE": str(tmp_path / "missing-config"), **extra}


NOT_FAST = {
    "profile": ({"endpoint_url": LOCAL, "profile": "lab"}, "b", {}),
    "config_kwargs": ({"endpoint_url": LOCAL, "config_kwargs": {"read_timeout": 5}}, "b", {}),
    "client_kwargs-other-key": ({"client_kwargs": {"endpoint_url": LOCAL, "verify": False}}, "b", {}),
    "key-in-options": ({"endpoint_url": LOCAL, "key": AK, "secret": SECRET}, "b", {}),
    "no-credentials": ({"endpoint_url": LOCAL}, "b", {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}),
    "half-credentials": ({"endpoint_url": LOCAL}, "b", {"AWS_SECRET_ACCESS_KEY": ""}),
    "AWS_ENDPOINT_URL": ({"endpoint_url": LOCAL}, "b", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}),
    "AWS_ENDPOINT_URL_S3": ({"region": "eu-west-2"}, "b", {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"}),
    "fips": ({"region": "us-east-1"}, "b", {"AWS_USE_FIPS_ENDPOINT": "true"}),
    "aws-without-region": ({}, "bucket", {}),
    "aws-dotted-bucket": ({"region": "eu-west-2"}, "my.bucket", {}),
    "aws-china": ({"region": "cn-north-1"}, "bucket", {}),
    "endpoint-with-path": ({"endpoint_url": LOCAL + "/s3"}, "b", {}),
    "endpoint-not-http": ({"endpoint_url": "ftp://127.0.0.1:21"}, "b", {}),
}


@pytest.mark.parametrize("options, bucket, env", NOT_FAST.values(), ids=NOT_FAST.keys())
def test_endpoint_for_leaves_it_to_botocore(tmp_path, options, bucket, env):
    """Anything botocore would resolve differently (profiles, client options, endpoint settings in the
    environment, AWS hosts it would not use) lists through botocore."""
    assert endpoint_for(options, bucket, no_config(tmp_path, **env)) is None


def test_endpoint_for_custom_endpoint_without_region_signs_for_us_east_1(tmp_path):
    """No region anywhere and no config file: botocore signs for us-east-1, and so does the fast path."""
    assert endpoint_for({"endpoint_url": LOCAL}, "my-bucket", no_config(tmp_path)) == Endpoint(
        "http", "127.0.0.1:9000", "/my-bucket", "us-east-1", Credentials(AK, SECRET, None), None)


def test_endpoint_for_reads_the_config_file_like_botocore(tmp_path):
    """The active profile's region is used (as botocore would); a profile setting that could change where
    or how botocore connects (endpoint_url, ca_bundle, s3 = …) leaves the listing to botocore."""
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-west-2\n[profile lab]\nregion = us-west-1\ns3 =\n"
                      "  addressing_style = virtual\n")
    env = {**ENV, "AWS_CONFIG_FILE": str(config)}
    assert endpoint_for({"endpoint_url": LOCAL}, "b", env).region == "eu-west-2"
    assert endpoint_for({}, "my-bucket", env).netloc == "my-bucket.s3.eu-west-2.amazonaws.com"
    assert endpoint_for({"endpoint_url": LOCAL}, "b", {**env, "AWS_PROFILE": "lab"}) is None
    config.write_text("[default]\nregion = eu-west-2\n[broken\n")
    assert endpoint_for({"endpoint_url": LOCAL}, "b", env) is None


def test_endpoint_for_custom_endpoint_with_region_token_and_ca(tmp_path):
    """client_kwargs are read like top-level options; the session token and AWS_CA_BUNDLE are kept."""
    env = no_config(tmp_path, AWS_SESSION_TOKEN=TOKEN, AWS_CA_BUNDLE="/etc/ca.pem")
    options = {"client_kwargs": {"endpoint_url": "https://minio.example.org:9443", "region_name": "eu-west-2"}}
    assert endpoint_for(options, "my.bucket", env) == Endpoint(
        "https", "minio.example.org:9443", "/my.bucket", "eu-west-2", Credentials(AK, SECRET, TOKEN), "/etc/ca.pem")


def test_endpoint_for_aws_is_virtual_hosted(tmp_path):
    """On AWS, the regional virtual-hosted endpoint, region from options or AWS_DEFAULT_REGION."""
    want = Endpoint("https", "my-bucket.s3.eu-west-2.amazonaws.com", "", "eu-west-2", Credentials(AK, SECRET), None)
    assert endpoint_for({"region": "eu-west-2"}, "my-bucket", no_config(tmp_path)) == want
    assert endpoint_for({}, "my-bucket", no_config(tmp_path, AWS_DEFAULT_REGION="eu-west-2")) == want


def test_endpoint_for_anon_ignores_credentials(tmp_path):
    """anon: true is unsigned even with keys in the environment, and needs none."""
    assert endpoint_for({"endpoint_url": LOCAL, "anon": True}, "b", no_config(tmp_path)).creds is None
    assert endpoint_for({"endpoint_url": LOCAL, "anon": True}, "b",
                        {"AWS_CONFIG_FILE": str(tmp_path / "missing")}).creds is None


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_endpoint_for_proxy_in_environment(monkeypatch, tmp_path, scheme):
    """A proxy for the endpoint's scheme sends the listing through botocore (which uses it), unless NO_PROXY
    covers the host."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    options = {"endpoint_url": f"{scheme}://127.0.0.1:9000"}
    assert endpoint_for(options, "b", no_config(tmp_path)) is not None
    monkeypatch.setenv(f"{scheme.upper()}_PROXY", "http://127.0.0.1:3128")
    assert endpoint_for(options, "b", no_config(tmp_path)) is None
    aws = endpoint_for({"region": "eu-west-2"}, "bucket", no_config(tmp_path))      # always https
    assert (aws is None) == (scheme == "https")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    assert endpoint_for(options, "b", no_config(tmp_path)) is not None


SIGNS_LIKE_BOTOCORE = {
    "AWS_DEFAULT_REGION": ({}, {"AWS_DEFAULT_REGION": "eu-west-2"}),
    "no-region": ({}, {}),
    "region-option-over-env": ({"region": "eu-west-2"}, {"AWS_DEFAULT_REGION": "us-west-1"}),
    "client_kwargs-over-env": ({"client_kwargs": {"region_name": "eu-west-2"}}, {"AWS_DEFAULT_REGION": "us-west-1"}),
    "session-token": ({}, {"AWS_SESSION_TOKEN": TOKEN}),
    # botocore 1.43 reads AWS_DEFAULT_REGION only, not AWS_REGION
    "AWS_REGION": ({}, {"AWS_REGION": "eu-west-2"}),
    # s3fs puts `region` into client_kwargs with setdefault: client_kwargs.region_name wins
    "region-and-client_kwargs": ({"region": "eu-west-2", "client_kwargs": {"region_name": "us-west-1"}}, {}),
    # botocore's EnvProvider takes AWS_SECURITY_TOKEN first
    "both-token-variables": ({}, {"AWS_SECURITY_TOKEN": "older-token", "AWS_SESSION_TOKEN": TOKEN}),
}


@pytest.mark.parametrize("options, env", SIGNS_LIKE_BOTOCORE.values(), ids=SIGNS_LIKE_BOTOCORE.keys())
def test_fast_path_signs_with_botocores_region_and_token(monkeypatch, aws_env, tmp_path, options, env):
    """Where endpoint_for takes the fast path, its requests carry the access key, region and session token
    that botocore's requests carry for the same options and environment (read off the wire)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with StubS3(["pre/a.txt"]) as stub:
        opts = {"endpoint_url": stub.url, **options}
        fast = backend_for("s3://stub/pre", opts, tmp_path)
        assert fast._fast is not None
        listed_fast = fast.listing()
        ours = [h for m, t, h in stub.requests]
        stub.requests.clear()
        assert backend_for("s3://stub/pre", opts, tmp_path, botocore=True).listing() == listed_fast
        theirs = [h for m, t, h in stub.requests if "list-type=2" in t]
    assert len(ours) == 1 and theirs
    assert scope_of(ours[0]["authorization"]) == scope_of(theirs[0]["authorization"])
    assert ours[0].get("x-amz-security-token") == theirs[0].get("x-amz-security-token")


def test_endpoint_url_in_the_config_file_is_respected(monkeypatch, aws_env, tmp_path):
    """botocore reads endpoint_url from the AWS config file (profile or services section), as it reads
    AWS_ENDPOINT_URL: the fast path must not list AWS instead (AWS_ENDPOINT_URL does make it step aside)."""
    import boto3
    config = tmp_path / "config"
    config.write_text("[default]\nendpoint_url = http://127.0.0.1:9\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert boto3.session.Session().client("s3").meta.endpoint_url == "http://127.0.0.1:9"   # where botocore goes
    assert endpoint_for({}, "my-bucket") is None


def test_ca_bundle_in_the_config_file_is_respected(monkeypatch, aws_env, tmp_path):
    """botocore verifies TLS against ca_bundle from the config file; the fast path must use the same CA (or
    step aside), else a private-CA endpoint fails with a certificate error that is not retried or fallen back."""
    import botocore.session
    config = tmp_path / "config"
    config.write_text(f"[default]\nca_bundle = {tmp_path / 'private-ca.pem'}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    assert botocore.session.Session().get_config_variable("ca_bundle") == str(tmp_path / "private-ca.pem")
    assert endpoint_for({"endpoint_url": "https://minio.internal:9000", "region": "us-east-1"}, "b") is None


# ---- 5. errors and faults: what the user sees is what botocore's path shows ---------------------------------

def target_manifest(tmp_path: Path, url: str, storage_options: dict) -> Path:
    return write_manifest(tmp_path, f"""
        version: 1
        source: {{dir: cartload2}}
        targets:
          - name: web
            url: {url}
            storage_options: {json.dumps(storage_options)}
        """)


# any option the fast path does not handle sends the listing through botocore
BOTOCORE = {"config_kwargs": {"read_timeout": 30}}


def test_missing_bucket_reads_the_same(s3, tmp_path, dataset, cli):
    """The fast path reads NoSuchBucket from its one request; botocore's path finds an empty listing and then
    asks whether the bucket exists. Same message either way."""
    seen = []
    for extra in ({}, BOTOCORE):
        m = target_manifest(tmp_path, "s3://no-such-bucket-zz1/x", {"endpoint_url": s3.endpoint_url, **extra})
        s3.reset_counts()
        code, _, err = cli("plan", m)
        seen.append((code, err, s3.counts()["list_total"], sum(s3.method_counts().values())))
    fast, slow = seen
    assert fast[:2] == slow[:2] == (1, ("error: target web: bucket 'no-such-bucket-zz1' does not exist\n"
                                        "hint: create it first, or fix the bucket name in the url\n"))
    assert fast[2:] == (1, 1)                      # one ListObjectsV2, nothing else
    assert slow[3] > 1                             # botocore's path asked more: it really was the other path


def test_access_denied_reads_the_same(s3, tmp_path, dataset, cli):
    """A listing refused with 403 AccessDenied (what real S3 answers for a private bucket) is one clear error,
    not retried, the same message through either path."""
    seen = []
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(lambda method, target: method == "GET" and "list-type=2" in target)
        for extra in ({}, BOTOCORE):
            m = target_manifest(tmp_path, f"s3://{s3.bucket}/ds", {"endpoint_url": proxy.url, **extra})
            proxy.reset_counters()
            code, _, err = cli("plan", m)
            seen.append((code, err, proxy.faults_injected))
    assert seen[0] == seen[1] == (1, (f"error: target web: access denied listing s3://{s3.bucket}/ds\n"
                                      "hint: check the credentials (profile, environment) and the bucket policy\n"),
                                  {"fail_always": 1})


def test_listing_failing_for_good_reads_the_same(s3, tmp_path, dataset, cli):
    """A listing answered 500 every time is tried as often through either path, and then says so, with the
    same hint (the botocore path: "listing … failed 6 times, last: …" / "re-run later; …")."""
    seen = []
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(lambda method, target: method == "GET" and "list-type=2" in target, status=500,
                          body=s3_error_xml("InternalError", "We encountered an internal error. Please try again."))
        for extra in ({}, BOTOCORE):
            m = target_manifest(tmp_path, f"s3://{s3.bucket}/ds", {"endpoint_url": proxy.url, **extra})
            proxy.reset_counters()
            code, _, err = cli("plan", m)
            seen.append((code, err.splitlines(), proxy.faults_injected))
    (fast_code, fast_err, fast_tries), (slow_code, slow_err, slow_tries) = seen
    assert fast_code == slow_code == 1
    assert fast_tries == slow_tries == {"fail_always": 6}
    assert slow_err[0].startswith(f"error: target web: listing s3://{s3.bucket}/ds failed 6 times, last: ")
    assert slow_err[1:] == ["hint: re-run later; the store may be overloaded"]
    assert fast_err[0].startswith(f"error: target web: listing s3://{s3.bucket}/ds failed 6 times, last: ")
    assert fast_err[1:] == slow_err[1:]


def continuation_page(method: str, target: str) -> bool:
    return method == "GET" and "list-type=2" in target and "continuation-token=" in target


@pytest.mark.parametrize("kind, path", [("500", "fast"), ("slowdown", "fast"), ("truncate", "fast"),
                                        ("reset", "fast"), ("500", "botocore")])
def test_transient_fault_on_a_listing_page_is_retried(s3, listed, tmp_path, kind, path):
    """A 5xx, a cut-off answer or a reset on the second page: retried (counted once), and the listing is
    exactly the one without the fault, through the fast path as through botocore."""
    bucket, expected = listed
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.schedule(kind, 1, continuation_page)
        backend = backend_for(f"s3://{bucket}/{PREFIX}", {"endpoint_url": proxy.url}, tmp_path,
                              botocore=path == "botocore")
        assert backend.listing() == expected
        assert proxy.faults_injected == {kind: 1}
    assert backend.retries == 1
    assert bool(botocore_made(backend)) == (path == "botocore")        # no fallback: the fast path coped


def test_unexpected_answer_falls_back_to_botocore(s3, tmp_path, caplog):
    """An answer the fast path does not know how to read as botocore would (here a 301 PermanentRedirect,
    what S3 says for a bucket in another region) is not an error: botocore lists instead, once, not retried."""
    s3.put_object(s3.bucket, "ds/a b.txt", b"one")
    s3.put_object(s3.bucket, "ds/é.txt", b"two!")
    redirect = s3_error_xml("PermanentRedirect", "The bucket you are attempting to access must be addressed "
                            "using the specified endpoint.")
    shots = [1]

    def first_listing(method: str, target: str) -> bool:
        if shots[0] and method == "GET" and "list-type=2" in target:
            shots[0] -= 1
            return True
        return False

    caplog.set_level(logging.DEBUG, logger="cartsync.backends.s3.backend")
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(first_listing, status=301, body=redirect, headers={"x-amz-bucket-region": "eu-central-1"})
        backend = backend_for(f"s3://{s3.bucket}/ds", {"endpoint_url": proxy.url}, tmp_path)
        assert backend._fast is not None
        got = backend.listing()
        assert proxy.faults_injected == {"fail_always": 1}
    assert got == backend_for(f"s3://{s3.bucket}/ds", {"endpoint_url": s3.endpoint_url}, tmp_path,
                              botocore=True).listing()
    assert {k: r.size for k, r in got.items()} == {"a b.txt": 3, "é.txt": 4}
    assert backend._fast is None and botocore_made(backend) == {"client"} and backend.retries == 0
    assert "listing through botocore instead (HTTP 301 PermanentRedirect)" in caplog.text


# ---- 6. secrets ----------------------------------------------------------------------------------------

def test_secret_key_never_in_reprs_or_errors():
    """The secret key and the session token are not in repr(Credentials), repr(Endpoint), nor in anything an
    error from the lister says (message, hint, repr, args, formatted traceback), for every kind of answer."""
    creds = Credentials(AK, SECRET, TOKEN)
    ep = Endpoint("https", "minio.example.org:9443", "/b", "eu-west-2", creds, None)
    texts = [repr(creds), str(creds), repr(ep), str(ep)]
    errors: list[BaseException] = []
    for status, code in ((404, "NoSuchBucket"), (403, "AccessDenied"), (500, "InternalError"),
                         (503, "SlowDown"), (301, "PermanentRedirect"), (400, "AuthorizationHeaderMalformed")):
        with StubS3([], error=(status, code)) as stub:
            lister = s3_list.Lister(Endpoint("http", stub.netloc, "/b", "eu-west-2", creds))
            with pytest.raises(Exception) as info:
                list(lister.objects("p/"))
            lister.close()
            assert stub.requests[0][2]["x-amz-security-token"] == TOKEN    # the token did go out, as it must
        errors.append(info.value)
    with socket.socket() as sock:         # a port that was free a moment ago: connecting is refused
        sock.bind(("127.0.0.1", 0))
        refused = f"127.0.0.1:{sock.getsockname()[1]}"
    lister = s3_list.Lister(Endpoint("http", refused, "/b", "eu-west-2", creds), connect_timeout=5)
    with pytest.raises(OSError) as info:
        list(lister.objects("p/"))
    errors.append(info.value)
    assert [type(e).__name__ for e in errors] == ["RemoteError", "AuthError", "RemoteError", "RemoteError",
                                                  "Fallback", "Fallback", "ConnectionRefusedError"]
    for exc in errors:
        texts += [str(exc), repr(exc), repr(exc.args), str(getattr(exc, "hint", "")),
                  "".join(traceback.format_exception(exc))]
    leaks = [t for t in texts if SECRET in t or TOKEN in t or "k9vw" in t]
    assert leaks == []


def test_a_server_that_never_answers_times_out():
    """The read timeout applies after the connection is made (the connect timeout is the shorter one)."""
    import time
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    try:
        creds = Credentials(AK, SECRET)
        lister = s3_list.Lister(Endpoint("http", f"127.0.0.1:{server.getsockname()[1]}", "/b", "us-east-1", creds),
                                connect_timeout=5, read_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            list(lister.objects("p/"))
        assert time.monotonic() - started < 3
    finally:
        server.close()
