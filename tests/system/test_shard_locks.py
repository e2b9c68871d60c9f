"""Shards on several machines (issue 16): a shard holds one lock object per dataset beside the data, a run over
the whole collection the target's; each refuses the other, shards run side by side. "Machines" are processes
with their own cache folders, so the machine lock (an flock in the cache folder) cannot be what refuses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from cartsync import manifest as manifest_mod
from cartsync.shard import Shard, share

HOLDER = """
import sys
from cartsync import engine, locks, manifest
from cartsync.backends import open_backend
m = manifest.load(sys.argv[1])
backend = open_backend(m.targets[0], engine.cache_for())
held = locks.dataset_locks(m, backend, sys.argv[2:]) if len(sys.argv) > 2 else locks.target_lock(m, backend)
with held:
    print("held", flush=True)
    sys.stdin.readline()
"""
FAR_FUTURE = "2999-01-01T00:00:00+00:00"
LONG_AGO = "2026-01-01T00:10:00+00:00"


def collection(tmp_path: Path, s3, kind: str, n: int = 4) -> Path:
    for i in range(n):
        folder = tmp_path / "coll" / f"sample-{i:02d}"
        folder.mkdir(parents=True)
        (folder / "a.tsv").write_bytes(b"x" * (100 + i))
        (folder / "catalog.yaml").write_text(f"id: sample-{i:02d}\nassets:\n  a: a.tsv\n")
    target = ({"url": f"s3://{s3.bucket}/coll", "storage_options": {"endpoint_url": s3.endpoint_url}}
              if kind == "s3" else {"url": "out"})
    path = tmp_path / "manifest.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "coll", "collection": True},
                                    "targets": [{"name": "web", "delete": True, **target}]}, sort_keys=False))
    return path


def env(tmp_path: Path, machine: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "CARTSYNC_CACHE_DIR": str(tmp_path / f"cache-{machine}")}


def hold(tmp_path: Path, m: Path, *datasets: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(m), *datasets], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env(tmp_path, "a"))
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"
    return proc


def cartsync(tmp_path: Path, *args: str, machine: str = "b") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cartsync", *map(str, args)], capture_output=True, text=True,
                          env=env(tmp_path, machine), timeout=120, check=False)


def stored(s3, kind: str, tmp_path: Path) -> set[str]:
    """Every key under the target, lock objects included, read independently (boto3 / the disk)."""
    if kind == "s3":
        return {k[len("coll/"):] for k in s3.list_objects(s3.bucket, "coll/")}
    out = tmp_path / "out"
    return {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} if out.exists() else set()


def put_lock(s3, kind: str, tmp_path: Path, key: str, until: str) -> None:
    body = json.dumps({"who": "ci@runner-7", "pid": 4242, "manifest": "/ci/m.yaml", "target": "web",
                       "dataset": key.partition("/")[0], "since": "2026-01-01T00:00:00+00:00",
                       "until": until}).encode()
    if kind == "s3":
        s3.put_object(s3.bucket, f"coll/{key}", body)
    else:
        (tmp_path / "out" / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / key).write_bytes(body)


def first_share(m: Path, k: int, n: int) -> list[str]:
    """The datasets shard k/n owns, as cartsync computes them (sizes from the disk)."""
    src = Path(manifest_mod.load(m).source.dir)
    sizes = {d.name: sum(f.stat().st_size for f in d.iterdir()) for d in src.iterdir()}
    return share(sizes, Shard(k, n))


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_a_shard_is_refused_while_a_run_over_the_whole_collection_holds_the_target(tmp_path, s3, kind):
    m = collection(tmp_path, s3, kind)
    holder = hold(tmp_path, m)
    try:
        done = cartsync(tmp_path, "apply", m, "--shard", "1/2")
        assert done.returncode == 1
        assert done.stderr.startswith("error: target web is locked by a run over the whole target: ")
        assert "hint: wait for that run to finish; if it crashed, the lock expires at " in done.stderr
        assert f"or remove it with: cartsync unlock {m} --target web\n" in done.stderr
        assert stored(s3, kind, tmp_path) == {".cartsync.lock"}     # its own dataset locks were let go
        if kind == "local":                                          # and the folders they needed
            assert [p.name for p in (tmp_path / "out").iterdir()] == [".cartsync.lock"]
    finally:
        holder.communicate("\n", timeout=30)
    assert cartsync(tmp_path, "apply", m, "--shard", "1/2").returncode == 0


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_a_run_over_the_whole_collection_is_refused_while_a_shard_holds_a_dataset(tmp_path, s3, kind):
    m = collection(tmp_path, s3, kind)
    mine = first_share(m, 2, 2)
    holder = hold(tmp_path, m, *mine)
    try:
        assert stored(s3, kind, tmp_path) == {f"{d}/.cartsync.lock" for d in mine}
        held = json.loads(s3.get_object_bytes(s3.bucket, f"coll/{mine[0]}/.cartsync.lock") if kind == "s3"
                           else (tmp_path / "out" / mine[0] / ".cartsync.lock").read_bytes())
        assert held["dataset"] == mine[0] and held["target"] == "web"
        done = cartsync(tmp_path, "apply", m)
        assert done.returncode == 1
        assert done.stderr.startswith(f"error: dataset {mine[0]} of target web is locked by a shard: "
                                      f"{held['who']} (pid {holder.pid}, {m.resolve()}) since {held['since']}")
        assert (f" and {len(mine) - 1} more dataset(s)" in done.stderr) == (len(mine) > 1)
        # nothing written, not even by delete: true (the lock objects are not data), and its own lock gone
        assert stored(s3, kind, tmp_path) == {f"{d}/.cartsync.lock" for d in mine}
        # the other shard runs beside it
        done = cartsync(tmp_path, "apply", m, "--shard", "1/2")
        assert done.returncode == 0, done.stderr
        # and a shard with another split that overlaps the held datasets is refused by their lock
        done = cartsync(tmp_path, "apply", m, "--shard", "1/1", machine="c")
        assert done.returncode == 1
    finally:
        holder.communicate("\n", timeout=30)
    assert stored(s3, kind, tmp_path) == {f"sample-{i:02d}/{f}" for i in range(4) for f in ("a.tsv", "catalog.yaml")
                                          if f"sample-{i:02d}" not in mine}
    done = cartsync(tmp_path, "apply", m)
    assert done.returncode == 0, done.stderr
    assert stored(s3, kind, tmp_path) == {f"sample-{i:02d}/{f}" for i in range(4) for f in ("a.tsv", "catalog.yaml")}


def test_an_overlapping_shard_is_refused_by_the_dataset_lock(tmp_path, s3):
    m = collection(tmp_path, s3, "s3")
    mine = first_share(m, 1, 2)
    holder = hold(tmp_path, m, *mine)
    try:
        done = cartsync(tmp_path, "apply", m, "--shard", "1/1")      # a different N: all four datasets
        assert done.returncode == 1
        assert done.stderr.startswith(f"error: dataset {mine[0]} of target web is locked by ")
        # the datasets it could lock were let go again: only the holder's locks remain, and no data
        assert stored(s3, "s3", tmp_path) == {f"{d}/.cartsync.lock" for d in mine}
    finally:
        holder.communicate("\n", timeout=30)


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_a_crashed_shards_expired_lock_neither_blocks_a_whole_run_nor_a_shard(tmp_path, s3, kind):
    m = collection(tmp_path, s3, kind)
    put_lock(s3, kind, tmp_path, "sample-00/.cartsync.lock", LONG_AGO)
    done = cartsync(tmp_path, "apply", m)
    assert done.returncode == 0, done.stderr
    assert "sample-00/.cartsync.lock" in stored(s3, kind, tmp_path)       # not data: not deleted as stale
    done = cartsync(tmp_path, "apply", m, "--shard", "1/1")
    assert done.returncode == 0, done.stderr
    assert "WARNING: dataset sample-00 of target web: took over an expired lock (ci@runner-7 (pid 4242" in done.stderr
    assert "sample-00/.cartsync.lock" not in stored(s3, kind, tmp_path)


def test_a_live_dataset_lock_of_another_machine_refuses_and_unlock_removes_it(tmp_path, s3):
    m = collection(tmp_path, s3, "s3")
    put_lock(s3, "s3", tmp_path, "sample-01/.cartsync.lock", FAR_FUTURE)
    done = cartsync(tmp_path, "apply", m)
    assert done.returncode == 1
    assert done.stderr == (
        "error: dataset sample-01 of target web is locked by a shard: ci@runner-7 (pid 4242, /ci/m.yaml) since "
        f"2026-01-01T00:00:00+00:00, until {FAR_FUTURE} (s3://{s3.bucket}/coll/sample-01/.cartsync.lock)\n"
        f"hint: wait for the shards to finish; if one crashed, its lock expires at {FAR_FUTURE}, or remove it "
        f"with: cartsync unlock {m} --target web\n")
    assert stored(s3, "s3", tmp_path) == {"sample-01/.cartsync.lock"}
    done = cartsync(tmp_path, "unlock", m, "--target", "web")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == ("dataset sample-01 of target web: removed the lock held by ci@runner-7 (pid 4242, "
                           f"/ci/m.yaml) since 2026-01-01T00:00:00+00:00, until {FAR_FUTURE} "
                           f"(s3://{s3.bucket}/coll/sample-01/.cartsync.lock).\n")
    assert cartsync(tmp_path, "apply", m).returncode == 0


def test_plan_takes_no_lock_and_never_plans_a_lock_object(tmp_path, s3):
    m = collection(tmp_path, s3, "s3")
    assert cartsync(tmp_path, "apply", m).returncode == 0
    put_lock(s3, "s3", tmp_path, "sample-01/.cartsync.lock", FAR_FUTURE)
    s3.reset_counts()
    done = cartsync(tmp_path, "plan", m, "--detailed-exitcode")
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "No changes. 8 file(s) up to date."), done.stdout
    assert s3.counts()["LockPut"] == s3.counts()["LockGet"] == 0


def test_a_source_file_named_like_the_lock_is_refused_before_any_request(tmp_path, s3):
    m = collection(tmp_path, s3, "s3")
    (tmp_path / "coll" / "sample-00" / ".cartsync.lock").write_text("mine")
    (tmp_path / "coll" / "sample-00" / "catalog.yaml").write_text(
        "id: sample-00\nassets:\n  a: a.tsv\n  b: .cartsync.lock\n")
    s3.reset_counts()
    done = cartsync(tmp_path, "apply", m)
    assert done.returncode != 0
    assert "sample-00/.cartsync.lock: .cartsync.lock is the name of cartsync's lock object on the target" \
        in done.stderr, done.stderr
    assert sum(s3.counts().values()) == 0


def test_an_unreadable_lock_object_counts_as_expired_for_either_kind(tmp_path, s3):
    """As a run taking a lock takes an unreadable one over, a run looking at the other kind's lock does not
    wait for one: a whole run passes a garbage dataset lock, a shard a garbage target lock."""
    m = collection(tmp_path, s3, "s3")
    s3.put_object(s3.bucket, "coll/sample-02/.cartsync.lock", b"not json")
    done = cartsync(tmp_path, "apply", m)
    assert done.returncode == 0, done.stderr
    s3.put_object(s3.bucket, "coll/.cartsync.lock", b"\x00garbage")
    (tmp_path / "coll" / "sample-00" / "a.tsv").write_bytes(b"changed")
    done = cartsync(tmp_path, "apply", m, "--shard", "1/1")
    assert done.returncode == 0, done.stderr
    assert s3.get_object_bytes(s3.bucket, "coll/sample-00/a.tsv") == b"changed"
