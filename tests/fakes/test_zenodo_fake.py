"""The Zenodo fake itself, driven over real HTTP with requests (see zenodo-api.md)."""
from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
from zenodo_fake import ZenodoFake

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
META = {"title": "Mouse brain", "upload_type": "dataset", "description": "d",
        "creators": [{"name": "Doe, Jane"}], "version": "1"}


@pytest.fixture
def fake():
    with ZenodoFake() as f:
        yield f


@pytest.fixture
def s():
    with requests.Session() as sess:
        sess.headers.update(AUTH)
        yield sess


def api(fake, path: str) -> str:
    return fake.url + "/api" + path


def create(fake, s, meta=None) -> dict:
    r = s.post(api(fake, "/deposit/depositions"), json={"metadata": meta} if meta is not None else {})
    assert r.status_code == 201, r.text
    return r.json()


def put_file(s, dep: dict, key: str, data: bytes) -> requests.Response:
    return s.put(f"{dep['links']['bucket']}/{key}", data=data,
                 headers={"Content-Type": "application/octet-stream"})


def published(fake, s, files=None) -> dict:
    dep = create(fake, s, META)
    for key, data in (files or {"a.txt": b"alpha"}).items():
        assert put_file(s, dep, key, data).status_code == 201
    r = s.post(dep["links"]["publish"])
    assert r.status_code == 202, r.text
    return r.json()


# ---- auth --------------------------------------------------------------------------------------
def test_auth_header_only(fake, s):
    url = api(fake, "/deposit/depositions")
    assert s.get(url).status_code == 200
    r = requests.get(url, params={"access_token": TOKEN})
    assert (r.status_code, r.json()) == (403, {"status": 403, "message": "Permission denied."})
    assert s.get(url, params={"access_token": TOKEN}).status_code == 403  # even alongside the header
    assert requests.get(url).status_code == 403
    assert requests.get(url, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert "REDACTED" in fake.query_log[1] and TOKEN not in "".join(fake.query_log)
    assert TOKEN not in repr(fake.requests)


def test_owners_and_unknown_ids(fake, s):
    fake.add_token("other", owner=2)
    dep = create(fake, s)
    other = {"Authorization": "Bearer other"}
    r = requests.get(dep["links"]["self"], headers=other)
    assert (r.status_code, r.json()["message"]) == (403, "Permission denied.")
    assert requests.get(api(fake, "/deposit/depositions"), headers=other).json() == []
    r = s.get(api(fake, "/deposit/depositions/999999"))
    assert r.json() == {"status": 404, "message": "The persistent identifier does not exist."}


# ---- create / put / get / list -----------------------------------------------------------------
def test_create_shape(fake, s):
    dep = create(fake, s)
    assert isinstance(dep["id"], int) and dep["conceptrecid"] == str(dep["id"] - 1)
    assert (dep["state"], dep["submitted"], dep["doi"]) == ("unsubmitted", False, "")
    assert dep["links"]["latest_draft"] == dep["links"]["self"]
    assert dep["links"]["bucket"].startswith(fake.url + "/api/files/")
    assert dep["metadata"]["publication_date"] == dt.date.today().isoformat()
    assert fake.deposition_count() == 1


def test_put_replaces_metadata_and_rejects_unknown_keys(fake, s):
    dep = create(fake, s, {"title": "Old", "notes": "n", "publication_date": "2020-01-01"})
    r = s.put(dep["links"]["self"], json={"metadata": {"title": "New"}})
    assert r.status_code == 200
    md = s.get(dep["links"]["self"]).json()["metadata"]
    assert md["title"] == "New" and "notes" not in md
    assert md["publication_date"] == dt.date.today().isoformat()
    r = s.put(dep["links"]["self"], json={"metadata": {"title": "x"}, "files": []})
    assert r.status_code == 400
    assert r.json()["errors"] == [{"field": "files", "messages": ["Unknown field."]}]
    # GET-modify-PUT round trip works (prereserve_doi is output-only and tolerated)
    got = s.get(dep["links"]["self"]).json()
    assert s.put(dep["links"]["self"], json={"metadata": got["metadata"]}).status_code == 200


def test_list_queries(fake, s):
    a = create(fake, s, {"title": "Mouse brain FICTURE"})
    b = create(fake, s, {"title": "Human liver", "notes": "cartsync:abc"})
    url = api(fake, "/deposit/depositions")
    hits = s.get(url).json()
    assert isinstance(hits, list) and [h["id"] for h in hits] == [b["id"], a["id"]]
    assert "bucket" not in hits[0]["links"]
    assert [h["id"] for h in s.get(url, params={"q": f"conceptrecid:{a['conceptrecid']}"}).json()] == [a["id"]]
    assert [h["id"] for h in s.get(url, params={"q": 'title:"mouse brain"'}).json()] == [a["id"]]
    assert [h["id"] for h in s.get(url, params={"q": "cartsync:abc"}).json()] == [b["id"]]
    assert [h["id"] for h in s.get(url, params={"q": "liver AND cartsync:abc"}).json()] == [b["id"]]
    assert [h["id"] for h in s.get(url, params={"q": '"cartsync:abc"'}).json()] == [b["id"]]
    assert [h["id"] for h in s.get(url, params={"size": 1, "page": 2}).json()] == [a["id"]]
    assert s.get(url, params={"size": 101}).status_code == 400


def test_list_lag(fake, s):
    fake.list_lag = True
    dep = create(fake, s)
    url = api(fake, "/deposit/depositions")
    assert s.get(url).json() == []
    assert [h["id"] for h in s.get(url).json()] == [dep["id"]]


# ---- files -------------------------------------------------------------------------------------
def test_bucket_put_and_checksum_shapes(fake, s):
    dep = create(fake, s)
    data = b"hello world\r\n\x00\xff"
    md5 = hashlib.md5(data).hexdigest()
    r = put_file(s, dep, "a.txt", data)
    assert r.status_code == 201
    body = r.json()
    assert (body["key"], body["size"], body["checksum"]) == ("a.txt", len(data), "md5:" + md5)
    assert type(body["size"]) is int and body["is_head"] is True
    listed = s.get(dep["links"]["files"]).json()
    assert (listed[0]["filename"], listed[0]["checksum"]) == ("a.txt", md5)
    assert type(listed[0]["filesize"]) is float and listed[0]["filesize"] == float(len(data))
    in_dep = s.get(dep["links"]["self"]).json()["files"][0]
    assert type(in_dep["filesize"]) is int
    assert s.get(f"{dep['links']['bucket']}/a.txt").content == data
    assert s.get(in_dep["links"]["download"]).content == data
    assert fake.files_of(dep["id"]) == {"a.txt": md5}


def test_replace_same_key_gets_new_id(fake, s):
    dep = create(fake, s)
    put_file(s, dep, "a.txt", b"one")
    first = s.get(dep["links"]["files"]).json()[0]["id"]
    r = put_file(s, dep, "a.txt", b"two")
    assert r.json()["checksum"] == "md5:" + hashlib.md5(b"two").hexdigest()
    files = s.get(dep["links"]["files"]).json()
    assert len(files) == 1 and files[0]["id"] != first
    assert fake.depositions[dep["id"]].files["a.txt"].data == b"two"


def test_multipart_post_delete_and_405s(fake, s):
    dep = create(fake, s)
    r = s.post(dep["links"]["files"], data={"name": "my data/ü.csv"}, files={"file": ("x", b"a\r\nb\n")})
    assert r.status_code == 201 and r.json()["filename"] == "my_data_u.csv"
    fid = r.json()["id"]
    assert fake.depositions[dep["id"]].files["my_data_u.csv"].data == b"a\r\nb\n"
    assert s.put(dep["links"]["files"], json=[]).status_code == 405
    assert s.put(f"{dep['links']['files']}/{fid}", json={"filename": "y"}).status_code == 405
    assert s.delete(f"{dep['links']['files']}/{fid}").status_code == 204
    assert s.delete(f"{dep['links']['files']}/{fid}").status_code == 404


def test_bucket_delete_and_the_500_bug(fake, s):
    dep = create(fake, s)
    put_file(s, dep, "a", b"1")
    put_file(s, dep, "b", b"2")
    assert s.delete(f"{dep['links']['bucket']}/a").status_code == 204
    fake.bucket_delete_500 = True
    assert s.delete(f"{dep['links']['bucket']}/b").status_code == 500
    assert fake.files_of(dep["id"]) == {}


def test_file_count_and_size_limits(fake, s):
    dep = create(fake, s)
    for i in range(100):
        assert put_file(s, dep, f"f{i}", b"").status_code == 201
    r = put_file(s, dep, "f100", b"x")
    assert (r.status_code, r.json()["message"]) == (
        400, "Uploading selected files will result in exceeding the max amount per record.")
    assert put_file(s, dep, "f0", b"replace is fine").status_code == 201
    fake.max_bytes = 20
    r = put_file(s, dep, "f1", b"x" * 10)
    assert (r.status_code, r.json()["message"]) == (400, "File size limit exceeded.")
    assert s.get(api(fake, "/deposit/depositions")).status_code == 200  # connection still usable


# ---- publish / edit / newversion / discard -----------------------------------------------------
def test_publish_validation(fake, s):
    dep = create(fake, s, {"title": "ab"})
    r = s.post(dep["links"]["publish"])
    assert r.status_code == 400
    body = r.json()
    assert (body["status"], body["message"]) == (400, "A validation error occurred.")
    fields = {e["field"]: e["messages"] for e in body["errors"]}
    assert set(fields) == {"files.enabled", "metadata.title", "metadata.creators", "metadata.upload_type"}
    assert all(isinstance(m, list) for m in fields.values())


def test_publish_success_and_frozen_files(fake, s):
    dep = published(fake, s)
    assert (dep["state"], dep["submitted"], dep["doi"]) == ("done", True, f"10.5072/zenodo.{dep['id']}")
    assert dep["doi_url"].endswith(dep["doi"]) and "record" in dep["links"] and "bucket" not in dep["links"]
    bucket = fake.url + "/api/files/" + fake.depositions[dep["id"]].bucket
    before = fake.files_of(dep["id"])
    fid = dep["files"][0]["id"]
    assert s.put(f"{bucket}/a.txt", data=b"changed").status_code == 403
    assert s.put(f"{bucket}/new.txt", data=b"new").status_code == 403
    assert s.post(dep["links"]["files"], files={"file": ("n", b"n")}).status_code == 404
    assert s.delete(f"{dep['links']['files']}/{fid}").status_code == 403
    assert s.put(dep["links"]["self"], json={"metadata": META}).status_code == 404
    assert s.delete(dep["links"]["self"]).status_code == 404
    assert s.post(dep["links"]["publish"]).status_code == 404
    # edit: metadata only, files stay locked, discard restores
    r1, r2 = s.post(dep["links"]["edit"]), s.post(dep["links"]["edit"])
    assert (r1.status_code, r2.status_code, r2.json()["state"]) == (201, 201, "inprogress")
    assert s.put(dep["links"]["self"], json={"metadata": dict(META, title="Edited")}).status_code == 200
    assert s.put(f"{bucket}/a.txt", data=b"changed").status_code == 403
    assert s.post(dep["links"]["discard"]).status_code == 204
    after = s.get(dep["links"]["self"]).json()
    assert (after["state"], after["title"]) == ("done", "Mouse brain")
    assert fake.files_of(dep["id"]) == before


def test_newversion(fake, s):
    v1 = published(fake, s, {"a.txt": b"alpha", "b.txt": b"beta"})
    r = s.post(v1["links"]["newversion"])
    assert r.status_code == 201
    v2 = r.json()
    assert v2["id"] != v1["id"] and v2["conceptrecid"] == v1["conceptrecid"]
    assert (v2["state"], v2["submitted"], v2["doi"]) == ("unsubmitted", False, "")
    assert v2["links"]["latest_draft"] == v2["links"]["self"]
    assert "version" not in v2["metadata"]
    assert v2["metadata"]["publication_date"] == dt.date.today().isoformat()
    assert fake.files_of(v2["id"]) == fake.files_of(v1["id"])
    assert {f["id"] for f in v2["files"]}.isdisjoint(f["id"] for f in v1["files"])
    # the original's latest_draft never reveals the pending draft
    assert s.get(v1["links"]["self"]).json()["links"]["latest_draft"] == v1["links"]["self"]
    # second newversion while the draft holds files -> 400
    r = s.post(v1["links"]["newversion"])
    assert r.status_code == 400
    assert r.json()["errors"] == [{"field": "files.enabled", "messages": ["Please remove all files first."]}]
    # listing: newest per concept; allversions shows both
    url = api(fake, "/deposit/depositions")
    q = {"q": f"conceptrecid:{v1['conceptrecid']}"}
    assert [(h["id"], h["submitted"]) for h in s.get(url, params=q).json()] == [(v2["id"], False)]
    assert len(s.get(url, params=dict(q, allversions="true")).json()) == 2
    assert len(s.get(url, params=dict(q, all_versions=1)).json()) == 2
    # deleting inherited files never touches the published version; an emptied draft re-imports
    for f in s.get(v2["links"]["files"]).json():
        assert s.delete(f["links"]["self"]).status_code == 204
    assert fake.files_of(v1["id"]) == {k: hashlib.md5(v).hexdigest() for k, v in
                                      {"a.txt": b"alpha", "b.txt": b"beta"}.items()}
    r = s.post(v1["links"]["newversion"])
    assert (r.status_code, r.json()["id"]) == (201, v2["id"])
    assert set(fake.files_of(v2["id"])) == {"a.txt", "b.txt"}
    # discard the new draft
    assert s.post(v2["links"]["discard"]).status_code == 204
    assert s.get(v2["links"]["self"]).status_code == 404
    assert fake.deposition_count() == 1


def test_keep_alive_survives_an_early_400(fake, s):
    dep = create(fake, s)
    fake.max_bytes = 10
    bucket = urlsplit(dep["links"]["bucket"]).path
    conn = http.client.HTTPConnection("127.0.0.1", int(fake.url.rsplit(":", 1)[1]), timeout=5)
    conn.request("PUT", bucket + "/big", body=b"x" * 200_000, headers=AUTH)
    r = conn.getresponse()
    assert (r.status, r.getheader("Connection"), r.getheader("Content-Length")) == (400, None, str(len(r.read())))
    sock = conn.sock
    conn.request("PUT", bucket + "/small", body=b"ok", headers=AUTH)
    r = conn.getresponse()
    assert r.status == 201 and r.read() and conn.sock is sock  # same connection reused
    conn.close()


def test_concurrent_uploads(fake, s):
    dep = create(fake, s)

    def upload(i: int) -> None:
        with requests.Session() as own:
            own.headers.update(AUTH)
            assert put_file(own, dep, f"f{i}", str(i).encode() * 1000).status_code == 201

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.files_of(dep["id"])) == 16


# ---- faults ------------------------------------------------------------------------------------
def test_rate_limit(fake, s):
    fake.rate_limit(3, 30)
    url = api(fake, "/deposit/depositions")
    ok = [s.get(url) for _ in range(3)]
    assert all(r.status_code == 200 for r in ok)
    assert ok[0].headers["X-RateLimit-Limit"] == "3" and ok[2].headers["X-RateLimit-Remaining"] == "0"
    r = s.get(url)
    assert r.status_code == 429
    assert 1 <= int(r.headers["Retry-After"]) <= 30
    assert int(r.headers["X-RateLimit-Reset"]) >= int(time.time())
    fake.rate_limit(None)
    assert s.get(url).status_code == 200


def test_fail_next_after_success(fake, s):
    dep = create(fake, s, META)
    put_file(s, dep, "a.txt", b"a")
    fake.fail_next(1, 504, path_contains="/actions/publish", after_success=True)
    r = s.post(dep["links"]["publish"])
    assert r.status_code == 504 and r.headers["Content-Type"] == "text/html"
    assert s.get(dep["links"]["self"]).json()["state"] == "done"  # it did publish
    fake.fail_next(2, 503, method="PUT")
    d2 = create(fake, s)
    assert put_file(s, d2, "x", b"x").status_code == 503
    assert s.put(d2["links"]["self"], json={"metadata": {}}).status_code == 503
    assert fake.files_of(d2["id"]) == {}  # failed before processing
    assert put_file(s, d2, "x", b"x").status_code == 201
    assert fake.count("PUT", status=503) == 2 and fake.faults_injected == 3


def test_reset_connection_mid_body(fake, s):
    dep = create(fake, s)
    fake.reset_connection_next(1, path_contains="/api/files/")
    with pytest.raises(requests.ConnectionError):
        put_file(s, dep, "big.bin", b"z" * 300_000)
    assert fake.files_of(dep["id"]) == {}
    assert put_file(s, dep, "big.bin", b"z" * 300_000).status_code == 201
    assert ("PUT", f"/api/files/{fake.depositions[dep['id']].bucket}/big.bin", 0) in fake.requests


def test_fail_rate_is_seeded(fake, s):
    fake.fail_rate(0.5, statuses=(500, 503), seed=7)
    codes = [s.get(api(fake, "/deposit/depositions")).status_code for _ in range(20)]
    assert set(codes) <= {200, 500, 503} and fake.faults_injected == codes.count(500) + codes.count(503)
    assert 0 < fake.faults_injected < 20


def test_log_helpers(fake, s):
    create(fake, s)
    s.get(api(fake, "/deposit/depositions"), params={"q": "x"})
    assert fake.count("POST", "/api/deposit") == 1 and fake.count(path_prefix="/api/deposit/depositions") == 2
    assert fake.query_log[-1] == "q=x" and fake.requests[-1] == ("GET", "/api/deposit/depositions", 200)
    fake.reset_log()
    assert fake.requests == [] and fake.count() == 0


def test_answers_without_checksums_or_ids(fake, s):
    """The switches for a non-conforming server: only the named field goes; the state is unchanged."""
    dep = create(fake, s, META)
    fake.upload_without_checksum = True
    r = put_file(s, dep, "a.txt", b"alpha")
    assert r.status_code == 201 and "checksum" not in r.json() and r.json()["size"] == 5
    assert fake.files_of(dep["id"]) == {"a.txt": hashlib.md5(b"alpha").hexdigest()}       # stored all the same
    fake.listing_without_checksum = True
    listed = s.get(api(fake, f"/deposit/depositions/{dep['id']}")).json()["files"]
    assert [(f["filename"], "checksum" in f) for f in listed] == [("a.txt", False)]
    assert ["checksum" in f for f in s.get(api(fake, f"/deposit/depositions/{dep['id']}/files")).json()] == [False]
    fake.upload_without_checksum = fake.listing_without_checksum = False
    pub = s.post(dep["links"]["publish"]).json()
    fake.newversion_without_id = True
    r = s.post(pub["links"]["newversion"])
    assert r.status_code == 201 and "id" not in r.json() and "record_id" not in r.json()
    assert r.json()["submitted"] is False and fake.deposition_count() == 2                  # the draft exists
