"""Faults on the wire: transient failures converge, permanent ones are contained and reported."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from faultproxy import FaultProxy
from helpers import catalog_dataset, s3_md5s, write_manifest, zenodo_manifest

MiB = 2**20


def make_source(root: Path, n_small: int = 30, big: int = 2) -> dict[str, str]:
    """A catalog dataset: small files, a few multipart-sized ones; returns key → md5."""
    files = {f"f{i:02}.pmtiles": os.urandom(1000 + i * 37) for i in range(n_small)}
    files.update({f"big{i}.pmtiles": os.urandom(11 * MiB + i) for i in range(big)})
    return catalog_dataset(root, files, "faults")


def proxied_manifest(tmp_path: Path, s3, proxy: FaultProxy, **target) -> Path:
    opts = {"endpoint_url": proxy.url, "config_kwargs": {"read_timeout": 2, "connect_timeout": 2}}
    extra = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in target.items())
    return write_manifest(tmp_path, f"""
        version: 1
        source: {{dir: src, method: catalog}}
        targets:
          - name: web
            url: s3://{s3.bucket}/ds
            part_size: 5MiB
            storage_options: {json.dumps(opts)}
        """ + extra)


def test_s3_twenty_percent_transient_faults_converge(s3, tmp_path, cli):
    expected = make_source(tmp_path / "src")
    with FaultProxy(s3.endpoint_url, seed=7) as proxy:
        proxy.configure(rate=0.2, faults={"500": 2, "503": 2, "slowdown": 2, "reset": 2, "truncate": 1,
                                          "stall": 1}, stall_seconds=3)
        m = proxied_manifest(tmp_path, s3, proxy)
        code, out, err = cli("apply", m, "--json", "--jobs", "4")
        report = json.loads(out)["reports"][0]
        injected = sum(proxy.faults_injected.values())
    assert code == 0, err + out
    assert report["ok"] and report["retries"] >= 1
    assert s3_md5s(s3, "ds") == expected               # exactly the source: nothing missing, nothing extra
    assert s3.list_multipart_uploads(s3.bucket) == []
    assert injected >= 5
    print(f"S3: {injected} requests failed on purpose ({dict(proxy.faults_injected)}), "
          f"{report['retries']} retries used")


def test_s3_one_file_failing_permanently_is_contained(s3, tmp_path, cli):
    expected = make_source(tmp_path / "src")
    s3.put_object(s3.bucket, "ds/stale.txt", b"would be deleted")
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(lambda method, target: method == "PUT" and "/ds/f07.pmtiles" in target)
        m = proxied_manifest(tmp_path, s3, proxy, delete=True)
        code, out, err = cli("apply", m)
    assert code == 1
    assert f"  FAILED f07.pmtiles: access denied writing to s3://{s3.bucket}/ds\n" in out
    assert "not done because of the failure(s) above: 2 action(s) (catalog.yaml, stale.txt)" in out
    stored = s3_md5s(s3, "ds")
    assert "catalog.yaml" not in stored and "f07.pmtiles" not in stored
    assert stored["stale.txt"] == hashlib.md5(b"would be deleted").hexdigest()
    assert {k: v for k, v in stored.items() if k != "stale.txt"} == {
        k: v for k, v in expected.items() if k not in ("catalog.yaml", "f07.pmtiles")}


def test_s3_failed_part_and_lost_complete_are_retried_alone(s3, tmp_path, cli):
    """A part that fails is sent again on its own, and a CompleteMultipartUpload whose answer was lost is
    recognised as done: the file is not started over (on a flaky network that would rarely finish)."""
    expected = make_source(tmp_path / "src", n_small=2, big=1)      # big0: 11 MiB = 3 parts of 5 MiB
    with FaultProxy(s3.endpoint_url) as proxy:
        # truncate: forwarded, only the answer is lost; reset: cut off before reaching the server
        proxy.schedule("truncate", 1, lambda method, target: method == "PUT" and "partNumber=2" in target)
        proxy.schedule("reset", 1, lambda method, target: "big0.pmtiles" in target and method == "PUT"
                       and "partNumber=3" in target)
        proxy.schedule("truncate", 1, lambda method, target: method == "POST" and "uploadId=" in target)
        s3.reset_counts()
        code, out, err = cli("apply", proxied_manifest(tmp_path, s3, proxy), "--json")
        injected = dict(proxy.faults_injected)
    assert code == 0, err + out
    assert injected == {"reset": 1, "truncate": 2}
    counts = s3.counts()
    assert counts["CreateMultipartUpload"] == 1 and counts["UploadPart"] == 3 + 1   # only part 2 sent twice
    assert counts["CompleteMultipartUpload"] == 2 and counts["AbortMultipartUpload"] == 0
    assert json.loads(out)["reports"][0]["retries"] == 3
    assert s3_md5s(s3, "ds") == expected
    assert s3.list_multipart_uploads(s3.bucket) == []


def test_zenodo_twenty_percent_faults_and_429_converge(zenodo, tmp_path, cli):
    expected = make_source(tmp_path / "src", n_small=20, big=1)
    zenodo.fault_retry_after = 0
    zenodo.fail_rate(0.2, statuses=(500, 502, 503, 429), seed=3)
    m = zenodo_manifest(tmp_path, zenodo.url, src="src")
    code, out, err = cli("apply", m, "--json", "--jobs", "4")
    assert code == 0, err
    report = json.loads(out)["reports"][0]
    zenodo.fail_rate(0)
    assert zenodo.deposition_count() == 1
    (dep,) = zenodo.depositions.values()
    assert zenodo.files_of(dep.id) == expected
    assert zenodo.faults_injected >= 5 and report["retries"] >= zenodo.faults_injected * 0.5
    print(f"Zenodo: {zenodo.faults_injected} requests failed on purpose, {report['retries']} retries used")


def test_zenodo_lost_answers_on_publish_and_upload(zenodo, tmp_path, dataset, cli):
    """504 after a successful upload and publish: re-read, adopt, never duplicate."""
    m = zenodo_manifest(tmp_path, zenodo.url, publish=True)
    zenodo.fail_next(2, status=504, path_contains="/api/files/", method="PUT", after_success=True)
    zenodo.fail_next(1, status=504, path_contains="/actions/publish", after_success=True)
    code, out, err = cli("apply", m)
    assert code == 0, err
    (dep,) = zenodo.depositions.values()
    assert dep.submitted and len(dep.files) == 16
    assert zenodo.count("POST", f"/api/deposit/depositions/{dep.id}/actions/publish") == 1


def local_manifest(tmp_path: Path) -> Path:
    """The example dataset (fixture `dataset`) to the local folder `out`."""
    return write_manifest(tmp_path, "version: 1\nsource: {dir: cartload2}\ntargets: [{name: out, url: out}]\n")


@pytest.mark.parametrize("mode", ["modified", "truncated"])
def test_file_changing_during_upload_is_not_recorded_as_done(tmp_path, dataset, mode):
    """The file changes after hashing, while it is being sent: the run fails for that file, says why."""
    from cartsync import engine, manifest
    from cartsync.backends.fsspec import FsspecBackend
    from cartsync.executor import Executor
    from cartsync.inventory import HashCache, inventory
    from cartsync.retry import RetryPolicy

    m = local_manifest(tmp_path)
    man = manifest.load(m)
    cache = HashCache(tmp_path / "h.sqlite3")
    local = inventory(engine.select(man), cache)
    victim = dataset / "genes_all.pmtiles"

    class ChangingUnderUs(FsspecBackend):      # a real local backend; the file changes as it is read
        def upload(self, lf, key, progress):
            if key == "genes_all.pmtiles" and victim.stat().st_size == lf.size:
                if mode == "modified":
                    victim.write_bytes(b"X" * lf.size)
                else:
                    os.truncate(victim, 100)
            return super().upload(lf, key, progress)

    backend = ChangingUnderUs(man.targets[0], cache)
    plan = engine.plan_target(backend, man.targets[0], local)
    report = Executor(backend, RetryPolicy(attempts=3, max_wait=0.01, base=0.001), 2, False).run(plan)
    (failed,) = report.failed
    assert failed.action.key == "genes_all.pmtiles"
    assert failed.error in ("changed since it was hashed", "changed while it was being uploaded")
    assert [a.key for a in report.skipped] == ["catalog.yaml"]
    # nothing claims the new content is the hashed one: a fresh plan still sees work to do
    assert engine.plan_target(FsspecBackend(man.targets[0], cache), man.targets[0],
                              inventory(engine.select(man), cache)).has_changes


def test_second_apply_of_same_target_waits_its_turn(tmp_path, dataset, cli):
    from cartsync import locks, manifest
    m = local_manifest(tmp_path)
    man = manifest.load(m)
    with locks.machine_lock(man, man.targets[0]):
        code, out, err = cli("apply", m)
    assert code == 1
    assert err == (f"error: target out of {m} is being applied by pid {os.getpid()}\n"
                   "hint: wait for that run to finish, then re-run\n")
    assert not (tmp_path / "out").exists()
    assert cli("apply", m)[0] == 0                        # the lock is released afterwards
