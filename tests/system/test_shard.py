"""Sharding a collection (issue 16): the split, the scope of deletes and locks, ranged listings, N processes."""
from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from cartsync import locks
from cartsync import manifest as manifest_mod
from cartsync.errors import CartsyncError
from cartsync.model import KeyRange, Scope
from cartsync.shard import Shard, from_environment, from_slurm, order, parse, share

# ---- the split --------------------------------------------------------------------------------

def test_parse_forms_and_errors():
    assert parse("2/4") == Shard(2, 4) and parse(" 1 / 1 ") == Shard(1, 1)
    for bad in ("0/4", "5/4", "2", "a/b", "2/0"):
        with pytest.raises(CartsyncError) as err:
            parse(bad)
        assert err.value.message == f"--shard {bad!r}: not a shard"
        assert err.value.hint == "write K/N with 1 <= K <= N, e.g. 2/4, or `slurm` inside a SLURM job array"
    assert from_environment({"CARTSYNC_SHARD": "3/8"}) == Shard(3, 8)
    assert from_environment({}) is None


def test_slurm_task_ids_from_any_start():
    assert from_slurm({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}) \
        == Shard(1, 4)
    assert from_slurm({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}) \
        == Shard(4, 4)
    with pytest.raises(CartsyncError) as err:
        from_slurm({})
    assert err.value.message == ("--shard slurm: not inside a SLURM job array (SLURM_ARRAY_TASK_ID and "
                                 "SLURM_ARRAY_TASK_COUNT are not set)")


def test_shares_partition_the_collection_and_balance_by_size():
    sizes = {f"ds{i:03d}": (i * 7919) % 1000 + 1 for i in range(200)}
    shares = [share(sizes, Shard(k, 4)) for k in range(1, 5)]
    flat = [d for s in shares for d in s]
    assert sorted(flat) == sorted(sizes) and len(flat) == len(set(flat))
    assert shares == [share(dict(reversed(list(sizes.items()))), Shard(k, 4)) for k in range(1, 5)]
    biggest, ideal = max(sizes.values()), sum(sizes.values()) / 4
    assert all(abs(sum(sizes[d] for d in s) - ideal) <= biggest for s in shares)
    # contiguous in listing order: each share is one run of the ordered ids
    ordered = order(list(sizes))
    for s in shares:
        i = ordered.index(s[0])
        assert ordered[i:i + len(s)] == s


def test_more_shards_than_datasets_leaves_some_empty():
    shares = [share({"a": 5, "b": 5}, Shard(k, 4)) for k in range(1, 5)]
    assert sorted(d for s in shares for d in s) == ["a", "b"]


def test_listing_order_is_byte_order_of_the_key_prefixes():
    assert order(["a", "a-x", "a0", "ab"]) == ["a-x", "a", "a0", "ab"]
    assert KeyRange.of(Scope(frozenset({"a", "a0"}))) == KeyRange("a/", "a00")
    assert KeyRange.of(Scope()) is None


# ---- a collection on the loopback S3 server ---------------------------------------------------

def make_collection(root: Path, n: int, files_per: int = 3, size: int = 2000) -> dict[str, dict[str, bytes]]:
    """n datasets, each its own folder with a catalog naming its files; returns id → {name: bytes}."""
    out: dict[str, dict[str, bytes]] = {}
    for i in range(n):
        ds = f"sample-{i:02d}"
        folder = root / ds
        folder.mkdir(parents=True)
        files = {f"f{j}.tsv": bytes([65 + (i + j) % 26]) * (size + i * 10 + j) for j in range(files_per)}
        for name, data in files.items():
            (folder / name).write_bytes(data)
        catalog = f"id: {ds}\nassets:\n" + "".join(f"  a{j}: {name}\n" for j, name in enumerate(files))
        (folder / "catalog.yaml").write_text(catalog)
        out[ds] = {**files, "catalog.yaml": catalog.encode()}
    return out


def collection_manifest(folder: Path, s3, prefix: str = "coll", delete: bool = False, **source) -> Path:
    data = {"version": 1, "source": {"dir": "coll", "collection": True, **source},
            "targets": [{"name": "web", "url": f"s3://{s3.bucket}/{prefix}", "delete": delete,
                         "storage_options": {"endpoint_url": s3.endpoint_url}}]}
    path = folder / "manifest.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def stored(s3, prefix: str = "coll") -> set[str]:
    return {k[len(prefix) + 1:] for k in s3.list_objects(s3.bucket, prefix + "/")}


def test_shards_started_together_publish_every_object_exactly_once(tmp_path, s3):
    data = make_collection(tmp_path / "coll", 12)
    m = collection_manifest(tmp_path, s3)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    for k in range(1, 5):      # four "machines": each its own cache folder
        env_k = {**env, "CARTSYNC_CACHE_DIR": str(tmp_path / f"cache{k}")}
        procs.append(subprocess.Popen([sys.executable, "-m", "cartsync", "apply", str(m), "--shard", f"{k}/4",
                                       "--json"], env=env_k, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], [r[1].decode()[-2000:] for r in results]
    puts = collections.Counter(path for method, path, _ in s3.requests if method == "PUT")
    lock_puts = {path: n for path, n in puts.items() if path.endswith("/.cartsync.lock")}
    expected = {f"{ds}/{name}" for ds, files in data.items() for name in files}
    assert stored(s3) == expected                               # every lock object removed at the end
    assert sorted(n for path, n in puts.items() if path not in lock_puts) == [1] * len(expected)  # sent once
    assert s3_bytes_match(s3, data)
    # each shard held one lock object per dataset of its own, across "machines", and no target lock
    assert lock_puts == {f"/{s3.bucket}/coll/{ds}/.cartsync.lock": 1 for ds in data}


def s3_bytes_match(s3, data: dict[str, dict[str, bytes]], prefix: str = "coll") -> bool:
    return all(s3.get_object_bytes(s3.bucket, f"{prefix}/{ds}/{name}") == body
               for ds, files in data.items() for name, body in files.items())


def test_shards_in_one_cache_folder_do_not_lock_each_other_out(tmp_path, s3, cli):
    make_collection(tmp_path / "coll", 4)
    m = manifest_mod.load(collection_manifest(tmp_path, s3))
    target = m.targets[0]
    mine = share({f"sample-{i:02d}": 1 for i in range(4)}, Shard(2, 2))
    # shard 1 of 2 applies while shard 2 holds its datasets' locks
    with locks.machine_lock(m, target, mine[0]):
        code, out, err = cli("apply", m.path, "--shard", "1/2")
        assert code == 0, err
        # ...but a run over the whole collection must wait for it
        code, out, err = cli("apply", m.path)
    assert code == 1
    assert err.startswith(f"error: dataset {mine[0]} of target web of {m.path} is being applied by pid ")


def test_a_shard_never_deletes_outside_its_datasets_and_only_a_whole_run_removes_a_dataset_that_left(
        tmp_path, s3, cli):
    data = make_collection(tmp_path / "coll", 4)
    m = collection_manifest(tmp_path, s3, delete=True)
    assert cli("apply", m)[0] == 0
    s3.put_object(s3.bucket, "coll/other-tool/readme.txt", b"not ours")   # outside every shard's datasets
    (tmp_path / "coll" / "sample-03" / "catalog.yaml").unlink()           # sample-03 leaves the collection
    sizes = {d: sum(len(b) for b in f.values()) for d, f in data.items() if d != "sample-03"}
    for k in (1, 2):
        n = len(share(sizes, Shard(k, 2)))
        code, out, err = cli("plan", m, "--shard", f"{k}/2")
        assert code == 0 and "- delete" not in out, out
        assert (f"note: only this run's {n} dataset(s) are compared; everything else under the target is left "
                f"alone (shard {k}/2: {n} of 3 dataset(s); datasets that left the collection are deleted only by a "
                "run over the whole collection, without --shard)") in out
        assert cli("apply", m, "--shard", f"{k}/2")[0] == 0
    assert {k.split("/")[0] for k in stored(s3)} == {"sample-00", "sample-01", "sample-02", "sample-03",
                                                      "other-tool"}
    code, out, err = cli("apply", m)           # the whole collection: delete: true makes the prefix match it
    assert code == 0, err
    assert {k.split("/")[0] for k in stored(s3)} == {"sample-00", "sample-01", "sample-02"}
    assert s3_bytes_match(s3, {d: f for d, f in data.items() if d != "sample-03"})


def test_a_datasets_list_owns_only_the_listed_datasets(tmp_path, s3, cli):
    make_collection(tmp_path / "coll", 3)
    m = collection_manifest(tmp_path, s3, delete=True)
    assert cli("apply", m)[0] == 0
    listed = collection_manifest(tmp_path, s3, delete=True, datasets=["sample-01"])
    code, out, err = cli("apply", listed)
    assert code == 0, err
    assert {k.split("/")[0] for k in stored(s3)} == {"sample-00", "sample-01", "sample-02"}


def test_four_shard_listings_cost_about_one_listing_of_the_collection(tmp_path, s3, cli):
    n, per = 8, 149                          # 1,200 keys: a whole listing is 2 pages of 1,000
    make_collection(tmp_path / "coll", n, files_per=per, size=1)
    # filled through moto's in-process API (one object per file, MD5 ETag and the Content-Type cartsync sets:
    # what an apply leaves), not HTTP
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    from cartsync.backends.s3.client import content_type
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for path in sorted(p for p in (tmp_path / "coll").rglob("*") if p.is_file()):
        key = backend.put_object(s3.bucket, f"coll/{path.relative_to(tmp_path / 'coll').as_posix()}", path.read_bytes())
        key.set_metadata({"Content-Type": content_type(path.name)})
    m = collection_manifest(tmp_path, s3)
    s3.reset_counts()
    assert cli("plan", m)[0] == 0             # (headers unknown to this cache: one HEAD each, remembered)
    whole = s3.counts()["list_total"]
    s3.reset_counts()
    for k in range(1, 5):
        code, out, err = cli("plan", m, "--shard", f"{k}/4")
        assert code == 0 and "No changes." in out, out + err
    shards = s3.counts()["list_total"]
    assert whole == 2
    # each shard lists its own run of keys (one page here), never one request per dataset (8)
    assert shards <= whole + 4 and shards < n


def test_shard_needs_a_collection(tmp_path, s3, cli, dataset):
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": str(dataset)}, "targets": [
        {"name": "web", "url": f"s3://{s3.bucket}/x", "storage_options": {"endpoint_url": s3.endpoint_url}}]}))
    code, out, err = cli("plan", m, "--shard", "1/2")
    assert code == 1
    assert err == ("error: --shard splits a collection's datasets, but this source is one dataset\n"
                   "hint: set source.collection: true, or run without --shard\n")


def readme_block(start: str) -> str:
    text = (REPO / "README.md").read_text()
    body = text[text.index(start):]
    return body[:body.index("```")]


def test_the_readme_slurm_array_and_ci_matrix_publish_the_collection_once(tmp_path, s3):
    """The README's two recipes, run as N local processes against the loopback server."""
    slurm = readme_block("#SBATCH --job-name=publish")
    array = slurm.split("--array=", 1)[1].split()[0]                         # "1-4"
    first, last = (int(x) for x in array.split("-"))
    command = [line for line in slurm.splitlines() if line.startswith("cartsync ")][0].split()
    matrix = readme_block("strategy:\n      matrix:")
    shards = [int(x) for x in matrix.split("shard: [", 1)[1].split("]")[0].split(",")]
    ci = [line.split("run: ", 1)[1] for line in matrix.splitlines() if "run: cartsync" in line][0]

    for name, runs in (("slurm", [{"SLURM_ARRAY_TASK_ID": str(t), "SLURM_ARRAY_TASK_MIN": str(first),
                                    "SLURM_ARRAY_TASK_COUNT": str(last - first + 1)} for t in range(first, last + 1)]),
                       ("ci", [{"MATRIX_SHARD": str(k)} for k in shards])):
        folder = tmp_path / name
        folder.mkdir()
        data = make_collection(folder / "coll", 6)
        m = collection_manifest(folder, s3, prefix=name)
        (folder / "collection.yaml").write_text(m.read_text())
        s3.reset_counts()
        procs = []
        for i, extra in enumerate(runs):
            argv = command if name == "slurm" else ci.replace("${{ matrix.shard }}", extra["MATRIX_SHARD"]).split()
            env = {**os.environ, **extra, "PYTHONPATH": str(REPO), "CARTSYNC_CACHE_DIR": str(folder / f"c{i}")}
            procs.append(subprocess.Popen([sys.executable, "-m", *argv], cwd=folder, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * len(runs), [o[1].decode()[-1500:] for o in outs]
        puts = collections.Counter(path for method, path, _ in s3.requests
                                   if method == "PUT" and not path.endswith("/.cartsync.lock"))
        assert sorted(puts.values()) == [1] * sum(len(f) for f in data.values())
        assert s3_bytes_match(s3, data, prefix=name)


def test_a_shard_leaves_another_shards_unfinished_upload_for_that_shard_to_resume(tmp_path, s3):
    """A killed run over the whole collection leaves a multipart upload open in each dataset; the shard that
    owns only one of them cleans up (or resumes) its own and leaves the other's open, which its owner's run
    then resumes, sending only the parts the server lacks."""
    import signal

    from faultproxy import FaultProxy
    from helpers import part_request, stored_parts
    data = make_collection(tmp_path / "coll", 2)
    for ds in data:
        (tmp_path / "coll" / ds / "big.bin").write_bytes(os.urandom(26 * 2**20))     # 6 parts of 5 MiB
        catalog = tmp_path / "coll" / ds / "catalog.yaml"
        catalog.write_text(catalog.read_text() + "  big: big.bin\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CARTSYNC_CACHE_DIR": str(tmp_path / "cache")}
    with FaultProxy(s3.endpoint_url) as proxy:
        m = tmp_path / "manifest.yaml"
        m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "coll", "collection": True}, "targets": [
            {"name": "web", "url": f"s3://{s3.bucket}/coll", "part_size": "5MiB",
             "storage_options": {"endpoint_url": proxy.url}}]}, sort_keys=False))
        seen: set[str] = set()
        proc: list[subprocess.Popen] = []

        def kill_when_both_started(method: str, target: str) -> None:
            seen.add(target.split("/")[3])
            if len(seen) == 2:
                proc[0].send_signal(signal.SIGKILL)

        for ds in data:
            proxy.before(part_request(f"coll/{ds}/big.bin", 3), kill_when_both_started)
        proc.append(subprocess.Popen([sys.executable, "-m", "cartsync", "apply", str(m), "--jobs", "4"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        proc[0].wait(timeout=120)
        left = {ds: stored_parts(s3, f"coll/{ds}/big.bin") for ds in data}
        assert all(upload_id is not None for upload_id, _ in left.values()), left
        mine = share({ds: 1 for ds in data}, Shard(1, 2))
        [other] = [ds for ds in data if ds not in mine]
        done = subprocess.run([sys.executable, "-m", "cartsync", "apply", str(m), "--shard", "1/2"], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert stored_parts(s3, f"coll/{other}/big.bin") == left[other]          # not aborted, not touched
        s3.reset_counts()
        done = subprocess.run([sys.executable, "-m", "cartsync", "apply", str(m), "--shard", "2/2"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"  = resumed {other}/big.bin: {len(left[other][1])} of 6 parts were already stored" in done.stdout
    assert s3.get_object_bytes(s3.bucket, f"coll/{other}/big.bin") == (tmp_path / "coll" / other / "big.bin").read_bytes()
    assert s3.list_multipart_uploads(s3.bucket) == []
