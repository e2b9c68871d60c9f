"""Ctrl-C and SIGTERM during `cartsync apply`, a real subprocess against the loopback S3 server
behind the fault proxy: the parts in flight are held by the proxy (a link that has stopped moving),
so only an abort ends them. The run says what it does, aborts its multipart upload, exits 130
within 5 s; a second Ctrl-C quits at once; the re-run converges and the hash cache is intact."""
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
from faultproxy import FaultProxy
from helpers import REPO, catalog_dataset, s3_md5s

MiB = 2**20
BUSY = ("interrupted ({name}): stopping; aborting the transfers in flight and this run's unfinished uploads "
        "(press Ctrl-C again to quit at once)\n")
DONE = "interrupted; re-run the same command to finish (it resumes where it stopped)\n"


def start(m: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "cartsync", "apply", str(m), "--jobs", "4", "--json"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def setup(tmp_path: Path, s3, proxy: FaultProxy) -> tuple[Path, dict[str, str]]:
    files = {f"tile{i}.pmtiles": os.urandom(2000 + i) for i in range(6)}
    files["big.pmtiles"] = os.urandom(3 * 5 * MiB + 11)
    expected = catalog_dataset(tmp_path / "src", files, "ctrlc")
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": str(tmp_path / "src"), "method": "catalog"},
                                 "targets": [{"name": "web", "url": f"s3://{s3.bucket}/p", "part_size": "5MiB",
                                              "storage_options": {"endpoint_url": proxy.url}}]}))
    return m, expected


def wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "the run never reached the point to interrupt"
        time.sleep(0.05)


def parts_in_flight(proxy: FaultProxy) -> bool:
    return any(kind == "stall" and "partNumber" in target for _, target, kind in proxy.log)


@pytest.mark.parametrize("sig,name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_interrupt_aborts_in_flight_transfers_and_the_rerun_converges(s3, tmp_path, sig, name):
    with FaultProxy(s3.endpoint_url, stall_seconds=60) as proxy:
        m, expected = setup(tmp_path, s3, proxy)
        proxy.schedule("stall", count=10**6, predicate=lambda method, target: "partNumber" in target)
        proc = start(m)
        wait_for(lambda: parts_in_flight(proxy))
        assert [u["Key"] for u in s3.list_multipart_uploads(s3.bucket)] == ["p/big.pmtiles"]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=5)          # the promise: out within 5 s, not after the stall
        assert (proc.returncode, out) == (130, "")
        assert err.endswith(BUSY.format(name=name) + DONE)
        # its own upload was aborted, seen independently; nothing half-written under the prefix
        assert s3.list_multipart_uploads(s3.bucket) == []
        assert "p/catalog.yaml" not in s3.list_objects(s3.bucket, "p/")
        proxy.clear_rules()
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        again = subprocess.run([sys.executable, "-m", "cartsync", "apply", str(m), "--json"], env=env, check=False,
                               capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert s3_md5s(s3, "p") == expected
    db = Path(os.environ["CARTSYNC_CACHE_DIR"]) / "hashes.sqlite3"
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert json.loads(again.stdout)["reports"][0]["ok"]


def test_second_ctrl_c_quits_at_once(s3, tmp_path):
    with FaultProxy(s3.endpoint_url, stall_seconds=60) as proxy:
        m, _ = setup(tmp_path, s3, proxy)
        proxy.schedule("stall", count=10**6, predicate=lambda method, target: "partNumber" in target)
        proc = start(m)
        wait_for(lambda: parts_in_flight(proxy))
        # the abort the first Ctrl-C starts stalls too: only a second Ctrl-C ends the run before it gives up
        # (the abort is of the upload cartsync wrote down: AbortMultipartUpload by its id, no listing)
        proxy.schedule("stall", count=10**6,
                       predicate=lambda method, target: method == "DELETE" and "uploadId=" in target)
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: any(kind == "stall" and m == "DELETE" for m, _, kind in proxy.log), 5)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=5)
    assert (proc.returncode, out) == (130, "")
    assert err.endswith(BUSY.format(name="Ctrl-C") + "Ctrl-C again: quitting at once (the next apply cleans up)\n")
