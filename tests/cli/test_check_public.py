"""Where a target is read from publicly (check/public.py), the manifest keys `public_url` and `origin`, the
printed fixes (check/advice.py), and `upload-aws --check`."""
from __future__ import annotations

import json

import pytest
from check_data import viewable_dataset
from helpers import write_manifest

from cartsync.check import advice
from cartsync.check.public import public_base
from cartsync.config import TargetConfig


@pytest.mark.parametrize("url, options, public_url, expected", [
    ("s3://lab-data/mouse/brain", {"region": "eu-west-1"}, None,
     "https://lab-data.s3.eu-west-1.amazonaws.com/mouse/brain/"),
    ("s3://lab-data/mouse", {"client_kwargs": {"region_name": "us-west-2"}}, None,
     "https://lab-data.s3.us-west-2.amazonaws.com/mouse/"),
    ("s3://lab.data.org/mouse", {"region": "eu-west-1"}, None,          # a dotted name: TLS needs path style
     "https://s3.eu-west-1.amazonaws.com/lab.data.org/mouse/"),
    ("s3://lab-data/a b", {"endpoint_url": "https://minio.example.org:9000/"}, None,
     "https://minio.example.org:9000/lab-data/a%20b/"),
    ("s3://lab-data/mouse", {"region": "eu-west-1"}, "https://cdn.example.org/mouse",
     "https://cdn.example.org/mouse/"),
    ("gs://lab-data/mouse", {}, None, "https://storage.googleapis.com/lab-data/mouse/"),
    ("/srv/www/mouse", {}, "http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
])
def test_public_base(url, options, public_url, expected):
    base = public_base(TargetConfig(name="t", url=url, storage_options=options, public_url=public_url))
    assert base is not None and base.url == expected
    assert base.of("sub/genes all.pmtiles") == expected + "sub/genes%20all.pmtiles"


def test_endpoint_as_botocore_finds_it(tmp_path, monkeypatch):
    from cartsync.check.public import s3_endpoint
    (tmp_path / "config").write_text("[profile lab]\nendpoint_url = http://ceph.lab:7480\n")
    env = {"AWS_CONFIG_FILE": str(tmp_path / "config")}
    assert s3_endpoint({"profile": "lab"}, env) == "http://ceph.lab:7480"
    assert s3_endpoint({}, {**env, "AWS_PROFILE": "lab"}) == "http://ceph.lab:7480"
    assert s3_endpoint({}, {**env, "AWS_PROFILE": "lab", "AWS_ENDPOINT_URL_S3": "http://r2.example"}) == \
        "http://r2.example"
    assert s3_endpoint({"client_kwargs": {"endpoint_url": "http://m:9000"}}, env) == "http://m:9000"
    assert s3_endpoint({}, env) is None


def test_no_public_base_for_a_folder_or_memory():
    assert public_base(TargetConfig(name="t", url="/srv/out")) is None
    assert public_base(TargetConfig(name="t", url="memory://x")) is None


def test_region_from_the_bucket_answer(monkeypatch):
    from cartsync.check import web
    asked = []
    monkeypatch.setattr(web, "bucket_region", lambda u: asked.append(u) or "ap-south-1")
    base = public_base(TargetConfig(name="t", url="s3://lab-data/x"))
    assert base.url == "https://lab-data.s3.ap-south-1.amazonaws.com/x/" and asked == ["https://lab-data.s3.amazonaws.com/"]


def test_bucket_region_reads_the_header_even_on_403(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(403)
            self.send_header("x-amz-bucket-region", "eu-central-1")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        from cartsync.check.web import bucket_region
        assert bucket_region(f"http://127.0.0.1:{srv.server_address[1]}/") == "eu-central-1"
    finally:
        srv.shutdown()
        srv.server_close()


def test_manifest_keys(tmp_path, cli):
    viewable_dataset(tmp_path / "ds")
    m = write_manifest(tmp_path, """
        version: 1
        source: {dir: ds}
        targets:
          - {name: web, url: out, public_url: "https://user:pw@cdn.example.org/x", origin: "https://v.example.org/app"}
          - name: doi
            public_url: https://cdn.example.org/
            zenodo: {url: https://sandbox.zenodo.org, deposition: 12, metadata: {title: abc}}
        """)
    code, _, err = cli("validate", m)
    assert code == 1
    assert err == (
        "error: invalid manifest (3 problems):\n"
        f"  {m}:4: targets[0].origin: a string \"https://v.example.org/app\" has the wrong form (scheme://host[:port] "
        "without a path, e.g. https://v3o-main.carto-scope.org)\n"
        f"  {m}:4: targets[0].public_url: a string \"https://user:pw@cdn.example.org/x\" has the wrong form (an "
        "http(s) URL without credentials, e.g. https://data.example.org/mouse-brain)\n"
        f"  {m}:5: targets[1]: storage_options, part_size, part_concurrency, headers and public_url apply to url "
        "targets only\n")


def test_advice_is_the_exact_configuration():
    assert advice.cors_rules("https://v.example.org") == {"CORSRules": [{
        "AllowedOrigins": ["https://v.example.org"], "AllowedMethods": ["GET", "HEAD"],
        "AllowedHeaders": ["Range", "If-Match"], "ExposeHeaders": ["ETag", "Content-Length", "Content-Range"],
        "MaxAgeSeconds": 3600}]}
    assert advice.public_policy("b", "") == {"Version": "2012-10-17", "Statement": [{
        "Sid": "PublicReadForViewers", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::b/*"}]}
    text = advice.cors_advice("https://v.example.org", "b")
    assert text.splitlines()[1] == ("  aws s3api put-bucket-cors --bucket b --cors-configuration '"
                                    + json.dumps(advice.cors_rules("https://v.example.org")) + "'")


def test_upload_aws_check_runs_the_check_after_the_upload(tmp_path, cli, s3, monkeypatch):
    viewable_dataset(tmp_path / "ds")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "aws").mkdir()
    (tmp_path / "aws" / "config").write_text(f"[default]\nendpoint_url = {s3.endpoint_url}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws" / "config"))
    code, out, _ = cli("upload-aws", "--in-dir", "ds", "--s3-dir", f"s3://{s3.bucket}/demo", "--check",
                       "--no-progress")
    assert "aws: 4 created" in out
    # the session server is moto with its global CORS: objects are private, so anonymous reads are refused
    assert "Check aws: NOT viewable" in out and "GET 403 FORBIDDEN: anonymous read refused" in out
    assert code == 1
