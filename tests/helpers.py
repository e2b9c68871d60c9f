"""Helpers shared by the test layers (unit/, backends/, cli/, system/; the fakes are in fakes/).

Fixtures stay in conftest.py; everything a test imports comes from here, never from another test file.
"""
from __future__ import annotations

import hashlib
import os
import textwrap
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent

EXAMPLE = REPO / "manifests" / "example" / "cartload2"
MiB = 2**20
PART = 5 * MiB                   # the part size of the multipart tests (S3's smallest)
KMS_DEFAULT = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}


def write_manifest(folder: Path, body: str, name: str = "manifest.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def catalog_dataset(root: Path, files: dict[str, bytes], dataset_id: str) -> dict[str, str]:
    """Write files plus a catalog.yaml naming them all; returns key → md5 of everything written."""
    import hashlib
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    catalog = f"id: {dataset_id}\nassets:\n" + "".join(f"  a{i}: {n}\n" for i, n in enumerate(files))
    (root / "catalog.yaml").write_text(catalog)
    return {k: hashlib.md5(v).hexdigest() for k, v in {**files, "catalog.yaml": catalog.encode()}.items()}


def s3_md5s(s3, prefix: str) -> dict[str, str]:
    """Independent listing of an S3 prefix: key (below the prefix) → md5 of the stored bytes."""
    import hashlib
    return {k[len(prefix) + 1:]: hashlib.md5(s3.get_object_bytes(s3.bucket, k)).hexdigest()
            for k in s3.list_objects(s3.bucket, prefix + "/")}


def local_setup(tmp_path: Path) -> Path:
    """A two-file dataset (src/, with a catalog) and m.yaml publishing it to the local folder out/ with
    delete: true."""
    import yaml
    catalog_dataset(tmp_path / "src", {"a.tsv": b"a\n", "b.tsv": b"bb\n"}, "ds")
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"},
                                 "targets": [{"name": "out", "url": "out", "delete": True}]}, sort_keys=False))
    return m


def aws_test_env(monkeypatch, tmp_path: Path) -> None:
    """The loopback server's credentials in the environment, and no AWS config files: as users give them."""
    from s3server import aws_env
    for k, v in aws_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def only_listing(s3) -> bool:
    """The server saw one listing and nothing else on the data (an apply also takes and drops the target
    lock object, issue 14: those requests are not data)."""
    counts = {k: v for k, v in s3.counts().items() if v and not k.startswith("Lock")}
    return counts == {"ListObjectsV2": 1, "list_total": 1}


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes: an independent 'listing' for assertions."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def zenodo_manifest(folder: Path, fake_url: str, src: str = "cartload2", method: str = "catalog",
                    **z) -> Path:
    """A manifest with one zenodo target named doi; extra keyword arguments go into `zenodo:`
    (delete and overwrite go to the target)."""
    import yaml
    target = {"name": "doi"}
    for key in ("delete", "overwrite"):
        if key in z:
            target[key] = z.pop(key)
    target["zenodo"] = {"url": fake_url, "token_env": "ZT", **z, "metadata": {
        "title": "Mouse brain, Visium HD, FICTURE factors", "upload_type": "dataset",
        "description": "Example data", "keywords": ["spatial transcriptomics"],
        "creators": ["Doe, Jane", {"name": "Roe, Rick", "affiliation": "Lab", "orcid": "0000-0002-1825-0097"}]}}
    data = {"version": 1, "source": {"dir": src, "method": method}, "targets": [target]}
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def s3_manifest(tmp_path: Path, s3, prefix: str, src: str = "cartload2", method: str = "catalog", **target) -> Path:
    import yaml
    data = {"version": 1, "source": {"dir": src, "method": method}, "targets": [
        {"name": "web", "url": f"s3://{s3.bucket}/{prefix}", "storage_options": {"endpoint_url": s3.endpoint_url},
         **target}]}
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def writes(s3) -> int:
    c = s3.counts()
    return c["PutObject"] + c["UploadPart"] + c["CreateMultipartUpload"] + c["DeleteObject"] + c["DeleteObjects"]


def big_dataset(tmp_path: Path, sizes: dict[str, int]) -> Path:
    src = tmp_path / "big"
    src.mkdir()
    for name, size in sizes.items():
        (src / name).write_bytes(os.urandom(size))
    return src


def multipart_manifest(folder: Path, s3, prefix: str, src: Path, endpoint: str, name: str = "m.yaml", **target) -> Path:
    url = f"s3://{s3.bucket}/{prefix}" if prefix else f"s3://{s3.bucket}"
    data = {"version": 1, "source": {"dir": str(src), "method": "all"}, "targets": [
        {"name": "web", "url": url, "part_size": "5MiB", "storage_options": {"endpoint_url": endpoint}, **target}]}
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def source(root: Path, files: dict[str, int]) -> Path:
    root.mkdir(parents=True)
    for name, size in files.items():
        (root / name).write_bytes(os.urandom(size))
    return root


def multipart_etag(data: bytes, part: int = PART) -> str:
    """S3's multipart ETag, computed here independently of cartsync."""
    digests = b"".join(hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part))
    return f"{hashlib.md5(digests).hexdigest()}-{-(-len(data) // part)}"


def part_request(key: str, number: int):
    return lambda method, target: method == "PUT" and f"/{key}?" in target and f"partNumber={number}&" in target + "&"


def stored_parts(s3, key: str) -> tuple[str | None, list[int]]:
    """The open upload of key (at most one) and its stored part numbers, read with boto3."""
    client = s3.boto3_client(counted=False)
    ups = [u for u in s3.list_multipart_uploads(s3.bucket) if u["Key"] == key]
    assert len(ups) <= 1
    if not ups:
        return None, []
    parts = client.list_parts(Bucket=s3.bucket, Key=key, UploadId=ups[0]["UploadId"]).get("Parts", [])
    return ups[0]["UploadId"], [p["PartNumber"] for p in parts]
