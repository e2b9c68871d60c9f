"""Part 1: cartsync vs `aws s3 sync`, s5cmd and rclone on one dataset against one loopback moto server.

Per tool, R repetitions of:
  (a) first sync to a fresh bucket, then (b) an immediate no-op re-run against it;
then R repetitions on the last bucket of
  (c) touch the mtimes of the same N_TOUCH files, re-run;
  (d) change the content of the same N_CHANGE files (size kept, mtime put back), re-run.
Objects sent = PutObject + CreateMultipartUpload seen by the server; bytes = PutObject/UploadPart payload.
"""
from __future__ import annotations

import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from benchlib import (
    BENCH,
    DatasetSpec,
    MiB,
    Peers,
    cartsync_cmd,
    fmt_ratio,
    human,
    log,
    make_cartload2_dataset,
    median,
    ratio,
    server_cpu,
    run,
    s3_env,
    s3_manifest,
    secs,
)

SENT_OPS = ("PutObject", "CreateMultipartUpload")
WRITE_OPS = ("CopyObject", "UploadPartCopy", "DeleteObject", "DeleteObjects", "PutObjectAcl",
             "PutObjectTagging")
MULTIPART_MIN = 16 * MiB + 1          # bigger than cartsync's default part size: multipart for cartsync and aws


@dataclass
class Tool:
    name: str
    label: str
    steps: str                        # which of "abcd" it runs
    command: Callable[[str, str, Path], list[str]]      # (bucket, prefix, rep_dir) -> argv
    env: dict[str, str]
    note: str = ""


def build_tools(peers: Peers, src: Path, url: str, work: Path, only: set[str] | None) -> tuple[list[Tool], list[str]]:
    base = s3_env(work, url)
    notes: list[str] = []
    tools: list[Tool] = []

    def cs(bucket: str, prefix: str, rep_dir: Path) -> list[str]:
        m = s3_manifest(rep_dir / "manifest.yaml", src, bucket, prefix, url)
        return [*cartsync_cmd(), "-q", "apply", str(m), "--no-progress", "--jobs", "16"]

    tools.append(Tool("cartsync", "cartsync apply -j16", "abcd", cs, base,
                      "(a) with a fresh hash cache each repetition, so hashing is included"))
    aws, s5, rc = peers.paths.get("aws"), peers.paths.get("s5cmd"), peers.paths.get("rclone")
    if aws:
        tools.append(Tool("aws", "aws s3 sync", "abcd",
                          lambda b, p, d: [aws, "s3", "sync", str(src), f"s3://{b}/{p}", "--endpoint-url", url,
                                           "--only-show-errors"], base))
    else:
        notes.append("skipped: aws s3 sync (awscli not available)")
    if s5:
        tools.append(Tool("s5cmd", "s5cmd sync", "abcd",
                          lambda b, p, d: [s5, "--endpoint-url", url, "sync", f"{src}/", f"s3://{b}/{p}/"], base))
    else:
        notes.append("skipped: s5cmd (not available)")
    if rc:
        tools.append(Tool("rclone", "rclone sync", "abcd",
                          lambda b, p, d: [rc, "sync", str(src), f"moto:{b}/{p}"], base))
        tools.append(Tool("rclone-checksum", "rclone sync --checksum", "abcd",
                          lambda b, p, d: [rc, "sync", "--checksum", str(src), f"moto:{b}/{p}"], base))
    else:
        notes.append("skipped: rclone (not available)")
    worker = BENCH / "bench_worker.py"
    tools.append(Tool("ceiling", "server ceiling: boto3 PUT x16", "a",
                      lambda b, p, d: [sys.executable, str(worker), "put", str(src), url, b, p, "--threads", "16"],
                      base, "plain put_object of every file from 16 threads (no listing, no multipart, "
                            "no checksum pass)"))
    if only:
        tools = [t for t in tools if t.name in only or t.name == "cartsync"]
    return tools, notes


def pick_files(sizes: dict[str, int], n_touch: int, n_change: int, seed: int = 7) -> tuple[list[str], list[str]]:
    """The files (c) touches and (d) changes: (d) has the biggest file and the biggest file under
    100 MB that is still multipart-sized (> 16 MiB), the rest small; (c) avoids the big files."""
    rng = random.Random(seed)
    keys = sorted(k for k in sizes if k != "catalog.yaml")
    big = sorted((k for k in keys if sizes[k] >= MULTIPART_MIN), key=lambda k: -sizes[k])
    if len(big) < 2:
        raise SystemExit("dataset has fewer than 2 multipart-sized files")
    # the biggest file, and the smallest multipart-sized one (a mid-sized file just over 16 MiB)
    change = [big[0], min(big[1:], key=lambda k: sizes[k])]
    small = [k for k in keys if sizes[k] < 1 * MiB]
    rest = [k for k in small if k not in change]
    change += rng.sample(rest, n_change - len(change))
    pool = [k for k in keys if sizes[k] < 64 * MiB and k not in change]
    touch = rng.sample(pool, min(n_touch, len(pool)))
    return sorted(touch), sorted(change)


def touch(src: Path, keys: list[str]) -> None:
    now = time.time_ns()
    for k in keys:
        os.utime(src / k, ns=(now, now))


def change_content(src: Path, keys: list[str]) -> None:
    """New bytes in the middle of each file; size and mtime (and atime) as they were."""
    for k in keys:
        p = src / k
        st = os.stat(p)
        n = min(4096, st.st_size)
        with open(p, "r+b") as f:
            f.seek((st.st_size - n) // 2)
            f.write(os.urandom(n))
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        after = os.stat(p)
        assert after.st_size == st.st_size and after.st_mtime_ns == st.st_mtime_ns


def _sent_keys(srv, bucket: str, prefix: str) -> list[str]:
    head = f"/{bucket}/{prefix}/"
    return [r.path[len(head):] for r in srv.request_log
            if r.counted and r.op in SENT_OPS and r.path.startswith(head)]


def measure(srv, tool: Tool, bucket: str, prefix: str, rep_dir: Path, timeout: float) -> dict[str, Any]:
    cmd = tool.command(bucket, prefix, rep_dir)
    srv.reset_counts()
    before = server_cpu()
    r = run(cmd, env=tool.env, timeout=timeout)
    busy = server_cpu() - before
    counts = srv.counts()
    sent = _sent_keys(srv, bucket, prefix)
    ops = {k: v for k, v in counts.items() if k != "list_total"}
    return {
        "seconds": r.seconds, "cpu": r.cpu, "server_cpu": busy, "rc": r.rc, "ok": r.ok, "error": None if r.ok else r.tail(600),
        "objects": sum(counts[o] for o in SENT_OPS), "bytes": srv.bytes_received,
        "requests": sum(ops.values()), "other_writes": {o: counts[o] for o in WRITE_OPS if counts[o]},
        "ops": ops, "sent_keys": sorted(set(sent)),
    }


def run_sync(srv, peers: Peers, work: Path, reps: int, spec: DatasetSpec, n_touch: int, n_change: int,
             only: set[str] | None = None, timeout: float = 900) -> dict[str, Any]:
    src = work / "cartload2"
    log(f"sync: generating dataset in {src}")
    t0 = time.perf_counter()
    ds = make_cartload2_dataset(src, spec)
    os.sync()       # the dataset's dirty pages written back now, not during the first tool's first run
    sizes = ds["sizes"]
    log(f"sync: dataset {ds['files']} files, {human(ds['bytes'])} "
        f"({sum(1 for s in sizes.values() if s >= MULTIPART_MIN)} multipart-sized) in {time.perf_counter() - t0:.1f} s")
    touched, changed = pick_files(sizes, n_touch, n_change)
    tools, notes = build_tools(peers, src, srv.endpoint_url, work, only)
    out: dict[str, Any] = {"dataset": {k: v for k, v in ds.items() if k != "sizes"}, "reps": reps,
                           "touched": touched, "changed": changed,
                           "changed_sizes": {k: sizes[k] for k in changed}, "notes": notes, "tools": {}}
    for n in notes:
        log(n)
    for ti, tool in enumerate(tools):
        res: dict[str, list[dict]] = {s: [] for s in tool.steps}
        out["tools"][tool.name] = {"label": tool.label, "note": tool.note, "steps": res,
                                   "command": " ".join(tool.command("BUCKET", "PREFIX", work / "x"))
                                   .replace(str(work), "$WORK")}
        srv.reset_state()      # free the previous tool's objects (moto keeps them in this process)
        last = None
        for rep in range(1, reps + 1):
            bucket = srv.create_bucket(f"bench-{ti}-{tool.name.replace('_', '-')}-r{rep}")
            prefix = "mouse-brain"
            rep_dir = work / "runs" / tool.name / f"r{rep}"
            if rep_dir.exists():
                shutil.rmtree(rep_dir)
            rep_dir.mkdir(parents=True)
            tool.env["CARTSYNC_CACHE_DIR"] = str(rep_dir / "cache")     # fresh cache: (a) includes hashing
            last = (bucket, prefix, rep_dir)
            m = measure(srv, tool, bucket, prefix, rep_dir, timeout)
            res["a"].append(m)
            log(f"{tool.name:16s} (a) rep {rep}: {_line(m)}")
            if "b" in tool.steps:
                m = measure(srv, tool, bucket, prefix, rep_dir, timeout)
                res["b"].append(m)
                log(f"{tool.name:16s} (b) rep {rep}: {_line(m)}")
        s5 = peers.paths.get("s5cmd")
        if tool.name == "cartsync" and last and s5:
            # the server's own listing of the same prefix: the floor a no-op cannot go below (issue 16)
            floors = [run([s5, "--endpoint-url", srv.endpoint_url, "ls", f"s3://{last[0]}/{last[1]}/*"],
                          env=tool.env, timeout=timeout) for _ in range(max(reps, 3))]
            out["list_floor"] = {"seconds": median([f.seconds for f in floors if f.ok]),
                                 "all_seconds": [round(f.seconds, 3) for f in floors],
                                 "objects": floors[0].stdout.count("\n")}
            log(f"listing floor (s5cmd ls of the prefix): {out['list_floor']['all_seconds']}")
        if "c" in tool.steps and last:
            for rep in range(1, reps + 1):
                touch(src, touched)
                # S3 LastModified has 1 s resolution: a tool that compares it with mtime (s5cmd) would
                # otherwise see the just-touched files as newer again in (d). Not timed.
                time.sleep(1.1)
                m = measure(srv, tool, *last, timeout)
                m["resent"] = len(set(m["sent_keys"]) & set(touched))
                res["c"].append(m)
                log(f"{tool.name:16s} (c) rep {rep}: {_line(m)}")
        if "d" in tool.steps and last:
            for rep in range(1, reps + 1):
                change_content(src, changed)
                m = measure(srv, tool, *last, timeout)
                sent = set(m["sent_keys"])
                m["caught"] = len(sent & set(changed))
                m["extra"] = sorted(sent - set(changed))
                res["d"].append(m)
                log(f"{tool.name:16s} (d) rep {rep}: {_line(m)}; caught {m['caught']}/{len(changed)}"
                    f"{'; extra ' + str(len(m['extra'])) if m['extra'] else ''}")
        for m in (x for runs in res.values() for x in runs):
            m.pop("sent_keys", None) if len(m.get("sent_keys", [])) > 50 else None
    srv.reset_state()
    out["summary"] = summarize(out)
    return out


def _line(m: dict) -> str:
    s = f"{m['seconds']:.2f} s, {m['objects']} obj, {human(m['bytes'])}, {m['requests']} req"
    if m["other_writes"]:
        s += ", " + ", ".join(f"{v} {k}" for k, v in m["other_writes"].items())
    if not m["ok"]:
        s += f"  FAILED rc={m['rc']}: {m['error']}"
    return s


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    """Medians per tool and step, and cartsync/peer time ratios."""
    summ: dict[str, Any] = {}
    for name, t in out["tools"].items():
        s: dict[str, Any] = {}
        for step, runs in t["steps"].items():
            ok = [m for m in runs if m["ok"]]
            s[step] = {
                "seconds": median([m["seconds"] for m in ok]) if ok else None,
                "cpu": median([m["cpu"] for m in ok]) if ok else None,
                "server_cpu": median([m["server_cpu"] for m in ok]) if ok else None,
                "all_seconds": [round(m["seconds"], 3) for m in runs],
                "objects": median([m["objects"] for m in runs]),
                "bytes": median([m["bytes"] for m in runs]),
                "requests": median([m["requests"] for m in runs]),
                "other_writes": runs[-1]["other_writes"] if runs else {},
                "failed": sum(1 for m in runs if not m["ok"]),
            }
            if step == "c":
                s[step]["resent"] = max((m["resent"] for m in runs), default=None)
            if step == "d":
                s[step]["caught_min"] = min((m["caught"] for m in runs), default=None)
                s[step]["extra_max"] = max((len(m["extra"]) for m in runs), default=None)
        summ[name] = s
    cs = summ.get("cartsync", {})
    for name, s in summ.items():
        for step, v in s.items():
            v["cartsync_over_peer"] = ratio((cs.get(step) or {}).get("seconds"), v["seconds"]) \
                if name != "cartsync" else None
    return summ


def table(out: dict[str, Any]) -> str:
    n_touch, n_change = len(out["touched"]), len(out["changed"])
    head = ["tool", "(a) first sync", "(b) no-op", f"(c) {n_touch} touched", f"(d) {n_change} changed",
            "a: cs/peer", "b: cs/peer", "c: cs/peer", "d: cs/peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, t in out["tools"].items():
        s = out["summary"][name]

        def cell(step: str) -> str:
            v = s.get(step)
            if v is None:
                return "n/a"
            if v["seconds"] is None:
                return "FAILED"
            cpu = f" · {v['cpu']:.2f} CPU-s" if v.get("cpu") is not None else ""
            if step == "a" and v.get("server_cpu") is not None:
                cpu += f" (server {v['server_cpu']:.1f})"
            txt = f"{secs(v['seconds'])}{cpu} · {v['objects']:.0f} obj · {human(v['bytes'])}"
            if step == "d":
                txt += f" · {v['caught_min']}/{n_change} caught"
                if v["extra_max"]:
                    txt += f" +{v['extra_max']} extra"
            if v["other_writes"]:
                txt += " · " + ", ".join(f"+{n} {op}" for op, n in v["other_writes"].items())
            if v["failed"]:
                txt += f" ({v['failed']} failed)"
            return txt

        def rcell(step: str) -> str:
            if name == "cartsync":
                return "1.00x" if step in s else "n/a"
            v = s.get(step)
            return fmt_ratio(v["cartsync_over_peer"]) if v else "n/a"

        lines.append("| " + " | ".join([t["label"]] + [cell(x) for x in "abcd"] + [rcell(x) for x in "abcd"]) + " |")
    return "\n".join(lines)
