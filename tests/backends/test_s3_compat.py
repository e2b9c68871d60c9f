"""S3-compatible stores: moto behind the fault proxy, answering as stores that lack a call or a feature do."""
from __future__ import annotations

import hashlib

import pytest
from faultproxy import FaultProxy, s3_error_xml
from helpers import MiB, part_request, s3_md5s, source
from helpers import multipart_manifest as manifest

NOT_IMPLEMENTED = s3_error_xml("NotImplemented", "A header you provided implies functionality that is not implemented")


def list_parts(method, target):
    return method == "GET" and "uploadId=" in target


def abort(method, target):
    return method == "DELETE" and "uploadId=" in target


def list_uploads(method, target):
    return method == "GET" and "?uploads" in target


def seen(proxy: FaultProxy, predicate) -> int:
    return sum(1 for method, target, _ in proxy.log if predicate(method, target))


def test_store_without_list_parts_abort_or_list_uploads(s3, tmp_path, cli):
    """The optional calls answer 501: each is asked once, skipped with a one-line note, and the sync goes on
    (the unfinished upload an earlier run left cannot be resumed or aborted, so the file starts afresh)."""
    src = source(tmp_path / "src", {"big.bin": 16 * MiB, "a.tsv": 10})
    with FaultProxy(s3.endpoint_url) as proxy:
        m = manifest(tmp_path, s3, "ds", src, proxy.url)
        rule = proxy.fail_always(part_request("ds/big.bin", 2))
        assert cli("apply", m)[0] == 1                       # leaves an upload of ours open
        proxy.remove_rule(rule)
        for predicate in (list_parts, abort, list_uploads):
            proxy.fail_always(predicate, 501, NOT_IMPLEMENTED)
        proxy.reset_counters()
        code, out, err = cli("apply", m)
        assert code == 0, err + out
        assert out.startswith("web: 1 created, 0 replaced, 0 deleted;")
        assert [line for line in err.splitlines() if line.startswith("WARNING")] == [
            "WARNING: target web: the store does not support reading the parts of an unfinished upload "
            "(ListParts); skipped",
            "WARNING: target web: the store does not support aborting an unfinished multipart upload "
            "(AbortMultipartUpload); skipped"]
        assert (seen(proxy, list_parts), seen(proxy, abort)) == (1, 1)      # 501 is not retried
    assert s3.get_object_bytes(s3.bucket, "ds/big.bin") == (src / "big.bin").read_bytes()


def test_bad_digest_is_retried(s3, tmp_path, cli):
    """BadDigest (the body did not match Content-MD5) is a corrupted transfer: sent again, for a PUT and a part."""
    src = source(tmp_path / "src", {"big.bin": 11 * MiB, "a.tsv": 1000})
    bad = s3_error_xml("BadDigest", "The Content-MD5 you specified did not match what we received.")
    with FaultProxy(s3.endpoint_url) as proxy:
        proxy.fail_always(lambda method, target: method == "PUT" and target.endswith("/ds/a.tsv"), 400, bad, times=1)
        proxy.fail_always(part_request("ds/big.bin", 2), 400, bad, times=1)
        code, out, err = cli("apply", manifest(tmp_path, s3, "ds", src, proxy.url))
        assert seen(proxy, lambda method, target: method == "PUT" and target.endswith("/ds/a.tsv")) == 2
        assert seen(proxy, part_request("ds/big.bin", 2)) == 2
    assert code == 0, err + out
    assert out.startswith("web: 2 created, 0 replaced, 0 deleted;") and ", 2 retries." in out
    assert s3_md5s(s3, "ds") == {n: hashlib.md5((src / n).read_bytes()).hexdigest() for n in ("big.bin", "a.tsv")}


@pytest.mark.parametrize("setting,error,expected", [
    ({"headers": {"*": {"ACL": "public-read"}}},
     (400, s3_error_xml("AccessControlListNotSupported", "The bucket does not allow ACLs")),
     "target web: the bucket has ACLs disabled (Object Ownership: bucket owner enforced) and refuses ACL "
     "'public-read' from headers:; remove ACL from the target's headers: and grant access with a bucket policy "
     "instead"),
    ({"headers": {"*.pmtiles": {"StorageClass": "GLACIER_IR"}}},
     (400, s3_error_xml("InvalidStorageClass", "The storage class you specified is not valid")),
     "target web: the store does not accept StorageClass 'GLACIER_IR' from headers:; remove StorageClass from the "
     "target's headers:, or use a class this store offers"),
    ({"storage_options": {"config_kwargs": {"request_checksum_calculation": "when_supported"}}},
     (501, NOT_IMPLEMENTED.replace(b"</Message>", b"</Message><Header>x-amz-checksum-crc32</Header>")),
     "target web: the store refuses the checksum header x-amz-checksum-crc32 sent with each upload; set "
     "storage_options.config_kwargs.request_checksum_calculation: when_required"),
], ids=["acl", "storage-class", "checksum"])
def test_rejected_feature_is_one_message_not_one_per_file(s3, tmp_path, cli, setting, error, expected):
    """Every file would be refused alike: the first refusal stops the target with one message naming the
    setting and the fix; the other files are not attempted."""
    src = source(tmp_path / "src", {f"t{i}.pmtiles": 1000 + i for i in range(12)})
    with FaultProxy(s3.endpoint_url) as proxy:
        options = {"endpoint_url": proxy.url, **setting.get("storage_options", {})}
        m = manifest(tmp_path, s3, "ds", src, proxy.url, storage_options=options,
                     **{k: v for k, v in setting.items() if k != "storage_options"})
        # data PUTs only: the target lock (.cartsync.lock, issue 14) carries none of these settings
        def data_put(method, target):
            return method == "PUT" and "/ds/" in target and ".cartsync.lock" not in target
        proxy.fail_always(data_put, *error)
        code, out, err = cli("apply", m, "--jobs", "4")
        puts = seen(proxy, data_put)
    assert code == 1
    failed = [line for line in out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and failed[0].endswith(": " + expected), out
    assert "  not done because of the failure(s) above: 11 action(s)" in out
    assert puts <= 4                       # at most the uploads already in flight, each once
    assert s3.list_objects(s3.bucket, "ds/") == {}
