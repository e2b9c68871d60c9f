"""Shared fixtures: an isolated hash cache, the example dataset copied to a temp folder, CLI runner."""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from cartsync.cli import main

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "manifests" / "example" / "cartload2"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder and fast retries; nothing touches ~/.cache."""
    monkeypatch.setenv("CARTSYNC_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("CARTSYNC_RETRY_BASE", "0.01")
    monkeypatch.setenv("CARTSYNC_RETRY_MAX_WAIT", "0.05")


@pytest.fixture
def dataset(tmp_path) -> Path:
    """A fresh copy of the example cartload2 folder."""
    dst = tmp_path / "cartload2"
    shutil.copytree(EXAMPLE, dst)
    return dst


def write_manifest(folder: Path, body: str, name: str = "manifest.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err
    return run


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


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on 127.0.0.1 (a free port), for the whole session."""
    from s3server import start_s3_server
    server = start_s3_server()
    yield server
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """A fresh bucket on the loopback server; credentials come from the environment, as users' do."""
    import uuid
    aws_test_env(monkeypatch, tmp_path)
    s3_server.bucket = s3_server.create_bucket(f"b-{uuid.uuid4().hex[:12]}")
    s3_server.reset_counts()
    return s3_server


@pytest.fixture
def zenodo(monkeypatch):
    """The Zenodo fake on 127.0.0.1, its token in ZT (the manifest names only the variable)."""
    from zenodo_fake import ZenodoFake
    fake = ZenodoFake(tokens={"test-token-zz9"})
    fake.start()
    monkeypatch.setenv("ZT", "test-token-zz9")
    yield fake
    fake.stop()


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
