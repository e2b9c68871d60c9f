"""A collection with a Zenodo target (issue 16): one deposition per dataset, a shared rate budget."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import REPO

from cartsync.per_dataset import fill


def make_collection(root: Path, n: int) -> dict[str, dict[str, bytes]]:
    out = {}
    for i in range(n):
        ds = f"ds-{i:02d}"
        (root / ds).mkdir(parents=True)
        files = {"genes_all.pmtiles": os.urandom(300 + i), "factors.tsv": f"factor\t{i}\n".encode()}
        for name, data in files.items():
            (root / ds / name).write_bytes(data)
        desc = f"Sample {i}: FICTURE {{t12}} on 1.5/2 µm bins" if i % 2 == 0 else None
        catalog = {"id": ds, "title": f"Mouse brain {i}", **({"description": desc} if desc else {}),
                   "assets": {"sge": {"all": "genes_all.pmtiles"}, "factors": [{"id": "f", "rgb": "factors.tsv"}]}}
        (root / ds / "catalog.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
        out[ds] = {**files, "catalog.yaml": (root / ds / "catalog.yaml").read_bytes()}
    return out


def manifest(folder: Path, url: str, **meta) -> Path:
    data = {"version": 1, "source": {"dir": "coll", "collection": True}, "targets": [{"name": "doi", "zenodo": {
        "url": url, "token_env": "ZT", "metadata": {"upload_type": "dataset", "creators": ["Doe, Jane"],
                                                    "keywords": ["spatial transcriptomics"], **meta}}}]}
    path = folder / "collection.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def deposition_files(zenodo) -> dict[str, dict[str, str]]:
    """The fake's own state: title → {file name: md5}."""
    return {d.metadata["title"]: {k: f.md5 for k, f in d.files.items()} for d in zenodo.depositions.values()}


def test_template_placeholders_and_defaults():
    fields = {"id": "a", "title": "T {x}", "description": "D"}
    assert fill({"title": "{title} ({id})", "keywords": ["{id}"], "upload_type": "dataset"}, fields) == {
        "title": "T {x} (a)", "keywords": ["a"], "upload_type": "dataset", "description": "D"}


def test_twenty_datasets_make_twenty_depositions_then_a_noop_costs_at_most_two_requests_each(tmp_path, zenodo, cli):
    data = make_collection(tmp_path / "coll", 20)
    m = manifest(tmp_path, zenodo.url)
    code, out, err = cli("apply", m, "--json")
    assert code == 0, err
    assert len(zenodo.depositions) == 20
    want = {f"Mouse brain {i}": {k: hashlib.md5(v).hexdigest() for k, v in data[f"ds-{i:02d}"].items()}
            for i in range(20)}
    assert deposition_files(zenodo) == want
    descriptions = {d.metadata["title"]: d.metadata["description"] for d in zenodo.depositions.values()}
    assert descriptions["Mouse brain 0"] == "Sample 0: FICTURE {t12} on 1.5/2 µm bins"
    assert descriptions["Mouse brain 1"] == "No description provided."
    state = yaml.safe_load((tmp_path / "collection.cartsync-state.json").read_text())
    assert sorted(state["targets"]) == [f"doi/ds-{i:02d}" for i in range(20)]
    assert {str(r["deposition_id"]) for r in state["targets"].values()} == {str(i) for i in zenodo.depositions}

    before = len(zenodo.requests)
    code, out, err = cli("apply", m)
    assert code == 0, err
    assert len(zenodo.requests) - before <= 2 * 20
    assert out.count("no changes") == 20
    assert len(zenodo.depositions) == 20


def test_a_lost_state_file_finds_each_dataset_deposition_by_its_marker(tmp_path, zenodo, cli):
    make_collection(tmp_path / "coll", 3)
    m = manifest(tmp_path, zenodo.url)
    assert cli("apply", m)[0] == 0
    (tmp_path / "collection.cartsync-state.json").unlink()
    code, out, err = cli("apply", m)
    assert code == 0, err
    assert len(zenodo.depositions) == 3 and out.count("no changes") == 3


def test_a_changed_dataset_changes_only_its_own_deposition(tmp_path, zenodo, cli):
    data = make_collection(tmp_path / "coll", 3)
    m = manifest(tmp_path, zenodo.url)
    assert cli("apply", m)[0] == 0
    (tmp_path / "coll" / "ds-01" / "factors.tsv").write_bytes(b"factor\tchanged\n")
    code, out, err = cli("plan", m)
    assert code == 0
    assert "Target doi/ds-01" in out and out.count("No changes.") == 2
    assert cli("apply", m)[0] == 0
    files = deposition_files(zenodo)
    assert files["Mouse brain 1"]["factors.tsv"] == hashlib.md5(b"factor\tchanged\n").hexdigest()
    assert files["Mouse brain 0"]["factors.tsv"] == hashlib.md5(data["ds-00"]["factors.tsv"]).hexdigest()


def test_a_deposition_id_cannot_serve_a_collection(tmp_path, zenodo, cli):
    make_collection(tmp_path / "coll", 2)
    m = manifest(tmp_path, zenodo.url)
    body = yaml.safe_load(m.read_text())
    body["targets"][0]["zenodo"].update(deposition=123, metadata={})
    m.write_text(yaml.safe_dump(body))
    code, out, err = cli("plan", m)
    assert code == 1
    assert err == ("error: target doi: a collection makes one deposition per dataset, but deposition is 123\n"
                   "hint: use deposition: new (each dataset's deposition is recorded in the state file)\n")


def test_two_processes_sharing_a_token_stay_within_the_rate_budget(tmp_path, zenodo):
    """Two processes on one machine (one cache folder) share the budget: no window of the fake's log holds
    more requests than the limit, and nothing was refused with 429."""
    limit, window = 12, 4.0
    zenodo.rate_limit(limit, window)      # the server's limit, enforced with 429 + Retry-After
    # the budget a third below it: a request is counted when it is sent and logged when it arrives, and on a
    # loaded test machine that gap is not negligible against a 4-s window (it is against Zenodo's minute)
    env = {**os.environ, "PYTHONPATH": str(REPO), "CARTSYNC_ZENODO_RATE": f"{limit * 2 // 3}/{window}",
           "CARTSYNC_CACHE_DIR": str(tmp_path / "cache")}
    procs = []
    for name in ("a", "b"):
        folder = tmp_path / name
        make_collection(folder / "coll", 3)
        m = manifest(folder, zenodo.url, keywords=[name])
        procs.append(subprocess.Popen([sys.executable, "-m", "cartsync", "apply", str(m)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-1500:] for o in outs]
    assert len(zenodo.depositions) == 6
    assert not [r for r in zenodo.requests if r[2] == 429]
    times = sorted(zenodo.request_times)
    # the fake's fixed windows and the budget's sliding one: no sliding window holds more than the limit
    assert max(sum(1 for t in times if s <= t < s + window) for s in times) <= limit
