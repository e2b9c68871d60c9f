"""backends/zenodo/deposition.py: the Deposition's public methods and its documented state, against the Zenodo
fake over HTTP on 127.0.0.1 (the fake's own state is the check, not cartsync's reading of it)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from cartsync.backends.zenodo.client import ZenodoClient
from cartsync.backends.zenodo.deposition import Deposition
from cartsync.backends.zenodo.state import StateFile
from cartsync.config import ZenodoConfig
from cartsync.model import Action, Change, Kind, LocalFile, Plan, RemoteFile
from cartsync.retry import RetryPolicy

META = {"title": "Unit", "upload_type": "dataset", "description": "d", "creators": ["Doe, Jane"]}


def opened(zenodo, tmp_path: Path, **cfg) -> tuple[Deposition, ZenodoClient]:
    config = ZenodoConfig(url=zenodo.url, metadata=META, token_env="ZT", state_file=tmp_path / "s.json",
                          marker="cartsync:unit", **cfg)
    api = ZenodoClient(config)
    policy = RetryPolicy.from_env()
    return Deposition(api, policy.call, config, StateFile(tmp_path / "s.json", "z"), "z", policy.base), api


def local(tmp_path: Path, key: str, data: bytes) -> LocalFile:
    path = tmp_path / key
    path.write_bytes(data)
    return LocalFile(key, path, len(data), hashlib.md5(data).hexdigest())


def upload_plan(*files: LocalFile) -> Plan:
    return Plan("z", "u", tuple(Action(Kind.CREATE, f.key, f.size, local=f) for f in files))


def test_new_deposition_read_prepare_put_publish(zenodo, tmp_path):
    dep, api = opened(zenodo, tmp_path, publish=True)
    assert dep.read() == {} and (dep.remote, dep.current, dep.published, dep.draft) == (None, None, None, None)
    f = local(tmp_path, "a.txt", b"hello")
    changes = dep.prepare(upload_plan(f))
    assert dep.draft is not None and dep.files == {}
    dep_id = int(dep.draft["id"])
    assert changes == [Change("+", "deposition", f"created draft {dep_id}")]
    assert zenodo.deposition_count() == 1 and not zenodo.depositions[dep_id].submitted
    assert json.loads((tmp_path / "s.json").read_text())["targets"]["z"]["deposition_id"] == dep_id

    got = dep.put(f, "a.txt", lambda n: None)
    assert got == RemoteFile("a.txt", 5, hashlib.md5(b"hello").hexdigest())
    assert zenodo.files_of(dep_id) == {"a.txt": hashlib.md5(b"hello").hexdigest()}

    assert dep.publish_if_asked(ok=False) == [] and not zenodo.depositions[dep_id].submitted
    changes = dep.publish_if_asked(ok=True)
    record = json.loads((tmp_path / "s.json").read_text())["targets"]["z"]
    doi = zenodo.depositions[dep_id].doi
    assert zenodo.depositions[dep_id].submitted and doi and record["record_url"]
    assert record["published"] is True and record["doi"] == doi
    assert changes == [Change("+", "published", f"DOI {doi} — {record['record_url']}")]
    api.close()


def test_published_and_current_means_no_draft(zenodo, tmp_path):
    """A published record whose files and metadata are current: prepare() opens nothing and `draft` stays None."""
    first, api = opened(zenodo, tmp_path, publish=True)
    first.read()
    f = local(tmp_path, "a.txt", b"hello")
    first.prepare(upload_plan(f))
    first.put(f, "a.txt", lambda n: None)
    first.publish_if_asked(ok=True)
    api.close()

    again, api = opened(zenodo, tmp_path)
    assert set(again.read()) == {"a.txt"}
    assert again.published is not None and again.current is again.published
    zenodo.reset_log()
    assert again.prepare(Plan("z", "u", ())) == [] and again.draft is None
    assert zenodo.count("POST") == 0 and zenodo.deposition_count() == 1
    assert again.publish_if_asked(ok=True) == []
    api.close()


def test_files_change_on_a_published_record_opens_a_new_version_and_removes(zenodo, tmp_path):
    first, api = opened(zenodo, tmp_path, publish=True)
    first.read()
    a, b = local(tmp_path, "a.txt", b"hello"), local(tmp_path, "b.txt", b"world")
    first.prepare(upload_plan(a, b))
    for f in (a, b):
        first.put(f, f.key, lambda n: None)
    first.publish_if_asked(ok=True)
    old_id = int(first.draft["id"])
    api.close()

    again, api = opened(zenodo, tmp_path)
    listed = again.read()
    gone = listed["b.txt"]
    changes = again.prepare(Plan("z", "u", (Action(Kind.DELETE, "b.txt", gone.size, remote=gone),)))
    new_id = int(again.draft["id"])
    assert new_id != old_id
    assert changes == [Change("+", "deposition", f"new version draft {new_id} of record {old_id}")]
    assert set(again.files) == {"a.txt", "b.txt"}     # the new version starts with the record's files
    again.remove(gone)
    assert zenodo.files_of(new_id) == {"a.txt": hashlib.md5(b"hello").hexdigest()}
    assert zenodo.files_of(old_id) == {"a.txt": hashlib.md5(b"hello").hexdigest(),
                                       "b.txt": hashlib.md5(b"world").hexdigest()}   # the record is untouched
    assert json.loads((tmp_path / "s.json").read_text())["targets"]["z"]["deposition_id"] == new_id
    api.close()
