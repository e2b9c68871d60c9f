"""Multipart uploads: only cartsync's own are aborted; a killed or failed big upload resumes where it stopped.

Remote state is read back with boto3 (the s3 fixture's uncounted helper client); requests are counted at
the moto server (tests/fakes/s3server.py); exact points in a run are reached with FaultProxy.before hooks.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from faultproxy import FaultProxy
from helpers import PART, MiB, multipart_etag, part_request, source, stored_parts
from helpers import multipart_manifest as manifest


def ops(s3, op: str, key: str = "") -> int:
    """Counted requests of one operation (on one key, if given) the server received."""
    return sum(1 for r in s3.request_log if r.counted and r.op == op and r.path.endswith("/" + key))


def apply_cmd(m: Path) -> list[str]:
    return [sys.executable, "-m", "cartsync", "apply", str(m), "--jobs", "2"]


# ---- only our own uploads --------------------------------------------------------------------------------

def test_other_tools_uploads_are_never_aborted(s3, tmp_path, cli):
    """Another tool's open uploads under the prefix (one of them of a key cartsync writes), and elsewhere in
    the bucket, survive applies with delete: true, at a prefix and at the bucket root."""
    client = s3.boto3_client(counted=False)
    theirs = {client.create_multipart_upload(Bucket=s3.bucket, Key=k)["UploadId"]
              for k in ("ds/their-big.bin", "ds/big.bin", "elsewhere/x.bin")}
    src = source(tmp_path / "src", {"big.bin": 11 * MiB, "a.tsv": 100})
    for prefix in ("ds", ""):
        m = manifest(tmp_path, s3, prefix, src, s3.endpoint_url, delete=True)
        code, out, err = cli("apply", m)
        assert code == 0, err
    assert {u["UploadId"] for u in s3.list_multipart_uploads(s3.bucket)} == theirs
    assert s3.counts()["AbortMultipartUpload"] == 0
    assert s3.get_object_bytes(s3.bucket, "big.bin") == (src / "big.bin").read_bytes()


def test_nested_prefixes_applied_at_once(s3, tmp_path):
    """s3://b/p and s3://b/p/sub applied by two processes at the same time: the outer run starts and ends
    while the inner one's upload is open (its part 2 held at the proxy); both succeed, nothing is aborted."""
    outer = source(tmp_path / "outer", {"big.bin": 11 * MiB, "a.tsv": 10})
    inner = source(tmp_path / "inner", {"big.bin": 11 * MiB + 1, "b.tsv": 20})
    held, release = threading.Event(), threading.Event()
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.before(part_request("p/sub/big.bin", 2), lambda m, t: (held.set(), release.wait(120)))
        m_inner = manifest(tmp_path, s3, "p/sub", inner, proxy.url, name="inner.yaml")
        m_outer = manifest(tmp_path, s3, "p", outer, s3.endpoint_url, name="outer.yaml")
        inner_run = subprocess.Popen(apply_cmd(m_inner), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert held.wait(120)
            outer_run = subprocess.run(apply_cmd(m_outer), capture_output=True, text=True, timeout=300)
        finally:
            release.set()
        out, err = inner_run.communicate(timeout=300)
    assert outer_run.returncode == 0, outer_run.stderr
    assert inner_run.returncode == 0, err
    assert s3.counts()["AbortMultipartUpload"] == 0
    assert ops(s3, "CreateMultipartUpload", "p/sub/big.bin") == 1
    assert s3.get_object_bytes(s3.bucket, "p/sub/big.bin") == (inner / "big.bin").read_bytes()
    assert s3.get_object_bytes(s3.bucket, "p/big.bin") == (outer / "big.bin").read_bytes()
    assert s3.list_multipart_uploads(s3.bucket) == []


def test_upload_aborted_under_us_restarts_that_file(s3, tmp_path, cli):
    """NoSuchUpload on a part (someone aborted the upload meanwhile): the file starts over and succeeds."""
    src = source(tmp_path / "src", {"big.bin": 16 * MiB, "a.tsv": 10})
    client = s3.boto3_client(counted=False)

    def abort_it(method, target):
        for up in s3.list_multipart_uploads(s3.bucket):
            client.abort_multipart_upload(Bucket=s3.bucket, Key=up["Key"], UploadId=up["UploadId"])

    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.before(part_request("ds/big.bin", 3), abort_it)
        code, out, err = cli("apply", manifest(tmp_path, s3, "ds", src, proxy.url))
    assert code == 0, err + out
    assert out.startswith("web: 2 created, 0 replaced, 0 deleted;")
    assert s3.counts()["CreateMultipartUpload"] == 2
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == (src / "big.bin").read_bytes()
    assert s3.list_multipart_uploads(s3.bucket) == []


# ---- resume ----------------------------------------------------------------------------------------------

def interrupted(s3, tmp_path, sig: int, at_part: int = 8) -> tuple[Path, Path, FaultProxy]:
    """A 60 MB file (12 parts) whose apply gets `sig` as its part `at_part` reaches the proxy."""
    src = source(tmp_path / "src", {"big.bin": 60 * MiB, "a.tsv": 10})
    proxy = FaultProxy(s3.endpoint_url).start()
    m = manifest(tmp_path, s3, "ds", src, proxy.url)
    proc: list[subprocess.Popen] = []
    proxy.before(part_request("ds/big.bin", at_part), lambda method, target: proc[0].send_signal(sig))
    proc.append(subprocess.Popen(apply_cmd(m), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    proc[0].wait(timeout=300)
    return src, m, proxy


def test_sigkill_mid_upload_resumes_sending_only_missing_parts(s3, tmp_path, cli):
    src, m, proxy = interrupted(s3, tmp_path, signal.SIGKILL)
    try:
        upload_id, stored = stored_parts(s3, "ds/big.bin")
        assert upload_id is not None and 0 < len(stored) < 12
        # a stored part that is not the local part (e.g. a torn earlier write) is sent again
        s3.boto3_client(counted=False).upload_part(Bucket=s3.bucket, Key="ds/big.bin", UploadId=upload_id,
                                                   PartNumber=stored[0], Body=os.urandom(PART))
        code, out, _ = cli("plan", m)
        assert f"  = resume big.bin: {len(stored)} of 12 parts stored\n" in out
        s3.reset_counts()
        code, out, err = cli("apply", m)
        again = cli("apply", m)[1]
    finally:
        proxy.stop()
    assert code == 0, err + out
    assert again == "web: no changes; 2 file(s) up to date; 0 B sent.\n"
    assert f"  = resumed big.bin: {len(stored) - 1} of 12 parts were already stored; sent {13 - len(stored)}" in out
    counts = s3.counts()
    assert counts["UploadPart"] == 12 - len(stored) + 1
    assert (counts["CreateMultipartUpload"], counts["CompleteMultipartUpload"], counts["AbortMultipartUpload"]) == (
        0, 1, 0)
    data = (src / "big.bin").read_bytes()
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == data
    assert s3.head_object(s3.bucket, "ds/big.bin")["ETag"].strip('"') == multipart_etag(data)
    assert s3.list_multipart_uploads(s3.bucket) == []


def test_sigint_mid_upload_then_rerun_sends_only_what_is_missing(s3, tmp_path, cli):
    """Whatever Ctrl-C does with the open upload (leaves it, aborts it, or lets it finish), the re-run
    sends exactly the parts the server lacks."""
    src, m, proxy = interrupted(s3, tmp_path, signal.SIGINT)
    try:
        upload_id, stored = stored_parts(s3, "ds/big.bin")
        done = "ds/big.bin" in s3.list_objects(s3.bucket, "ds/")
        s3.reset_counts()
        code, out, err = cli("apply", m)
    finally:
        proxy.stop()
    assert code == 0, err + out
    expected = 0 if done and upload_id is None else 12 - len(stored)
    assert s3.counts()["UploadPart"] == expected
    data = (src / "big.bin").read_bytes()
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == data
    assert s3.head_object(s3.bucket, "ds/big.bin")["ETag"].strip('"') == multipart_etag(data)
    assert s3.list_multipart_uploads(s3.bucket) == []


def test_local_edit_or_new_part_size_between_runs_starts_afresh(s3, tmp_path, cli):
    src, m, proxy = interrupted(s3, tmp_path, signal.SIGKILL)
    try:
        stale, stored = stored_parts(s3, "ds/big.bin")
        assert stale is not None and stored
        with open(src / "big.bin", "r+b") as f:        # same size, new bytes at the start
            f.write(os.urandom(MiB))
        assert "resume" not in cli("plan", m)[1]
        s3.reset_counts()
        code, out, err = cli("apply", m)
        assert code == 0, err + out
        counts = s3.counts()
        assert (counts["CreateMultipartUpload"], counts["UploadPart"], counts["AbortMultipartUpload"]) == (1, 12, 1)
        assert ops(s3, "AbortMultipartUpload", "ds/big.bin") == 1 and "resume" not in out
        data = (src / "big.bin").read_bytes()
        assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == data
        assert s3.list_multipart_uploads(s3.bucket) == []
    finally:
        proxy.stop()

    # a different part size: the stale upload (ours) is aborted, a fresh one sent with the new size
    src2, m2, proxy = interrupted(s3, tmp_path / "second", signal.SIGKILL)
    try:
        m2.write_text(m2.read_text().replace("part_size: 5MiB", "part_size: 6MiB"))
        s3.reset_counts()
        code, out, err = cli("apply", m2)
    finally:
        proxy.stop()
    assert code == 0, err + out
    counts = s3.counts()
    assert (counts["CreateMultipartUpload"], counts["UploadPart"], counts["AbortMultipartUpload"]) == (1, 10, 1)
    data = (src2 / "big.bin").read_bytes()
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == data
    assert s3.head_object(s3.bucket, "ds/big.bin")["ETag"].strip('"') == multipart_etag(data, 6 * MiB)
    assert s3.list_multipart_uploads(s3.bucket) == []


def test_failed_upload_is_kept_and_resumed_by_the_next_run(s3, tmp_path, cli):
    """A part refused for good fails the file; the upload stays open (the report says so) and the next
    apply sends only the parts that were missing."""
    src = source(tmp_path / "src", {"big.bin": 26 * MiB})
    with FaultProxy(s3.endpoint_url) as proxy:
        m = manifest(tmp_path, s3, "ds", src, proxy.url)
        rule = proxy.fail_always(part_request("ds/big.bin", 4))
        code, out, _ = cli("apply", m)
        assert code == 1
        assert ("  = resumable big.bin: multipart upload left open; the next apply sends only the parts it "
                "lacks\n") in out
        proxy.remove_rule(rule)
        _, stored = stored_parts(s3, "ds/big.bin")
        assert 4 not in stored
        s3.reset_counts()
        code, out, err = cli("apply", m)
    assert code == 0, err + out
    assert s3.counts()["UploadPart"] == 6 - len(stored)
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == (src / "big.bin").read_bytes()
    assert s3.list_multipart_uploads(s3.bucket) == []


def test_interrupt_handler_aborting_open_uploads_leaves_nothing_and_rerun_starts_afresh(s3, tmp_path, cli):
    """For a Ctrl-C that aborts the transfers: abort_open_uploads() aborts the upload being sent (it is not
    started over), forgets it, and the next apply sends the file afresh."""
    import pytest

    from cartsync.backends.s3 import S3Backend
    from cartsync.config import TargetConfig
    from cartsync.errors import RemoteError
    from cartsync.inventory import HashCache, md5_file
    from cartsync.model import LocalFile

    src = source(tmp_path / "src", {"big.bin": 16 * MiB})
    path = src / "big.bin"
    st = path.stat()
    local = LocalFile("big.bin", path, st.st_size, md5_file(path), st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with FaultProxy(s3.endpoint_url) as proxy:
        target = TargetConfig(name="web", url=f"s3://{s3.bucket}/ds", storage_options={"endpoint_url": proxy.url},
                              part_size=PART)
        backend = S3Backend(target, HashCache(tmp_path / "cache" / "hashes.sqlite3"))
        proxy.before(part_request("ds/big.bin", 3), lambda method, target: backend.abort_open_uploads())
        with pytest.raises(RemoteError, match=r"^big.bin: upload aborted \(interrupted\)$"):
            backend.upload(local, "big.bin", lambda n: None)
        assert backend.registry.stale(backend.scope) == [] and backend.registry.known() == set()
        backend.close()
        assert s3.list_multipart_uploads(s3.bucket) == []
        assert s3.counts()["CreateMultipartUpload"] == 1
    with FaultProxy(s3.endpoint_url) as proxy:
        s3.reset_counts()
        code, out, err = cli("apply", manifest(tmp_path, s3, "ds", src, proxy.url))
    assert code == 0, err + out
    assert (s3.counts()["CreateMultipartUpload"], s3.counts()["UploadPart"]) == (1, 4)
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == path.read_bytes()


def creates(method, target):
    return method == "POST" and target.endswith("?uploads")


def test_lost_create_answer_leaves_no_upload_behind(s3, tmp_path, cli):
    """CreateMultipartUpload reached the server but its answer was lost: the retry makes a second upload,
    and the first (ours, never heard of) is found by key and time and aborted."""
    src = source(tmp_path / "src", {"big.bin": 11 * MiB})
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.schedule("truncate", 1, creates)
        code, out, err = cli("apply", manifest(tmp_path, s3, "ds", src, proxy.url))
    assert code == 0, err + out
    counts = s3.counts()
    assert (counts["CreateMultipartUpload"], counts["AbortMultipartUpload"], counts["ListMultipartUploads"]) == (
        2, 1, 1)
    assert s3.list_multipart_uploads(s3.bucket) == []
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == (src / "big.bin").read_bytes()


def test_run_killed_while_creating_leaves_no_upload_behind(s3, tmp_path, cli):
    """SIGKILL while CreateMultipartUpload is on its way: the server made an upload cartsync never heard of.
    The next apply finds it (the intent written before the request; key and time) and aborts it."""
    src = source(tmp_path / "src", {"big.bin": 11 * MiB})
    with FaultProxy(s3.endpoint_url) as proxy:
        m = manifest(tmp_path, s3, "ds", src, proxy.url)
        proc: list[subprocess.Popen] = []
        proxy.before(creates, lambda method, target: (proc[0].kill(), proc[0].wait()))
        proc.append(subprocess.Popen(apply_cmd(m), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        proc[0].wait(timeout=300)
        (orphan,) = s3.list_multipart_uploads(s3.bucket)
        s3.reset_counts()
        code, out, err = cli("apply", m)
    assert code == 0, err + out
    assert [r.query for r in s3.request_log if r.counted and r.op == "AbortMultipartUpload"] == [
        f"uploadId={orphan['UploadId']}"]
    assert s3.counts()["CreateMultipartUpload"] == 1
    assert s3.list_multipart_uploads(s3.bucket) == []
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == (src / "big.bin").read_bytes()


def test_a_part_that_keeps_failing_is_tried_attempts_times_not_attempts_squared(s3, tmp_path, cli, monkeypatch):
    """The per-request layer tries the part 6 times; the per-file layer does not try the whole upload again
    for the same fault (it used to: 6 x 6 = 36 tries of one part), and the upload is left to resume."""
    from faultproxy import s3_error_xml
    monkeypatch.setenv("CARTSYNC_RETRY_BASE", "0.01")
    monkeypatch.setenv("CARTSYNC_RETRY_MAX_WAIT", "0.02")
    src = source(tmp_path / "src", {"big.bin": 12 * MiB})
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(part_request("ds/big.bin", 2), status=503,
                          body=s3_error_xml("ServiceUnavailable", "Please reduce your request rate."))
        code, out, err = cli("apply", manifest(tmp_path, s3, "ds", src, proxy.url))
        tries = sum(1 for m, t, _ in proxy.log if part_request("ds/big.bin", 2)(m, t))
    assert code == 1
    assert tries == 6
    assert "  = resumable big.bin: multipart upload left open; the next apply sends only the parts it lacks" in out


def test_only_bodies_over_2_mib_wait_for_100_continue(s3, tmp_path, cli):
    """A small PutObject goes out at once (no `Expect: 100-continue`: a round trip saved, and a reply the
    server need not write); a 5 MiB part still asks first, so a refused part is refused before it is sent."""
    src = source(tmp_path / "src", {"big.bin": 11 * MiB, "a.tsv": 10, "b.tsv": 2 * MiB})
    with FaultProxy(s3.endpoint_url) as proxy:
        assert cli("apply", manifest(tmp_path, s3, "p", src, proxy.url))[0] == 0
        asked = proxy.continued
        sent = [(m, t) for m, t, _ in proxy.log if m == "PUT"]
    single = {t for _, t in sent if "uploadId=" not in t}
    parts = {t for _, t in sent if "partNumber=" in t}
    assert single == {f"/{s3.bucket}/p/{k}" for k in ("a.tsv", "b.tsv", ".cartsync.lock")} and len(parts) == 3
    # parts 1 and 2 are 5 MiB and ask; part 3 (the last 1 MiB) does not
    assert {t for _, t in asked} == {t for t in parts if not t.endswith("partNumber=3")}
    assert s3.get_object_bytes(s3.bucket, "p/big.bin") == (src / "big.bin").read_bytes()
