"""Self-tests of the fakes `cartsync check` is tested against: tests/fakes/static_server.py and the public file URLs of
tests/fakes/zenodo_fake.py. Plain requests, independent of cartsync."""
from __future__ import annotations

import hashlib

import pytest
import requests
from static_server import StaticServer

ORIGIN = "https://viewer.example.org"


@pytest.fixture
def static(tmp_path):
    (tmp_path / "a.pmtiles").write_bytes(bytes(range(200)))
    (tmp_path / "b.tsv").write_text("x\n")
    with StaticServer(tmp_path) as server:
        yield server


def preflight(url, headers="range"):
    return requests.options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                                          "Access-Control-Request-Headers": headers})


def test_static_serves_ranges_etag_and_cors(static):
    url = static.url + "a.pmtiles"
    r = requests.get(url, headers={"Range": "bytes=10-19", "Origin": ORIGIN})
    assert (r.status_code, r.content, r.headers["Content-Range"]) == (206, bytes(range(10, 20)), "bytes 10-19/200")
    assert r.headers["ETag"] == f'"{hashlib.md5(bytes(range(200))).hexdigest()}"'
    assert r.headers["Content-Type"] == "application/vnd.pmtiles"
    assert (r.headers["Access-Control-Allow-Origin"], r.headers["Access-Control-Expose-Headers"]) == (
        ORIGIN, "ETag, Content-Length, Content-Range")
    assert requests.get(url, headers={"Range": "bytes=-5"}).content == bytes(range(195, 200))
    assert requests.get(url, headers={"Range": "bytes=300-"}).status_code == 416
    h = requests.head(url)
    assert (h.status_code, h.headers["Content-Length"], h.content) == (200, "200", b"")
    p = preflight(url)
    assert (p.status_code, p.headers["Access-Control-Allow-Origin"], p.headers["Access-Control-Allow-Headers"]) == (
        200, ORIGIN, "range")
    assert "Access-Control-Allow-Origin" not in requests.get(url).headers      # no Origin, no CORS headers


def test_static_switches(static):
    url = static.url + "a.pmtiles"
    static.ranges = False
    r = requests.get(url, headers={"Range": "bytes=0-9"})
    assert (r.status_code, len(r.content), r.headers["Accept-Ranges"]) == (200, 200, "none")
    static.ranges = True
    static.encodings = {"*.pmtiles": "gzip"}
    assert requests.head(url).headers["Content-Encoding"] == "gzip"          # bytes as stored, header as S3 sets it
    static.encodings = {}
    static.types = {"*.pmtiles": "binary/octet-stream"}
    assert requests.head(url).headers["Content-Type"] == "binary/octet-stream"
    static.truncate = {"a.pmtiles"}
    assert requests.get(url).content == bytes(range(100))
    static.truncate, static.bodies = set(), {"a.pmtiles": b"other"}
    assert requests.get(url).content == b"other"
    static.missing = {"a.pmtiles"}
    assert requests.get(url).status_code == 404 and requests.head(static.url + "b.tsv").status_code == 200
    static.missing = set()
    assert requests.get(static.url + "../etc/passwd").status_code == 404
    static.refuse = True
    r = requests.get(static.url + "b.tsv")
    assert r.status_code == 403 and b"<Code>AccessDenied</Code>" in r.content
    static.refuse = False
    static.cors_origin = None
    assert preflight(url).status_code == 403
    assert "Access-Control-Allow-Origin" not in requests.get(url, headers={"Origin": ORIGIN}).headers
    static.cors_origin = "https://other.example.org"
    assert preflight(url).status_code == 403
    static.cors_origin = "*"
    static.allow_headers = ()
    assert preflight(url).status_code == 403 and preflight(url, headers="").status_code == 200
    static.allow_headers = ("Range",)
    static.expose = ()
    assert "Access-Control-Expose-Headers" not in requests.get(url, headers={"Origin": ORIGIN}).headers
    static.fixed_origin = "https://fixed.example.org"
    assert preflight(url).headers["Access-Control-Allow-Origin"] == "https://fixed.example.org"
    assert requests.get(url, headers={"Origin": ORIGIN}).headers["Access-Control-Allow-Origin"] == \
        "https://fixed.example.org"
    assert [m for m, _, _ in static.requests][:3] == ["GET", "HEAD", "HEAD"]


def test_zenodo_fake_public_urls(zenodo):
    s = requests.Session()
    s.headers["Authorization"] = "Bearer test-token-zz9"
    api = zenodo.url + "/api"
    dep = s.post(api + "/deposit/depositions", json={"metadata": {
        "title": "Some data", "upload_type": "dataset", "creators": [{"name": "Doe, Jane"}]}}).json()
    data = bytes(range(256)) * 4
    assert s.put(f"{dep['links']['bucket']}/x.pmtiles", data=data).status_code == 201
    record = f"{zenodo.url}/records/{dep['id']}/files/x.pmtiles"
    content = f"{api}/records/{dep['id']}/files/x.pmtiles/content"
    # a draft has no public URL
    assert requests.get(record).status_code == 404 and requests.get(content).status_code == 404
    assert s.post(f"{api}/deposit/depositions/{dep['id']}/actions/publish").status_code == 202
    # record URL: ranges, no CORS
    r = requests.get(record, headers={"Range": "bytes=0-9", "Origin": ORIGIN})
    assert (r.status_code, r.content, r.headers["Content-Range"]) == (206, data[:10], "bytes 0-9/1024")
    assert "Access-Control-Allow-Origin" not in r.headers
    assert r.headers["ETag"] == f'"md5:{hashlib.md5(data).hexdigest()}"'
    # API URL: CORS, no ranges
    r = requests.get(content, headers={"Range": "bytes=0-9", "Origin": ORIGIN})
    assert (r.status_code, r.content, r.headers["Access-Control-Allow-Origin"]) == (200, data, "*")
    h = requests.head(content)
    assert (h.status_code, h.headers["Content-Length"], h.content) == (200, "1024", b"")
    assert requests.get(f"{zenodo.url}/records/{dep['id']}/files/nope.tsv").status_code == 404
