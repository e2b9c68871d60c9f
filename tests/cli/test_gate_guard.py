"""max_delete refuses a mass delete (not the uploads), shows it in the plan, and is lifted for one run."""
from __future__ import annotations

from pathlib import Path

import yaml
from helpers import tree


def setup(tmp_path: Path, n: int, **target) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(n):
        (src / f"f{i:02d}.tsv").write_text(f"{i}\n")
    m = tmp_path / "m.yaml"
    m.write_text(yaml.safe_dump({"version": 1, "source": {"dir": "src", "method": "all"},
                                 "targets": [{"name": "out", "url": "out", "delete": True, **target}]}))
    return m


def test_default_guard_trips_on_more_than_half_and_refuses_only_the_deletes(tmp_path, cli):
    m = setup(tmp_path, 30)
    assert cli("apply", m)[0] == 0
    for i in range(20):                                        # a pipeline step failed: 20 of 30 files gone
        (tmp_path / "src" / f"f{i:02d}.tsv").unlink()
    (tmp_path / "src" / "f29.tsv").write_text("changed\n")
    note = ("  note: max_delete: 20 of the target's 30 file(s) would be deleted, more than 50%: apply will refuse "
            "the deletes (the uploads go ahead); if they are meant, re-run with --allow-mass-delete, or raise "
            "max_delete in the manifest")
    code, out, _ = cli("plan", m)
    assert code == 0 and out.splitlines()[-2:] == [note, "Plan: 0 to create, 1 to replace, 20 to delete, 9 unchanged (8 B to send)."]
    code, out, err = cli("apply", m)
    assert code == 1 and note in err
    refused = ("  deletes refused by max_delete: 20 file(s) kept on the target; if the deletes are meant, re-run "
               "with --allow-mass-delete")
    assert out.splitlines()[1:] == [refused]
    assert out.startswith("out: 0 created, 1 replaced, 0 deleted;")
    on_disk = tree(tmp_path / "out")
    assert len(on_disk) == 30 and on_disk["f29.tsv"] == b"changed\n"          # the upload went ahead

    code, out, err = cli("apply", m, "--allow-mass-delete")
    assert code == 0 and out.startswith("out: 0 created, 0 replaced, 20 deleted;")
    assert ("  note: max_delete: 20 of the target's 30 file(s) would be deleted, more than 50%; allowed for this "
            "run (--allow-mass-delete)") in err
    assert sorted(tree(tmp_path / "out")) == [f"f{i}.tsv" for i in range(20, 30)]


def test_small_deletions_do_not_trip_the_default(tmp_path, cli):
    m = setup(tmp_path, 4)
    assert cli("apply", m)[0] == 0
    for i in range(3):
        (tmp_path / "src" / f"f{i:02d}.tsv").unlink()
    code, out, _ = cli("apply", m)
    assert code == 0 and out.startswith("out: 0 created, 0 replaced, 3 deleted;")


def test_count_and_fraction_from_the_manifest(tmp_path, cli):
    m = setup(tmp_path, 10, max_delete=2)
    assert cli("apply", m)[0] == 0
    for i in range(3):
        (tmp_path / "src" / f"f{i:02d}.tsv").unlink()
    code, out, _ = cli("plan", m, "--json")
    import json
    [plan] = json.loads(out)["plans"]
    assert plan["deletes_refused"] is True
    assert plan["notes"][0].startswith("max_delete: 3 deletion(s) exceed the limit of 2: apply will refuse")
    assert cli("apply", m)[0] == 1 and len(tree(tmp_path / "out")) == 10
    m.write_text(m.read_text().replace("max_delete: 2", "max_delete: 25%"))
    assert cli("plan", m)[1].count("more than 25%") == 1
    m.write_text(m.read_text().replace("max_delete: 25%", "max_delete: 30%"))
    code, out, _ = cli("apply", m)
    assert code == 0 and out.startswith("out: 0 created, 0 replaced, 3 deleted;") and len(tree(tmp_path / "out")) == 7


def test_max_delete_of_the_wrong_form_is_a_manifest_error(tmp_path, cli):
    m = setup(tmp_path, 1, max_delete="lots")
    code, _, err = cli("validate", m)
    assert code == 1 and "targets[0].max_delete" in err
