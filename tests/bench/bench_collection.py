"""Part "collection" (issue 16): a lab's collection of many datasets, whole and sharded, and on Zenodo.

- a generated collection (default 200 datasets x 55 files: 50 small, 4 medium, 1 PMTiles; ~2 GB);
- first sync of the whole collection: cartsync (one process, `collection: true`) vs aws s3 sync and
  s5cmd sync of the same folder, each to a fresh bucket, plus the boto3 server ceiling;
- no-op plan of the whole collection vs `s5cmd ls` of the collection prefix (the server's listing floor);
- four `cartsync apply --shard k/4` processes started together on a fresh bucket, each with its own
  cache folder: every object sent exactly once (counted at the server), all exit 0, peak RSS each;
- Zenodo: a collection of 20 datasets against tests/fakes/zenodo_fake.py: depositions made by the first apply,
  requests of a no-op re-run, and the busiest minute of the request log.
"""
from __future__ import annotations

import collections
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import (BENCH, MiB, Peers, cartsync_cmd, human, log, max_rss_from_time_v, run, s3_env, secs, server_cpu,
                      write_random)


def make_collection(root: Path, n_datasets: int, small: int = 50, medium: int = 4, seed: int = 16) -> dict[str, Any]:
    rng = random.Random(seed)
    block = os.urandom(4 * MiB)
    files = total = 0
    for i in range(n_datasets):
        ds = root / f"sample_{i:03d}"          # the folder name; the catalog id is what lands on S3
        ds.mkdir(parents=True, exist_ok=True)
        names = []
        for j in range(small):
            name = f"t{j:02d}-factor.tsv"
            size = rng.randint(10_000, 60_000)
            write_random(ds / name, size, block)
            names.append(name)
            total += size
        for j in range(medium):
            name = f"t{j}-raster.png"
            size = rng.randint(MiB // 2, 2 * MiB)
            write_random(ds / name, size, block)
            names.append(name)
            total += size
        size = 3 * MiB
        write_random(ds / "genes_all.pmtiles", size, block)
        total += size
        names.append("genes_all.pmtiles")
        assets = "".join(f"  f{j}: {n}\n" for j, n in enumerate(names))
        (ds / "catalog.yaml").write_text(f"id: sample-{i:03d}\ntitle: Sample {i}\nassets:\n{assets}")
        files += len(names) + 1
    return {"datasets": n_datasets, "files": files, "bytes": total}


def _manifest(path: Path, src: Path, bucket: str, url: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("version: 1\n"
                    f"source:\n  dir: {json.dumps(str(src))}\n  collection: true\n"
                    f"targets:\n  - name: bench\n    url: {json.dumps(f's3://{bucket}/coll')}\n"
                    f"    storage_options: {{endpoint_url: {json.dumps(url)}}}\n")
    return path


def _sent(srv, bucket: str) -> collections.Counter[str]:
    return collections.Counter(r.path for r in srv.request_log
                               if r.counted and r.op in ("PutObject", "CreateMultipartUpload")
                               and r.path.startswith(f"/{bucket}/"))


def run_collection(srv, peers: Peers, work: Path, n_datasets: int, shards: int = 4) -> dict[str, Any]:
    src = work / "collection"
    t0 = time.perf_counter()
    ds = make_collection(src, n_datasets)
    log(f"collection: {ds['datasets']} datasets, {ds['files']} files, {human(ds['bytes'])} "
        f"in {time.perf_counter() - t0:.1f} s")
    url = srv.endpoint_url
    env = s3_env(work, url)
    out: dict[str, Any] = {"dataset": ds, "first": {}, "notes": []}
    aws, s5 = peers.paths.get("aws"), peers.paths.get("s5cmd")
    tools: dict[str, Any] = {}
    tools["cartsync"] = lambda b: [*cartsync_cmd(), "-q", "apply", str(_manifest(work / "m" / f"{b}.yaml", src, b,
                                                                                   url)), "--no-progress", "--jobs", "16"]
    if aws:
        tools["aws"] = lambda b: [aws, "s3", "sync", str(src), f"s3://{b}/coll", "--endpoint-url", url,
                                  "--only-show-errors"]
    if s5:
        tools["s5cmd"] = lambda b: [s5, "--endpoint-url", url, "sync", f"{src}/", f"s3://{b}/coll/"]
    tools["ceiling"] = lambda b: [sys.executable, str(BENCH / "bench_worker.py"), "put",
                                  str(src), url, b, "coll", "--threads", "16"]
    last_bucket = ""
    for i, (name, cmd) in enumerate(tools.items()):
        srv.reset_state()
        bucket = srv.create_bucket(f"coll-{i}-{name}")
        e = dict(env, CARTSYNC_CACHE_DIR=str(work / "cache" / name))
        srv.reset_counts()
        before = server_cpu()
        r = run(cmd(bucket), env=e, timeout=3600)
        busy = server_cpu() - before
        sent = _sent(srv, bucket)
        out["first"][name] = {"seconds": r.seconds, "cpu": r.cpu, "server_cpu": busy, "ok": r.ok,
                              "objects": sum(sent.values()),
                              "error": None if r.ok else r.tail()}
        log(f"collection first sync {name}: {secs(r.seconds)} (cpu {r.cpu:.1f} s, server {busy:.1f} s), "
            f"{sum(sent.values())} objects"
            f"{'' if r.ok else ' FAILED ' + r.tail()}")
        if name == "cartsync":
            last_bucket = bucket
            m = work / "m" / f"{bucket}.yaml"
            plans = [run([*cartsync_cmd(), "-q", "plan", str(m), "--detailed-exitcode"], env=e, timeout=1200)
                     for _ in range(3)]
            srv.reset_counts()
            run([*cartsync_cmd(), "-q", "plan", str(m)], env=e, timeout=1200)
            lists = srv.counts()["list_total"]
            out["noop_plan"] = {"seconds": sorted(p.seconds for p in plans)[1], "rc": [p.rc for p in plans],
                                "list_requests": lists}
            log(f"collection no-op plan: {secs(out['noop_plan']['seconds'])} (rc {[p.rc for p in plans]}), "
                f"{lists} listing request(s)")
            if s5:
                floors = [run([s5, "--endpoint-url", url, "ls", f"s3://{bucket}/coll/*"], env=e, timeout=1200)
                          for _ in range(3)]
                out["list_floor"] = {"seconds": sorted(f.seconds for f in floors)[1],
                                     "objects": floors[0].stdout.count("\n")}
                log(f"collection listing floor (s5cmd ls): {secs(out['list_floor']['seconds'])}")
            # four shards, started together, on a fresh bucket; own cache folders ("machines")
            sbucket = srv.create_bucket("coll-shards")
            sm = _manifest(work / "m" / "shards.yaml", src, sbucket, url)
            timev = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
            srv.reset_counts()
            t1 = time.perf_counter()
            procs = []
            for k in range(1, shards + 1):
                argv = [*cartsync_cmd(), "-q", "apply", str(sm), "--shard", f"{k}/{shards}", "--no-progress",
                        "--jobs", "8"]
                procs.append(subprocess.Popen([timev, "-v", *argv] if timev else argv,
                                              env=dict(env, CARTSYNC_CACHE_DIR=str(work / "cache" / f"shard{k}")),
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            results = [p.communicate(timeout=3600) for p in procs]
            sent = _sent(srv, sbucket)
            out["shards"] = {"n": shards, "seconds": time.perf_counter() - t1, "rc": [p.returncode for p in procs],
                             "objects": sum(sent.values()), "distinct": len(sent),
                             "max_per_key": max(sent.values(), default=0),
                             "peak_rss": [max_rss_from_time_v(e_) for _, e_ in results],
                             "lock_conflicts": sum("being applied" in e_ or "is locked by" in e_ for _, e_ in results),
                             "list_requests": srv.counts()["list_total"]}
            log(f"collection {shards} shards: {secs(out['shards']['seconds'])}, rc {out['shards']['rc']}, "
                f"{out['shards']['objects']} objects ({out['shards']['distinct']} distinct), peak RSS "
                f"{[human(x) for x in out['shards']['peak_rss']]}, {out['shards']['list_requests']} listing requests")
    out["last_bucket"] = last_bucket
    srv.reset_state()
    shutil.rmtree(src, ignore_errors=True)
    return out


def run_zenodo_collection(work: Path, n: int = 20) -> dict[str, Any]:
    from zenodo_fake import ZenodoFake
    src = work / "zcoll"
    for i in range(n):
        d = src / f"ds{i:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "genes_all.pmtiles").write_bytes(os.urandom(2000 + i))
        (d / "factors.tsv").write_bytes(os.urandom(300))
        (d / "catalog.yaml").write_text(f"id: ds-{i:02d}\ntitle: Dataset {i}\nassets:\n  sge: genes_all.pmtiles\n"
                                        "  rgb: factors.tsv\n")
    m = work / "m" / "zcoll.yaml"
    m.parent.mkdir(parents=True, exist_ok=True)
    with ZenodoFake() as fake:
        m.write_text("version: 1\n"
                     f"source:\n  dir: {json.dumps(str(src))}\n  collection: true\n"
                     f"targets:\n  - name: z\n    zenodo:\n      url: {json.dumps(fake.url)}\n      token_env: ZT\n"
                     "      metadata: {upload_type: dataset, creators: [\"Doe, Jane\"]}\n")
        env = s3_env(work, "http://127.0.0.1:1", ZT="test-token", CARTSYNC_CACHE_DIR=str(work / "zc-cache"))
        cmd = [*cartsync_cmd(), "-q", "apply", str(m), "--no-progress"]
        first = run(cmd, env=env, timeout=1800)
        times = sorted(fake.request_times)
        busiest = max((sum(1 for t in times if s <= t < s + 60) for s in times), default=0)
        made = len(fake.depositions)
        fake.reset_log()
        second = run(cmd, env=env, timeout=600)
        noop = len(fake.requests)
    res = {"datasets": n, "first_ok": first.ok, "first_seconds": first.seconds, "depositions": made,
           "busiest_minute": busiest, "noop_ok": second.ok, "noop_requests": noop,
           "error": None if first.ok and second.ok else (first.tail() if not first.ok else second.tail())}
    log(f"zenodo collection of {n}: first apply {secs(first.seconds)}, {made} depositions, busiest minute "
        f"{busiest} requests; no-op {noop} requests{'' if res['error'] is None else ' ERROR ' + res['error']}")
    return res
