"""The core promises, end to end through the CLI on real local folders."""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

from helpers import tree, write_manifest

CATALOG_FILES = {
    "catalog.yaml", "genes_all.pmtiles", "genes_bin1.pmtiles", "genes_bin3.pmtiles", "genes_bin_counts.json",
    "sge-mono-dark.pmtiles", "sge-mono-light.pmtiles", "t12-f24-bulk-de.tsv", "t12-f24-info.tsv",
    "t12-f24-model.tsv", "t12-f24-p12-a6-pixel-raster.pmtiles", "t12-f24-p12-a6-pseudobulk.tsv.gz",
    "t12-f24-rgb.tsv", "t12-f24-umap.tsv.gz", "t12-f24.pmtiles", "t12-f24.umap.png",
}


def manifest_for(tmp_path: Path, dataset: Path, **target) -> Path:
    extra = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in target.items())
    return write_manifest(tmp_path, f"""
        version: 1
        source:
          dir: {dataset.name}
          method: catalog
        targets:
          - name: out
            url: out
        """ + extra)


def test_apply_then_rerun_sends_nothing(tmp_path, dataset, cli):
    m = manifest_for(tmp_path, dataset)
    code, out, err = cli("apply", m)
    assert code == 0, err
    assert out.splitlines()[0].startswith("out: 16 created, 0 replaced, 0 deleted; 211.8 KB sent in ")
    assert set(tree(tmp_path / "out")) == CATALOG_FILES
    assert tree(tmp_path / "out") == {k: (dataset / k).read_bytes() for k in CATALOG_FILES}

    code, out, err = cli("apply", m)
    assert code == 0
    assert out == "out: no changes; 16 file(s) up to date; 0 B sent.\n"

    code, out, _ = cli("apply", m, "--json")
    report = json.loads(out)["reports"][0]
    assert (report["bytes_sent"], report["outcomes"], report["ok"]) == (0, [], True)


def test_catalog_method_leaves_logs_flags_and_tmp_behind(tmp_path, dataset, cli):
    m = manifest_for(tmp_path, dataset)
    code, out, _ = cli("plan", m, "--json")
    keys = {a["key"] for a in json.loads(out)["plans"][0]["actions"]}
    assert keys == CATALOG_FILES
    assert {"run_cartload2.log", "t12-f24.done", "tmp/scratch.tsv"}.isdisjoint(keys)


def test_same_size_same_mtime_content_change_is_replaced(tmp_path, dataset, cli):
    m = manifest_for(tmp_path, dataset)
    assert cli("apply", m)[0] == 0
    f = dataset / "genes_bin3.pmtiles"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[100] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)

    code, out, _ = cli("plan", m, "--detailed-exitcode")
    assert code == 2
    lines = out.splitlines()
    assert lines[1] == "  ~ replace  genes_bin3.pmtiles  20.0 KB  (same size, content differs (md5))"
    assert lines[-1] == "Plan: 0 to create, 1 to replace, 0 to delete, 15 unchanged (20.0 KB to send)."

    code, out, _ = cli("apply", m)
    assert code == 0 and out.startswith("out: 0 created, 1 replaced, 0 deleted; 20.0 KB sent")
    assert (tmp_path / "out" / "genes_bin3.pmtiles").read_bytes() == bytes(data)
    assert cli("plan", m, "--detailed-exitcode")[0] == 0


def test_plan_and_dry_run_change_nothing(tmp_path, dataset, cli):
    m = manifest_for(tmp_path, dataset, delete=True)
    assert cli("apply", m)[0] == 0
    (dataset / "genes_all.pmtiles").write_bytes(b"new content")
    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text().replace(
        "    - genes_bin1.pmtiles\n", ""))
    (tmp_path / "out" / "stray.txt").write_text("remote only")
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "out").rglob("*")}

    code, out, _ = cli("plan", m)
    assert code == 0
    assert out.splitlines()[-1] == "Plan: 0 to create, 2 to replace, 2 to delete, 13 unchanged (856 B to send)."
    code, out2, _ = cli("apply", m, "--dry-run")
    assert code == 0 and out2 == out
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "out").rglob("*")}
    assert after == before


def test_catalog_is_written_last(tmp_path, dataset, cli):
    m = manifest_for(tmp_path, dataset)
    assert cli("apply", m, "--jobs", "4")[0] == 0
    out = tmp_path / "out"
    times = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert max(times, key=times.get) == "catalog.yaml"
    assert all(t <= times["catalog.yaml"] for t in times.values())


def test_failed_upload_blocks_catalog_and_deletes(tmp_path, dataset, cli, monkeypatch):
    m = manifest_for(tmp_path, dataset, delete=True)
    assert cli("apply", m)[0] == 0
    out = tmp_path / "out"
    (out / "old.pmtiles").write_bytes(b"stale")                    # should be deleted… but not now
    (dataset / "genes_bin1.pmtiles").write_bytes(b"changed")
    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text() + "# v2\n")
    # A permanent failure for one file: its rename into place finds the disk full. (This test used a folder
    # where the file goes; cartsync now clears such a folder, see tests/test_safety_local.py.)
    real_replace = os.replace

    def full_disk(src, dst):
        if Path(dst).name == "genes_bin1.pmtiles":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr("cartsync.backends.fsspec.os.replace", full_disk)
    code, stdout, _ = cli("apply", m)
    assert code == 1
    assert "  FAILED genes_bin1.pmtiles: OSError: [Errno 28] No space left on device" in stdout
    assert "not done because of the failure(s) above: 2 action(s) (catalog.yaml, old.pmtiles)" in stdout
    assert (out / "old.pmtiles").read_bytes() == b"stale"
    assert not (out / "catalog.yaml").read_text().endswith("# v2\n")


def test_plan_detailed_exitcode(tmp_path, dataset, cli):
    m = manifest_for(tmp_path, dataset)
    assert cli("plan", m, "--detailed-exitcode")[0] == 2
    assert cli("plan", m)[0] == 0
    assert cli("apply", m)[0] == 0
    code, out, _ = cli("plan", m, "--detailed-exitcode")
    assert (code, out.splitlines()[-1]) == (0, "No changes. 16 file(s) up to date.")
    assert cli("plan", tmp_path / "missing.yaml", "--detailed-exitcode")[0] == 1


def test_delete_true_removes_only_what_the_source_dropped(tmp_path, dataset, cli):
    m = manifest_for(tmp_path, dataset, delete=True)
    assert cli("apply", m)[0] == 0
    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text().replace(
        "    - genes_bin1.pmtiles\n", ""))
    code, out, _ = cli("apply", m)
    assert code == 0 and out.startswith("out: 0 created, 1 replaced, 1 deleted;")
    assert set(tree(tmp_path / "out")) == CATALOG_FILES - {"genes_bin1.pmtiles"}


def test_version_and_help(cli):
    import pytest
    with pytest.raises(SystemExit) as e:
        cli("--version")
    assert e.value.code == 0
    with pytest.raises(SystemExit):
        cli("--help")


def test_unreadable_source_file_is_named(tmp_path, dataset, cli):
    if os.geteuid() == 0:
        # root reads everything; simulate with a file that vanishes instead
        (dataset / "genes_bin3.pmtiles").unlink()
        code, _, err = cli("plan", manifest_for(tmp_path, dataset))
        assert code == 1
        assert "genes_bin3.pmtiles: missing" in err
        return
    f = dataset / "genes_bin3.pmtiles"
    f.chmod(0)
    code, _, err = cli("plan", manifest_for(tmp_path, dataset))
    f.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert code == 1 and "genes_bin3.pmtiles: not readable (permission denied)" in err


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path, dataset, capsys):
    from cartsync import engine, manifest
    m = manifest.load(manifest_for(tmp_path, dataset))
    cache = engine.cache_for()

    def apply(opts: engine.Options) -> None:
        with engine.opened(m, list(m.targets), cache, lock=True) as backends:
            [plan] = engine.plan_all(backends, engine.select(m), cache)
            assert not engine.execute(backends[0], plan, opts).failed
    apply(engine.Options(show_progress=True))
    err = capsys.readouterr().err
    # decimal units, as the plan and the report say them; files done beside bytes
    assert "out: 100%" in err and "211.8 KB/211.8 KB, 16/16 files" in err and "B/s]" in err
    (dataset / "genes_all.pmtiles").write_bytes(b"x" * 10)
    apply(engine.Options())
    assert capsys.readouterr().err == ""          # not a terminal: quiet


def test_new_files_are_hashed_as_they_upload_and_once(tmp_path, dataset, cli):
    """A plan hashes only files it must compare (a same-size copy on the target); new files are hashed by
    the upload, into the same cache, so nothing is hashed twice and the re-run hashes nothing."""
    from cartsync.render import human_size
    m = manifest_for(tmp_path, dataset)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "genes_bin3.pmtiles").write_bytes(b"x" * (dataset / "genes_bin3.pmtiles").stat().st_size)
    code, _, err = cli("-v", "plan", m)
    assert code == 0, err
    size = (dataset / "genes_bin3.pmtiles").stat().st_size
    assert f"hashed {human_size(size)} (0 cached, 15 left for upload)" in err

    code, out, err = cli("-v", "apply", m)
    assert code == 0, err
    assert "(1 cached, 15 left for upload)" in err
    assert out.startswith("out: 15 created, 1 replaced, 0 deleted")
    assert tree(tmp_path / "out") == {k: (dataset / k).read_bytes() for k in CATALOG_FILES}

    code, out, err = cli("-v", "plan", m)
    assert "hashed 0 B (16 cached, 0 left for upload)" in err and "No changes." in out


def test_a_new_file_changed_after_the_plan_is_not_uploaded(tmp_path, dataset, cli, monkeypatch):
    """A file first hashed at upload must still be the file the plan saw (size, times, inode)."""
    from cartsync import inventory
    m = manifest_for(tmp_path, dataset)
    real_survey = inventory.survey

    def survey_then_edit(files, cache):
        out = real_survey(files, cache)
        with open(dataset / "t12-f24-rgb.tsv", "ab") as f:     # edited after the survey, before its upload
            f.write(b"late row\n")
        return out

    monkeypatch.setattr(inventory, "survey", survey_then_edit)
    code, out, err = cli("apply", m)
    assert code == 1
    assert "FAILED t12-f24-rgb.tsv: changed since it was hashed" in out
    assert not (tmp_path / "out" / "t12-f24-rgb.tsv").exists() and not (tmp_path / "out" / "catalog.yaml").exists()


def test_largest_files_go_first_and_the_catalog_last(tmp_path, dataset, cli):
    """Biggest first, so a large file never uploads alone at the end of a run; catalogs after all data."""
    m = manifest_for(tmp_path, dataset)
    code, _, err = cli("-v", "apply", m, "--jobs", "1")
    assert code == 0, err
    order = [line.split()[2] for line in err.splitlines() if line.startswith("INFO: create ")]
    assert len(order) == 16 and order[-1] == "catalog.yaml"
    sizes = [(dataset / k).stat().st_size for k in order[:-1]]
    assert sizes == sorted(sizes, reverse=True)
