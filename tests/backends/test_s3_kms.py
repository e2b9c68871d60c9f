"""SSE-KMS buckets (ETags that are not MD5s) and SSE-C refusal, against moto behind tests/fakes/kms_proxy.py.

The bucket's default encryption is aws:kms, so cartsync sends no encryption header and still gets
KMS answers, as on an institutional bucket. Counts are taken at moto (every request the proxy
forwards); remote state is checked with boto3 through the proxy and with moto's stored bytes.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import yaml
from helpers import KMS_DEFAULT, MiB, big_dataset, only_listing, s3_md5s, writes
from kms_proxy import KmsProxy


@pytest.fixture
def kms(s3):
    s3.boto3_client(counted=False).put_bucket_encryption(Bucket=s3.bucket,
                                                         ServerSideEncryptionConfiguration=KMS_DEFAULT)
    with KmsProxy(s3.endpoint_url) as proxy:
        proxy.client = s3.boto3_client(counted=False, endpoint_url=proxy.url)
        yield proxy


def manifest(tmp_path: Path, s3, proxy, prefix: str, src: str, **target) -> Path:
    data = {"version": 1, "source": {"dir": src, "method": "all"}, "targets": [
        {"name": "web", "url": f"s3://{s3.bucket}/{prefix}", "storage_options": {"endpoint_url": proxy.url},
         **target}]}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()



def test_kms_first_sync_verified_noop_is_the_listing_and_a_same_size_edit_is_caught(s3, kms, tmp_path, cli):
    src = big_dataset(tmp_path, {"big.pmtiles": 11 * MiB + 7, "a.tsv": 3000, "b.json": 200})
    m = manifest(tmp_path, s3, kms, "k", "big", part_size="5MiB")
    code, out, err = cli("apply", m)
    assert (code, out.split(";")[0]) == (0, "web: 3 created, 0 replaced, 0 deleted"), err
    assert (s3.counts()["PutObject"], s3.counts()["UploadPart"], s3.counts()["HeadObject"]) == (2, 3, 0)
    # what is stored, independently: the bytes, KMS, the MD5 in metadata, and ETags that are not MD5s
    assert s3_md5s(s3, "k") == {p.name: md5(p) for p in src.iterdir()}
    listed = {o["Key"]: o["ETag"].strip('"') for o in kms.client.list_objects_v2(Bucket=s3.bucket)["Contents"]}
    for p in src.iterdir():
        head = kms.client.head_object(Bucket=s3.bucket, Key=f"k/{p.name}")
        assert (head["ServerSideEncryption"], head["Metadata"]["md5"]) == ("aws:kms", md5(p))
        assert listed[f"k/{p.name}"] != md5(p) and head["ETag"].strip('"') == listed[f"k/{p.name}"]
    assert listed["k/big.pmtiles"].endswith("-3")

    s3.reset_counts()
    assert cli("apply", m) == (0, "web: no changes; 3 file(s) up to date; 0 B sent.\n", "")
    assert only_listing(s3)                                  # 0 uploads, 0 HEADs: the listing alone

    # same size, same mtime, new content: caught from what was remembered, still without a HEAD
    a = src / "a.tsv"
    st = a.stat()
    a.write_bytes(os.urandom(3000))
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns))
    s3.reset_counts()
    code, out, _ = cli("plan", m)
    assert out.splitlines()[1:] == ["  ~ replace  a.tsv  3.0 KB  (same size, content differs (md5))",
                                    "Plan: 0 to create, 1 to replace, 0 to delete, 2 unchanged (3.0 KB to send)."]
    assert only_listing(s3)
    assert cli("apply", m)[0] == 0 and s3_md5s(s3, "k")["a.tsv"] == md5(a)
    s3.reset_counts()
    assert cli("apply", m) == (0, "web: no changes; 3 file(s) up to date; 0 B sent.\n", "")
    assert only_listing(s3)


def test_kms_objects_from_another_tool_are_read_once(s3, kms, tmp_path, cli):
    """Written by another tool (or by cartsync with another cache): one HEAD each for x-amz-meta-md5 and the
    headers, on the first plan only. An object without that metadata cannot be proven equal: replaced."""
    from boto3.s3.transfer import TransferConfig
    src = big_dataset(tmp_path, {"big.pmtiles": 9 * MiB, "a.tsv": 3000, "b.json": 200, "c.png": 50})
    types = {"big.pmtiles": "application/vnd.pmtiles", "a.tsv": "text/tab-separated-values",
             "b.json": "application/json", "c.png": "image/png"}
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    for name in ("big.pmtiles", "a.tsv", "b.json"):
        kms.client.upload_file(str(src / name), s3.bucket, f"o/{name}", Config=cfg,
                               ExtraArgs={"ContentType": types[name], "Metadata": {"md5": md5(src / name)}})
    kms.client.put_object(Bucket=s3.bucket, Key="o/c.png", Body=(src / "c.png").read_bytes(), ContentType="image/png")
    m = manifest(tmp_path, s3, kms, "o", "big")
    s3.reset_counts()
    code, out, _ = cli("plan", m)
    assert out.splitlines()[1:] == ["  ~ replace  c.png  50 B  (same size, no remote checksum to compare)",
                                    "Plan: 0 to create, 1 to replace, 0 to delete, 3 unchanged (50 B to send)."]
    assert s3.counts()["HeadObject"] == 4                    # one per object
    s3.reset_counts()
    assert cli("plan", m)[1].endswith("3 unchanged (50 B to send).\n") and only_listing(s3)
    assert cli("apply", m)[0] == 0 and s3.counts()["PutObject"] == 1 and s3.counts()["UploadPart"] == 0
    s3.reset_counts()
    assert cli("apply", m) == (0, "web: no changes; 4 file(s) up to date; 0 B sent.\n", "")
    assert only_listing(s3)


def test_kms_header_fix_keeps_kms_and_what_is_known(s3, kms, tmp_path, cli):
    """octet-stream objects on a KMS bucket: fixed by a copy onto themselves that stays KMS-encrypted; its
    new (non-MD5) ETag is remembered, so the next run is the listing alone."""
    src = big_dataset(tmp_path, {"genes_all.pmtiles": 4000})
    path = src / "genes_all.pmtiles"
    kms.client.put_object(Bucket=s3.bucket, Key="h/genes_all.pmtiles", Body=path.read_bytes(),
                          Metadata={"md5": md5(path)})
    before = kms.client.head_object(Bucket=s3.bucket, Key="h/genes_all.pmtiles")["ETag"]
    m = manifest(tmp_path, s3, kms, "h", "big")
    code, out, _ = cli("plan", m)
    assert out.splitlines()[1] == "  ~ headers  genes_all.pmtiles  (Content-Type binary/octet-stream → " \
                                  "application/vnd.pmtiles)"
    s3.reset_counts()
    code, out, _ = cli("apply", m)
    assert (code, out.split(";")[0]) == (0, "web: 0 created, 0 replaced, 0 deleted, 1 headers updated")
    assert (s3.counts()["CopyObject"], writes(s3), s3.bytes_received) == (1, 0, 0)
    head = kms.client.head_object(Bucket=s3.bucket, Key="h/genes_all.pmtiles")
    assert (head["ContentType"], head["ServerSideEncryption"], head["Metadata"]) == (
        "application/vnd.pmtiles", "aws:kms", {"md5": md5(path)})
    assert head["ETag"] != before and head["ETag"].strip('"') != md5(path)
    s3.reset_counts()
    assert cli("apply", m) == (0, "web: no changes; 1 file(s) up to date; 0 B sent.\n", "")
    assert only_listing(s3)


def test_sse_c_in_storage_options_is_refused_without_echoing_the_key(s3, tmp_path, cli):
    src = big_dataset(tmp_path, {"a.tsv": 10})
    secret = "c2VjcmV0LWN1c3RvbWVyLWtleS0zMi1ieXRlcyEhISE="
    data = {"version": 1, "source": {"dir": src.name, "method": "all"}, "targets": [
        {"name": "web", "url": f"s3://{s3.bucket}/c", "storage_options": {
            "endpoint_url": s3.endpoint_url,
            "s3_additional_kwargs": {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": secret}}}]}
    m = tmp_path / "manifest.yaml"
    m.write_text(yaml.safe_dump(data))
    s3.reset_counts()
    code, out, err = cli("plan", m)
    assert (code, out) == (1, "")
    assert err == ("error: target web: storage_options.s3_additional_kwargs sets SSECustomerAlgorithm, SSECustomerKey: "
                   "SSE-C (customer-provided keys) is not supported\nhint: use SSE-KMS instead (the bucket's default "
                   "encryption, or headers: ServerSideEncryption: aws:kms); a key you hold yourself cannot be used "
                   "without putting it in the manifest\n")
    assert secret not in err and s3.requests == []


def test_an_sse_c_object_on_the_target_is_refused(s3, kms, tmp_path, cli):
    big_dataset(tmp_path, {"a.tsv": 10})
    kms.client.put_object(Bucket=s3.bucket, Key="c/a.tsv", Body=b"0123456789", SSECustomerAlgorithm="AES256",
                          SSECustomerKey="k" * 32)
    m = manifest(tmp_path, s3, kms, "c", "big")
    s3.reset_counts()
    assert cli("apply", m) == (1, "", (
        "error: target web: a.tsv: the store will not show this object without its encryption key (HTTP 400): it is "
        "encrypted with a customer-provided key (SSE-C), which cartsync does not support\nhint: re-upload it with "
        "SSE-KMS or SSE-S3, or remove it; use SSE-KMS instead (the bucket's default encryption, or headers: "
        "ServerSideEncryption: aws:kms); a key you hold yourself cannot be used without putting it in the manifest\n"))
    assert writes(s3) == 0 and s3.counts()["CopyObject"] == 0
