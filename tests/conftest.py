"""Shared fixtures: an isolated hash cache, the example dataset copied to a temp folder, CLI runner."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

# the fakes (tests/fakes/) are imported by name, as the helpers are (tests/ is on sys.path: pytest puts the
# folder of the rootdir's conftest there)
sys.path.insert(0, str(Path(__file__).resolve().parent / "fakes"))

from helpers import EXAMPLE, aws_test_env  # noqa: E402

from cartsync.cli import main  # noqa: E402


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


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    def run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err
    return run


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


