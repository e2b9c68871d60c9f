"""zenodo: targets against the fake server (tests/fakes/zenodo_fake.py) over real HTTP on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from contract import BackendContract
from helpers import zenodo_manifest

from cartsync.backends.zenodo import ZenodoBackend
from cartsync.config import TargetConfig, ZenodoConfig
from cartsync.inventory import HashCache

META = {"title": "Contract", "upload_type": "dataset", "description": "d", "creators": ["Doe, Jane"]}


class TestZenodoContract(BackendContract):
    @pytest.fixture
    def backend(self, zenodo, tmp_path):
        cfg = ZenodoConfig(url=zenodo.url, metadata=META, token_env="ZT", state_file=tmp_path / "s.json",
                           marker="cartsync:contract")
        backend = ZenodoBackend(TargetConfig(name="z", url=zenodo.url, zenodo=cfg), HashCache(tmp_path / "h.sqlite3"))
        from cartsync.model import Plan
        backend.listing()
        backend.begin(Plan("z", "u", ()))        # creates the draft the contract writes to
        yield backend
        backend.close()


def state(m: Path) -> dict:
    return json.loads(m.with_name(m.stem + ".cartsync-state.json").read_text())["targets"]["doi"]


def test_lifecycle_scenario(zenodo, tmp_path, dataset, cli):
    m = zenodo_manifest(tmp_path, zenodo.url)
    code, out, err = cli("apply", m)
    assert code == 0, err
    assert out.splitlines()[0].startswith("doi: 16 created, 0 replaced, 0 deleted; 211.8 KB sent")
    assert zenodo.deposition_count() == 1
    dep_id = state(m)["deposition_id"]
    dep = zenodo.depositions[dep_id]
    assert not dep.submitted and len(dep.files) == 16
    assert dep.metadata["creators"][1] == {"name": "Roe, Rick", "affiliation": "Lab", "orcid": "0000-0002-1825-0097"}

    zenodo.reset_log()                                        # no-op: ≤ 3 requests, no upload
    code, out, _ = cli("apply", m)
    assert (code, out) == (0, "doi: no changes; 16 file(s) up to date; 0 B sent.\n")
    assert len(zenodo.requests) <= 3 and zenodo.count("PUT") == 0 and zenodo.deposition_count() == 1

    (dataset / "genes_bin3.pmtiles").write_bytes(os.urandom(20008))   # one file changes
    zenodo.reset_log()
    code, out, _ = cli("apply", m)
    assert code == 0 and out.startswith("doi: 0 created, 1 replaced, 0 deleted")
    assert zenodo.count("PUT", "/api/files/") == 1 and len(dep.files) == 16

    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text().replace("    - genes_bin1.pmtiles\n", ""))
    assert cli("apply", m)[0] == 0
    assert "genes_bin1.pmtiles" in dep.files                   # delete: false keeps it
    m = zenodo_manifest(tmp_path, zenodo.url, delete=True)
    code, out, _ = cli("apply", m)
    assert code == 0 and out.startswith("doi: 0 created, 0 replaced, 1 deleted")
    assert set(dep.files) == {p.name for p in dataset.iterdir() if p.is_file()} - {
        "genes_bin1.pmtiles", "run_cartload2.log", "t12-f24.done"}

    m = zenodo_manifest(tmp_path, zenodo.url, delete=True, publish=True)   # publish
    code, out, _ = cli("plan", m)
    assert "  + publish: publish (mints a DOI; cannot be undone)" in out
    code, out, _ = cli("apply", m)
    assert code == 0 and dep.submitted
    assert f"  + published: DOI 10.5072/zenodo.{dep_id}" in out
    assert state(m)["doi"] == f"10.5072/zenodo.{dep_id}" and state(m)["published"] is True

    zenodo.reset_log()                                        # unchanged re-run: no new version
    code, out, _ = cli("apply", m)
    assert (code, out) == (0, "doi: no changes; 15 file(s) up to date; 0 B sent.\n")
    assert zenodo.deposition_count() == 1 and len(zenodo.requests) <= 3
    assert zenodo.count("POST") == 0

    (dataset / "genes_all.pmtiles").write_bytes(os.urandom(100))     # change → exactly one new version
    zenodo.reset_log()
    code, out, err = cli("apply", m)
    assert code == 0, err
    assert zenodo.deposition_count() == 2
    assert zenodo.count("POST", f"/api/deposit/depositions/{dep_id}/actions/newversion") == 1
    assert zenodo.count("PUT", "/api/files/") == 1
    new_id = state(m)["deposition_id"]
    assert new_id != dep_id and zenodo.depositions[new_id].submitted
    assert zenodo.depositions[new_id].concept_id == dep.concept_id
    assert len(zenodo.depositions[new_id].files) == 15 and len(dep.files) == 15   # old version untouched
    log = [f"{meth} {path}" for meth, path, _ in zenodo.requests]
    (tmp_path / "request-log.txt").write_text("\n".join(log))

    zenodo.reset_log()
    code, out, _ = cli("apply", m)                            # re-run: nothing
    assert (code, out) == (0, "doi: no changes; 15 file(s) up to date; 0 B sent.\n")
    assert zenodo.deposition_count() == 2 and zenodo.count("POST") == 0 and zenodo.count("PUT") == 0


def test_lost_create_answer_and_lost_state_make_one_deposition(zenodo, tmp_path, dataset, cli):
    m = zenodo_manifest(tmp_path, zenodo.url)
    zenodo.fail_next(1, status=504, path_contains="/api/deposit/depositions", method="POST", after_success=True)
    code, out, err = cli("apply", m)
    assert code == 0, err
    assert zenodo.deposition_count() == 1
    m.with_name(m.stem + ".cartsync-state.json").unlink()      # the record of it is lost too
    code, out, _ = cli("apply", m)
    assert (code, out) == (0, "doi: no changes; 16 file(s) up to date; 0 B sent.\n")
    assert zenodo.deposition_count() == 1


def test_killed_right_after_create_then_rerun(zenodo, tmp_path, dataset):
    m = zenodo_manifest(tmp_path, zenodo.url)
    env = dict(os.environ)
    zenodo.rate_limit(None)
    proc = subprocess.Popen([sys.executable, "-m", "cartsync", "apply", str(m), "--jobs", "1"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not zenodo.count("POST", "/api/deposit/depositions"):
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert zenodo.deposition_count() == 1
    state_file = m.with_name(m.stem + ".cartsync-state.json")
    if state_file.exists():
        state_file.unlink()                                     # as if killed before the state was written
    done = subprocess.run([sys.executable, "-m", "cartsync", "apply", str(m)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert zenodo.deposition_count() == 1
    (dep,) = zenodo.depositions.values()
    assert len(dep.files) == 16 and all(f.size == (dataset / k).stat().st_size for k, f in dep.files.items())


def test_over_100_files_refused_before_any_request(zenodo, tmp_path, cli):
    src = tmp_path / "many"
    src.mkdir()
    for i in range(101):
        (src / f"f{i:03}.tsv").write_text(str(i))
    m = zenodo_manifest(tmp_path, zenodo.url, src="many", method="all")
    code, _, err = cli("plan", m)
    assert code == 1
    assert err == ("error: target doi: 101 files, but it can hold at most 100\n"
                   "hint: split the dataset into 2 or more targets (e.g. with method: list), or zip small files "
                   "together\n")
    assert zenodo.requests == []


def test_clashing_base_names_refused_before_any_request(zenodo, tmp_path, cli):
    src = tmp_path / "clash"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    (src / "a" / "x.tsv").write_text("1")
    (src / "b" / "x.tsv").write_text("2")
    (src / "y.tsv").write_text("3")
    m = zenodo_manifest(tmp_path, zenodo.url, src="clash", method="all")
    code, _, err = cli("plan", m)
    assert code == 1
    assert err == ("error: target doi: Zenodo records are flat, and these files share a name:\n  x.tsv: a/x.tsv, "
                   "b/x.tsv\nhint: rename them, or publish each folder to its own deposition\n")
    assert zenodo.requests == []


def test_wrong_token_is_one_clear_message(zenodo, tmp_path, dataset, cli, monkeypatch):
    monkeypatch.setenv("ZT", "not-the-token-77")
    m = zenodo_manifest(tmp_path, zenodo.url, deposition=5)
    code, out, err = cli("plan", m)
    assert code == 1
    assert err == (f"error: GET {zenodo.url}/api/deposit/depositions/5: 403 Permission denied.\n"
                   "hint: check the Zenodo token (it needs the deposit:write and deposit:actions scopes) and that "
                   "the deposition belongs to its owner\n")
    assert len(zenodo.requests) == 1
    assert "not-the-token-77" not in out + err


def test_metadata_only_change_on_published_waits_for_publish(zenodo, tmp_path, dataset, cli):
    m = zenodo_manifest(tmp_path, zenodo.url, publish=True)
    assert cli("apply", m)[0] == 0
    text = m.read_text().replace("description: Example data", "description: Better words")
    m.write_text(text.replace("publish: true", "publish: false"))
    code, out, _ = cli("plan", m, "--detailed-exitcode")
    assert code == 0
    assert "  ! metadata.description: 'Example data' → 'Better words'" in out
    assert "  ! metadata: changes to a published record wait: set publish: true" in out
    m.write_text(text)
    code, out, _ = cli("apply", m)
    assert code == 0
    (dep,) = zenodo.depositions.values()
    assert dep.metadata["description"] == "Better words" and dep.submitted and zenodo.deposition_count() == 1
    zenodo.reset_log()
    assert cli("plan", m, "--detailed-exitcode")[0] == 0


def test_upload_zenodo_with_cartloader_flags(zenodo, tmp_path, dataset, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    token = tmp_path / "token"
    token.write_text("test-token-zz9\n")
    token.chmod(0o600)
    flags = ["upload-zenodo", "--in-dir", "cartload2", "--upload-method", "catalog", "--zenodo-token", "token",
             "--zenodo-url", zenodo.url, "--create-new-deposition", "--title", "Example mouse brain",
             "--creators", "Jane Doe", "Roe, Rick", "--description", "An example", "--upload-type", "dataset"]
    code, out, err = cli(*flags, "--dry-run")
    assert code == 0 and out.splitlines()[-1].startswith("Plan: 16 to create")
    assert "  + deposition: create a new draft on" in out and zenodo.deposition_count() == 0
    code, out, err = cli(*flags)
    assert code == 0, err
    (dep,) = zenodo.depositions.values()
    assert len(dep.files) == 16
    assert [c["name"] for c in dep.metadata["creators"]] == ["Jane Doe", "Roe, Rick"]     # as given, as cartloader
    code, out, _ = cli(*flags, "--publish")                   # same command again: publishes the same draft
    assert code == 0 and dep.submitted and zenodo.deposition_count() == 1
    code, out, _ = cli(*flags, "--print-manifest")
    assert f"    deposition: {dep.id}\n" in out and "token-zz9" not in out
    (dataset / "genes_all.pmtiles").write_bytes(b"changed")
    code, out, _ = cli(*flags, "--publish", "--dry-run")
    assert out.splitlines()[-1] == "No changes. 16 file(s) up to date."     # cartloader: same name is kept
    code, out, _ = cli(*flags, "--publish", "--overwrite")
    assert code == 0 and zenodo.deposition_count() == 2
