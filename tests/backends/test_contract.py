"""The backend contract (tests/contract.py) on memory:// and a local folder; S3 and Zenodo join in their files."""
from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from contract import BackendContract

from cartsync.backends import open_backend
from cartsync.config import TargetConfig
from cartsync.inventory import HashCache


def memory_target(tmp_path: Path) -> TargetConfig:
    return TargetConfig(name="mem", url=f"memory://contract-{uuid.uuid4().hex}/data")


def local_target(tmp_path: Path) -> TargetConfig:
    return TargetConfig(name="disk", url=str(tmp_path / "target"))


class Opened(BackendContract):
    """A backend opened on `target(tmp_path)`."""

    target = staticmethod(memory_target)

    @pytest.fixture
    def backend(self, tmp_path):
        b = open_backend(self.target(tmp_path), HashCache(tmp_path / "h.sqlite3"))
        yield b
        b.close()


class TestMemory(Opened):
    target = staticmethod(memory_target)


class TestLocalDisk(Opened):
    target = staticmethod(local_target)


def test_listing_stays_inside_prefix(tmp_path):
    cache = HashCache(tmp_path / "h.sqlite3")
    (tmp_path / "sample10").mkdir()
    (tmp_path / "sample10" / "x.txt").write_text("other dataset")
    (tmp_path / "sample1").mkdir()
    b = open_backend(TargetConfig(name="s", url=str(tmp_path / "sample1")), cache)
    assert b.listing() == {}
