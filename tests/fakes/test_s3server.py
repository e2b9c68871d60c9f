"""Self-tests of the S3 test infrastructure (tests/fakes/s3server.py, tests/fakes/faultproxy.py).

Everything runs on 127.0.0.1; the whole module takes a few seconds.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import threading
import uuid
import zlib

import pytest

try:  # tests/ is on sys.path (pytest rootdir-less "prepend" import mode)
    from faultproxy import FaultProxy
    from kms_proxy import KmsProxy
    from s3server import S3Server, aws_env
except ImportError:  # tests/ imported as a package
    from tests.faultproxy import FaultProxy
    from tests.kms_proxy import KmsProxy
    from tests.s3server import S3Server, aws_env

import botocore.exceptions
import requests
import s3fs

MiB = 2**20


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def srv():
    with S3Server() as server:
        yield server


@pytest.fixture
def bucket(srv):
    name = f"t-{uuid.uuid4().hex[:12]}"
    srv.create_bucket(name)
    srv.reset_counts()
    return name


@pytest.fixture
def proxy(srv):
    with FaultProxy(srv.endpoint_url, seed=1234) as p:
        yield p


def _fs(**storage_options) -> s3fs.S3FileSystem:
    # fresh instance: no fsspec instance cache, no listing cache surprises
    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **storage_options)


@pytest.fixture
def http_session():
    s = requests.Session()
    s.trust_env = False  # never go through an environment proxy
    yield s
    s.close()


@pytest.fixture
def big_file(tmp_path):
    """10.5 MiB: with chunksize=5 MiB s3fs goes multipart (size >= 2*chunksize), 3 parts."""
    p = tmp_path / "big.bin"
    p.write_bytes(os.urandom(10 * MiB + MiB // 2))
    return p


def _md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


# --------------------------------------------------------------------------- S3Server
def test_aws_env_and_storage_options(srv):
    assert aws_env() == {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    so = srv.storage_options()
    assert so["endpoint_url"] == srv.endpoint_url.rstrip("/")
    assert so["endpoint_url"].startswith("http://127.0.0.1:")
    assert (so["key"], so["secret"]) == ("testing", "testing")


def test_counts_boto3_put_head_list_get_delete(srv, bucket):
    c = srv.boto3_client()
    c.put_object(Bucket=bucket, Key="a/one.txt", Body=b"hello")
    c.put_object(Bucket=bucket, Key="a/two.txt", Body=b"world!!")
    c.head_object(Bucket=bucket, Key="a/one.txt")
    c.list_objects_v2(Bucket=bucket, Prefix="a/")
    assert c.get_object(Bucket=bucket, Key="a/two.txt")["Body"].read() == b"world!!"

    counts = srv.counts()
    assert counts["PutObject"] == 2
    assert counts["HeadObject"] == 1
    assert counts["ListObjectsV2"] == 1
    assert counts["list_total"] == 1
    assert counts["GetObject"] == 1
    assert counts["UploadPart"] == 0  # Counter: unseen ops read as 0
    assert srv.bytes_received == 5 + 7
    assert srv.method_counts() == {"PUT": 2, "HEAD": 1, "GET": 2}
    assert srv.requests[0] == ("PUT", f"/{bucket}/a/one.txt", "")
    assert srv.requests[3][0:2] == ("GET", f"/{bucket}")
    assert "list-type=2" in srv.requests[3][2]

    # helper calls are not counted, but are in request_log
    listing = srv.list_objects(bucket, prefix="a/")
    assert listing == {
        "a/one.txt": (5, _md5(b"hello")),
        "a/two.txt": (7, _md5(b"world!!")),
    }
    assert srv.counts()["ListObjectsV2"] == 1
    assert any(not r.counted for r in srv.request_log)

    srv.reset_counts()
    c.delete_object(Bucket=bucket, Key="a/one.txt")
    c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a/two.txt"}], "Quiet": True})
    assert srv.counts() == {"DeleteObject": 1, "DeleteObjects": 1}
    assert srv.list_objects(bucket) == {}
    assert srv.bytes_received == 0


def test_s3fs_put_ls_info(srv, bucket, tmp_path):
    fs = _fs(**srv.storage_options())
    local = tmp_path / "sample.json"
    local.write_bytes(b'{"a": 1}')
    fs.put_file(str(local), f"{bucket}/run1/sample.json")
    fs.pipe_file(f"{bucket}/run1/sub/x.bin", b"xyz")

    assert fs.ls(f"{bucket}/run1") == [f"{bucket}/run1/sample.json", f"{bucket}/run1/sub"]
    info = fs.info(f"{bucket}/run1/sample.json")
    assert info["size"] == 8
    assert info["type"] == "file"
    assert info["ETag"] == '"%s"' % _md5(b'{"a": 1}')  # s3fs keeps the quotes
    assert info["ContentType"] == "application/json"  # guessed by s3fs from the name
    c = srv.counts()
    assert c["PutObject"] == 2 and c["CreateMultipartUpload"] == 0
    assert c["HeadObject"] == 1 and c["ListObjectsV2"] >= 1
    assert srv.bytes_received == 8 + 3


def test_s3fs_multipart_is_counted(srv, bucket, big_file):
    fs = _fs(**srv.storage_options())
    fs.put_file(str(big_file), f"{bucket}/big.bin", chunksize=5 * MiB)
    c = srv.counts()
    assert c["CreateMultipartUpload"] == 1
    assert c["UploadPart"] == 3
    assert c["CompleteMultipartUpload"] == 1
    assert c["PutObject"] == 0
    assert c["AbortMultipartUpload"] == 0
    assert srv.bytes_received == big_file.stat().st_size
    size, etag = srv.list_objects(bucket)["big.bin"]
    assert size == big_file.stat().st_size
    assert etag.endswith("-3")
    assert srv.list_multipart_uploads(bucket) == []


def test_multipart_abort_is_counted_and_pending_uploads_listed(srv, bucket):
    c = srv.boto3_client()
    mpu = c.create_multipart_upload(Bucket=bucket, Key="pending")
    c.upload_part(Bucket=bucket, Key="pending", UploadId=mpu["UploadId"], PartNumber=1, Body=b"p" * 100)
    pending = srv.list_multipart_uploads(bucket)
    assert [(u["Key"], u["UploadId"]) for u in pending] == [("pending", mpu["UploadId"])]
    c.abort_multipart_upload(Bucket=bucket, Key="pending", UploadId=mpu["UploadId"])
    assert srv.list_multipart_uploads(bucket) == []
    assert srv.counts() == {"CreateMultipartUpload": 1, "UploadPart": 1, "AbortMultipartUpload": 1}


def _complete_small_mpu(client, bucket, key):
    mpu = client.create_multipart_upload(Bucket=bucket, Key=key)
    part = client.upload_part(Bucket=bucket, Key=key, UploadId=mpu["UploadId"], PartNumber=1, Body=b"v" * 10)
    return client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=mpu["UploadId"],
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
    )


def test_null_version_id_quirk_is_worked_around(srv, bucket, big_file):
    # The raw moto behaviour, through a second server without the workaround
    # (same process => same moto backend => same bucket).
    with S3Server(strip_null_version_id=False) as raw:
        raw_client = raw.boto3_client()
        resp = _complete_small_mpu(raw_client, bucket, "raw")
        if resp.get("VersionId") != "null":
            pytest.skip("this moto no longer sends x-amz-version-id: null")
        with pytest.raises(botocore.exceptions.ClientError) as ei:
            raw_client.head_object(Bucket=bucket, Key="raw", VersionId="null")
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    # With the workaround: no version id at all, like real S3 on an unversioned bucket.
    resp = _complete_small_mpu(srv.boto3_client(), bucket, "fixed")
    assert "VersionId" not in resp
    assert "x-amz-version-id" not in resp["ResponseMetadata"]["HTTPHeaders"]

    # s3fs: multipart put_file then info() works...
    fs = _fs(**srv.storage_options())
    fs.put_file(str(big_file), f"{bucket}/mp.bin", chunksize=5 * MiB)
    assert fs.info(f"{bucket}/mp.bin")["size"] == big_file.stat().st_size
    # ... and a version-aware S3File no longer picks up the bogus "null" version,
    # so info(version_id=f.version_id) (which moto would answer with 400) is not needed.
    fsv = _fs(**srv.storage_options(), version_aware=True)
    with fsv.open(f"{bucket}/w.bin", "wb", block_size=5 * MiB) as f:
        f.write(b"w" * (6 * MiB))
    assert f.version_id is None
    assert fsv.info(f"{bucket}/w.bin")["size"] == 6 * MiB
    assert all(r.status is None or r.status < 400 for r in srv.request_log)


# --------------------------------------------------------------------------- quirk 4: CRC32 of multipart parts
def _crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


@pytest.fixture(params=["direct", "kms_proxy"])
def crc_client(request, srv):
    """An uncounted boto3 client that tries once, straight on moto or through tests/fakes/kms_proxy.py."""
    if request.param == "direct":
        yield srv.boto3_client(counted=False, retries={"total_max_attempts": 1})
        return
    with KmsProxy(srv.endpoint_url) as kms:
        yield srv.boto3_client(counted=False, endpoint_url=kms.url, retries={"total_max_attempts": 1})


def _moto_upload(bucket, upload_id):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    return s3_backends[DEFAULT_ACCOUNT_ID]["global"].buckets[bucket].multiparts[upload_id]


def test_crc32_wrong_part_is_refused_and_not_stored(srv, bucket, crc_client):
    c = crc_client
    uid = c.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        c.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"data", ChecksumCRC32=_crc32(b"other"))
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert ei.value.response["Error"] == {
        "Code": "BadDigest", "Message": "The CRC32 you specified did not match the calculated checksum."}
    assert "Parts" not in c.list_parts(Bucket=bucket, Key="k", UploadId=uid)
    assert _moto_upload(bucket, uid).parts == {}
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        c.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"data", ChecksumCRC32="nope")
    assert ei.value.response["Error"] == {
        "Code": "InvalidRequest", "Message": "Value for x-amz-checksum-crc32 header is invalid."}
    assert _moto_upload(bucket, uid).parts == {}
    # moto itself (the workaround switched off) stores the wrong part: the quirk this works around
    with S3Server(crc32_parts=False) as raw:
        r = raw.boto3_client(counted=False).upload_part(
            Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"data", ChecksumCRC32=_crc32(b"other"))
        assert "ChecksumCRC32" not in r
    assert _moto_upload(bucket, uid).parts[1].value == b"data"


def test_crc32_parts_are_echoed_listed_and_composed(srv, bucket, crc_client):
    c = crc_client
    first, last = os.urandom(5 * MiB), b"tail"
    uid = c.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    p1 = c.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=first, ChecksumCRC32=_crc32(first))
    assert p1["ChecksumCRC32"] == _crc32(first)
    assert [v for k, v in p1["ResponseMetadata"]["HTTPHeaders"].items() if k == "x-amz-checksum-crc32"] == \
        [_crc32(first)]
    # botocore computing the CRC32 itself (ChecksumAlgorithm, as a default client does on its own)
    p2 = c.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=2, Body=last, ChecksumAlgorithm="CRC32")
    assert p2["ChecksumCRC32"] == _crc32(last)

    listed = c.list_parts(Bucket=bucket, Key="k", UploadId=uid)
    assert [(p["PartNumber"], p["Size"], p["ChecksumCRC32"]) for p in listed["Parts"]] == \
        [(1, 5 * MiB, _crc32(first)), (2, 4, _crc32(last))]
    assert (listed["ChecksumAlgorithm"], listed["ChecksumType"]) == ("CRC32", "COMPOSITE")

    done = c.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1["ETag"], "ChecksumCRC32": _crc32(first)},
        {"PartNumber": 2, "ETag": p2["ETag"], "ChecksumCRC32": _crc32(last)}]})
    composite = _crc32(zlib.crc32(first).to_bytes(4, "big") + zlib.crc32(last).to_bytes(4, "big")) + "-2"
    assert (done["ChecksumCRC32"], done["ChecksumType"]) == (composite, "COMPOSITE")
    assert "VersionId" not in done            # quirk 1 still applies to this answer
    head = c.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert (head["ChecksumCRC32"], head["ChecksumType"]) == (composite, "COMPOSITE")
    assert "ChecksumCRC32" not in c.head_object(Bucket=bucket, Key="k")
    got = c.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert (got["ChecksumCRC32"], got["ChecksumType"]) == (composite, "COMPOSITE")
    assert got["Body"].read() == first + last
    assert srv.get_object_bytes(bucket, "k") == first + last


def test_crc32_complete_needs_each_part_checksum_right(srv, bucket, crc_client):
    c = crc_client
    uid = c.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    etag = c.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=b"one",
                         ChecksumCRC32=_crc32(b"one"))["ETag"]
    for part, error in (
        ({"PartNumber": 1, "ETag": etag}, {
            "Code": "InvalidRequest", "Message": "The upload was created using a crc32 checksum. The complete "
            "request must include the checksum for each part. It was missing for part 1 in the request."}),
        ({"PartNumber": 1, "ETag": etag, "ChecksumCRC32": _crc32(b"two")}, {
            "Code": "InvalidPart", "Message": "One or more of the specified parts could not be found. The part "
            "might not have been uploaded, or the specified entity tag might not have matched the part's entity "
            "tag."}),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as ei:
            c.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid, MultipartUpload={"Parts": [part]})
        assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert ei.value.response["Error"] == error
        assert [u["UploadId"] for u in srv.list_multipart_uploads(bucket)] == [uid]      # still there
    done = c.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": etag, "ChecksumCRC32": _crc32(b"one")}]})
    assert done["ChecksumCRC32"] == _crc32(zlib.crc32(b"one").to_bytes(4, "big")) + "-1"
    assert srv.get_object_bytes(bucket, "k") == b"one"


def test_crc32_aws_chunked_part_is_left_to_moto(srv, bucket, http_session):
    c = srv.boto3_client(counted=False)
    uid = c.create_multipart_upload(Bucket=bucket, Key="k", ChecksumAlgorithm="CRC32")["UploadId"]
    r = http_session.put(
        f"{srv.endpoint_url}/{bucket}/k", params={"uploadId": uid, "partNumber": "1"},
        data=f"4\r\ntail\r\n0\r\nx-amz-checksum-crc32:{_crc32(b'tail')}\r\n\r\n".encode(),
        headers={"Content-Encoding": "aws-chunked", "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                 "x-amz-decoded-content-length": "4", "x-amz-trailer": "x-amz-checksum-crc32",
                 "x-amz-sdk-checksum-algorithm": "CRC32"})
    assert r.status_code == 200, r.text
    assert _moto_upload(bucket, uid).parts[1].value == b"tail"        # moto decoded the chunks itself
    # Complete checks the part against the CRC32 of what moto stored (S3 computed one for it)
    done = c.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": r.headers["ETag"], "ChecksumCRC32": _crc32(b"tail")}]})
    assert done["ChecksumCRC32"] == _crc32(zlib.crc32(b"tail").to_bytes(4, "big")) + "-1"


def test_parts_without_crc32_work_as_before(srv, bucket):
    plain = srv.boto3_client(counted=False, request_checksum_calculation="when_required")
    default = srv.boto3_client(counted=False)       # sends x-amz-checksum-crc32 on its own
    uid = plain.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    first = os.urandom(5 * MiB)
    p1 = plain.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=1, Body=first)
    assert "x-amz-checksum-crc32" not in p1["ResponseMetadata"]["HTTPHeaders"]
    p2 = default.upload_part(Bucket=bucket, Key="k", UploadId=uid, PartNumber=2, Body=b"tail")
    assert p2["ChecksumCRC32"] == _crc32(b"tail")
    listed = plain.list_parts(Bucket=bucket, Key="k", UploadId=uid)
    assert [("ChecksumCRC32" in p) for p in listed["Parts"]] == [False, True]
    assert "ChecksumAlgorithm" not in listed
    done = plain.complete_multipart_upload(Bucket=bucket, Key="k", UploadId=uid, MultipartUpload={"Parts": [
        {"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
    assert "ChecksumCRC32" not in done
    assert "ChecksumCRC32" not in plain.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert srv.get_object_bytes(bucket, "k") == first + b"tail"
    default.put_object(Bucket=bucket, Key="small", Body=b"small")
    assert srv.get_object_bytes(bucket, "small") == b"small"


# --------------------------------------------------------------------------- FaultProxy + S3
def test_proxy_passthrough_rate0_s3fs(srv, bucket, proxy, big_file):
    fs = _fs(**srv.storage_options(endpoint_url=proxy.url))
    fs.put_file(str(big_file), f"{bucket}/via/big.bin", chunksize=5 * MiB)
    fs.pipe_file(f"{bucket}/via/small.txt", b"small")
    assert fs.ls(f"{bucket}/via") == [f"{bucket}/via/big.bin", f"{bucket}/via/small.txt"]
    assert fs.info(f"{bucket}/via/big.bin")["size"] == big_file.stat().st_size
    assert fs.cat_file(f"{bucket}/via/big.bin") == big_file.read_bytes()
    assert fs.cat_file(f"{bucket}/via/small.txt", start=1, end=3) == b"ma"

    c = srv.counts()
    assert (c["CreateMultipartUpload"], c["UploadPart"], c["CompleteMultipartUpload"]) == (1, 3, 1)
    assert c["PutObject"] == 1
    assert proxy.faults_injected == {}
    # every request that reached the proxy reached the server
    assert proxy.requests_total == sum(v for k, v in c.items() if k != "list_total")
    assert srv.bytes_received == big_file.stat().st_size + 5
    assert all(outcome == "forward" for _, _, outcome in proxy.log)


def test_proxy_503_seen_by_boto3_without_retries(srv, bucket, proxy):
    proxy.configure(rate=1.0, faults={"503": 1})
    c = srv.boto3_client(endpoint_url=proxy.url, retries={"total_max_attempts": 1})
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        c.put_object(Bucket=bucket, Key="never", Body=b"x" * 1000)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert ei.value.response["Error"]["Code"] == "ServiceUnavailable"
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        c.head_object(Bucket=bucket, Key="never")  # HEAD: no body, code from status
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503

    proxy.configure(faults={"slowdown": 1})
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        c.put_object(Bucket=bucket, Key="never", Body=b"x")
    assert ei.value.response["Error"]["Code"] == "SlowDown"
    assert ei.value.response["Error"]["Message"] == "Please reduce your request rate."

    proxy.configure(faults={"500": 1})
    with pytest.raises(botocore.exceptions.ClientError) as ei:
        c.list_objects_v2(Bucket=bucket)
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500

    assert proxy.faults_injected == {"503": 2, "slowdown": 1, "500": 1}
    assert proxy.requests_total == 4
    assert srv.counts() == {}  # nothing was forwarded
    assert srv.list_objects(bucket) == {}


def test_proxy_503_then_botocore_retry_succeeds(srv, bucket, proxy):
    proxy.schedule("503", count=1)
    c = srv.boto3_client(endpoint_url=proxy.url, retries={"total_max_attempts": 3, "mode": "standard"})
    c.put_object(Bucket=bucket, Key="retried", Body=b"ok")
    assert proxy.faults_injected == {"503": 1}
    assert srv.counts()["PutObject"] == 1
    assert srv.list_objects(bucket)["retried"][0] == 2


def test_proxy_methods_filter(srv, bucket, proxy):
    srv.put_object(bucket, "k", b"data")
    proxy.configure(rate=1.0, faults={"503": 1}, methods={"PUT", "POST"})
    c = srv.boto3_client(endpoint_url=proxy.url, retries={"total_max_attempts": 1})
    assert c.get_object(Bucket=bucket, Key="k")["Body"].read() == b"data"
    with pytest.raises(botocore.exceptions.ClientError):
        c.put_object(Bucket=bucket, Key="k2", Body=b"x")
    proxy.configure(methods=None, path_filter=lambda target: "k3" in target)
    c.get_object(Bucket=bucket, Key="k")
    with pytest.raises(botocore.exceptions.ClientError):
        c.put_object(Bucket=bucket, Key="k3", Body=b"x")
    assert proxy.faults_injected == {"503": 2}


def test_proxy_truncate_visible_to_requests(srv, bucket, proxy, http_session):
    body = os.urandom(200_000)
    srv.put_object(bucket, "t.bin", body)
    presigner = srv.boto3_client(endpoint_url=proxy.url, counted=False)
    get_url = presigner.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "t.bin"})

    r = http_session.get(get_url)
    assert r.status_code == 200 and r.content == body  # rate 0: untouched

    proxy.configure(rate=1.0, faults={"truncate": 1})
    with pytest.raises(requests.exceptions.ChunkedEncodingError, match="IncompleteRead"):
        http_session.get(get_url)

    # truncate forwards: the PUT lands upstream although the client sees no answer
    put_url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "landed.txt"})
    with pytest.raises(requests.exceptions.ConnectionError):
        http_session.put(put_url, data=b"landed")
    assert srv.list_objects(bucket)["landed.txt"] == (6, _md5(b"landed"))
    assert proxy.faults_injected == {"truncate": 2}
    assert srv.counts()["GetObject"] == 2 and srv.counts()["PutObject"] == 1


def test_proxy_reset_visible_to_requests(srv, bucket, proxy, http_session):
    presigner = srv.boto3_client(endpoint_url=proxy.url, counted=False)
    put_url = presigner.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "r.bin"})
    proxy.configure(rate=1.0, faults={"reset": 1})
    with pytest.raises(requests.exceptions.ConnectionError):
        http_session.put(put_url, data=b"r" * (2 * MiB))
    with pytest.raises(requests.exceptions.ConnectionError):
        http_session.get(put_url)
    assert proxy.faults_injected == {"reset": 2}
    assert srv.counts() == {}  # reset never forwards
    assert srv.list_objects(bucket) == {}


def test_proxy_stall_hits_client_read_timeout(srv, bucket, proxy, http_session):
    proxy.configure(rate=1.0, faults={"stall": 1}, stall_seconds=5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        http_session.get(f"{proxy.url}/{bucket}/whatever", timeout=(2, 0.3))
    assert proxy.faults_injected == {"stall": 1}
    assert srv.counts() == {}


def test_proxy_fail_always_with_s3fs(srv, bucket, proxy):
    rule = proxy.fail_always(lambda method, target: method in ("PUT", "POST") and "/bad/" in target)
    fs = _fs(**srv.storage_options(endpoint_url=proxy.url))
    fs.pipe_file(f"{bucket}/good/a.txt", b"a")
    with pytest.raises(PermissionError):
        fs.pipe_file(f"{bucket}/bad/b.txt", b"b")
    assert proxy.faults_injected == {"fail_always": 1}  # 403 is not retried
    proxy.remove_rule(rule)
    fs.pipe_file(f"{bucket}/bad/b.txt", b"b")

    proxy.fail_always(lambda m, t: "/gone/" in t, status=404,
                      body="<Error><Code>NoSuchBucket</Code><Message>nope</Message></Error>")
    with pytest.raises(FileNotFoundError):
        fs.pipe_file(f"{bucket}/gone/c.txt", b"c")
    assert set(srv.list_objects(bucket)) == {"good/a.txt", "bad/b.txt"}


# --------------------------------------------------------------------------- FaultProxy alone
class _EchoHandler(http.server.BaseHTTPRequestHandler):
    """Upstream for proxy tests: PUT/POST -> {"len", "sha256"} of the body (streamed);
    GET /bytes/N -> N bytes; GET /chunked/N -> N bytes with chunked encoding."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _body_chunks(self):
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return
                yield self.rfile.read(size)
                self.rfile.readline()
        else:
            remaining = int(self.headers.get("Content-Length", 0))
            while remaining:
                data = self.rfile.read(min(remaining, 65536))
                remaining -= len(data)
                yield data

    def _reply(self, code, body, extra=None, chunked=False):
        self.send_response(code)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(body), 1000):
                piece = body[i:i + 1000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def do_PUT(self):
        h, n = hashlib.sha256(), 0
        for chunk in self._body_chunks():
            h.update(chunk)
            n += len(chunk)
        self._reply(200, json.dumps({"len": n, "sha256": h.hexdigest(),
                                     "host": self.headers.get("Host"),
                                     "x-custom": self.headers.get("X-Custom")}).encode(),
                    {"Content-Type": "application/json"})

    do_POST = do_PUT

    def do_GET(self):
        kind, n = self.path.strip("/").split("/")
        body = (b"0123456789abcdef" * (int(n) // 16 + 1))[: int(n)]
        self._reply(200, body, chunked=(kind == "chunked"))


@pytest.fixture
def echo_upstream():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_proxy_streams_bodies_and_keeps_alive(echo_upstream, http_session):
    with FaultProxy(echo_upstream) as p:
        payload = os.urandom(9 * MiB + 123)

        def gen():  # no Content-Length => chunked request body
            for i in range(0, len(payload), 700_001):
                yield payload[i:i + 700_001]

        for data in (payload, gen()):
            r = http_session.put(f"{p.url}/up", data=data, headers={"X-Custom": "kept"})
            assert r.status_code == 200
            got = r.json()
            assert got["len"] == len(payload)
            assert got["sha256"] == hashlib.sha256(payload).hexdigest()
            assert got["x-custom"] == "kept"
            assert got["host"] == p.url.split("//")[1]  # Host forwarded unchanged

        r = http_session.get(f"{p.url}/bytes/100000")
        assert len(r.content) == 100000 and r.headers["Content-Length"] == "100000"
        r = http_session.get(f"{p.url}/chunked/5000")
        assert r.content == (b"0123456789abcdef" * 313)[:5000]
        r = http_session.post(f"{p.url}/empty", data=b"")
        assert r.json()["len"] == 0

        assert p.requests_total == 5
        assert p.connections_total == 1  # keep-alive: one client connection for all
        assert p.faults_injected == {}

        # truncation of a chunked upstream answer is visible too
        p.configure(rate=1.0, faults={"truncate": 1})
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            http_session.get(f"{p.url}/chunked/5000")
        p.configure(rate=0.0)
        assert http_session.get(f"{p.url}/bytes/10").content == b"0123456789"


def test_proxy_rate_is_seeded_and_counted(echo_upstream, http_session):
    outcomes = []
    for _ in range(2):
        with FaultProxy(echo_upstream, seed=7, rate=0.5, faults={"503": 1, "500": 1}) as p:
            codes = [http_session.get(f"{p.url}/bytes/3").status_code for _ in range(40)]
            outcomes.append(codes)
            n_fault = sum(c != 200 for c in codes)
            assert 5 < n_fault < 35
            assert sum(p.faults_injected.values()) == n_fault
            assert p.requests_total == 40
            assert set(p.faults_injected) <= {"503", "500"}
    assert outcomes[0] == outcomes[1]  # same seed, same sequence


def test_proxy_max_faults_and_validation(echo_upstream, http_session):
    with FaultProxy(echo_upstream, rate=1.0, faults={"503": 1}, max_faults=2) as p:
        codes = [http_session.get(f"{p.url}/bytes/1").status_code for _ in range(4)]
        assert codes == [503, 503, 200, 200]
        with pytest.raises(ValueError):
            p.configure(faults={"teapot": 1})
        with pytest.raises(ValueError):
            p.configure(rate=2)
