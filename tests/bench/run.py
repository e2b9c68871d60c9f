#!/usr/bin/env python
"""cartsync benchmark harness (issue 6): cartsync vs aws s3 sync, s5cmd and rclone against one loopback
moto S3 server, plus micro-benchmarks (hashing, plan over many files, peak RSS, Zenodo requests).

    python tests/bench/run.py            # everything, ~40 min on 2 cores; writes results/latest.{md,json}
    python tests/bench/run.py --quick    # smoke run of every code path (~1-2 min); writes results/quick.{md,json}
    python tests/bench/run.py --parts sync          # only the tool comparison (or: hash,plan,rss,zenodo)
    python tests/bench/run.py --profile  # also py-spy profiles of cartsync's no-op and plan (results/profile-*.txt)

Not collected by pytest (no test_*.py names). See tests/bench/README.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    RESULTS,
    UNDER_TEST,
    DatasetSpec,
    GiB,
    MiB,
    elapsed,
    find_peers,
    fmt_ratio,
    freeze_cartsync,
    human,
    log,
    machine_info,
    secs,
    write_json,
)

PARTS = ("sync", "hash", "plan", "rss", "zenodo", "collection")


def config(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        return {
            "reps": args.reps or 1,
            "spec": DatasetSpec(n_small=150, n_medium=4, medium_min=5 * MiB, medium_max=20 * MiB,
                                n_large=2, large_size=40 * MiB),
            "n_touch": 20, "n_change": 4,
            "hash": (4, 16 * MiB), "hash_reps": 1,
            "plan_counts": [1000, 3000], "plan_reps": {1000: 2, 3000: 1}, "plan_real_apply_max": 1000,
            "rss_size": 256 * MiB,
            "collection": 20,
        }
    return {
        "reps": args.reps or 3,
        "spec": DatasetSpec(),
        "n_touch": 100, "n_change": 10,
        "hash": (16, 64 * MiB), "hash_reps": 3,
        # 100k: one plan run (moto's listing alone takes ~1 min there); 20k: three
        "plan_counts": [20000, 100000], "plan_reps": {20000: 3, 100000: 1}, "plan_real_apply_max": 0,
        "plan_s3_max": 20000,
        "rss_size": 2 * GiB,
        "collection": 200,
    }


# ---- targets --------------------------------------------------------------------------------------

def evaluate(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(name: str, met: bool | None, measured: str, note: str = "") -> None:
        rows.append({"target": name, "met": met, "measured": measured, "note": note})

    sync = res.get("sync")
    if sync:
        summ = sync["summary"]
        cs = summ.get("cartsync", {})

        def r(peer: str, step: str, limit: float, label: str) -> None:
            v = (summ.get(peer) or {}).get(step)
            if v is None:
                add(label, None, "peer not run")
                return
            x = v.get("cartsync_over_peer")
            add(label, None if x is None else x <= limit, fmt_ratio(x),
                f"cartsync {secs(cs.get(step, {}).get('seconds'))} vs {peer} {secs(v.get('seconds'))}")

        # issue 16's targets
        fastest = {p: v["a"]["seconds"] for p in ("aws", "s5cmd", "rclone")
                   if (v := summ.get(p)) and v.get("a") and v["a"]["seconds"]}
        a = (cs.get("a") or {}).get("seconds")
        if fastest and a:
            best = min(fastest, key=fastest.__getitem__)
            x = a / fastest[best]
            add(f"first sync (a) <= 0.9x the fastest peer ({best})", x <= 0.9, fmt_ratio(x),
                f"cartsync {secs(a)} · {cs['a']['cpu']:.1f} CPU-s vs " + ", ".join(
                    f"{p} {secs(t)} · {summ[p]['a']['cpu']:.1f} CPU-s" for p, t in fastest.items()))
        ceil = ((summ.get("ceiling") or {}).get("a") or {}).get("seconds")
        if ceil and a:
            add("first sync (a) <= 1.25x the server ceiling", a / ceil <= 1.25, fmt_ratio(a / ceil),
                f"cartsync {secs(a)} vs ceiling {secs(ceil)}")
        floor = (sync.get("list_floor") or {}).get("seconds")
        b = (cs.get("b") or {}).get("seconds")
        if floor and b:
            add("no-op (b) <= 1.2x the server's listing of the prefix (s5cmd ls)", b / floor <= 1.2,
                fmt_ratio(b / floor), f"cartsync {secs(b)} vs s5cmd ls {secs(floor)} "
                f"({sync['list_floor']['objects']} keys)")
        r("s5cmd", "b", 0.6, "no-op (b) <= 0.6x s5cmd")
        # issue 6's, kept to see them hold
        r("aws", "b", 0.5, "no-op (b) <= 0.5x aws s3 sync (issue 6)")
        r("s5cmd", "a", 1.0, "first sync (a) <= 1.0x s5cmd (issue 6)")
        c = cs.get("c")
        if c:
            worst = max(m["objects"] for m in sync["tools"]["cartsync"]["steps"]["c"])
            add(f"(c) 0 objects re-sent after touching {len(sync['touched'])} mtimes", worst == 0,
                f"{worst} object(s) sent (worst of {len(sync['tools']['cartsync']['steps']['c'])} runs)")
        d = cs.get("d")
        if d:
            n = len(sync["changed"])
            runs = sync["tools"]["cartsync"]["steps"]["d"]
            caught = min(m["caught"] for m in runs)
            extra = max(m["objects"] - m["caught"] for m in runs)
            add(f"(d) all {n} same-size/same-mtime changes caught, nothing else sent",
                caught == n and extra == 0, f"{caught}/{n} caught, {extra} other object(s) sent (worst run)")
    h = res.get("hash")
    if h:
        s = h["summary"]
        pc = s.get("per_core_ratio")
        add("hashing >= 0.9x md5sum per core, all cores used", None if pc is None else pc >= 0.9,
            fmt_ratio(pc), f"cartsync {s['cartsync_MBps'] or 0:.0f} MB/s on {h['nproc']} cores "
            f"({s['cartsync_cores_used'] or 0:.2f} cores busy) vs md5sum {s['md5sum_MBps'] or 0:.0f} MB/s "
            f"per process; vs xargs -P{h['nproc']} md5sum {fmt_ratio(s['vs_parallel_md5sum'])}")
        wb = s.get("warm_bytes_hashed")
        add("warm re-plan hashes 0 bytes", wb == 0, f"{wb} bytes hashed (HashCache.bytes_hashed)")
    rs = res.get("rss")
    if rs:
        peak = rs.get("peak_rss")
        add(f"peak RSS for a {human(rs['bytes'])} upload <= 200 MB",
            None if peak is None or not rs["ok"] else peak <= 200e6,
            human(peak), f"{rs['method']}; upload {'ok' if rs['ok'] else 'FAILED'} in {secs(rs['seconds'])}")
    z = res.get("zenodo")
    if z is not None:
        if "skipped" in z:
            add("Zenodo no-op <= 3 requests", None, "skipped: zenodo backend not present")
        else:
            worst = {n: v["requests"] for n, v in z["counts"].items()}
            ok = all(v["noop_ok"] and v["first_ok"] for v in z["counts"].values())
            add("Zenodo no-op <= 3 requests", (max(worst.values()) <= 3) if ok else False,
                ", ".join(f"{n} files: {k}" for n, k in worst.items()) + ("" if ok else " (a run FAILED)"))
    c = res.get("collection")
    if c:
        f = c["first"]
        peers = {k: v["seconds"] for k, v in f.items() if k in ("aws", "s5cmd", "rclone") and v["ok"]}
        cs = f.get("cartsync", {})
        if peers and cs.get("ok"):
            best = min(peers, key=peers.get)
            x = cs["seconds"] / peers[best]
            def srv(k: str) -> str:
                busy = f[k].get("server_cpu")
                return "" if busy is None else f", server {busy:.1f} CPU-s = {busy / f[k]['seconds']:.0%} busy"
            add(f"collection first sync <= 0.9x the fastest peer ({best})", x <= 0.9, fmt_ratio(x),
                f"cartsync {secs(cs['seconds'])} (cpu {cs['cpu']:.1f} s{srv('cartsync')}) vs " +
                ", ".join(f"{k} {secs(v)} (cpu {f[k]['cpu']:.1f} s{srv(k)})" for k, v in peers.items()))
        if "ceiling" in f and cs.get("ok"):
            x = cs["seconds"] / f["ceiling"]["seconds"]
            add("collection first sync vs server ceiling (informational)", None, fmt_ratio(x),
                f"ceiling {secs(f['ceiling']['seconds'])}{srv('ceiling')}")
        if c.get("noop_plan") and c.get("list_floor"):
            x = c["noop_plan"]["seconds"] / c["list_floor"]["seconds"]
            add("collection no-op plan <= 1.2x one listing (s5cmd ls)", x <= 1.2, fmt_ratio(x),
                f"plan {secs(c['noop_plan']['seconds'])}, {c['noop_plan']['list_requests']} listing request(s); "
                f"s5cmd ls {secs(c['list_floor']['seconds'])}")
        sh = c.get("shards")
        if sh:
            ok = sh["rc"] == [0] * sh["n"] and sh["max_per_key"] == 1 and sh["distinct"] == c["dataset"]["files"] \
                and sh["lock_conflicts"] == 0
            add(f"{sh['n']} shards together: every object once, no lock conflict", ok,
                f"{sh['objects']} sent, {sh['distinct']}/{c['dataset']['files']} distinct, rc {sh['rc']}",
                f"{secs(sh['seconds'])}; {sh['list_requests']} listing requests in all")
            peaks = [p for p in sh["peak_rss"] if p]
            add("peak RSS <= 200 MB per shard process", (max(peaks) <= 200e6) if peaks else None,
                ", ".join(human(p) for p in peaks) or "not measured")
    zc = res.get("zenodo_collection")
    if zc:
        add(f"Zenodo collection of {zc['datasets']}: {zc['datasets']} depositions", zc["depositions"] == zc["datasets"]
            and zc["first_ok"], f"{zc['depositions']} made", "" if zc["error"] is None else zc["error"])
        add("Zenodo collection no-op <= 2 requests per dataset", zc["noop_ok"] and
            zc["noop_requests"] <= 2 * zc["datasets"], f"{zc['noop_requests']} requests")
        add("Zenodo collection: no minute over 100 requests", zc["busiest_minute"] <= 100,
            f"busiest minute {zc['busiest_minute']}")
    return rows


# ---- report ---------------------------------------------------------------------------------------

def render(res: dict[str, Any]) -> str:
    from bench_sync import table
    m = res["machine"]
    out = [f"# cartsync benchmark{' (QUICK smoke run: numbers not representative)' if res['quick'] else ''}",
           "",
           f"- date: {m['date']}; total harness time {res['total_seconds']:.0f} s",
           f"- machine: {m['nproc']} cores, {m['cpu_model']}, {human(m['mem_total'])} RAM; Python {m['python']}; "
           f"{m['platform']}",
           f"- cartsync under test: {m.get('cartsync_under_test')}; moto {m['packages']['moto']}, "
           f"boto3 {m['packages']['boto3']}, s3fs {m['packages']['s3fs']}",
           "- peers: " + "; ".join(f"{k}: {v or 'not available'}" for k, v in res["peers"]["versions"].items()),
           "- server: moto's S3 server (tests/fakes/s3server.py) on 127.0.0.1 inside the harness process; every tool"
           " runs as a subprocess. Objects = PutObject + CreateMultipartUpload, bytes = PutObject/UploadPart"
           " payload, counted at the server.",
           ]
    for n in res["peers"]["notes"]:
        out.append(f"- {n}")
    sync = res.get("sync")
    if sync:
        ds, sp = sync["dataset"], res["config"]["spec"]
        out += ["", "## Sync: cartsync vs peers", "",
                f"Dataset: run_cartload2-shaped, {ds['files']} files, {human(ds['bytes'])} ({sp['n_small']} small "
                f"{human(sp['small_min'])}–{human(sp['small_max'])}, {sp['n_medium']} of "
                f"{human(sp['medium_min'])}–{human(sp['medium_max'])}, {sp['n_large']} × ~{human(sp['large_size'])}, "
                f"catalog.yaml). Median of {sync['reps']} run(s) per cell; "
                "'cs/peer' = cartsync time / peer time (< 1 means cartsync is faster); CPU-s = the tool's user+sys CPU seconds (its child processes included).",
                "(a) first sync to a fresh bucket; (b) immediate no-op re-run (after each (a)); "
                f"(c) re-run after touching the mtimes of {len(sync['touched'])} files (no big ones); "
                f"(d) re-run after changing the content of {len(sync['changed'])} files with size and mtime kept "
                f"({sum(1 for s in sync['changed_sizes'].values() if s > 16 * MiB)} of them multipart-sized: "
                + ", ".join(f"{k} {human(v)}" for k, v in sync["changed_sizes"].items() if v > 16 * MiB) + ").",
                "", table(sync), ""]
        for name, t in sync["tools"].items():
            out.append(f"- **{t['label']}**: `{t['command']}`" + (f" — {t['note']}" if t["note"] else ""))
        out.append("- per-run times (s): " + "; ".join(
            f"{name} " + " ".join(f"{st}=[{', '.join(f'{x:.2f}' for x in v['all_seconds'])}]"
                                  for st, v in s.items())
            for name, s in sync["summary"].items()))
        for n in sync["notes"]:
            out.append(f"- {n}")
    h = res.get("hash")
    if h:
        s = h["summary"]
        out += ["", "## Micro: hashing", "",
                f"{h['files']} files × {human(h['bytes'] / h['files'])} = {human(h['bytes'])}, all in the page "
                f"cache; median of {len(h['runs']['cartsync cold'])}. 'cold' = fresh HashCache.", "",
                "| hasher | time | throughput | note |", "|---|---|---|---|",
                f"| md5sum (1 process) | {secs(s['md5sum_s'])} | {s['md5sum_MBps'] or 0:.0f} MB/s | |",
                f"| xargs -P{h['nproc']} md5sum | {secs(s['md5sum_parallel_s'])} | "
                f"{s['md5sum_parallel_MBps'] or 0:.0f} MB/s | |",
                f"| cartsync inventory, cold | {secs(s['cartsync_cold_s'])} | {s['cartsync_MBps'] or 0:.0f} MB/s | "
                f"{s['cartsync_cores_used'] or 0:.2f} cores busy; {human(s['cold_bytes_hashed'])} hashed |",
                f"| cartsync inventory, warm | {secs(s['cartsync_warm_s'])} | – | "
                f"{s['warm_bytes_hashed']} bytes hashed |"]
    p = res.get("plan")
    if p:
        out += ["", "## Micro: no-op `cartsync plan` over many tiny files", "",
                "Hash cache warm (one apply done before). 'listing floor' = `s5cmd ls` of the same prefix: "
                "the time moto alone needs to list it.", "",
                "| files | target | setup | plan (median) | runs | list requests | listing floor |",
                "|---|---|---|---|---|---|---|"]
        for n, v in p["sizes"].items():
            la, sa = v["local_apply"], v.get("s3_apply", {})
            out.append(f"| {int(n):,} | local folder | "
                       f"{'pre-copied, then ' if la['prefilled'] else ''}apply {secs(la['seconds'])} | "
                       f"{secs(v['local_plan']['seconds'])} | {len(v['local_plan']['runs'])} | – | – |")
            if "s3_plan" not in v:
                out.append(f"| {int(n):,} | loopback S3 | not run (above plan_s3_max) | – | – | – | – |")
                continue
            setup = (f"pre-filled in-process in {sa.get('prefill_seconds', 0):.1f} s" if sa["prefilled"]
                     else f"apply {secs(sa['seconds'])}")
            if v.get("s3_first_plan"):
                setup += f"; first plan (one HEAD per object) {secs(v['s3_first_plan']['seconds'])}"
            fl = v.get("s3_list_floor")
            out.append(f"| {int(n):,} | loopback S3 | {setup} | {secs(v['s3_plan']['seconds'])} | "
                       f"{len(v['s3_plan']['runs'])} | {v['s3_plan'].get('list_requests', 0):.0f} | "
                       f"{secs(fl['seconds']) if fl else '–'} |")
        bad = [f"{n} {k}" for n, v in p["sizes"].items() for k in ("local_plan", "s3_plan")
               if k in v and not v[k]["no_changes"]]
        if bad:
            out.append(f"\nWARNING: plan reported changes or failed for: {', '.join(bad)}")
    rs = res.get("rss")
    if rs:
        out += ["", "## Micro: peak memory", "",
                f"`cartsync apply` of one {human(rs['bytes'])} file (random content) to loopback S3: peak RSS "
                f"**{human(rs['peak_rss'])}** ({rs['method']}); {secs(rs['seconds'])}, {rs['parts']} parts, "
                f"{human(rs['bytes_received'])} received{'' if rs['ok'] else '; FAILED: ' + str(rs['error'])}."]
    z = res.get("zenodo")
    if z is not None:
        out += ["", "## Micro: Zenodo no-op requests", ""]
        if "skipped" in z:
            out.append("skipped: zenodo backend not present")
        else:
            for n, v in z["counts"].items():
                out.append(f"- {n} files: no-op re-run made **{v['requests']}** request(s) in "
                           f"{secs(v['noop_seconds'])}: {', '.join(v['log'][:10])}"
                           + ("" if v["error"] is None else f" — ERROR: {v['error']}"))
    out += ["", "## Targets", "", "| target | met | measured | detail |", "|---|---|---|---|"]
    for t in res["targets"]:
        met = {True: "met", False: "**NOT MET**", None: "n/a"}[t["met"]]
        out.append(f"| {t['target']} | {met} | {t['measured']} | {t['note']} |")
    if res.get("profiles"):
        out += ["", "## Profiles (py-spy, main thread, wall clock)", ""]
        for name, text in res["profiles"].items():
            out += [f"### {name}", "", "```", text, "```", ""]
    return "\n".join(out) + "\n"


# ---- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small smoke run of every code path (~1-2 min)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--micro", action="store_true", help="only the micro-benchmarks (= --parts hash,plan,rss,zenodo)")
    ap.add_argument("--tools", default="", help="only these peers (cartsync always runs): aws,s5cmd,rclone,"
                    "rclone-checksum,ceiling")
    ap.add_argument("--reps", type=int, default=0, help="repetitions per sync step (default 3; quick 1)")
    ap.add_argument("--work", default="", help="scratch folder (default: a new one under $TMPDIR, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    ap.add_argument("--no-install", action="store_true", help="do not pip/apt-get install missing peers")
    ap.add_argument("--rev", default="", help="benchmark this git revision of cartsync (default: a frozen copy "
                    "of the working tree, taken at start)")
    ap.add_argument("--live", action="store_true", help="use the installed cartsync as is (no frozen copy)")
    ap.add_argument("--profile", action="store_true", help="also profile cartsync with py-spy (adds ~1-2 min)")
    ap.add_argument("--out", default="", help="results file stem (default results/latest, quick: results/quick)")
    args = ap.parse_args(argv)
    parts = ["hash", "plan", "rss", "zenodo"] if args.micro else [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    cfg = config(args)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="cartsync-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    stem = Path(args.out).resolve() if args.out else RESULTS / ("quick" if args.quick else "latest")
    os.chdir(work)          # nothing below may import cartsync from the current folder by accident
    log(f"cartsync benchmark{' (quick)' if args.quick else ''}: parts {','.join(parts)}; scratch {work}")

    if not args.live:
        try:
            log(f"cartsync under test: {freeze_cartsync(work, args.rev or None)}")
        except BaseException:
            if not args.keep and not args.work:
                shutil.rmtree(work, ignore_errors=True)
            raise
    machine = machine_info()
    machine["cartsync_under_test"] = UNDER_TEST["desc"]
    log(f"machine: {machine['nproc']} cores, {machine['cpu_model']}, Python {machine['python']}")
    peers = find_peers(install=not args.no_install) if {"sync", "plan", "collection"} & set(parts) else None
    if peers:
        for k, v in peers.versions.items():
            log(f"peer {k}: {v or 'NOT AVAILABLE (skipped)'}")
    from s3server import start_s3_server
    srv = start_s3_server()
    log(f"moto S3 server on {srv.endpoint_url}")
    res: dict[str, Any] = {"quick": args.quick, "machine": machine, "parts": parts,
                           "peers": {"versions": peers.versions if peers else {}, "notes": peers.notes if peers else []},
                           "config": {k: (v.__dict__ if hasattr(v, "__dict__") else v) for k, v in cfg.items()}}
    try:
        if "sync" in parts:
            from bench_sync import run_sync, table
            only = {t.strip() for t in args.tools.split(",") if t.strip()} or None
            res["sync"] = run_sync(srv, peers, work, cfg["reps"], cfg["spec"], cfg["n_touch"], cfg["n_change"],
                                   only=only)
            log("sync: done\n" + table(res["sync"]))
            shutil.rmtree(work / "cartload2", ignore_errors=True) if not args.profile else None
        import bench_micro
        if "hash" in parts:
            n, size = cfg["hash"]
            res["hash"] = bench_micro.bench_hash(work, n, size, cfg["hash_reps"])
        if "plan" in parts:
            res["plan"] = bench_micro.bench_plan(srv, work, cfg["plan_counts"], cfg["plan_reps"],
                                                 cfg["plan_real_apply_max"], peers.paths.get("s5cmd") if peers else None,
                                                 cfg.get("plan_s3_max"))
        if "rss" in parts:
            res["rss"] = bench_micro.bench_rss(srv, work, cfg["rss_size"])
        if "zenodo" in parts:
            res["zenodo"] = bench_micro.bench_zenodo(work)
        if "collection" in parts:
            import bench_collection
            if peers is None:
                peers = find_peers(install=not args.no_install)
            res["collection"] = bench_collection.run_collection(srv, peers, work, cfg["collection"])
            res["zenodo_collection"] = bench_collection.run_zenodo_collection(work)
        if args.profile:
            import bench_profile
            res["profiles"] = bench_profile.run_profiles(srv, work, res, quick=args.quick)
    finally:
        srv.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["targets"] = evaluate(res)
    res["total_seconds"] = elapsed()
    md = render(res)
    print("\n" + md, flush=True)
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(str(stem) + ".md").write_text(md)
    write_json(Path(str(stem) + ".json"), res)
    log(f"wrote {stem}.md and {stem}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
