"""A Zenodo server whose answers lack what cartsync relies on (issue 10): an upload answered without a
checksum, a listing without checksums, a newversion answer without the new draft's id. Each is one clear
outcome, checked against the fake's own state (tests/fakes/zenodo_fake.py switches)."""
from __future__ import annotations

import hashlib
import json

from helpers import zenodo_manifest

NO_CHECKSUM = "Zenodo answered the upload without a checksum, so it cannot be verified"


def test_an_upload_answered_without_a_checksum_is_said_once_not_retried(zenodo, tmp_path, dataset, cli):
    """Today: "Zenodo stored md5 , -1 bytes; expected …", retried 5 times per file."""
    m = zenodo_manifest(tmp_path, zenodo.url, method="all")
    zenodo.upload_without_checksum = True
    code, out, err = cli("apply", m, "--json")
    report = json.loads(out)["reports"][0]
    assert code == 1 and not report["ok"]
    errors = {o["key"]: o["error"] for o in report["outcomes"]}
    assert set(errors.values()) == {NO_CHECKSUM} and report["retries"] == 0
    # one PUT per data file: not retried (the catalog was held back after the failures)
    assert zenodo.count("PUT", "/api/files/") == len(errors)
    assert [s["key"] for s in report["skipped"]] == ["catalog.yaml"]


def test_a_listing_without_checksums_plans_no_remote_checksum_to_compare(zenodo, tmp_path, dataset, cli):
    """Today: "same size, content differs (md5)", which says the files differ when nothing is known."""
    m = zenodo_manifest(tmp_path, zenodo.url, overwrite="changed")
    assert cli("apply", m)[0] == 0
    zenodo.listing_without_checksum = True
    code, out, err = cli("-v", "plan", m)
    assert code == 0, err
    assert "  ~ replace  catalog.yaml" in out
    reasons = {line.split()[2]: line.rsplit("(", 1)[1] for line in out.splitlines() if line.startswith("  ~ replace")}
    assert len(reasons) == 16 and set(reasons.values()) == {"same size, no remote checksum to compare)"}


def test_a_newversion_answer_without_the_drafts_id_finds_the_draft(zenodo, tmp_path, dataset, cli):
    """Today: "unexpected KeyError: 'id'" after Zenodo made the new version."""
    m = zenodo_manifest(tmp_path, zenodo.url, publish=True)
    assert cli("apply", m)[0] == 0
    (first,) = zenodo.depositions
    zenodo.newversion_without_id = True
    (dataset / "genes_bin3.pmtiles").write_bytes(b"new content")
    code, out, err = cli("apply", m)
    assert code == 0, err
    assert zenodo.deposition_count() == 2
    new = max(zenodo.depositions)
    dep = zenodo.depositions[new]
    assert dep.submitted and dep.concept_id == zenodo.depositions[first].concept_id
    assert zenodo.files_of(new)["genes_bin3.pmtiles"] == hashlib.md5(b"new content").hexdigest()
    assert f"  + deposition: new version draft {new} of record {first}" in out
