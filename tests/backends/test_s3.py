"""s3:// targets against a real S3 server (moto's server mode) on 127.0.0.1."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from contract import BackendContract
from helpers import MiB, big_dataset, s3_manifest, s3_md5s, write_manifest, writes

from cartsync.backends.s3 import S3Backend
from cartsync.config import TargetConfig
from cartsync.inventory import HashCache, md5_file
from cartsync.model import LocalFile

S3_WAYS = {     # how the backend talks to the server: storage_options, who lists, who writes
    "signed-listing": ({}, "signed", "botocore"),
    # a config option is one the signed listing leaves to botocore
    "botocore": ({"config_kwargs": {"read_timeout": 60}}, "botocore", "botocore"),
    # an option only s3fs knows keeps s3fs for every call (here: server-side encryption on every write)
    "s3fs": ({"s3_additional_kwargs": {"ServerSideEncryption": "AES256"}}, "botocore", "s3fs"),
}


def s3_backend(s3, tmp_path: Path, way: str) -> S3Backend:
    options, lister, writer = S3_WAYS[way]
    target = TargetConfig(name="s3", url=f"s3://{s3.bucket}/contract",
                          storage_options={"endpoint_url": s3.endpoint_url, **options})
    backend = S3Backend(target, HashCache(tmp_path / "h.sqlite3"))
    assert (backend._fast is not None) == (lister == "signed")
    assert (backend.client is None) == (writer == "s3fs")
    return backend


class TestS3Contract(BackendContract):
    """Each way the S3 backend can talk to the server keeps the same contract."""

    @pytest.fixture(params=list(S3_WAYS))
    def backend(self, request, s3, tmp_path):
        backend = s3_backend(s3, tmp_path, request.param)
        yield backend
        backend.close()


def test_s3fs_writes_carry_the_options_only_it_knows(s3, tmp_path):
    backend = s3_backend(s3, tmp_path, "s3fs")
    BackendContract.put(backend, tmp_path, "a.pmtiles", os.urandom(5000))
    head = s3.boto3_client(counted=False).head_object(Bucket=s3.bucket, Key="contract/a.pmtiles")
    assert head["ServerSideEncryption"] == "AES256"
    backend.close()


def test_sync_noop_change_and_delete(s3, tmp_path, dataset, cli):
    m = s3_manifest(tmp_path, s3, "ds")
    code, out, err = cli("apply", m)
    assert code == 0, err
    assert out.startswith("web: 16 created, 0 replaced, 0 deleted; 211.8 KB sent")
    remote = s3.list_objects(s3.bucket, "ds/")
    assert len(remote) == 16 and s3.counts()["PutObject"] == 16

    s3.reset_counts()
    code, out, _ = cli("apply", m)
    assert (code, out) == (0, "web: no changes; 16 file(s) up to date; 0 B sent.\n")
    assert writes(s3) == 0 and s3.counts()["HeadObject"] == 0
    assert s3.counts()["ListObjectsV2"] == 1            # one listing per run, nothing per file

    (dataset / "genes_bin3.pmtiles").write_bytes(os.urandom(20008))   # same size, new content
    s3.reset_counts()
    code, out, _ = cli("apply", m)
    assert code == 0 and out.startswith("web: 0 created, 1 replaced, 0 deleted; 20.0 KB sent")
    assert s3.counts()["PutObject"] == 1

    # a file leaves the source: kept without delete, removed with it
    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text().replace("    - genes_bin1.pmtiles\n", ""))
    assert cli("apply", m)[0] == 0
    assert "ds/genes_bin1.pmtiles" in s3.list_objects(s3.bucket, "ds/")
    m = s3_manifest(tmp_path, s3, "ds", delete=True)
    code, out, _ = cli("apply", m)
    assert code == 0 and out.startswith("web: 0 created, 0 replaced, 1 deleted;")
    assert "ds/genes_bin1.pmtiles" not in s3.list_objects(s3.bucket, "ds/")
    assert len(s3.list_objects(s3.bucket, "ds/")) == 15


def test_multipart_kept_then_replaced(s3, tmp_path, cli):
    src = big_dataset(tmp_path, {"big.pmtiles": 12 * MiB + 123, "small.tsv": 1000})
    m = s3_manifest(tmp_path, s3, "mp", src="big", method="all", part_size="5MiB")
    assert cli("apply", m)[0] == 0
    assert s3.counts()["UploadPart"] == 3 and s3.counts()["CompleteMultipartUpload"] == 1
    assert s3.list_objects(s3.bucket, "mp/")["mp/big.pmtiles"][1].endswith("-3")
    s3.reset_counts()
    code, out, _ = cli("apply", m)
    assert (code, writes(s3)) == (0, 0)
    assert out == "web: no changes; 2 file(s) up to date; 0 B sent.\n"
    data = bytearray((src / "big.pmtiles").read_bytes())
    data[7 * MiB] ^= 1
    (src / "big.pmtiles").write_bytes(bytes(data))
    code, out, _ = cli("plan", m)
    assert "  ~ replace  big.pmtiles  12.6 MB  (same size, content differs (md5))" in out
    s3.reset_counts()
    assert cli("apply", m)[0] == 0
    assert s3.counts()["UploadPart"] == 3
    assert s3.get_object_bytes(s3.bucket, "mp/big.pmtiles") == bytes(data)
    assert s3.list_multipart_uploads(s3.bucket) == []


def test_prefix_boundary(s3, tmp_path, dataset, cli):
    s3.put_object(s3.bucket, "sample10/genes_all.pmtiles", b"other dataset")
    s3.put_object(s3.bucket, "sample1-old.txt", b"outside")
    s3.put_object(s3.bucket, "sample1/stray.txt", b"ours to delete")
    m = s3_manifest(tmp_path, s3, "sample1", delete=True)
    code, out, _ = cli("plan", m)
    assert "+ create" in out and "  - delete   stray.txt" in out
    assert "sample10" not in out and "sample1-old" not in out
    assert cli("apply", m)[0] == 0
    objs = s3.list_objects(s3.bucket)
    assert objs["sample10/genes_all.pmtiles"][0] == 13 and "sample1-old.txt" in objs
    assert "sample1/stray.txt" not in objs


def test_content_types_and_headers(s3, tmp_path, dataset, cli):
    m = s3_manifest(tmp_path, s3, "ct", headers={"*.pmtiles": {"CacheControl": "public, max-age=86400"}})
    assert cli("apply", m)[0] == 0
    head = s3.head_object(s3.bucket, "ct/genes_all.pmtiles")
    assert head["ContentType"] == "application/vnd.pmtiles"
    assert head["CacheControl"] == "public, max-age=86400"
    assert head["Metadata"]["md5"] == __import__("hashlib").md5((dataset / "genes_all.pmtiles").read_bytes()).hexdigest()
    assert s3.head_object(s3.bucket, "ct/catalog.yaml")["ContentType"] == "application/yaml"
    assert s3.head_object(s3.bucket, "ct/t12-f24-info.tsv")["ContentType"] == "text/tab-separated-values"
    assert s3.head_object(s3.bucket, "ct/t12-f24-umap.tsv.gz")["ContentType"] == "application/gzip"
    assert s3.head_object(s3.bucket, "ct/t12-f24.umap.png")["ContentType"] == "image/png"
    assert s3.head_object(s3.bucket, "ct/genes_bin_counts.json")["ContentType"] == "application/json"


def test_data_uploaded_by_aws_cli_is_adopted(s3, tmp_path, cli):
    """boto3's transfer manager with 8 MiB parts is what `aws s3 cp` does: no re-upload. (Its objects are
    binary/octet-stream, so the first apply fixes their Content-Type in place: test_s3_headers.py.)"""
    from boto3.s3.transfer import TransferConfig
    src = big_dataset(tmp_path, {"a.pmtiles": 20 * MiB + 5, "b.pmtiles": 9 * MiB, "c.tsv": 300})
    client = s3.boto3_client(counted=False)
    cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    for p in src.iterdir():
        client.upload_file(str(p), s3.bucket, f"cli/{p.name}", Config=cfg)
    assert s3.list_objects(s3.bucket, "cli/")["cli/a.pmtiles"][1].endswith("-3")
    m = s3_manifest(tmp_path, s3, "cli", src="big", method="all")
    s3.reset_counts()
    code, out, _ = cli("apply", m)
    assert (code, out.split(";")[0]) == (0, "web: 0 created, 0 replaced, 0 deleted, 3 headers updated")
    assert writes(s3) == 0 and s3.bytes_received == 0
    s3.reset_counts()
    code, out, _ = cli("apply", m)
    assert (code, out) == (0, "web: no changes; 3 file(s) up to date; 0 B sent.\n")
    assert writes(s3) == 0 and s3.counts()["HeadObject"] == 0


def test_missing_bucket_is_a_clear_error(s3, tmp_path, dataset, cli):
    m = write_manifest(tmp_path, f"""
        version: 1
        source: {{dir: cartload2}}
        targets:
          - name: web
            url: s3://no-such-bucket-here/x
            storage_options: {{endpoint_url: "{s3.endpoint_url}"}}
        """)
    code, _, err = cli("plan", m)
    assert code == 1
    assert err == ("error: target web: bucket 'no-such-bucket-here' does not exist\n"
                   "hint: create it first, or fix the bucket name in the url\n")


def test_upload_aws_with_cartloader_flags(s3, tmp_path, dataset, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["upload-aws", "--in-dir", "cartload2", "--s3-dir", f"s3://{s3.bucket}/one", "--n-jobs", "4",
             "--aws", "/usr/bin/aws", "--catalog-yaml", "cartload2/catalog.yaml"]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    code, out, err = cli(*flags, "--dry-run")
    assert code == 0 and out.splitlines()[-1].startswith("Plan: 16 to create")
    assert s3.list_objects(s3.bucket, "one/") == {}
    code, out, err = cli(*flags)
    assert code == 0, err
    assert "note: the aws CLI in --aws is not run; cartsync talks to S3 itself (with its connection flags)" in err
    assert len(s3.list_objects(s3.bucket, "one/")) == 16
    code, out, _ = cli(*flags)
    assert out == "aws: no changes; 16 file(s) up to date; 0 B sent.\n"
    code, out, _ = cli(*flags, "--upload-basics-only", "--restart", "--dry-run")
    assert out.splitlines()[-1] == "Plan: 0 to create, 14 to replace, 0 to delete, 0 unchanged (207.9 KB to send)."


def test_upload_aws_collection_in_list(s3, tmp_path, cli, monkeypatch):
    import shutil

    from helpers import EXAMPLE
    coll = tmp_path / "coll"
    shutil.copytree(EXAMPLE, coll / "s1")
    shutil.copytree(EXAMPLE, coll / "s2_raw")
    (coll / "s2_raw" / "catalog.yaml").write_text(
        (coll / "s2_raw" / "catalog.yaml").read_text().replace("id: example-mouse-brain\n", ""))
    (tmp_path / "list.tsv").write_text("s1\textra column\ns2_raw\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
    code, out, err = cli("upload-aws", "--in-dir", "coll", "--s3-dir", f"s3://{s3.bucket}/coll", "--in-list",
                         "list.tsv")
    assert code == 0, err
    keys = s3.list_objects(s3.bucket, "coll/")
    assert {k.split("/")[1] for k in keys} == {"example-mouse-brain", "s2-raw"}    # cartloader: _ → -, lower
    assert len(keys) == 32
    code, out, _ = cli("upload-aws", "--in-dir", "coll", "--s3-dir", f"s3://{s3.bucket}/coll", "--in-list",
                       "list.tsv", "--print-manifest")
    assert "  collection: true\n  datasets:\n  - s1\n  - s2_raw\n" in out


def test_storage_options_the_aws_way():
    from cartsync.backends.s3.client import s3fs_options
    opts = s3fs_options({"profile": "lab", "region": "eu-west-1", "requester_pays": True, "anon": False,
                         "endpoint_url": "http://127.0.0.1:9000"})
    assert opts["client_kwargs"] == {"region_name": "eu-west-1"}
    assert (opts["profile"], opts["requester_pays"], opts["anon"]) == ("lab", True, False)
    assert opts["config_kwargs"]["retries"] == {"total_max_attempts": 1, "mode": "standard"}
    assert s3fs_options({"config_kwargs": {"read_timeout": 5}})["config_kwargs"]["read_timeout"] == 5


def test_part_size_and_concurrency_are_configurable(s3, tmp_path, cli):
    big_dataset(tmp_path, {"big.pmtiles": 23 * MiB})
    m = s3_manifest(tmp_path, s3, "pc", src="big", method="all", part_size="6MiB", part_concurrency=2)
    code, out, err = cli("apply", m)
    assert code == 0, err
    assert s3.counts()["UploadPart"] == 4
    assert s3.list_objects(s3.bucket, "pc/")["pc/big.pmtiles"][1].endswith("-4")


def test_data_bodies_are_not_hashed_twice_on_http(s3, tmp_path):
    """Over plain http botocore would SHA-256 every body for the signature; cartsync's bodies carry a
    signed Content-MD5 (a single PUT) or CRC32 (each part) instead, as botocore itself does on https, and the
    server still checks them."""
    target = TargetConfig(name="s3", url=f"s3://{s3.bucket}/unsigned", storage_options={"endpoint_url": s3.endpoint_url},
                          part_size=5 * MiB)
    backend = S3Backend(target, HashCache(tmp_path / "h.sqlite3"))
    seen: list[tuple[str, str | None, str | None]] = []
    backend.client.meta.events.register("before-send.s3", lambda request, **kw: seen.append(
        (request.method, request.headers.get("x-amz-content-sha256"),
         request.headers.get("Content-MD5") or request.headers.get("x-amz-checksum-crc32"))))
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(1000))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * MiB))
    for path in (small, big):
        st = path.stat()
        lf = LocalFile(path.name, path, st.st_size, md5_file(path), st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
        backend.upload(lf, path.name, lambda n: None)
    puts = [s for s in seen if s[0] == "PUT"]
    assert len(puts) == 1 + 3
    assert all(sha in (b"UNSIGNED-PAYLOAD", "UNSIGNED-PAYLOAD") for _, sha, _ in puts)
    assert all(md5 for _, _, md5 in puts)
    assert s3_md5s(s3, "unsigned") == {"small.bin": md5_file(small), "big.bin": md5_file(big)}


def test_https_to_a_plain_http_endpoint_says_tls_failed(s3, tmp_path, dataset, cli):
    """A wrong scheme (or a private CA) is named as a TLS problem with a hint, not an unexpected error."""
    endpoint = s3.endpoint_url.replace("http://", "https://")
    m = write_manifest(tmp_path, f"""
        version: 1
        source: {{dir: cartload2, method: catalog}}
        targets:
          - name: web
            url: s3://{s3.bucket}/tls
            storage_options: {{endpoint_url: "{endpoint}"}}
        """)
    code, out, err = cli("plan", m)
    error, hint = err.splitlines()[-2:]      # (the server, in this process, logs the garbled request)
    assert code == 1 and out == ""
    assert error.startswith(f"error: target web: TLS connection to {endpoint} failed: ")
    assert hint == "hint: check the endpoint_url (https vs http); for a private CA set AWS_CA_BUNDLE"


def test_unknown_profile_is_named(s3, tmp_path, dataset, cli, monkeypatch):
    """A profile that is not in the AWS config is one clear error, before any request."""
    (tmp_path / "aws-config").write_text("[profile lab]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    m = s3_manifest(tmp_path, s3, "prof")
    text = m.read_text().replace("storage_options:\n", "storage_options:\n    profile: labb\n")
    m.write_text(text)
    s3.reset_counts()
    assert cli("plan", m) == (1, "", "error: target web: AWS profile 'labb' not found\n"
                                     "hint: check storage_options.profile against ~/.aws/config\n")
    assert s3.requests == []
