"""Which deposition is "mine": identities that survive a move, a rename and a fresh clone (issue 10, case 9).

A manifest's Zenodo marker comes from what the user wrote (server, target name, source as written, title),
never from the manifest's absolute path; so a project that lost its state file still finds the deposition
it made, and the plan shows no change to the deposition's notes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import EXAMPLE, zenodo_manifest

from cartsync import manifest as manifest_mod


@pytest.fixture
def project(tmp_path, zenodo, cli) -> Path:
    """A project folder (manifest + data) that has published once; returns the project folder."""
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(EXAMPLE, root / "cartload2")
    m = zenodo_manifest(root, zenodo.url)
    code, _, err = cli("apply", m)
    assert code == 0, err
    assert zenodo.deposition_count() == 1
    return root


def state_of(m: Path) -> Path:
    return m.with_name(m.stem + ".cartsync-state.json")


def assert_finds_its_deposition(m: Path, zenodo, cli) -> None:
    zenodo.reset_log()
    code, out, _ = cli("plan", m, "--detailed-exitcode")
    assert (code, out.splitlines()[-1]) == (0, "No changes. 16 file(s) up to date.")
    assert "+ deposition" not in out and "metadata.notes" not in out
    assert out.startswith(f"Target doi → {zenodo.url}/deposition/{min(zenodo.depositions)}\n")
    code, out, _ = cli("apply", m)
    assert (code, out) == (0, "doi: no changes; 16 file(s) up to date; 0 B sent.\n")
    assert zenodo.deposition_count() == 1 and zenodo.count("POST") == 0 and zenodo.count("PUT") == 0


def test_moved_project_without_its_state_file(project, tmp_path, zenodo, cli):
    moved = tmp_path / "elsewhere" / "renamed-project"
    moved.parent.mkdir()
    shutil.move(project, moved)
    state_of(moved / "manifest.yaml").unlink()
    assert_finds_its_deposition(moved / "manifest.yaml", zenodo, cli)


def test_renamed_manifest(project, zenodo, cli):
    m = project / "manifest.yaml"
    renamed = m.rename(project / "publish.yaml")            # its state file keeps the old name: not found
    assert not state_of(renamed).exists()
    assert_finds_its_deposition(renamed, zenodo, cli)


def test_fresh_clone_has_no_state_file(project, tmp_path, zenodo, cli):
    clone = tmp_path / "clone"
    shutil.copytree(project, clone, ignore=shutil.ignore_patterns("*.cartsync-state.json"))
    assert_finds_its_deposition(clone / "manifest.yaml", zenodo, cli)


def test_marker_is_what_the_user_wrote(tmp_path):
    shutil.copytree(EXAMPLE, tmp_path / "a" / "cartload2")
    shutil.copytree(EXAMPLE, tmp_path / "b" / "cartload2")
    url = "https://sandbox.zenodo.org"

    def marker(folder: str, name: str = "manifest.yaml", change: tuple[str, str] = ("", "")) -> str:
        m = zenodo_manifest(tmp_path / folder, url)
        text = m.read_text().replace(*change) if change[0] else m.read_text()
        m.unlink()
        (tmp_path / folder / name).write_text(text)
        cfg = manifest_mod.load(tmp_path / folder / name).targets[0].zenodo
        assert cfg is not None
        return cfg.marker

    same = marker("a")
    assert marker("b") == same == marker("a", "other-name.yaml")        # another folder, another file name
    assert marker("a", change=("Mouse brain", "Rat brain")) != same      # another title: another dataset
    assert marker("a", change=("name: doi", "name: doi2")) != same       # another target
    assert marker("a", change=("dir: cartload2", "dir: ./cartload2/")) == same   # the same folder, written so
    assert marker("a", change=(url, "https://zenodo.org")) != same
    assert same.startswith("cartsync:") and len(same) == len("cartsync:") + 16


def test_collection_datasets_markers_do_not_depend_on_the_manifests_path(tmp_path):
    """A Zenodo target over a collection is one deposition per dataset: each dataset's marker is derived
    from the target's (what the user wrote) and the dataset id, so it too survives a move or a rename."""
    import yaml

    from cartsync import per_dataset, selection

    def markers(folder: Path, name: str) -> dict[str, str]:
        for ds in ("s1", "s2"):
            if not (folder / "coll" / ds).exists():
                shutil.copytree(EXAMPLE, folder / "coll" / ds)
                cat = folder / "coll" / ds / "catalog.yaml"
                cat.write_text(cat.read_text().replace("id: example-mouse-brain", f"id: {ds}-id"))
        data = {"version": 1, "source": {"dir": "coll", "collection": True},
                "targets": [{"name": "doi", "zenodo": {"url": "https://sandbox.zenodo.org", "token_env": "ZT",
                                                       "metadata": {"upload_type": "dataset",
                                                                    "creators": ["Doe, Jane"]}}}]}
        (folder / name).write_text(yaml.safe_dump(data))
        m = manifest_mod.load(folder / name)
        expanded = per_dataset.expand(m, list(m.targets), selection.select(m.source))
        return {t.name: t.zenodo.marker for t in expanded if t.zenodo}

    first = markers(tmp_path / "a", "manifest.yaml")
    assert sorted(first) == ["doi/s1-id", "doi/s2-id"] and len(set(first.values())) == 2
    assert markers(tmp_path / "moved" / "b", "renamed.yaml") == first
