import os, json, shutil
from pathlib import Path
import pytest
from conftest import write_manifest, zenodo_manifest, tree

import sys
def show(tag, r):
    sys.__stdout__.write(f"\n=== {tag}\n code={r[0]}\n OUT={r[1]!r}\n ERR={r[2]!r}\n")

def s3m(tmp_path, s3, prefix="p", src="cartload2", method="catalog", extra=""):
    return write_manifest(tmp_path, f"""
        version: 1
        source:
          dir: {src}
          method: {method}
        targets:
          - name: web
            url: s3://{s3.bucket}/{prefix}
            storage_options: {{endpoint_url: "{s3.endpoint_url}"}}
        """ + extra)

def test_probe_manifest(tmp_path, monkeypatch, cli, dataset):
    monkeypatch.chdir(tmp_path)
    Path("m1.yaml").write_text("version: 1\nsource: {dir: cartload2\ntargets: []\n")
    show("malformed", cli("plan", "m1.yaml"))
    Path("m2.yaml").write_text("version: 1\nsource: cartload2\ntargets: {name: web, url: out}\n")
    show("wrongtypes", cli("plan", "m2.yaml"))
    Path("m3.yaml").write_text("version: 1\nsource:\n  dir: nope\ntargets:\n  - name: web\n    url: out\n")
    show("missingdir", cli("apply", "m3.yaml"))
    Path("m4.yaml").write_bytes(b"version: 1\n# caf\xe9\n")
    show("nonutf8 manifest", cli("plan", "m4.yaml"))
    os.mkdir("mdir")
    show("manifest is dir", cli("plan", "mdir"))
    Path("m5.yaml").write_text("version: 1\nsource:\n  dir: cartload2\ntargets:\n  - name: web\n    url: out\n    url: other\n")
    show("dupkey", cli("plan", "m5.yaml"))
    Path("m6.yaml").write_text("version: 1\nsource:\n  dir: cartload2\ntargets:\n  - name: web\n    url: out\n")
    show("bad target flag", cli("plan", "m6.yaml", "--target", "nope"))
    try:
        show("bad jobs", cli("plan", "m6.yaml", "--detailed-exitcode", "--jobs", "many"))
    except SystemExit as e:
        sys.__stdout__.write(f"SystemExit {e.code}\n")
    Path("m7.yaml").write_text("version: 1\nsource:\n  dir: cartload2/genes_all.pmtiles\ntargets:\n  - name: web\n    url: out\n")
    show("dir is file", cli("plan", "m7.yaml"))
    os.mkdir("empty")
    Path("m8.yaml").write_text("version: 1\nsource:\n  dir: empty\n  method: all\ntargets:\n  - name: web\n    url: out\n    delete: true\n")
    show("empty dir", cli("plan", "m8.yaml"))
    show("empty dir validate", cli("validate", "m8.yaml"))

def test_probe_source(tmp_path, monkeypatch, cli, dataset, s3):
    monkeypatch.chdir(tmp_path)
    m = s3m(tmp_path, s3)
    cat = dataset / "catalog.yaml"
    orig = cat.read_text()
    def runcat(tag, text, mode="plan"):
        cat.write_text(text)
        show(tag, cli(mode, m))
    runcat("cat notyaml", orig + "  bad: [unclosed\n")
    runcat("cat list", "- genes_all.pmtiles\n")
    runcat("cat empty", "")
    runcat("cat noref", "id: x\ntitle: words only\n")
    runcat("cat dotdot", orig + "extra: ../manifest.yaml\n")
    runcat("cat abs", orig + "extra: /etc/hostname.txt\n")
    (tmp_path / "secret.txt").write_text("secret")
    (dataset / "link.tsv").symlink_to(tmp_path / "secret.txt")
    runcat("cat symlink escape", orig + "extra: link.tsv\n")
    (dataset / "l1.tsv").symlink_to(dataset / "l2.tsv"); (dataset / "l2.tsv").symlink_to(dataset / "l1.tsv")
    runcat("cat symlink loop", orig + "extra: l1.tsv\n")
    (dataset / "gone.tsv").symlink_to(dataset / "nowhere.tsv")
    runcat("cat broken symlink", orig + "extra: gone.tsv\n")
    os.mkfifo(dataset / "pipe.tsv")
    runcat("cat fifo", orig + "extra: pipe.tsv\n")
    (dataset / "adir.tsv").mkdir()
    runcat("cat dir", orig + "extra: adir.tsv\n")
    (dataset / "noread.tsv").write_text("x"); (dataset / "noread.tsv").chmod(0)
    runcat("cat chmod0", orig + "extra: noread.tsv\n")
    cat.write_bytes(b"id: x\nassets: {a: genes_all.pmtiles}\n# \xff\xfe\n")
    show("cat nonutf8", cli("plan", m))
    cat.write_text(orig)
    show("counts", (0, str(s3.counts()), ""))

def test_probe_zenodo(tmp_path, monkeypatch, cli, dataset, zenodo):
    monkeypatch.chdir(tmp_path)
    tok = tmp_path / "tok"
    m = zenodo_manifest(tmp_path, zenodo.url, token_file="tok")
    def z(tag, *a):
        zenodo.reset_log()
        show(tag, cli(*a))
        sys.__stdout__.write(f" REQ={zenodo.requests}\n")
    z("tok missing", "apply", m)
    tok.write_text("")
    z("tok empty", "apply", m)
    tok.write_text("\n  \n")
    z("tok blank", "apply", m)
    tok.write_text("test-token-zz9\nsecond line\n")
    z("tok twolines", "apply", m)
    tok.write_text("test-token-zz9\u2019\n")
    z("tok nonlatin", "apply", m)
    tok.write_text("wrong-token-123\n"); tok.chmod(0o600)
    z("tok wrong", "apply", m)
    tok.write_text("test-token-zz9\n"); tok.chmod(0o644)
    z("tok world-readable plan", "plan", m)
    tok.mkdir if False else None
    m2 = zenodo_manifest(tmp_path, zenodo.url, deposition=999)
    z("dep 999", "apply", m2)
    zenodo.add_token("other-owner-token", owner=2)
    monkeypatch.setenv("ZT", "other-owner-token")
    m3 = zenodo_manifest(tmp_path, zenodo.url)
    z("create by other", "apply", m3)
    dep_id = max(zenodo.depositions)
    monkeypatch.setenv("ZT", "test-token-zz9")
    m4 = zenodo_manifest(tmp_path, zenodo.url, deposition=dep_id)
    z("not yours", "apply", m4)
    monkeypatch.delenv("ZT")
    z("env unset", "apply", m3)
    monkeypatch.setenv("ZT", "test-token-zz9")
    st = tmp_path / "manifest.cartsync-state.json"
    st.write_text("{not json")
    m5 = zenodo_manifest(tmp_path, zenodo.url)
    z("state corrupt", "apply", m5)
    st.write_text('{"targets": {"doi": {"deposition_id": "abc"}}}')
    z("state weird id", "apply", m5)
    st.write_text('[1,2]')
    z("state list", "apply", m5)

def zman(folder, url, src="cartload2", method="catalog", **z):
    import yaml
    target = {"name": "doi"}
    for key in ("delete", "overwrite"):
        if key in z:
            target[key] = z.pop(key)
    target["zenodo"] = {"url": url, **z, "metadata": {
        "title": "T title", "upload_type": "dataset", "description": "d", "creators": ["Doe, Jane"]}}
    data = {"version": 1, "source": {"dir": src, "method": method}, "targets": [target]}
    p = folder / "zm.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p

def test_probe_token(tmp_path, monkeypatch, cli, dataset, zenodo):
    monkeypatch.chdir(tmp_path)
    tok = tmp_path / "tok"
    m = zman(tmp_path, zenodo.url, token_file="tok")
    def z(tag, *a):
        zenodo.reset_log()
        show(tag, cli(*a))
        sys.__stdout__.write(f" REQ={zenodo.requests}\n")
    z("tok missing", "apply", m)
    tok.write_text("")
    z("tok empty", "apply", m)
    tok.write_text("\n  \n")
    z("tok blank", "apply", m)
    tok.write_text("test-token-zz9\nsecond line\n")
    z("tok twolines", "apply", m)
    tok.write_text("test-token-zz9\u2019\n")
    z("tok nonlatin", "apply", m)
    tok.write_text("wrong-token-123\n"); tok.chmod(0o600)
    z("tok wrong", "apply", m)
    tok.unlink(); tok.mkdir()
    z("tok dir", "apply", m)
    tok.rmdir()
    tok.write_text("test-token-zz9\n"); tok.chmod(0o644)
    z("tok world-readable plan", "plan", m)

def test_probe_s3(tmp_path, monkeypatch, cli, dataset, s3):
    from faultproxy import FaultProxy
    monkeypatch.chdir(tmp_path)
    with FaultProxy(s3.endpoint_url) as proxy:
        m = write_manifest(tmp_path, f"""
            version: 1
            source: {{dir: cartload2}}
            targets:
              - name: web
                url: s3://{s3.bucket}/p
                storage_options: {{endpoint_url: "{proxy.url}"}}
            """)
        rule = proxy.fail_always(lambda meth, t: True)
        show("denied all plan", cli("plan", m))
        sys.__stdout__.write(f" LOG={proxy.log}\n")
        proxy.reset_counters()
        show("denied all apply", cli("apply", m))
        sys.__stdout__.write(f" LOG={proxy.log}\n")
        proxy.remove_rule(rule)
        proxy.fail_always(lambda meth, t: meth in ("PUT", "POST", "DELETE"))
        proxy.reset_counters(); s3.reset_counts()
        show("denied put apply", cli("apply", m))
        sys.__stdout__.write(f" LOG={proxy.log}\n COUNTS={s3.counts()}\n")
    m = write_manifest(tmp_path, f"""
        version: 1
        source: {{dir: cartload2}}
        targets:
          - name: web
            url: s3://{s3.bucket}/p
            storage_options: {{endpoint_url: "http://127.0.0.1:9"}}
        """)
    import time; t=time.time()
    show("unreachable", cli("plan", m)); sys.__stdout__.write(f"took {time.time()-t}\n")
    m = write_manifest(tmp_path, f"""
        version: 1
        source: {{dir: cartload2}}
        targets:
          - name: web
            url: s3://no-such-bucket-zz/p
            storage_options: {{endpoint_url: "{s3.endpoint_url}"}}
        """)
    s3.reset_counts()
    show("nobucket apply", cli("apply", m)); sys.__stdout__.write(f" COUNTS={s3.counts()}\n")
    m = write_manifest(tmp_path, f"""
        version: 1
        source: {{dir: cartload2}}
        targets:
          - name: web
            url: s3://Bad_Bucket!/p
            storage_options: {{endpoint_url: "{s3.endpoint_url}"}}
        """)
    s3.reset_counts()
    show("badbucketname", cli("apply", m)); sys.__stdout__.write(f" COUNTS={s3.counts()}\n")

def test_probe_names(tmp_path, monkeypatch, cli, s3, zenodo):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "odd"; (src / "sub dir").mkdir(parents=True)
    (src / "with space.tsv").write_text("a b\n")
    (src / "ünïcødé-π.pmtiles").write_bytes(b"\x00pm")
    (src / "sub dir" / "日本語 ファイル.json").write_text("{}")
    (src / "empty.tsv").write_bytes(b"")
    (src / "100%#?&+=.txt").write_text("weird")
    m = s3m(tmp_path, s3, prefix="odd", src="odd", method="all")
    show("s3 apply", cli("apply", m)); sys.__stdout__.write(f" OBJ={s3.list_objects(s3.bucket, 'odd/')}\n")
    s3.reset_counts()
    show("s3 reapply", cli("apply", m)); sys.__stdout__.write(f" COUNTS={s3.counts()}\n")
    lm = write_manifest(tmp_path, """
        version: 1
        source: {dir: odd, method: all}
        targets:
          - {name: local, url: out}
        """, name="l.yaml")
    show("local apply", cli("apply", lm)); sys.__stdout__.write(f" TREE={tree(tmp_path/'out')}\n")
    show("local reapply", cli("apply", lm))
    (src / "sub dir").rename(src / "subdir")
    (src / "subdir" / "日本語 ファイル.json").unlink()
    zm = zman(tmp_path, zenodo.url, src="odd", method="all", token_env="ZT")
    show("zen apply", cli("apply", zm)); sys.__stdout__.write(f" FILES={ {k: f.size for d in zenodo.depositions.values() for k, f in d.files.items()} }\n")
    zenodo.reset_log()
    show("zen reapply", cli("apply", zm)); sys.__stdout__.write(f" REQ={zenodo.requests}\n")
    with open(os.path.join(os.fsencode(src), b"bad-\xff.tsv"), "w") as f:
        f.write("x")
    s3.reset_counts()
    show("nonutf8", cli("apply", m)); sys.__stdout__.write(f" COUNTS={s3.counts()}\n")

def test_probe_catalog_space(tmp_path, monkeypatch, cli, dataset, s3):
    monkeypatch.chdir(tmp_path)
    (dataset / "my genes.pmtiles").write_bytes(b"x" * 10)
    (dataset / "catalog.yaml").write_text((dataset / "catalog.yaml").read_text() + "extra: my genes.pmtiles\n")
    m = s3m(tmp_path, s3)
    show("cat space", cli("plan", m))

def test_probe_empty_wipe(tmp_path, monkeypatch, cli, s3):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    s3.put_object(s3.bucket, "p/a.pmtiles", b"published")
    m = s3m(tmp_path, s3, src="empty", method="all", extra="    delete: true\n")
    show("empty plan", cli("plan", m))

def run_as_nobody(args, env):
    import cartsync.backends.fsspec, fsspec.implementations.local  # noqa: imported before dropping privileges
    from cartsync.cli import main
    r_out, w_out = os.pipe(); r_err, w_err = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.dup2(w_out, 1); os.dup2(w_err, 2)
            os.setgroups([]); os.setgid(65534); os.setuid(65534)
            os.environ.update(env)
            sys.stdout = open(1, "w", closefd=False); sys.stderr = open(2, "w", closefd=False)
            code = main(args)
            sys.stdout.flush(); sys.stderr.flush()
        except BaseException as e:
            os.write(2, repr(e).encode())
        finally:
            os._exit(code)
    os.close(w_out); os.close(w_err)
    out = os.fdopen(r_out).read(); err = os.fdopen(r_err).read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out, err

def test_probe_perm(tmp_path, cli):
    import tempfile
    d = Path(tempfile.mkdtemp(prefix="cartsync-perm-")); d.chmod(0o777)
    try:
        (d / "src").mkdir(); (d / "src" / "a.tsv").write_text("hi"); (d / "src" / "b.tsv").write_text("x")
        (d / "src" / "b.tsv").chmod(0)
        (d / "m.yaml").write_text("version: 1\nsource: {dir: src, method: all}\ntargets:\n  - {name: local, url: out}\n")
        show("perm", run_as_nobody(["apply", str(d / "m.yaml")], {"CARTSYNC_CACHE_DIR": str(d / "cache")}))
        sys.__stdout__.write(f"{sorted(p.name for p in d.iterdir())}\n")
    finally:
        shutil.rmtree(d)

def test_probe_cache(tmp_path, monkeypatch, cli, dataset):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("CARTSYNC_CACHE_DIR", str(tmp_path / "afile" / "cache"))
    m = write_manifest(tmp_path, "version: 1\nsource: {dir: cartload2}\ntargets:\n  - {name: local, url: out}\n")
    show("cache under file", cli("apply", m))
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "hashes.sqlite3").write_bytes(b"garbage" * 100)
    monkeypatch.setenv("CARTSYNC_CACHE_DIR", str(tmp_path / "c2"))
    show("cache garbage", cli("apply", m))

def test_probe_limits(tmp_path, monkeypatch, cli, zenodo):
    monkeypatch.chdir(tmp_path)
    from cartsync.inventory import HashCache, cache_dir
    big = tmp_path / "big"; big.mkdir()
    for i in range(3):
        with open(big / f"part{i}.pmtiles", "wb") as f:
            pass
        os.truncate(big / f"part{i}.pmtiles", 17 * 10**9)
    (big / "small.tsv").write_text("x")
    c = HashCache(cache_dir() / "hashes.sqlite3")
    for p in big.iterdir():
        c.put(p.resolve(), os.stat(p), "0" * 32)
    c.close()
    m = zman(tmp_path, zenodo.url, src="big", method="all", token_env="ZT")
    import time; t = time.time()
    show("50GB", cli("apply", m)); sys.__stdout__.write(f"took {time.time()-t} REQ={zenodo.requests}\n")
    zenodo.fail_next(5, status=401)
    m = zman(tmp_path, zenodo.url, src="big", method="list", files=["small.tsv"], token_env="ZT")
    show("401", cli("apply", m)); sys.__stdout__.write(f"REQ={zenodo.requests}\n")
    zenodo.reset_log()
    src = tmp_path / "clash"; (src / "a").mkdir(parents=True); (src / "b").mkdir()
    (src / "a" / "x.tsv").write_text("1"); (src / "b" / "x.tsv").write_text("2")
    show("clash", cli("upload-zenodo", "--in-dir", "clash", "--upload-method", "files", "--files", "a/x.tsv", "b/x.tsv", "--zenodo-url", zenodo.url, "--create-new-deposition", "--title", "Clash", "--creators", "Doe, Jane", "--description", "d"))
    sys.__stdout__.write(f"REQ={zenodo.requests}\n")

def test_probe_compat(tmp_path, monkeypatch, cli, dataset, zenodo):
    monkeypatch.chdir(tmp_path)
    base = ["upload-zenodo", "--in-dir", "cartload2", "--zenodo-url", zenodo.url, "--title", "T t", "--creators", "Doe, Jane", "--description", "d"]
    show("in-list missing", cli(*base, "--upload-method", "user_list", "--in-list", "missing.txt", "--create-new-deposition"))
    show("dep abc", cli(*base, "--zenodo-deposition-id", "abc"))
    show("s3dir", cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", "/local/x"))
    show("aws in-list missing", cli("upload-aws", "--in-dir", "cartload2", "--s3-dir", "s3://b/x", "--in-list", "nope.tsv"))
    Path("m.yaml").write_text("version: 1\nsource:\n\tdir: cartload2\n")
    show("tab", cli("plan", "m.yaml"))
    Path("m.yaml").write_text('version: "1"\nsource:\n  dir: cartload2\n  exclude: "*.log"\ntargets:\n  - name: web\n    url: out\n    delete: 1\n    part_size: [16MiB]\n')
    show("types", cli("plan", "m.yaml"))
    Path("m.yaml").write_text('version: 1\nsource:\n  dir: cartload2\n  exlude: ["*.log"]\ntargets:\n  - name: web\n    url: out\n    storage_option: {anon: true}\n    overwite: always\ndelete: true\n')
    show("unknown", cli("plan", "m.yaml"))
    (dataset / "catalog.yaml").write_text("id: x\nassets: [unclosed\n")
    Path("m.yaml").write_text('version: 1\nsource:\n  dir: cartload2\ntargets:\n  - name: web\n    url: out\n')
    show("catyaml", cli("plan", "m.yaml"))
