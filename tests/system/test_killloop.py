"""Crash and resume: SIGKILL `cartsync apply` at many points of a run; every re-run converges.

Slow (about a minute); still part of the default run and of CI.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import catalog_dataset, s3_md5s
from zenodo_fake import ZenodoFake

MiB = 2**20
KILL_POINTS = 12


def make_source(root: Path) -> dict[str, str]:
    files = {f"tile{i:02}.pmtiles": os.urandom(1000 + 1300 * i) for i in range(40)}
    files.update({f"big{i}.pmtiles": os.urandom(12 * MiB + 7 * i) for i in range(3)})
    return catalog_dataset(root, files, "kill")


def manifest(folder: Path, src: Path, s3, prefix: str, fake: ZenodoFake) -> Path:
    folder.mkdir()
    data = {"version": 1, "source": {"dir": str(src), "method": "catalog"}, "targets": [
        {"name": "web", "url": f"s3://{s3.bucket}/{prefix}", "part_size": "5MiB",
         "storage_options": {"endpoint_url": s3.endpoint_url}},
        {"name": "doi", "zenodo": {"url": fake.url, "token_env": "ZT", "metadata": {
            "title": "Kill loop", "upload_type": "dataset", "description": "d", "creators": ["Doe, Jane"]}}}]}
    path = folder / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def apply_cmd(m: Path) -> list[str]:
    return [sys.executable, "-m", "cartsync", "apply", str(m), "--jobs", "4", "--json"]


@pytest.mark.slow
def test_sigkill_at_many_points_then_rerun_converges(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("ZT", "test-token-zz9")
    expected = make_source(tmp_path / "src")
    fakes = []

    # one undisturbed run tells how long a run takes; kill points spread over it
    fake = ZenodoFake(tokens={"test-token-zz9"}).start()
    fakes.append(fake)
    m = manifest(tmp_path / "timing", tmp_path / "src", s3, "timing", fake)
    t0 = time.monotonic()
    subprocess.run(apply_cmd(m), check=True, capture_output=True, timeout=300)
    duration = time.monotonic() - t0

    survived = []
    try:
        for k in range(KILL_POINTS):
            fake = ZenodoFake(tokens={"test-token-zz9"}).start()
            fakes.append(fake)
            m = manifest(tmp_path / f"run{k}", tmp_path / "src", s3, f"run{k}", fake)
            kill_at = duration * (k + 0.5) / KILL_POINTS
            proc = subprocess.Popen(apply_cmd(m), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(kill_at)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            done = subprocess.run(apply_cmd(m), capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (k, done.stderr)
            report = json.loads(done.stdout)["reports"]
            assert all(r["ok"] for r in report)

            assert s3_md5s(s3, f"run{k}") == expected, k
            assert [u for u in s3.list_multipart_uploads(s3.bucket) if u["Key"].startswith(f"run{k}/")] == []
            assert fake.deposition_count() == 1, k
            (dep,) = fake.depositions.values()
            assert fake.files_of(dep.id) == expected, k      # no partial, missing or extra file
            again = subprocess.run(apply_cmd(m), capture_output=True, text=True, timeout=300)
            assert [r["bytes_sent"] for r in json.loads(again.stdout)["reports"]] == [0, 0]
            survived.append(round(kill_at, 2))
    finally:
        for f in fakes:
            f.stop()
    db = Path(os.environ["CARTSYNC_CACHE_DIR"]) / "hashes.sqlite3"
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert len(survived) == KILL_POINTS
    print(f"survived {len(survived)} kill points over a {duration:.2f} s run: {survived}")
