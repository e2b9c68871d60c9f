"""Where cartsync's time goes: py-spy (wall clock, idle frames included) on the cases the targets
look at, summarised per function for the main thread (inclusive %, i.e. share of the run's wall
time spent in that function or below it).

    python tests/bench/run.py --parts sync --profile          # with the other measurements
    python tests/bench/bench_profile.py [--quick]             # profiles only
"""
from __future__ import annotations

import collections
import re
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (RESULTS, VENV_BIN, DatasetSpec, MiB, cartsync_cmd, local_manifest, log,  # noqa: E402
                      make_cartload2_dataset, run, s3_env, s3_manifest, tiny_tree)

_LINE = re.compile(r" \(([^()]*?)(?::\d+)?\)$")
PHASES = [
    ("python start-up + imports", "_find_and_load"),
    ("manifest load + validation", "load (cartsync/manifest.py)"),
    ("selection (walk, stat, checks)", "select (cartsync/selection.py)"),
    ("inventory (stat + hash cache + md5)", "inventory (cartsync/inventory.py)"),
    ("  hash cache lookups (sqlite)", "HashCache.get (cartsync/inventory.py)"),
    ("  md5 of file contents", "md5_file (cartsync/inventory.py)"),
    ("open backend (s3fs/aiobotocore set-up)", "open_backend (cartsync/backends/__init__.py)"),
    ("remote listing", "S3Backend.list (cartsync/backends/s3.py)"),
    ("remote listing (fsspec)", "FsspecBackend.list (cartsync/backends/fsspec.py)"),
    ("resolve (multipart ETags / remote md5)", "resolve ("),
    ("  multipart ETag computed locally", "multipart_etag (cartsync/inventory.py)"),
    ("make_plan", "make_plan (cartsync/planner.py)"),
    ("executor (uploads)", "Executor.run (cartsync/executor.py)"),
    ("render/print", "render"),
]


def _key(frame: str) -> str:
    """'func (path/file.py:123)' -> 'func (path/file.py)'."""
    return _LINE.sub(lambda m: f" ({m.group(1)})", frame.strip())


def summarize(raw: Path, top: int = 22) -> str:
    threads: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        tid = frames[0] if frames[0].startswith("thread") else "?"
        frames = frames[1:] if frames[0].startswith(("thread", "process")) else frames
        threads[tid].append(([_key(f) for f in frames], int(count)))
    if not threads:
        return "(no samples)"

    def is_main(samples):
        return sum(c for fr, c in samples if fr and fr[0].startswith("<module>"))
    main = max(threads.values(), key=is_main)
    total = sum(c for _, c in main)
    incl: collections.Counter[str] = collections.Counter()
    self_: collections.Counter[str] = collections.Counter()
    for frames, c in main:
        for k in set(frames):
            incl[k] += c
        if frames:
            self_[frames[-1]] += c
    lines = [f"main thread: {total} samples (wall clock, 200 Hz); {len(threads)} thread(s) sampled", "",
             "phase                                     % of wall"]
    for label, needle in PHASES:
        n = sum(c for frames, c in main if any(needle in f for f in frames))
        if n:
            lines.append(f"  {label:40s} {100 * n / total:5.1f}%")
    lines += ["", "top functions (inclusive % of main-thread wall time)"]
    skip = ("<module>", "_bootstrap", "_call_with_frames_removed", "exec_module", "_load_unlocked",
            "_handle_fromlist", "Thread.run", "Condition.wait", "Event.wait", "wrapper (fsspec/asyn.py)")
    shown = 0
    for k, n in incl.most_common():
        if any(k.startswith(s) or s in k for s in skip):
            continue
        lines.append(f"  {100 * n / total:5.1f}%  {k}")
        shown += 1
        if shown >= top:
            break
    lines += ["", "top self time (leaf frames)"]
    for k, n in self_.most_common(12):
        lines.append(f"  {100 * n / total:5.1f}%  {k}")
    return "\n".join(lines)


def profile(name: str, cmd: list[str], env: dict, work: Path) -> str:
    pyspy = VENV_BIN / "py-spy"
    if not pyspy.exists():
        pyspy_path = shutil.which("py-spy")
        if not pyspy_path:
            r = run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], timeout=600)
            pyspy_path = str(pyspy) if pyspy.exists() else None
            if not pyspy_path:
                return f"py-spy not available: {r.tail()}"
        pyspy = Path(pyspy_path)
    raw = work / f"profile-{name}.raw.txt"
    r = run([str(pyspy), "record", "--idle", "--threads", "--format", "raw", "-r", "200", "-o", str(raw),
             "--", *cmd], env=env, timeout=1800)
    if not raw.exists():
        return f"py-spy failed: {r.tail()}"
    text = f"{name}: `{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}` took {r.seconds:.2f} s " \
           f"under py-spy (rc {r.rc})\n\n" + summarize(raw)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"profile-{name}.txt").write_text(text + "\n")
    log(f"profile {name}: {r.seconds:.2f} s -> results/profile-{name}.txt")
    return text


def run_profiles(srv, work: Path, res: dict[str, Any] | None = None, quick: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    url = srv.endpoint_url
    # 1. sync dataset: first sync (fresh cache), first no-op after it, a steady no-op
    src = work / "cartload2"
    if not src.exists():
        spec = DatasetSpec(n_small=150, n_medium=4, large_size=40 * MiB) if quick else DatasetSpec()
        make_cartload2_dataset(src, spec)
    bucket = srv.create_bucket("profile-sync")
    cache = work / "profile-cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = s3_env(work, url, CARTSYNC_CACHE_DIR=str(cache))
    m = s3_manifest(work / "manifests" / "profile-sync.yaml", src, bucket, "p", url)
    apply = [*cartsync_cmd(), "-q", "apply", str(m), "--no-progress", "--jobs", "16"]
    out["first-sync"] = profile("first-sync", apply, env, work)
    out["noop-after-upload"] = profile("noop-after-upload", apply, env, work)
    out["noop-steady"] = profile("noop-steady", apply, env, work)
    srv.reset_state()
    # 2. plan over many tiny files, local and S3 targets
    n = 2000 if quick else 20000
    tiny = work / f"profile-tiny-{n}"
    tiny_tree(tiny, n)
    dest = work / f"profile-tiny-{n}-out"
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(tiny, dest)
    ml = local_manifest(work / "manifests" / "profile-plan-local.yaml", tiny, dest)
    run([*cartsync_cmd(), "-q", "apply", str(ml), "--no-progress"], env=env, timeout=1200)
    out[f"plan-{n}-local"] = profile(f"plan-{n}-local", [*cartsync_cmd(), "-q", "plan", str(ml)], env, work)
    bucket = srv.create_bucket("profile-plan")
    from bench_micro import _seed_s3
    _seed_s3(bucket, "tiny", tiny)
    ms = s3_manifest(work / "manifests" / "profile-plan-s3.yaml", tiny, bucket, "tiny", url)
    out[f"plan-{n}-s3"] = profile(f"plan-{n}-s3", [*cartsync_cmd(), "-q", "plan", str(ms)], env, work)
    srv.reset_state()
    return out


def main() -> int:
    import argparse
    import tempfile
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    from s3server import start_s3_server
    work = Path(tempfile.mkdtemp(prefix="cartsync-profile-"))
    srv = start_s3_server()
    try:
        for name, text in run_profiles(srv, work, quick=args.quick).items():
            print(f"\n=== {name}\n{text}", flush=True)
    finally:
        srv.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
