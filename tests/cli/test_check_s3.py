"""`cartsync check` against moto's S3 server, with and without a CORS configuration and a public-read policy.

What moto enforces (moto 5.2.5, measured here): anonymous GET/HEAD/OPTIONS of an object are refused (403)
unless the object's ACL is public-read or the bucket policy allows the action; CORS rules are answered from the
bucket's configuration (origin matched; the requested method and headers not checked). Two differences from S3:
moto authorizes an anonymous HEAD and OPTIONS as `s3:HeadObject` / `s3:OptionsObject`, which a bucket policy
granting `s3:GetObject` does not cover (S3 answers HEAD under s3:GetObject and preflights from the CORS rules
alone), and moto's server adds permissive CORS headers to every answer unless MOTO_DISABLE_GLOBAL_CORS is set:
the fixture below starts its own server with that switched off, so "no CORS configuration" means none.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import uuid

import pytest
from check_data import viewable_dataset
from helpers import aws_test_env

from cartsync.check import advice

CARTOSCOPE = "https://v3o-main.carto-scope.org"


@pytest.fixture(scope="module")
def bare_s3():
    from moto.moto_server import werkzeug_app
    from s3server import start_s3_server
    old = werkzeug_app.DISABLE_GLOBAL_CORS
    werkzeug_app.DISABLE_GLOBAL_CORS = True          # read when moto builds its S3 app: on the first request
    try:
        server = start_s3_server()
        server.create_bucket(f"warm-{uuid.uuid4().hex[:8]}")
    finally:
        werkzeug_app.DISABLE_GLOBAL_CORS = old
    yield server
    server.stop()


@pytest.fixture
def bucket(bare_s3, monkeypatch, tmp_path):
    aws_test_env(monkeypatch, tmp_path)
    return bare_s3.create_bucket(f"c-{uuid.uuid4().hex[:12]}")


def published(tmp_path, cli, server, bucket: str, public_acl: bool):
    import yaml
    viewable_dataset(tmp_path / "ds")
    target = {"name": "web", "url": f"s3://{bucket}/demo", "storage_options": {"endpoint_url": server.endpoint_url}}
    if public_acl:
        target["headers"] = {"*": {"ACL": "public-read"}}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "ds"}, "targets": [target]}))
    code, _, err = cli("apply", manifest, "-q")
    assert code == 0, err
    return manifest


def run_check(cli, manifest, *extra):
    code, out, err = cli("check", manifest, "--json", *extra)
    assert err == ""
    (result,) = json.loads(out)["checks"]
    return code, result, {(f["check"], f["subject"]): f for f in result["findings"]}


def test_public_bucket_with_cors_passes(tmp_path, cli, bare_s3, bucket):
    manifest = published(tmp_path, cli, bare_s3, bucket, public_acl=True)
    bare_s3.boto3_client(counted=False).put_bucket_cors(Bucket=bucket, CORSConfiguration=advice.cors_rules(CARTOSCOPE))
    code, result, found = run_check(cli, manifest)
    assert result["public_url"] == f"{bare_s3.endpoint_url}/{bucket}/demo/"          # path style for endpoint_url
    assert code == 0 and {f["verdict"] for f in found.values()} == {"passed"}, found
    assert found[("pmtiles", "genes.pmtiles")]["evidence"] == (
        "GET 206 PARTIAL CONTENT; Content-Range: bytes 0-126/1212; PMTiles v3 header, root directory inside the "
        "file; Content-Type: application/vnd.pmtiles")
    assert found[("cors", "ranged GET factors.pmtiles")]["evidence"] == (
        "GET 206 PARTIAL CONTENT with Origin; Access-Control-Expose-Headers: ETag, Content-Length, Content-Range")


def test_no_cors_configuration_prints_the_rule_and_the_rule_fixes_it(tmp_path, cli, bare_s3, bucket):
    manifest = published(tmp_path, cli, bare_s3, bucket, public_acl=True)
    code, result, found = run_check(cli, manifest)
    assert code == 1
    pre = found[("cors", "preflight factors.pmtiles")]
    assert (pre["verdict"], pre["evidence"]) == (
        "failed", f"OPTIONS 200 OK for Origin {CARTOSCOPE}; no Access-Control-Allow-Origin; "
        "Access-Control-Allow-Headers does not allow Range")
    assert found[("cors", "ranged GET factors.pmtiles")]["verdict"] == "failed"
    (block,) = result["advice"]
    rule = json.dumps(advice.cors_rules(CARTOSCOPE))
    assert block.endswith(f"\n  aws s3api put-bucket-cors --bucket {bucket} --cors-configuration '{rule}'")
    printed = json.loads(shlex.split(block.splitlines()[-1])[-1])
    bare_s3.boto3_client(counted=False).put_bucket_cors(Bucket=bucket, CORSConfiguration=printed)
    code, _, found = run_check(cli, manifest)
    assert code == 0 and {f["verdict"] for f in found.values()} == {"passed"}


def test_private_bucket_prints_the_public_read_policy(tmp_path, cli, bare_s3, bucket):
    manifest = published(tmp_path, cli, bare_s3, bucket, public_acl=False)
    code, result, found = run_check(cli, manifest)
    assert code == 1
    f = found[("catalog", "catalog.yaml")]
    assert (f["verdict"], f["evidence"], f["status"]) == ("failed", "GET 403 FORBIDDEN: anonymous read refused", 403)
    assert found[("pmtiles", "genes.pmtiles")]["evidence"] == "GET 403 FORBIDDEN: anonymous ranged GET refused"
    policy_block = result["advice"][-1]
    policy = advice.public_policy(bucket, "demo")
    assert policy["Statement"][0]["Resource"] == f"arn:aws:s3:::{bucket}/demo/*"
    assert policy_block.endswith(f"\n  aws s3api put-bucket-policy --bucket {bucket} --policy '{json.dumps(policy)}'")
    assert ("BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=false,RestrictPublicBuckets=false"
            in policy_block)
    printed = shlex.split(policy_block.splitlines()[-1])[-1]
    bare_s3.boto3_client(counted=False).put_bucket_policy(Bucket=bucket, Policy=printed)
    code, _, found = run_check(cli, manifest)
    # moto evaluates the printed policy for GET: the catalog and the PMTiles ranges are now public
    assert found[("catalog", "catalog.yaml")]["verdict"] == "passed"
    assert found[("pmtiles", "genes.pmtiles")]["verdict"] == "passed"
    # (HEAD stays 403 on moto only: it authorizes HEAD as s3:HeadObject, see the module docstring)
    assert found[("files", "info.tsv")]["status"] == 403


def test_deep_catches_bytes_changed_behind_cartsyncs_back(tmp_path, cli, bare_s3, bucket):
    manifest = published(tmp_path, cli, bare_s3, bucket, public_acl=True)
    bare_s3.boto3_client(counted=False).put_bucket_cors(Bucket=bucket, CORSConfiguration=advice.cors_rules(CARTOSCOPE))
    before = bare_s3.list_objects(bucket, "demo/")
    assert run_check(cli, manifest, "--deep")[0] == 0
    # the stored bytes change at the server; size and the recorded ETag stay (bit rot, a tool writing behind us)
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    stored = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets[bucket].keys["demo/info.tsv"]
    changed = b"X\tY\n3\t4\n"
    stored._value_buffer.seek(0)
    stored._value_buffer.write(changed)
    assert bare_s3.list_objects(bucket, "demo/") == before
    assert bare_s3.get_object_bytes(bucket, "demo/info.tsv") == changed
    code, out, _ = cli("plan", manifest)
    assert code == 0 and "No changes." in out                  # the listing cannot see it
    code, _, found = run_check(cli, manifest)
    assert code == 0                                           # nor can the public checks (same size)
    code, result, found = run_check(cli, manifest, "--deep")
    assert code == 1
    f = found[("deep", "info.tsv")]
    local = hashlib.md5(b"a\tb\n1\t2\n").hexdigest()
    assert (f["verdict"], f["evidence"], f["fix"]) == (
        "failed", f"read back 8 B, md5 {hashlib.md5(changed).hexdigest()}; "
        f"local 8 B, md5 {local} (the listing says {before['demo/info.tsv'][1]})",
        "the listing still matches, so apply will not re-send it: run apply once with overwrite: always for "
        "this target (or upload-aws --restart)")
    assert [k for (c, k), v in found.items() if c == "deep" and v["verdict"] == "passed"] == [
        "catalog.yaml", "factors.pmtiles", "genes.pmtiles"]


def test_the_readme_output_is_a_real_run(tmp_path, cli, bare_s3, monkeypatch):
    """The "Is it viewable?" section shows this run verbatim (only the server's port differs)."""
    import yaml
    from helpers import REPO
    aws_test_env(monkeypatch, tmp_path)
    bare_s3.create_bucket("lab-viewer-data")
    viewable_dataset(tmp_path / "mouse-brain")
    target = {"name": "web", "url": "s3://lab-viewer-data/mouse-brain",
              "storage_options": {"endpoint_url": bare_s3.endpoint_url}, "headers": {"*": {"ACL": "public-read"}}}
    (tmp_path / "publish.yaml").write_text(yaml.safe_dump({"version": 1, "source": {"dir": "mouse-brain"},
                                                            "targets": [target]}))
    monkeypatch.chdir(tmp_path)
    assert cli("apply", "publish.yaml", "-q")[0] == 0
    code, out, _ = cli("check", "publish.yaml")
    readme = (REPO / "README.md").read_text().split("$ cartsync check publish.yaml\n", 1)[1].split("```", 1)[0]
    assert code == 1
    assert out == readme.replace("127.0.0.1:9000", f"127.0.0.1:{bare_s3.port}")
    command = out.splitlines()[-1]
    bare_s3.boto3_client(counted=False).put_bucket_cors(Bucket="lab-viewer-data",
                                                        CORSConfiguration=json.loads(shlex.split(command)[-1]))
    code, out, _ = cli("check", "publish.yaml")
    assert code == 0 and out.splitlines()[-1] == "Check web: viewable — 9 passed, 0 warning(s), 0 failed."
    assert "After running the printed command, the same check reports `Check web: viewable — 9 passed, 0 " \
           "warning(s), 0 failed.`" in (REPO / "README.md").read_text()
