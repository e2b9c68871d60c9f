"""The lock across machines (locks.py): two processes with their own cache folders ("two machines") on the
same S3 prefix or local folder; the second is refused; an expired lock is taken over; a clean run leaves none."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO, catalog_dataset

HOLDER = """
import sys
from cartsync import engine, locks, manifest
from cartsync.backends import open_backend
m = manifest.load(sys.argv[1])
cache = engine.cache_for()
backend = open_backend(m.targets[0], cache)
with locks.target_lock(m, backend):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def env_for(tmp_path: Path, machine: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), CARTSYNC_CACHE_DIR=str(tmp_path / f"cache-{machine}"), **extra)
    return env


def start_holder(tmp_path: Path, manifest: Path, **extra: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(manifest)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env_for(tmp_path, "a", **extra))
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def run_cli(tmp_path: Path, *args: str, machine: str = "b") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cartsync", *args], capture_output=True, text=True,
                          env=env_for(tmp_path, machine), timeout=120, check=False)


def manifests(tmp_path: Path, s3) -> dict[str, Path]:
    catalog_dataset(tmp_path / "src", {"a.tsv": b"a\n", "b.tsv": b"b\n"}, "ds")
    out = {}
    for kind, target in (("s3", {"url": f"s3://{s3.bucket}/ds", "storage_options": {"endpoint_url": s3.endpoint_url}}),
                         ("local", {"url": "out"})):
        path = tmp_path / f"{kind}.yaml"
        path.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"},
                                        "targets": [{"name": "web", "delete": True, **target}]}, sort_keys=False))
        out[kind] = path
    return out


def lock_body(s3, kind: str, tmp_path: Path) -> bytes | None:
    """The lock object, read independently (boto3 / the disk)."""
    if kind == "s3":
        objs = s3.list_objects(s3.bucket, "ds/")
        return s3.get_object_bytes(s3.bucket, "ds/.cartsync.lock") if "ds/.cartsync.lock" in objs else None
    path = tmp_path / "out" / ".cartsync.lock"
    return path.read_bytes() if path.exists() else None


def test_moto_honours_if_none_match_as_aws_documents(s3):
    """PutObject with If-None-Match: * on an existing key is 412 PreconditionFailed (AWS, since Nov 2024);
    If-Match with another ETag is 412 too. The lock relies on both, so the fake must do them."""
    import botocore.exceptions
    client = s3.boto3_client(counted=False)
    first = client.put_object(Bucket=s3.bucket, Key="k", Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        client.put_object(Bucket=s3.bucket, Key="k", Body=b"2", IfNoneMatch="*")
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        client.put_object(Bucket=s3.bucket, Key="k", Body=b"2", IfMatch='"0000"')
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    client.put_object(Bucket=s3.bucket, Key="k", Body=b"3", IfMatch=first["ETag"])
    assert s3.get_object_bytes(s3.bucket, "k") == b"3"


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_second_machine_is_refused_while_the_first_holds_the_lock(tmp_path, s3, kind):
    m = manifests(tmp_path, s3)[kind]
    holder = start_holder(tmp_path, m)
    try:
        body = lock_body(s3, kind, tmp_path)
        assert body is not None
        held = json.loads(body)
        assert set(held) == {"who", "pid", "manifest", "target", "since", "until"}
        assert (held["pid"], held["target"], held["manifest"]) == (holder.pid, "web", str(m.resolve()))
        done = run_cli(tmp_path, "apply", str(m))
        where = f"s3://{s3.bucket}/ds/.cartsync.lock" if kind == "s3" else str(tmp_path / "out" / ".cartsync.lock")
        assert done.returncode == 1
        assert done.stderr == (
            f"error: target web is locked by {held['who']} (pid {holder.pid}, {m.resolve()}) since {held['since']}, "
            f"until {held['until']} ({where})\n"
            f"hint: wait for that run to finish; if it crashed, the lock expires at {held['until']}, or remove it "
            f"with: cartsync unlock {m} --target web\n")
        # plan takes no lock; the lock object is never planned, deleted as stale (delete: true) or counted
        planned = run_cli(tmp_path, "plan", str(m), "-v").stdout
        assert ".cartsync.lock" not in planned and planned.splitlines()[-1].startswith(
            "Plan: 3 to create, 0 to replace, 0 to delete, 0 unchanged")
        # nothing was written by the refused run
        if kind == "s3":
            assert set(s3.list_objects(s3.bucket, "ds/")) == {"ds/.cartsync.lock"}
        else:
            assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".cartsync.lock"]
    finally:
        holder.communicate("\n", timeout=30)
    assert lock_body(s3, kind, tmp_path) is None                      # released at the end
    done = run_cli(tmp_path, "apply", str(m))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("web: 3 created, 0 replaced, 0 deleted;")
    assert lock_body(s3, kind, tmp_path) is None                      # a clean run leaves no lock
    assert run_cli(tmp_path, "plan", str(m)).stdout.splitlines()[-1] == "No changes. 3 file(s) up to date."


NOOP_APPLY = """
import sys
from cartsync.cli import main
code = main(["apply", sys.argv[1]])
print("botocore" if "botocore" in sys.modules else "no botocore", code)
"""


def test_a_no_op_apply_locks_and_lists_without_botocore(tmp_path, s3):
    """A no-op apply is the lock, one listing and the unlock, all through the signed connection (backends/s3/sigv4.py):
    botocore's start-up (~0.6 CPU-s) is what made the no-op three times slower when the lock went through it."""
    m = manifests(tmp_path, s3)["s3"]
    assert run_cli(tmp_path, "apply", str(m)).returncode == 0
    s3.reset_counts()
    done = subprocess.run([sys.executable, "-c", NOOP_APPLY, str(m)], capture_output=True, text=True,
                          env=env_for(tmp_path, "b"), timeout=120, check=False)
    assert done.stdout.splitlines()[-1] == "no botocore 0", done.stderr
    assert dict(s3.counts()) == {"LockPut": 1, "ListObjectsV2": 1, "list_total": 1, "LockDelete": 1}
    assert lock_body(s3, "s3", tmp_path) is None


def put_lock(s3, kind: str, tmp_path: Path, body: dict) -> None:
    data = json.dumps(body).encode()
    if kind == "s3":
        s3.put_object(s3.bucket, "ds/.cartsync.lock", data)
    else:
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / ".cartsync.lock").write_bytes(data)


CRASHED = {"who": "ci@runner-7", "pid": 4242, "manifest": "/ci/m.yaml", "target": "web",
           "since": "2026-01-01T00:00:00+00:00"}


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_an_expired_lock_of_a_crashed_runner_is_taken_over(tmp_path, s3, kind):
    m = manifests(tmp_path, s3)[kind]
    put_lock(s3, kind, tmp_path, {**CRASHED, "until": "2026-01-01T00:10:00+00:00"})   # another machine, expired
    done = run_cli(tmp_path, "apply", str(m))
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("WARNING: target web: took over an expired lock (ci@runner-7 (pid 4242, "
                                  "/ci/m.yaml) since 2026-01-01T00:00:00+00:00, until 2026-01-01T00:10:00+00:00)\n")
    assert done.stdout.startswith("web: 3 created, 0 replaced, 0 deleted;")
    assert lock_body(s3, kind, tmp_path) is None


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_a_live_lock_of_another_machine_is_not_taken_over(tmp_path, s3, kind):
    m = manifests(tmp_path, s3)[kind]
    put_lock(s3, kind, tmp_path, {**CRASHED, "until": "2999-01-01T00:00:00+00:00"})
    done = run_cli(tmp_path, "apply", str(m))
    assert done.returncode == 1 and done.stderr.startswith("error: target web is locked by ci@runner-7 (pid 4242, ")
    assert json.loads(lock_body(s3, kind, tmp_path) or b"{}")["who"] == "ci@runner-7"


def test_a_lock_left_by_a_killed_run_on_this_machine_is_taken_over_at_once(tmp_path, s3):
    m = manifests(tmp_path, s3)["s3"]
    holder = start_holder(tmp_path, m)
    holder.send_signal(signal.SIGKILL)                                # its pid is gone: no need to wait
    holder.wait(timeout=30)
    assert lock_body(s3, "s3", tmp_path) is not None
    done = run_cli(tmp_path, "apply", str(m))
    assert done.returncode == 0 and "WARNING: target web: took over an expired lock (" in done.stderr
    assert lock_body(s3, "s3", tmp_path) is None


def test_the_lock_is_refreshed_during_a_long_apply(tmp_path, s3, monkeypatch):
    from cartsync import engine, locks, manifest
    from cartsync.backends import open_backend
    monkeypatch.setenv("CARTSYNC_LOCK_TTL", "1.5")
    m = manifest.load(manifests(tmp_path, s3)["s3"])
    backend = open_backend(m.targets[0], engine.cache_for())
    with locks.target_lock(m, backend):
        first = json.loads(lock_body(s3, "s3", tmp_path) or b"{}")
        deadline = time.monotonic() + 20
        while json.loads(lock_body(s3, "s3", tmp_path) or b"{}")["until"] == first["until"]:
            assert time.monotonic() < deadline, "the lock was never refreshed"
            time.sleep(0.2)
        again = json.loads(lock_body(s3, "s3", tmp_path) or b"{}")
        assert again["since"] == first["since"] and again["until"] > first["until"]
    assert lock_body(s3, "s3", tmp_path) is None


def test_unlock_breaks_a_lock_deliberately(tmp_path, s3):
    m = manifests(tmp_path, s3)["s3"]
    holder = start_holder(tmp_path, m)
    held = json.loads(lock_body(s3, "s3", tmp_path) or b"{}")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    done = run_cli(tmp_path, "unlock", str(m), "--target", "web")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (f"target web: removed the lock held by {held['who']} (pid {held['pid']}, {m.resolve()}) "
                           f"since {held['since']}, until {held['until']} (s3://{s3.bucket}/ds/.cartsync.lock).\n")
    assert lock_body(s3, "s3", tmp_path) is None
    assert run_cli(tmp_path, "unlock", str(m), "--target", "web").stdout == (
        f"target web: not locked (s3://{s3.bucket}/ds/.cartsync.lock does not exist).\n")
