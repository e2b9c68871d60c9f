"""`cartsync check` against a static HTTP server of the tests' own (tests/fakes/static_server.py), switched between
right and wrong one fault at a time: real HTTP, the checks unmocked, verdicts and messages asserted exactly."""
from __future__ import annotations

import json

import pytest
from check_data import viewable_dataset
from helpers import tree, write_manifest
from static_server import StaticServer

from cartsync.check import advice

CARTOSCOPE = "https://v3o-main.carto-scope.org"
APPLY = "run `cartsync apply` for this target (it sends what is missing or differs), then check again"


@pytest.fixture
def site(tmp_path, cli):
    """The dataset applied to a local folder, that folder served by a StaticServer; yields (server, manifest)."""
    viewable_dataset(tmp_path / "ds")
    with StaticServer(tmp_path / "out") as server:
        manifest = write_manifest(tmp_path, f"""
            version: 1
            source: {{dir: ds, method: catalog}}
            targets:
              - name: web
                url: out
                public_url: {server.url}
            """)
        code, _, err = cli("apply", manifest, "-q")
        assert code == 0, err
        yield server, manifest


def run_check(cli, manifest, *extra):
    code, out, err = cli("check", manifest, "--json", *extra)
    assert err == ""
    (result,) = json.loads(out)["checks"]
    return code, result, {(f["check"], f["subject"]): f for f in result["findings"]}


def verdicts(found):
    return {k: f["verdict"] for k, f in found.items()}


def test_all_right_passes_every_check_anonymously_and_writes_nothing(site, cli, tmp_path):
    server, manifest = site
    before = tree(tmp_path / "out")
    code, result, found = run_check(cli, manifest)
    assert code == 0
    assert result["verdict"] == "passed" and result["public_url"] == server.url and result["origin"] == CARTOSCOPE
    assert set(verdicts(found).values()) == {"passed"}
    assert sorted(found) == [
        ("catalog", "catalog.yaml"),
        ("cors", "preflight factors.pmtiles"), ("cors", "ranged GET factors.pmtiles"),
        ("files", "catalog.yaml"), ("files", "factors.pmtiles"), ("files", "genes.pmtiles"), ("files", "info.tsv"),
        ("pmtiles", "factors.pmtiles"), ("pmtiles", "genes.pmtiles")]
    assert found[("catalog", "catalog.yaml")]["evidence"] == \
        "GET 200 OK; parses; identical to the local catalog (82 B)"
    assert found[("files", "genes.pmtiles")]["evidence"] == "HEAD 200 OK; Content-Length: 1212"
    assert found[("pmtiles", "genes.pmtiles")]["evidence"] == (
        "GET 206 Partial Content; Content-Range: bytes 0-126/1212; PMTiles v3 header, root directory inside the "
        "file; Content-Type: application/vnd.pmtiles")
    assert found[("cors", "preflight factors.pmtiles")]["evidence"] == (
        f"OPTIONS 200 OK for Origin {CARTOSCOPE}; Access-Control-Allow-Origin: {CARTOSCOPE}, "
        "Access-Control-Allow-Methods: GET, HEAD, Access-Control-Allow-Headers: range")
    assert found[("cors", "ranged GET factors.pmtiles")]["evidence"] == (
        "GET 206 Partial Content with Origin; Access-Control-Expose-Headers: ETag, Content-Length, Content-Range")
    assert result["advice"] == []
    # what was sent: a browser's requests, never a credential
    sent = server.requests
    assert all("Authorization" not in h and "Cookie" not in h for _, _, h in sent)
    assert {m for m, _, _ in sent} == {"GET", "HEAD", "OPTIONS"}
    preflight = next(h for m, _, h in sent if m == "OPTIONS")
    assert (preflight["Origin"], preflight["Access-Control-Request-Method"],
            preflight["Access-Control-Request-Headers"]) == (CARTOSCOPE, "GET", "range")
    assert sum(1 for m, p, h in sent if m == "GET" and h.get("Range") == "bytes=0-126") == 3
    assert tree(tmp_path / "out") == before


def test_table_output(site, cli):
    server, manifest = site
    server.missing = {"info.tsv"}
    code, out, err = cli("check", manifest)
    assert code == 1 and err == ""
    pad = " " * 39
    assert out == (
        f"Target web → {server.url}  (viewer origin {CARTOSCOPE})\n"
        "  catalog  catalog.yaml                passed   GET 200 OK; parses; identical to the local catalog (82 B)\n"
        f"  files    info.tsv                    failed   HEAD 404 Not Found: not found at {server.url}info.tsv\n"
        f"{pad}fix:     {APPLY}\n"
        "  files    3 other(s)                  passed   each: HEAD 200, Content-Length = local size\n"
        "  pmtiles  all 2                       passed   each: 206 with the right Content-Range, a PMTiles v3 header "
        "with its root directory inside the file, no Content-Encoding, Content-Type application/vnd.pmtiles\n"
        f"  cors     preflight factors.pmtiles   passed   OPTIONS 200 OK for Origin {CARTOSCOPE}; "
        f"Access-Control-Allow-Origin: {CARTOSCOPE}, Access-Control-Allow-Methods: GET, HEAD, "
        "Access-Control-Allow-Headers: range\n"
        "  cors     ranged GET factors.pmtiles  passed   GET 206 Partial Content with Origin; "
        "Access-Control-Expose-Headers: ETag, Content-Length, Content-Range\n"
        "Check web: NOT viewable — 8 passed, 0 warning(s), 1 failed.\n")


RANGE_FIX = ("serve the files from a store that answers HTTP Range requests (S3, GCS, R2 do; a CDN or proxy in "
             "front must pass Range through)")
GZIP_FIX = ("serve .pmtiles without Content-Encoding (S3: no ContentEncoding for *.pmtiles in the target's headers, "
            "then apply; a web server or CDN: no compression for .pmtiles)")
TYPE_FIX = "set Content-Type application/vnd.pmtiles (cartsync sets it on S3 uploads; re-run apply)"


def test_no_range_support(site, cli):
    server, manifest = site
    server.ranges = False
    code, _, found = run_check(cli, manifest)
    assert code == 1
    f = found[("pmtiles", "genes.pmtiles")]
    assert (f["verdict"], f["evidence"], f["fix"]) == (
        "failed", "GET 200 OK; PMTiles v3 header, root directory inside the file; Content-Type: "
        "application/vnd.pmtiles; the server ignored Range (200 with the whole file)", RANGE_FIX)
    # the whole file was not read: a server ignoring Range costs the check 127 bytes per file, not the file
    assert found[("cors", "ranged GET factors.pmtiles")]["verdict"] == "passed"


def test_gzip_content_encoding(site, cli):
    server, manifest = site
    server.encodings = {"genes.pmtiles": "gzip"}
    code, _, found = run_check(cli, manifest)
    assert code == 1
    f = found[("pmtiles", "genes.pmtiles")]
    assert (f["verdict"], f["evidence"], f["fix"]) == (
        "failed", "GET 206 Partial Content; Content-Range: bytes 0-126/1212; PMTiles v3 header, root directory "
        "inside the file; Content-Type: application/vnd.pmtiles; Content-Encoding: gzip (range reads need the bytes "
        "as stored)", GZIP_FIX)
    assert found[("pmtiles", "factors.pmtiles")]["verdict"] == "passed"


def test_octet_stream_is_a_warning_only(site, cli):
    server, manifest = site
    server.types = {"*.pmtiles": "binary/octet-stream"}
    code, result, found = run_check(cli, manifest)
    assert code == 0 and result["verdict"] == "warning"
    f = found[("pmtiles", "factors.pmtiles")]
    assert (f["verdict"], f["evidence"], f["fix"]) == (
        "warning", "GET 206 Partial Content; Content-Range: bytes 0-126/703; PMTiles v3 header, root directory "
        "inside the file; Content-Type: binary/octet-stream; Content-Type binary/octet-stream, not "
        "application/vnd.pmtiles (viewers tolerate it)", TYPE_FIX)


def test_truncated_file(site, cli):
    server, manifest = site
    server.truncate = {"genes.pmtiles"}
    code, _, found = run_check(cli, manifest)
    assert code == 1
    f = found[("files", "genes.pmtiles")]
    assert (f["verdict"], f["evidence"], f["fix"]) == (
        "failed", "HEAD 200 OK; Content-Length: 606, local size 1212", APPLY)
    f = found[("pmtiles", "genes.pmtiles")]
    assert f["verdict"] == "failed"
    assert f["evidence"].startswith("GET 206 Partial Content; Content-Range: bytes 0-126/606; ")
    assert "expected Content-Range: bytes 0-126/1212" in f["evidence"]


def test_non_pmtiles_body(site, cli):
    server, manifest = site
    server.bodies = {"factors.pmtiles": b"<html>not found</html>".ljust(703, b" ")}
    code, _, found = run_check(cli, manifest)
    assert code == 1
    assert found[("files", "factors.pmtiles")]["verdict"] == "passed"      # same size: only the header tells
    f = found[("pmtiles", "factors.pmtiles")]
    assert (f["verdict"], f["evidence"], f["fix"]) == (
        "failed", "GET 206 Partial Content; Content-Range: bytes 0-126/703; Content-Type: application/vnd.pmtiles; "
        "not a PMTiles file (no PMTiles magic in its first bytes)", APPLY)


def test_root_directory_outside_the_file(site, cli, tmp_path):
    server, manifest = site
    data = bytearray((tmp_path / "out" / "genes.pmtiles").read_bytes())
    data[16:24] = (10**6).to_bytes(8, "little")          # root_length: far past the end of the file
    server.bodies = {"genes.pmtiles": bytes(data)}
    code, _, found = run_check(cli, manifest)
    assert code == 1
    assert found[("pmtiles", "genes.pmtiles")]["evidence"].endswith(
        "root directory at 127+1000000 lies outside the 1212 B file (truncated or corrupt)")


def test_lost_file(site, cli):
    server, manifest = site
    server.missing = {"genes.pmtiles"}
    code, _, found = run_check(cli, manifest)
    assert code == 1
    for check in ("files", "pmtiles"):
        f = found[(check, "genes.pmtiles")]
        assert f["verdict"] == "failed" and f["fix"] == APPLY and f["status"] == 404
    assert found[("files", "genes.pmtiles")]["evidence"] == \
        f"HEAD 404 Not Found: not found at {server.url}genes.pmtiles"


def test_catalog_differs_from_local(site, cli, tmp_path):
    server, manifest = site
    server.bodies = {"catalog.yaml": b"id: other\n"}
    code, _, found = run_check(cli, manifest)
    assert code == 1
    f = found[("catalog", "catalog.yaml")]
    import hashlib
    remote = hashlib.md5(b"id: other\n").hexdigest()
    local = hashlib.md5((tmp_path / "ds/catalog.yaml").read_bytes()).hexdigest()
    assert (f["verdict"], f["evidence"], f["fix"]) == (
        "failed", f"GET 200 OK; differs from the local catalog (md5 {remote}, local {local})", APPLY)
    server.bodies = {"catalog.yaml": b"id: [unclosed\n"}
    f = run_check(cli, manifest)[2][("catalog", "catalog.yaml")]
    assert f["evidence"].startswith("GET 200 OK; does not parse as YAML (")


def test_anonymous_reads_refused(site, cli):
    server, manifest = site
    server.refuse = True
    code, result, found = run_check(cli, manifest)
    assert code == 1
    f = found[("catalog", "catalog.yaml")]
    assert (f["verdict"], f["evidence"], f["fix"], f["status"]) == (
        "failed", "GET 403 Forbidden: anonymous read refused",
        "allow anonymous reads of the dataset (see the bucket policy below)", 403)
    assert found[("files", "info.tsv")]["evidence"] == "HEAD 403 Forbidden: anonymous HEAD refused"
    assert found[("cors", "ranged GET factors.pmtiles")]["evidence"] == (
        "GET 403 Forbidden with Origin; Access-Control-Expose-Headers: (none); the GET itself was refused")
    assert result["advice"][-1] == ("Anonymous reads were refused: make the files publicly readable on the server "
                                    "(or CDN) that serves them.")


def cors_block(result):
    (block,) = [a for a in result["advice"] if "CORSRules" in a]
    return json.loads(block[block.index("\n{") + 1:])


def test_no_cors(site, cli):
    server, manifest = site
    server.cors_origin = None
    code, result, found = run_check(cli, manifest)
    assert code == 1
    pre, get = found[("cors", "preflight factors.pmtiles")], found[("cors", "ranged GET factors.pmtiles")]
    assert (pre["verdict"], pre["evidence"], pre["fix"]) == (
        "failed", f"OPTIONS 403 Forbidden for Origin {CARTOSCOPE}; preflight refused", "set the CORS rule below")
    assert (get["verdict"], get["evidence"]) == (
        "failed", "GET 206 Partial Content with Origin; Access-Control-Expose-Headers: (none); no "
        "Access-Control-Allow-Origin; ETag not exposed; Content-Range not exposed; Content-Length not exposed "
        "(browsers expose it anyway)")
    assert cors_block(result) == advice.cors_rules(CARTOSCOPE)
    assert result["advice"][0].startswith("Configure the server (or CDN) in front of the files to answer CORS like "
                                          f"this S3 rule: allow origin {CARTOSCOPE}, methods GET and HEAD")
    # the other checks do not depend on CORS
    assert found[("pmtiles", "genes.pmtiles")]["verdict"] == "passed"


def test_cors_for_another_origin_then_origin_from_flag_and_manifest(site, cli, tmp_path):
    server, manifest = site
    server.cors_origin = "https://viewer.example.org"
    code, _, found = run_check(cli, manifest)
    assert code == 1
    assert found[("cors", "preflight factors.pmtiles")]["evidence"] == \
        f"OPTIONS 403 Forbidden for Origin {CARTOSCOPE}; preflight refused"
    code, result, found = run_check(cli, manifest, "--origin", "https://viewer.example.org")
    assert code == 0 and result["origin"] == "https://viewer.example.org"
    text = manifest.read_text().replace("    url: out\n", "    url: out\n    origin: https://viewer.example.org\n")
    manifest.write_text(text)
    code, result, _ = run_check(cli, manifest)
    assert code == 0 and result["origin"] == "https://viewer.example.org"


def test_cors_mis_set(site, cli):
    server, manifest = site
    server.fixed_origin = "https://other.example.org"
    _, _, found = run_check(cli, manifest)
    pre, get = found[("cors", "preflight factors.pmtiles")], found[("cors", "ranged GET factors.pmtiles")]
    assert pre["evidence"] == (f"OPTIONS 200 OK for Origin {CARTOSCOPE}; Access-Control-Allow-Origin: "
                               "https://other.example.org, Access-Control-Allow-Methods: GET, HEAD, "
                               "Access-Control-Allow-Headers: Range; Access-Control-Allow-Origin: "
                               f"https://other.example.org (not {CARTOSCOPE})")
    assert get["verdict"] == "failed"
    server.fixed_origin = None
    server.allow_headers = ()                       # Range not allowed: S3 refuses such a preflight
    _, _, found = run_check(cli, manifest)
    assert found[("cors", "preflight factors.pmtiles")]["verdict"] == "failed"
    server.allow_headers = ("Range",)
    server.expose = ("ETag",)
    _, _, found = run_check(cli, manifest)
    get = found[("cors", "ranged GET factors.pmtiles")]
    assert (get["verdict"], get["evidence"]) == (
        "failed", "GET 206 Partial Content with Origin; Access-Control-Expose-Headers: ETag; Content-Range not "
        "exposed; Content-Length not exposed (browsers expose it anyway)")
    server.expose = ("ETag", "Content-Range")
    code, _, found = run_check(cli, manifest)
    assert code == 0 and found[("cors", "ranged GET factors.pmtiles")]["verdict"] == "warning"


def test_local_target_without_public_url(tmp_path, cli):
    viewable_dataset(tmp_path / "ds")
    manifest = write_manifest(tmp_path, """
        version: 1
        source: {dir: ds}
        targets:
          - {name: disk, url: out}
        """)
    assert cli("apply", manifest, "-q")[0] == 0
    code, out, err = cli("check", manifest)
    assert code == 0 and err == ""
    assert out.splitlines()[1:] == [
        f"  public-url  {tmp_path / 'out'}  warning  no public URL: cartsync cannot tell where this target is served "
        "over HTTP",
        " " * (16 + min(48, len(str(tmp_path / 'out'))))
        + "fix:     set public_url: on the target to the URL it is served at, to check it as a viewer",
        "Check disk: not checked from the public side — 0 passed, 1 warning(s), 0 failed."]
    code, out, _ = cli("check", manifest, "--deep", "--json")
    (result,) = json.loads(out)["checks"]
    assert code == 0 and [f["verdict"] for f in result["findings"] if f["check"] == "deep"] == ["passed"] * 4
