"""Headers are desired state on S3: planned as their own action, fixed in place, never by re-sending bytes.

Requests are counted at the server (tests/fakes/s3server.py); headers and bytes are checked with boto3.
"""
from __future__ import annotations

import hashlib
import json

import pytest
from helpers import EXAMPLE, MiB, big_dataset, only_listing, s3_manifest, s3_md5s, writes

from cartsync.backends.s3 import headers as s3_headers
from cartsync.planner import header_drift

TYPES = {".pmtiles": "application/vnd.pmtiles", ".yaml": "application/yaml", ".tsv": "text/tab-separated-values",
         ".tsv.gz": "application/gzip", ".png": "image/png", ".json": "application/json"}


def wanted_type(key: str) -> str:
    return next(t for ext, t in sorted(TYPES.items(), key=lambda e: -len(e[0])) if key.endswith(ext))



@pytest.mark.parametrize("have,want,drift", [
    ((("Content-Type", "binary/octet-stream"),), {"Content-Type": "application/vnd.pmtiles"},
     (("Content-Type", "binary/octet-stream", "application/vnd.pmtiles"),)),
    ((("Content-Type", "image/png"),), {"Content-Type": "image/png", "Cache-Control": "max-age=60"},
     (("Cache-Control", None, "max-age=60"),)),
    ((("Cache-Control", "max-age=60"), ("Content-Type", "image/png")), {"Content-Type": "image/png"},
     (("Cache-Control", "max-age=60", None),)),
    # cartsync's own metadata: wrong is drift, absent (another tool's object) is not
    ((("Content-Type", "image/png"), ("x-amz-meta-md5", "0" * 32)),
     {"Content-Type": "image/png", "x-amz-meta-md5": "1" * 32},
     (("x-amz-meta-md5", "0" * 32, "1" * 32),)),
    ((("Content-Type", "image/png"),), {"Content-Type": "image/png", "x-amz-meta-md5": "1" * 32}, ()),
    (None, {"Content-Type": "image/png"}, ()),                  # unknown: nothing to compare
], ids=["type", "added", "removed", "md5-wrong", "md5-absent", "unknown"])
def test_header_drift(have, want, drift):
    assert header_drift(have, want) == drift


def test_octet_stream_objects_are_fixed_in_place_then_unchanged(s3, tmp_path, dataset, cli):
    """What `aws s3 cp` left (binary/octet-stream, and another tool's metadata): one apply fixes every
    Content-Type by copying each object onto itself, 0 bytes of data sent; then the plan is the listing."""
    from cartsync import manifest, selection
    client = s3.boto3_client(counted=False)
    m = s3_manifest(tmp_path, s3, "cp")
    keys = sorted(f.key for f in selection.select(manifest.load(m).source))
    for key in keys:
        client.put_object(Bucket=s3.bucket, Key=f"cp/{key}", Body=(dataset / key).read_bytes(),
                          Metadata={"origin": "aws-cli"} if key == "genes_all.pmtiles" else {})
    before = s3.list_objects(s3.bucket, "cp/")
    s3.reset_counts()
    code, out, _ = cli("plan", m, "--detailed-exitcode")
    lines = out.splitlines()
    assert code == 2 and len(keys) == 16
    assert lines[-1] == "Plan: 0 to create, 0 to replace, 0 to delete, 16 to update headers, 0 unchanged (0 B to send)."
    width = max(map(len, keys))
    assert lines[1:-1] == [f"  ~ headers  {k:<{width}}  (Content-Type binary/octet-stream → {wanted_type(k)})"
                           for k in sorted(keys, key=lambda k: (k == "catalog.yaml", k))]
    assert s3.counts()["HeadObject"] == 16 and writes(s3) == 0          # read once each, nothing written
    code, out, _ = cli("plan", m, "--json")
    (plan,) = json.loads(out)["plans"]
    assert plan["summary"] == {"create": 0, "replace": 0, "delete": 0, "keep": 0, "headers": 16}
    pm = next(a for a in plan["actions"] if a["key"] == "genes_all.pmtiles")
    assert pm["action"] == "headers" and pm["headers"] == [
        {"name": "Content-Type", "now": "binary/octet-stream", "wanted": "application/vnd.pmtiles"}]

    s3.reset_counts()
    code, out, err = cli("apply", m)
    assert (code, out.split(";")[0]) == (0, "web: 0 created, 0 replaced, 0 deleted, 16 headers updated"), err
    c = s3.counts()
    assert (c["CopyObject"], writes(s3), s3.bytes_received, c["HeadObject"]) == (16, 0, 0, 0)
    for key in keys:
        head = s3.head_object(s3.bucket, f"cp/{key}")
        assert head["ContentType"] == wanted_type(key)
        assert head["Metadata"] == {"md5": hashlib.md5((dataset / key).read_bytes()).hexdigest(),
                                    **({"origin": "aws-cli"} if key == "genes_all.pmtiles" else {})}
    assert s3_md5s(s3, "cp") == {k: hashlib.md5((dataset / k).read_bytes()).hexdigest() for k in keys}
    assert {k: v[0] for k, v in s3.list_objects(s3.bucket, "cp/").items()} == {k: v[0] for k, v in before.items()}

    s3.reset_counts()
    code, out, _ = cli("plan", m, "--detailed-exitcode")
    assert (code, out.splitlines()[-1]) == (0, "No changes. 16 file(s) up to date.")
    assert only_listing(s3)
    # a later fix still carries the other tool's metadata, from what the first one remembered
    edited = s3_manifest(tmp_path, s3, "cp", headers={"genes_all.pmtiles": {"CacheControl": "no-cache"}})
    assert cli("apply", edited)[0] == 0
    head = s3.head_object(s3.bucket, "cp/genes_all.pmtiles")
    assert (head["CacheControl"], head["Metadata"]["origin"]) == ("no-cache", "aws-cli")


def test_a_headers_edit_yields_exactly_those_header_actions(s3, tmp_path, dataset, cli):
    m = s3_manifest(tmp_path, s3, "ed")
    assert cli("apply", m)[0] == 0
    from cartsync import manifest, selection
    keys = [f.key for f in selection.select(manifest.load(m).source)]
    pmtiles = sorted(k for k in keys if k.endswith(".pmtiles"))
    width = max(map(len, keys))

    def plan_lines(**target):
        s3.reset_counts()
        code, out, _ = cli("plan", s3_manifest(tmp_path, s3, "ed", **target))
        assert code == 0 and only_listing(s3)            # what cartsync set is remembered: no HEAD
        return out.splitlines()[1:]

    steps = [({"*.pmtiles": {"CacheControl": "public, max-age=60"}}, "(none) → public, max-age=60"),
             ({"*.pmtiles": {"CacheControl": "public, max-age=3600"}}, "public, max-age=60 → public, max-age=3600"),
             ({}, "public, max-age=3600 → (none)")]
    for headers, change in steps:
        lines = plan_lines(headers=headers) if headers else plan_lines()
        assert lines == [f"  ~ headers  {p:<{width}}  (Cache-Control {change})" for p in pmtiles] + [
            f"Plan: 0 to create, 0 to replace, 0 to delete, {len(pmtiles)} to update headers, "
            f"{16 - len(pmtiles)} unchanged (0 B to send)."]
        s3.reset_counts()
        m = s3_manifest(tmp_path, s3, "ed", **({"headers": headers} if headers else {}))
        assert cli("apply", m)[0] == 0
        assert (s3.counts()["CopyObject"], writes(s3)) == (len(pmtiles), 0)
        want = headers.get("*.pmtiles", {}).get("CacheControl") if headers else None
        assert {s3.head_object(s3.bucket, f"ed/{p}").get("CacheControl") for p in pmtiles} == {want}
    assert plan_lines()[-1] == "No changes. 16 file(s) up to date."


def test_objects_over_the_copy_limit_are_fixed_with_upload_part_copy(s3, tmp_path, cli, monkeypatch):
    """Over CopyObject's 5 GB (lowered here), the fix is a multipart upload of UploadPartCopy ranges."""
    monkeypatch.setattr(s3_headers, "COPY_LIMIT", 8 * MiB)
    monkeypatch.setattr(s3_headers, "COPY_PART", 5 * MiB)
    src = big_dataset(tmp_path, {"big.pmtiles": 12 * MiB + 5})
    data = (src / "big.pmtiles").read_bytes()
    s3.put_object(s3.bucket, "pc/big.pmtiles", data)
    m = s3_manifest(tmp_path, s3, "pc", src="big", method="all", part_size="5MiB")
    s3.reset_counts()
    code, out, err = cli("apply", m)
    assert (code, out.split(";")[0]) == (0, "web: 0 created, 0 replaced, 0 deleted, 1 headers updated"), err
    c = s3.counts()
    assert (c["UploadPartCopy"], c["CompleteMultipartUpload"], c["UploadPart"], s3.bytes_received) == (3, 1, 0, 0)
    head = s3.head_object(s3.bucket, "pc/big.pmtiles")
    assert head["ContentType"] == "application/vnd.pmtiles" and head["ETag"].strip('"').endswith("-3")
    assert s3.get_object_bytes(s3.bucket, "pc/big.pmtiles") == data and s3.list_multipart_uploads(s3.bucket) == []
    s3.reset_counts()
    assert cli("apply", m) == (0, "web: no changes; 1 file(s) up to date; 0 B sent.\n", "")
    assert only_listing(s3)


def test_overwrite_never_leaves_headers_alone(s3, tmp_path, cli):
    src = big_dataset(tmp_path, {"a.png": 100})
    s3.put_object(s3.bucket, "nv/a.png", (src / "a.png").read_bytes())
    m = s3_manifest(tmp_path, s3, "nv", src="big", method="all", overwrite="never")
    assert cli("plan", m)[1].splitlines()[-1] == "No changes. 1 file(s) up to date."


def test_example_content_types_cover_the_dataset():
    """The table the tests above expect is cartsync's (the PMTiles spec names application/vnd.pmtiles)."""
    from cartsync.backends.s3.client import content_type
    keys = [p.name for p in EXAMPLE.rglob("*") if p.name.endswith(tuple(TYPES))]
    assert {k.rsplit(".", 1)[1] for k in keys} == {"pmtiles", "yaml", "tsv", "gz", "png", "json"}
    assert {k: content_type(k) for k in keys} == {k: wanted_type(k) for k in keys}


def test_an_object_changed_since_the_plan_is_not_stamped(s3, tmp_path):
    """The copy is conditional on the ETag the plan saw: another writer's new version keeps its headers.
    (Through tests/fakes/kms_proxy.py, without KMS: it answers the condition as S3 does; moto ignores it.)"""
    import yaml
    from kms_proxy import KmsProxy

    from cartsync import manifest as manifest_mod
    src = big_dataset(tmp_path, {"a.png": 100})
    s3.put_object(s3.bucket, "race/a.png", (src / "a.png").read_bytes())
    path = s3_manifest(tmp_path, s3, "race", src="big", method="all")
    with KmsProxy(s3.endpoint_url) as proxy:
        data = yaml.safe_load(path.read_text())
        data["targets"][0]["storage_options"]["endpoint_url"] = proxy.url
        path.write_text(yaml.safe_dump(data))
        m = manifest_mod.load(path)
        report = plan_change_apply(m, s3)
    assert [o.error for o in report.outcomes] == ["changed on the target since the plan; its headers were left alone"]
    head = s3.head_object(s3.bucket, "race/a.png")
    assert head["ContentType"] == "text/plain" and s3.get_object_bytes(s3.bucket, "race/a.png") == b"x" * 100


def plan_change_apply(m, s3):
    """Plan, let another writer replace race/a.png, then apply that plan."""
    from cartsync import engine
    from cartsync.engine import Options
    cache = engine.cache_for()
    with engine.opened(m, list(m.targets), cache, lock=True) as (backend,):
        (plan,) = engine.plan_all([backend], engine.select(m), cache)
        assert [a.kind.value for a in plan.actions] == ["headers"]
        s3.put_object(s3.bucket, "race/a.png", b"x" * 100, ContentType="text/plain")     # meanwhile
        return engine.execute(backend, plan, Options(show_progress=False))
