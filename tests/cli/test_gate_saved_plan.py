"""Saved plans: plan --out writes what apply applies exactly; a stale one is refused, naming the change."""
from __future__ import annotations

import json
from pathlib import Path

import yaml
from helpers import catalog_dataset, local_setup, tree


def stale_message(m: Path, plan: Path, what: str) -> str:
    return (f"error: saved plan {plan} is stale: {what}\n"
            f"hint: re-plan: cartsync plan {m.resolve()} --out {plan}, review it, then apply it\n")


def test_apply_applies_exactly_the_saved_plan(tmp_path, cli):
    m, plan = local_setup(tmp_path), tmp_path / "plan.json"
    code, out, _ = cli("plan", m, "--out", plan)
    assert code == 0 and out.endswith(f"\n\nSaved this plan to {plan}; apply exactly it with: cartsync apply {plan}\n")
    doc = json.loads(plan.read_text())
    assert doc["format"] == "cartsync-saved-plan" and doc["source"]["a.tsv"] == [2, "60b725f10c9c85c70d97880dfe8191b3"]
    assert doc["listings"] == {"out": {}} and [a["key"] for a in doc["plans"][0]["actions"]] == [
        "a.tsv", "b.tsv", "catalog.yaml"]
    assert not (tmp_path / "out").exists()                       # planning wrote nothing
    code, out, err = cli("apply", plan)
    assert code == 0, err
    assert out.startswith("out: 3 created, 0 replaced, 0 deleted;")
    assert tree(tmp_path / "out") == tree(tmp_path / "src")
    # applied once, the target has changed: the same plan is now stale
    code, out, err = cli("apply", plan)
    assert code == 1 and err.startswith(f"error: saved plan {plan} is stale: target out: file a.tsv is new; ")


def test_stale_when_the_manifest_changed(tmp_path, cli):
    m, plan = local_setup(tmp_path), tmp_path / "plan.json"
    assert cli("plan", m, "--out", plan)[0] == 0
    m.write_text(m.read_text().replace("delete: true", "delete: false"))
    assert cli("apply", plan) == (1, "", stale_message(m, plan, f"the manifest {m.resolve()} changed"))
    assert not (tmp_path / "out").exists()       # refused before anything was opened


def test_stale_when_a_local_file_changed(tmp_path, cli):
    m, plan = local_setup(tmp_path), tmp_path / "plan.json"
    assert cli("plan", m, "--out", plan)[0] == 0
    (tmp_path / "src" / "b.tsv").write_bytes(b"BB\n")                 # same size, other content
    (tmp_path / "src" / "c.tsv").write_bytes(b"c\n")
    assert cli("apply", plan) == (1, "", stale_message(
        m, plan, "source file b.tsv changed (content); source file c.tsv is new"))
    assert tree(tmp_path / "out") == {}          # nothing written (the lock made the folder, and left)


def test_stale_when_the_remote_changed(tmp_path, cli, s3):
    catalog_dataset(tmp_path / "src", {"a.tsv": b"a\n"}, "ds")
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"}, "targets": [
        {"name": "web", "url": f"s3://{s3.bucket}/ds", "storage_options": {"endpoint_url": s3.endpoint_url}}]}))
    plan = tmp_path / "plan.json"
    assert cli("plan", m, "--out", plan)[0] == 0
    s3.put_object(s3.bucket, "ds/a.tsv", b"someone else\n")          # another writer, after the review
    s3.reset_counts()
    assert cli("apply", plan) == (1, "", stale_message(m, plan, "target web: file a.tsv is new"))
    assert s3.counts()["ListObjectsV2"] == 1                          # one listing per target
    assert s3.counts()["PutObject"] == 0
    assert s3.get_object_bytes(s3.bucket, "ds/a.tsv") == b"someone else\n"


def test_a_plan_file_never_holds_a_secret(tmp_path, cli, s3, monkeypatch):
    secret_key, secret = "AKIAGATESECRETKEY123", "gate/Secret+Value/0123456789abcdefXYZ"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", secret_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("ZT", "test-token-zz9-secret")
    catalog_dataset(tmp_path / "src", {"a.tsv": b"a\n"}, "ds")
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"}, "targets": [
        {"name": "web", "url": f"s3://{s3.bucket}/ds",
         "storage_options": {"endpoint_url": s3.endpoint_url, "key": secret_key, "secret": secret}}]}))
    plan = tmp_path / "plan.json"
    code, _, err = cli("plan", m, "--out", plan)
    assert code == 0, err
    text = plan.read_text()
    for value in (secret_key, secret, "test-token-zz9-secret", "storage_options"):
        assert value not in text
    assert cli("apply", plan)[0] == 0
