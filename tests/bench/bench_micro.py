"""Part 2: micro-benchmarks of cartsync's pieces.

  hash    cartsync.inventory.inventory (fresh HashCache) vs md5sum and `xargs -P nproc md5sum` on the
          same files; then a warm re-run that must hash 0 bytes
  plan    `cartsync plan` no-op over many tiny files, local-folder and loopback-S3 targets
  rss     peak RSS of `cartsync apply` uploading one big file to the loopback S3 server
  zenodo  HTTP requests of a no-op Zenodo sync against tests/fakes/zenodo_fake.py (if the backend exists)
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchlib import (
    BENCH,
    REPO,
    UNDER_TEST,
    MiB,
    cartsync_cmd,
    clean_env,
    human,
    local_manifest,
    log,
    max_rss_from_time_v,
    median,
    nproc,
    run,
    s3_env,
    s3_manifest,
    secs,
    tiny_tree,
    write_random,
)

WORKER = BENCH / "bench_worker.py"


# ---- hashing --------------------------------------------------------------------------------------

def bench_hash(work: Path, n_files: int, file_size: int, reps: int) -> dict[str, Any]:
    folder = work / "hash"
    shutil.rmtree(folder, ignore_errors=True)
    block = os.urandom(64 * MiB)
    files = [folder / f"part-{i:02d}.bin" for i in range(n_files)]
    for f in files:
        write_random(f, file_size, block)
    total = n_files * file_size
    cores = nproc()
    env = clean_env()
    for f in files:                              # same page-cache state for everyone: all cached
        with open(f, "rb", buffering=0) as fh:
            while fh.read(8 * MiB):
                pass
    log(f"hash: {n_files} x {human(file_size)} = {human(total)}; {cores} cores")
    out: dict[str, Any] = {"files": n_files, "bytes": total, "nproc": cores, "runs": {}}

    def timed(name: str, cmd: list[str], stdin: str | None = None) -> None:
        runs = []
        for _ in range(reps):
            r = run(cmd, env=env, timeout=900, stdin=stdin)
            runs.append({"seconds": r.seconds, "cpu": r.cpu, "ok": r.ok})
        out["runs"][name] = runs
        s = median([x["seconds"] for x in runs if x["ok"]])
        log(f"hash: {name:22s} {secs(s)}  ({human(total / s) if s else '?'}/s)")

    timed("md5sum (1 process)", ["md5sum", *files])
    xargs = ["xargs", "-0", "-P", str(cores), "-n", str(max(1, n_files // (cores * 2))), "md5sum"]
    timed(f"xargs -P{cores} md5sum", xargs, stdin="".join(f"{f}\0" for f in files))
    cold, warm = [], []
    for rep in range(reps):
        db = work / "hash-cache" / f"r{rep}" / "hashes.sqlite3"
        shutil.rmtree(db.parent, ignore_errors=True)
        for bucket in (cold, warm):
            r = run([sys.executable, str(WORKER), "hash", "--cache", str(db), *map(str, files)], env=env, timeout=900)
            if r.ok:
                bucket.append(json.loads(r.stdout.strip().splitlines()[-1]) | {"wall": r.seconds})
            else:
                bucket.append({"error": r.tail(400)})
    out["runs"]["cartsync cold"] = cold
    out["runs"]["cartsync warm"] = warm
    good = [c for c in cold if "seconds" in c]
    s_cold = median([c["seconds"] for c in good])
    s_warm = median([w["seconds"] for w in warm if "seconds" in w])
    s_md5 = median([x["seconds"] for x in out["runs"]["md5sum (1 process)"] if x["ok"]])
    s_par = median([x["seconds"] for x in out["runs"][f"xargs -P{cores} md5sum"] if x["ok"]])
    cpu_cold = median([c["cpu"] / c["seconds"] for c in good]) if good else None
    out["summary"] = {
        "cartsync_cold_s": s_cold, "cartsync_warm_s": s_warm, "md5sum_s": s_md5, "md5sum_parallel_s": s_par,
        "cartsync_MBps": total / s_cold / 1e6 if s_cold else None,
        "md5sum_MBps": total / s_md5 / 1e6 if s_md5 else None,
        "md5sum_parallel_MBps": total / s_par / 1e6 if s_par else None,
        "cartsync_cores_used": cpu_cold,
        # per core: cartsync's throughput / nproc against one md5sum process
        "per_core_ratio": (s_md5 / s_cold / cores) if s_cold and s_md5 else None,
        "vs_parallel_md5sum": (s_par / s_cold) if s_cold and s_par else None,
        "warm_bytes_hashed": max((w.get("bytes_hashed", -1) for w in warm), default=None),
        "cold_bytes_hashed": median([c.get("bytes_hashed") for c in good]),
    }
    sm = out["summary"]
    log(f"hash: cartsync cold {secs(s_cold)} ({sm['cartsync_MBps'] or 0:.0f} MB/s, "
        f"{cpu_cold or 0:.2f} cores busy), warm {secs(s_warm)} hashing {sm['warm_bytes_hashed']} B; "
        f"per-core ratio {sm['per_core_ratio'] or 0:.2f}, vs xargs {sm['vs_parallel_md5sum'] or 0:.2f}")
    shutil.rmtree(folder, ignore_errors=True)
    return out


# ---- plan over many files ------------------------------------------------------------------------

def _seed_s3(bucket: str, prefix: str, src: Path) -> int:
    """Fill the bucket through moto's in-process API (what a finished apply leaves: one object per
    file, single-part ETag = MD5). Over HTTP moto takes ~270 PUT/s, i.e. minutes for 100k files."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    from cartsync.backends.s3.client import content_type
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    n = 0
    for root, _, names in os.walk(src):
        for name in names:
            p = Path(root) / name
            key = backend.put_object(bucket, f"{prefix}/{p.relative_to(src).as_posix()}", p.read_bytes())
            key.set_metadata({"Content-Type": content_type(p.name)})     # the header an apply sets
            n += 1
    return n


def bench_plan(srv, work: Path, counts: list[int], reps_for: dict[int, int], real_apply_max: int,
               peers_s5cmd: str | None, s3_max: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": {}}
    url = srv.endpoint_url
    for n in counts:
        reps = reps_for.get(n, 1)
        res: dict[str, Any] = {"reps": reps}
        out["sizes"][str(n)] = res
        src = work / f"tiny-{n}"
        cache = work / f"plan-cache-{n}"
        shutil.rmtree(cache, ignore_errors=True)
        env = s3_env(work, url, CARTSYNC_CACHE_DIR=str(cache))
        t0 = time.perf_counter()
        tiny_tree(src, n)
        log(f"plan {n}: generated {n} tiny files in {time.perf_counter() - t0:.1f} s")
        real = n <= real_apply_max

        # local folder target (first: its apply warms the hash cache of the source, shared with S3)
        dest = work / f"tiny-{n}-out"
        shutil.rmtree(dest, ignore_errors=True)
        if not real:
            shutil.copytree(src, dest)
        m_local = local_manifest(work / "manifests" / f"plan-{n}-local.yaml", src, dest)
        r = run([*cartsync_cmd(), "-q", "apply", str(m_local), "--no-progress", "--jobs", "16"], env=env, timeout=1200)
        res["local_apply"] = {"seconds": r.seconds, "ok": r.ok, "prefilled": not real,
                              "error": None if r.ok else r.tail()}
        log(f"plan {n}: local apply ({'real copy' if real else 'target pre-copied, hashes both sides'}) "
            f"{secs(r.seconds)} rc={r.rc} {'' if r.ok else r.tail()}")
        res["local_plan"] = _time_plans(m_local, env, reps, f"plan {n}: local plan")

        # loopback S3 target (not above s3_max: its first plan reads every object's headers, ~8 ms each on moto)
        if s3_max is not None and n > s3_max:
            continue
        bucket = srv.create_bucket(f"plan-{n}")
        if real:
            m_s3 = s3_manifest(work / "manifests" / f"plan-{n}-s3.yaml", src, bucket, "tiny", url)
            r = run([*cartsync_cmd(), "-q", "apply", str(m_s3), "--no-progress", "--jobs", "16"], env=env,
                    timeout=1200)
            res["s3_apply"] = {"seconds": r.seconds, "ok": r.ok, "prefilled": False,
                               "error": None if r.ok else r.tail()}
            log(f"plan {n}: s3 apply (real upload) {secs(r.seconds)} rc={r.rc} {'' if r.ok else r.tail()}")
        else:
            t0 = time.perf_counter()
            k = _seed_s3(bucket, "tiny", src)
            res["s3_apply"] = {"seconds": None, "ok": True, "prefilled": True,
                               "prefill_seconds": time.perf_counter() - t0}
            m_s3 = s3_manifest(work / "manifests" / f"plan-{n}-s3.yaml", src, bucket, "tiny", url)
            log(f"plan {n}: s3 target pre-filled in-process with {k} objects "
                f"in {time.perf_counter() - t0:.1f} s (hash cache already warm from the local apply)")
        if not real:
            # objects another tool put there: the first plan reads each one's headers once (a HEAD each,
            # remembered in the cache folder); the no-op plans after it read the listing only
            first = _time_plans(m_s3, env, 1, f"plan {n}: s3 first plan of objects another tool put (HEAD each)")
            res["s3_first_plan"] = first
        srv.reset_counts()
        res["s3_plan"] = _time_plans(m_s3, env, reps, f"plan {n}: s3 plan")
        res["s3_plan"]["list_requests"] = srv.counts()["list_total"] / max(1, reps)
        if peers_s5cmd:
            r = run([peers_s5cmd, "--endpoint-url", url, "ls", f"s3://{bucket}/tiny/*"], env=env, timeout=1200)
            lines = r.stdout.count("\n")
            res["s3_list_floor"] = {"seconds": r.seconds, "ok": r.ok, "objects": lines}
            log(f"plan {n}: listing floor (s5cmd ls, {lines} objects) {secs(r.seconds)}")
        shutil.rmtree(dest, ignore_errors=True)
        srv.reset_state()
    return out


def _time_plans(manifest: Path, env: dict, reps: int, label: str) -> dict[str, Any]:
    runs = []
    for _ in range(reps):
        r = run([*cartsync_cmd(), "-q", "plan", str(manifest), "--detailed-exitcode"], env=env, timeout=1200)
        # --detailed-exitcode: 0 = no changes (what we want), 2 = changes, 1 = error
        runs.append({"seconds": r.seconds, "cpu": r.cpu, "rc": r.rc, "no_changes": r.rc == 0,
                     "error": None if r.rc in (0, 2) else r.tail()})
    s = median([x["seconds"] for x in runs if x["rc"] in (0, 2)])
    each = ", ".join(f"{x['seconds']:.2f}" for x in runs)
    log(f"{label}: {secs(s)} (runs {each}; "
        f"{'no changes' if all(x['no_changes'] for x in runs) else 'CHANGES/ERROR: ' + str(runs[-1]['error'])})")
    return {"seconds": s, "runs": runs, "no_changes": all(x["no_changes"] for x in runs)}


# ---- peak RSS -------------------------------------------------------------------------------------

def bench_rss(srv, work: Path, size: int) -> dict[str, Any]:
    src = work / "rss-src"
    shutil.rmtree(src, ignore_errors=True)
    big = src / "big.pmtiles"
    t0 = time.perf_counter()
    write_random(big, size, os.urandom(64 * MiB))
    with open(big, "rb") as f:
        assert any(f.read(1 << 16)), "file must not be all zeros"
    log(f"rss: wrote {human(size)} in {time.perf_counter() - t0:.1f} s")
    bucket = srv.create_bucket("rss")
    cache = work / "rss-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = s3_env(work, srv.endpoint_url, CARTSYNC_CACHE_DIR=str(cache))
    m = s3_manifest(work / "manifests" / "rss.yaml", src, bucket, "big", srv.endpoint_url)
    cmd = [*cartsync_cmd(), "-q", "apply", str(m), "--no-progress", "--jobs", "16"]
    timev = Path("/usr/bin/time")
    srv.reset_counts()
    poll_peak = [0]
    stop = threading.Event()
    if timev.exists():
        r = run([str(timev), "-v", *cmd], env=env, timeout=1800)
        peak = max_rss_from_time_v(r.stderr)
        method = "/usr/bin/time -v (Maximum resident set size)"
    else:
        import subprocess

        import psutil
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        ps = psutil.Process(p.pid)

        def poll():
            while not stop.is_set():
                try:
                    rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
                    poll_peak[0] = max(poll_peak[0], rss)
                except psutil.Error:
                    pass
                time.sleep(0.05)
        th = threading.Thread(target=poll, daemon=True)
        th.start()
        o, e = p.communicate()
        stop.set()
        th.join()
        from benchlib import RunResult
        r = RunResult(time.perf_counter() - t0, p.returncode, o.decode(), e.decode())
        peak, method = poll_peak[0], "psutil polling every 50 ms"
    c = srv.counts()
    out = {"bytes": size, "seconds": r.seconds, "ok": r.ok, "peak_rss": peak, "method": method,
           "objects": c["PutObject"] + c["CreateMultipartUpload"], "parts": c["UploadPart"],
           "bytes_received": srv.bytes_received, "error": None if r.ok else r.tail()}
    log(f"rss: cartsync apply of {human(size)}: {secs(r.seconds)}, peak RSS {human(peak)} "
        f"({c['UploadPart']} parts, {human(srv.bytes_received)} received) {'' if r.ok else r.tail()}")
    shutil.rmtree(src, ignore_errors=True)
    srv.reset_state()
    return out


# ---- Zenodo ---------------------------------------------------------------------------------------

def bench_zenodo(work: Path, counts: tuple[int, ...] = (10, 90)) -> dict[str, Any]:
    root = Path(UNDER_TEST["path"]) if UNDER_TEST["path"] else REPO
    if not any((root / "cartsync" / "backends" / p).exists() for p in ("zenodo.py", "zenodo")):
        log("zenodo: skipped: zenodo backend not present")
        return {"skipped": "zenodo backend not present"}
    from zenodo_fake import ZenodoFake
    out: dict[str, Any] = {"counts": {}}
    with ZenodoFake() as fake:
        for n in counts:
            src = work / f"zenodo-{n}"
            shutil.rmtree(src, ignore_errors=True)
            src.mkdir(parents=True)
            for i in range(n):
                (src / f"file-{i:03d}.tsv").write_bytes(os.urandom(256 + i))
            mdir = work / "manifests" / f"zenodo-{n}"
            shutil.rmtree(mdir, ignore_errors=True)
            mdir.mkdir(parents=True)
            m = mdir / "manifest.yaml"
            m.write_text(
                "version: 1\n"
                f"source:\n  dir: {json.dumps(str(src))}\n  method: all\n"
                "targets:\n"
                "  - name: z\n"
                "    zenodo:\n"
                f"      url: {json.dumps(fake.url)}\n"
                "      token_env: ZT\n"
                "      deposition: new\n"
                "      metadata: {title: Bench data, upload_type: dataset, description: d, "
                "creators: [\"Doe, Jane\"]}\n")
            cache = work / f"zenodo-cache-{n}"
            shutil.rmtree(cache, ignore_errors=True)
            env = s3_env(work, "http://127.0.0.1:1", ZT="test-token", CARTSYNC_CACHE_DIR=str(cache))
            cmd = [*cartsync_cmd(), "-q", "apply", str(m), "--no-progress"]
            first = run(cmd, env=env, timeout=600)
            fake.reset_log()
            second = run(cmd, env=env, timeout=600)
            with fake._lock:
                reqs = list(fake.requests)
            res = {"first_ok": first.ok, "first_seconds": first.seconds, "noop_ok": second.ok,
                   "noop_seconds": second.seconds, "requests": len(reqs),
                   "log": [f"{m_} {p} {s}" for m_, p, s in reqs],
                   "error": None if first.ok and second.ok else (first.tail() if not first.ok else second.tail())}
            out["counts"][str(n)] = res
            log(f"zenodo {n} files: first apply rc={first.rc} {secs(first.seconds)}; no-op re-run "
                f"{secs(second.seconds)}, {len(reqs)} request(s): {', '.join(res['log'][:8])}"
                f"{'' if res['error'] is None else ' ERROR ' + res['error']}")
    return out
