"""One MD5 per uploaded byte (issue 16): multipart parts carry a CRC32 checksum the server checks, not a
second MD5 (cartsync/backends/s3/checksums.py). Against moto behind tests/fakes/s3server.py, whose middleware
checks, echoes and lists part checksums and answers the composite checksum as AWS documents."""
from __future__ import annotations

import base64
import contextlib
import os
import hashlib
import sys
import zlib

import pytest
from faultproxy import FaultProxy
from helpers import KMS_DEFAULT, PART, multipart_etag, part_request, source, stored_parts
from helpers import multipart_manifest as manifest
from kms_proxy import KmsProxy

MiB = 2**20


def composite(data: bytes, part: int = PART) -> str:
    crcs = [zlib.crc32(data[i:i + part]).to_bytes(4, "big") for i in range(0, len(data), part)]
    return f"{base64.b64encode(zlib.crc32(b''.join(crcs)).to_bytes(4, 'big')).decode()}-{len(crcs)}"


@pytest.fixture
def md5_bytes(monkeypatch):
    """Bytes fed to MD5 by cartsync's own code (the in-process S3 server's MD5s are not counted)."""
    real, counted = hashlib.md5, [0]

    class Counting:
        def __init__(self, data: bytes = b"", **kw) -> None:
            self._h = real(**kw)
            self._ours = sys._getframe(1).f_globals.get("__name__", "").startswith("cartsync")
            self.update(data)

        def update(self, data) -> None:
            if self._ours:
                counted[0] += len(data)
            self._h.update(data)

        def digest(self) -> bytes:
            return self._h.digest()

        def hexdigest(self) -> str:
            return self._h.hexdigest()

    monkeypatch.setattr(hashlib, "md5", Counting)
    return counted


def test_a_multipart_file_is_hashed_by_md5_once_and_its_parts_by_crc32(s3, tmp_path, cli, md5_bytes):
    src = source(tmp_path / "src", {"big.bin": 12 * MiB})
    m = manifest(tmp_path, s3, "ds", src, s3.endpoint_url)
    code, out, err = cli("apply", m)
    assert code == 0, err + out
    data = (src / "big.bin").read_bytes()
    # once: the file's identity, not again per part (the 16-byte part MD5s make the ETag: 3 parts)
    assert md5_bytes[0] == len(data) + 3 * 16
    head = s3.boto3_client(counted=False).head_object(Bucket=s3.bucket, Key="ds/big.bin", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == composite(data)           # the parts went up with their CRC32s
    assert head["ETag"].strip('"') == multipart_etag(data)
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == data
    assert cli("apply", m)[1].startswith("web: no changes;")  # recognised from the listing, as before


def test_a_part_corrupted_on_the_wire_is_refused_by_the_server_and_sent_again(s3, tmp_path, cli):
    src = source(tmp_path / "src", {"big.bin": 12 * MiB})
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.corrupt(part_request("ds/big.bin", 2))
        code, out, err = cli("apply", manifest(tmp_path, s3, "ds", src, proxy.url))
    assert code == 0, err + out
    assert ", 1 retries." in out.splitlines()[0]
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == (src / "big.bin").read_bytes()


@contextlib.contextmanager
def kms_upload_left_open(s3, tmp_path, cli):
    """A KMS bucket, and an apply of a 6-part file whose part 4 was refused: its upload left open with some
    parts stored. Yields (source folder, manifest, the proxy in front of the server, upload id, stored parts)."""
    s3.boto3_client(counted=False).put_bucket_encryption(Bucket=s3.bucket,
                                                         ServerSideEncryptionConfiguration=KMS_DEFAULT)
    src = source(tmp_path / "src", {"big.bin": 26 * MiB})
    with KmsProxy(s3.endpoint_url) as kms, FaultProxy(kms.url) as proxy:
        m = manifest(tmp_path, s3, "ds", src, proxy.url)
        rule = proxy.fail_always(part_request("ds/big.bin", 4))
        assert cli("apply", m)[0] == 1
        proxy.remove_rule(rule)
        upload_id, stored = stored_parts(s3, "ds/big.bin")
        assert upload_id is not None and stored and 4 not in stored
        yield src, m, proxy, upload_id, stored


def test_a_kms_upload_resumes_by_the_parts_checksums(s3, tmp_path, cli):
    """Under SSE-KMS a part's ETag is not its MD5, so a resumed upload could not tell which stored parts
    are intact and sent them all again; their CRC32s (ListParts) tell."""
    with kms_upload_left_open(s3, tmp_path, cli) as (src, m, _, _, stored):
        s3.reset_counts()
        code, out, err = cli("apply", m)
    assert code == 0, err + out
    assert s3.counts()["UploadPart"] == 6 - len(stored)        # only the parts that were missing
    assert f"  = resumed big.bin: {len(stored)} of 6 parts were already stored; sent {6 - len(stored)}" in out
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == (src / "big.bin").read_bytes()


def test_a_store_that_ignores_part_checksums_gets_content_md5_parts(tmp_path, cli, monkeypatch):
    """moto as it is (quirk 4 off): CRC32 asked for at create, but parts neither checked nor echoed. The first
    part is checked by its MD5, the rest carry Content-MD5; nothing is retried."""
    from helpers import aws_test_env
    from s3server import S3Server
    aws_test_env(monkeypatch, tmp_path)
    server = S3Server(crc32_parts=False).start()
    try:
        bucket = server.create_bucket("plain-crc-ignored")
        server.bucket = bucket
        src = source(tmp_path / "src", {"big.bin": 12 * MiB, "second.bin": 11 * MiB})
        code, out, err = cli("apply", manifest(tmp_path, server, "ds", src, server.endpoint_url))
        assert code == 0, err + out
        assert out.splitlines()[0].endswith(", 0 retries.")
        for name in ("big.bin", "second.bin"):
            data = (src / name).read_bytes()
            assert server.get_object_bytes(bucket, f"ds/{name}") == data
            assert server.head_object(bucket, f"ds/{name}")["ETag"].strip('"') == multipart_etag(data)
        creates = [r for r in server.request_log if r.counted and r.op == "CreateMultipartUpload"]
        assert len(creates) == 2
    finally:
        server.stop()


def test_a_kms_stored_part_whose_crc32_differs_is_sent_again(s3, tmp_path, cli):
    """The other side of resuming by CRC32: a stored part with the right size but another CRC32 (a torn or
    foreign write) is not taken for the local part; it is sent again and the object comes out right."""
    with kms_upload_left_open(s3, tmp_path, cli) as (src, m, proxy, upload_id, stored):
        other = os.urandom(PART)                                # same size, another CRC32, stored as S3 would
        s3.boto3_client(counted=False).upload_part(
            Bucket=s3.bucket, Key="ds/big.bin", UploadId=upload_id, PartNumber=stored[0], Body=other,
            ChecksumCRC32=base64.b64encode(zlib.crc32(other).to_bytes(4, "big")).decode())
        s3.reset_counts()
        sent = []
        proxy.before(lambda method, target: method == "PUT" and "partNumber=" in target,
                     lambda method, target: sent.append(int(target.rsplit("partNumber=", 1)[1].split("&")[0])),
                     times=100)
        code, out, err = cli("apply", m)
    assert code == 0, err + out
    assert sorted(sent) == sorted({stored[0]} | (set(range(1, 7)) - set(stored)))   # the foreign one, the missing
    assert f"  = resumed big.bin: {len(stored) - 1} of 6 parts were already stored; sent {7 - len(stored)}" in out
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == (src / "big.bin").read_bytes()
