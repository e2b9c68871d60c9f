"""`cartsync check` on Zenodo targets, over the Zenodo fake: a draft has no public URLs; a published record's
files are read anonymously at Zenodo's two URLs, which serve ranges without CORS and CORS without ranges
(zenodo/zenodo#2593); --deep reads the deposition's files back with the token."""
from __future__ import annotations

import json

from check_data import viewable_dataset
from helpers import zenodo_manifest

CARTOSCOPE = "https://v3o-main.carto-scope.org"


def run_check(cli, manifest, *extra):
    code, out, err = cli("check", manifest, "--json", *extra)
    assert err == ""
    (result,) = json.loads(out)["checks"]
    return code, result, {(f["check"], f["subject"]): f for f in result["findings"]}


def test_a_draft_has_no_public_urls(tmp_path, cli, zenodo):
    viewable_dataset(tmp_path / "ds")
    manifest = zenodo_manifest(tmp_path, zenodo.url, src="ds")
    assert cli("apply", manifest, "-q")[0] == 0
    (dep_id,) = zenodo.depositions
    zenodo.reset_log()
    code, result, found = run_check(cli, manifest)
    assert code == 1 and result["public_url"] is None
    assert list(found) == [("zenodo", "record")]
    f = found[("zenodo", "record")]
    assert (f["verdict"], f["evidence"], f["fix"]) == (
        "failed", f"deposition {dep_id} is a draft: a draft has no public file URLs",
        "set publish: true and run `cartsync apply` (publishing mints a DOI and cannot be undone), then check again")
    # read-only: only GETs reached the fake
    assert {m for m, _, _ in zenodo.requests} == {"GET"}


def test_published_record_states_which_url_does_what(tmp_path, cli, zenodo):
    viewable_dataset(tmp_path / "ds")
    manifest = zenodo_manifest(tmp_path, zenodo.url, src="ds", publish=True)
    assert cli("apply", manifest, "-q")[0] == 0
    (rid,) = zenodo.depositions
    zenodo.reset_log()
    code, result, found = run_check(cli, manifest)
    assert code == 1 and result["public_url"] == f"{zenodo.url}/records/{rid}"
    assert found[("catalog", "catalog.yaml")]["verdict"] == "passed"
    assert {found[("files", k)]["verdict"] for k in ("catalog.yaml", "genes.pmtiles", "factors.pmtiles",
                                                       "info.tsv")} == {"passed"}
    f = found[("pmtiles", "genes.pmtiles")]
    assert (f["verdict"], f["evidence"]) == (
        "warning", "GET 206 Partial Content; Content-Range: bytes 0-126/1212; PMTiles v3 header, root directory "
        "inside the file; Content-Type: application/octet-stream; Content-Type application/octet-stream, not "
        "application/vnd.pmtiles (viewers tolerate it)")
    record = f"{zenodo.url}/records/{rid}/files/factors.pmtiles"
    api = f"{zenodo.url}/api/records/{rid}/files/factors.pmtiles/content"
    assert found[("zenodo", f"record URL {record}")] == {
        "check": "zenodo", "subject": f"record URL {record}", "verdict": "warning", "fix": "", "status": 0,
        "evidence": "GET 206 Partial Content; ranges: yes; CORS: no (no Access-Control-Allow-Origin)"}
    assert found[("zenodo", f"API URL {api}")]["evidence"] == \
        "GET 200 OK; ranges: no; CORS: yes (Access-Control-Allow-Origin: *)"
    f = found[("zenodo", "browser viewer")]
    assert (f["verdict"], f["evidence"], f["fix"]) == (
        "failed", f"no URL of record {rid} serves both ranges and CORS (zenodo/zenodo#2593): a viewer on another "
        "origin cannot stream these PMTiles from Zenodo; the catalog and small files it can read whole from the "
        "API URL",
        "for a browser viewer, publish the same dataset to an S3 target as well and open it there; Zenodo stays "
        "the citable copy")
    # the public reads were anonymous (the fake logs no headers; its public routes skip the token check) and
    # nothing was written
    assert {m for m, _, _ in zenodo.requests} <= {"GET", "HEAD"}
    code, result, found = run_check(cli, manifest, "--deep")
    assert [found[("deep", k)]["verdict"] for k in ("catalog.yaml", "factors.pmtiles", "genes.pmtiles",
                                                    "info.tsv")] == ["passed"] * 4


def test_deep_catches_a_changed_file_in_the_record(tmp_path, cli, zenodo):
    viewable_dataset(tmp_path / "ds")
    manifest = zenodo_manifest(tmp_path, zenodo.url, src="ds", publish=True)
    assert cli("apply", manifest, "-q")[0] == 0
    (rid,) = zenodo.depositions
    stored = zenodo.depositions[rid].files["info.tsv"]
    stored.data = b"X\tY\n3\t4\n"          # behind the API's back: same size, the listed checksum unchanged
    code, _, found = run_check(cli, manifest, "--deep")
    assert code == 1
    assert found[("deep", "info.tsv")]["verdict"] == "failed"
    assert found[("deep", "info.tsv")]["evidence"].startswith("read back 8 B, md5 ")


def test_a_collection_is_checked_deposition_by_deposition(tmp_path, cli, zenodo):
    import yaml
    for ds in ("brain", "lung"):
        viewable_dataset(tmp_path / "coll" / ds)
        catalog = tmp_path / "coll" / ds / "catalog.yaml"
        catalog.write_text(catalog.read_text().replace("id: demo", f"id: {ds}"))
    target = {"name": "doi", "zenodo": {"url": zenodo.url, "token_env": "ZT", "publish": True, "metadata": {
        "upload_type": "dataset", "creators": ["Doe, Jane"]}}}
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "coll", "collection": True},
                                        "targets": [target]}))
    code, _, err = cli("apply", manifest, "-q")
    assert code == 0, err
    code, out, err = cli("check", manifest, "--json", "--deep")
    results = json.loads(out)["checks"]
    assert [r["target"] for r in results] == ["doi/brain", "doi/lung"]
    for r in results:
        found = {(f["check"], f["subject"]): f["verdict"] for f in r["findings"]}
        assert found[("catalog", "catalog.yaml")] == "passed"
        assert [v for (c, _), v in found.items() if c == "deep"] == ["passed"] * 4
        assert found[("zenodo", "browser viewer")] == "failed"
