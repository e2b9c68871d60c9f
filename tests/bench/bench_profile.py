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

from benchlib import (  # noqa: E402
    RESULTS,
    VENV_BIN,
    DatasetSpec,
    MiB,
    cartsync_cmd,
    local_manifest,
    log,
    make_cartload2_dataset,
    run,
    s3_env,
    s3_manifest,
    tiny_tree,
)

_LINE = re.compile(r" \(([^()]*?)(?::\d+)?\)$")
PHASES = [
    ("python start-up + imports", "_find_and_load"),
    ("manifest load + validation", "load (cartsync/manifest.py)"),
    ("selection (walk, stat, checks)", "select (cartsync/selection.py)"),
    ("survey (stat + hash cache)", "survey (cartsync/inventory.py)"),
    ("  hash cache lookups (sqlite)", "HashCache.get (cartsync/inventory.py)"),
    ("hashing before the plan", "hash_missing (cartsync/inventory.py)"),
    ("  md5 of file contents", "md5_file (cartsync/inventory.py)"),
    ("waiting for the listing", "plan_all (cartsync/engine.py)"),
    ("remote listing (s3_list)", "Lister.objects (cartsync/backends/s3/listing.py)"),
    ("remote listing (botocore)", "S3Backend._list_botocore (cartsync/backends/s3.py)"),
    ("remote listing (fsspec)", "FsspecBackend.list (cartsync/backends/fsspec.py)"),
    ("resolve (multipart ETags / remote md5)", "resolve ("),
    ("  multipart ETag computed locally", "multipart_etag (cartsync/inventory.py)"),
    ("make_plan", "make_plan (cartsync/planner.py)"),
    ("executor (uploads)", "Executor.run (cartsync/executor.py)"),
    ("  botocore client set-up", "botocore_client (cartsync/backends/s3.py)"),
    ("render/print", "render"),
]


def _key(frame: str) -> str:
    """'func (path/file.py:123)' -> 'func (path/file.py)'."""
    return _LINE.sub(lambda m: f" ({m.group(1)})", frame.strip())


_IDLE_LEAVES = ("Condition.wait", "EpollSelector.select", "select (selectors.py)", "_worker (concurrent/futures",
                "SimpleQueue.get", "Event.wait", "Thread.join", "lock.acquire", "_wait_for_tstate_lock")


def _is_idle(frames: list[str]) -> bool:
    return not frames or any(frames[-1].startswith(x) or x in frames[-1] for x in _IDLE_LEAVES)


def _top(samples: list[tuple[list[str], int]], total: int, top: int, busy_only: bool = False) -> list[str]:
    incl: collections.Counter[str] = collections.Counter()
    for frames, c in samples:
        if busy_only and _is_idle(frames):
            continue
        for k in set(frames):
            incl[k] += c
    skip = ("<module>", "_bootstrap", "_call_with_frames_removed", "exec_module", "_load_unlocked",
            "_handle_fromlist", "Thread.run", "_run_module_as_main", "_run_code", "_worker (", "_WorkItem.run",
            "run_forever", "_run_once", "Handle._run", "_runner (fsspec")
    out = []
    for k, n in incl.most_common():
        if any(k.startswith(x) or x in k for x in skip):
            continue
        out.append(f"  {100 * n / total:5.1f}%  {k}")
        if len(out) >= top:
            break
    return out


def _buckets(samples: list[tuple[list[str], int]], total: int, table: list[tuple[str, str]],
             width: int) -> list[str]:
    """One line per (label, needle) that some sampled stack contains: its inclusive share of `total`."""
    out = []
    for label, needle in table:
        n = sum(c for frames, c in samples if any(needle in f for f in frames))
        if n:
            out.append(f"  {label:{width}s} {100 * n / total:5.1f}%")
    return out


def _leaves(samples: list[tuple[list[str], int]], total: int, top: int) -> list[str]:
    """The leaf frames (self time) with the most samples."""
    self_: collections.Counter[str] = collections.Counter()
    for frames, c in samples:
        if frames:
            self_[frames[-1]] += c
    return [f"  {100 * n / total:5.1f}%  {k}" for k, n in self_.most_common(top)]


def summarize(raw: Path, top: int = 22) -> str:
    threads: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        m = re.match(r"thread \((\w+)\)", frames[0])
        tid = m.group(1) if m else "?"      # the label also carries the thread's (changing) name
        frames = frames[1:] if frames[0].startswith(("thread", "process")) else frames
        threads[tid].append(([_key(f) for f in frames], int(count)))
    if not threads:
        return "(no samples)"

    def rooted(samples):   # the main thread's stacks start at the script / runpy
        return sum(c for fr, c in samples if fr and fr[0].startswith(("<module>", "_run_module_as_main")))
    main_id = max(threads, key=lambda t: rooted(threads[t]))
    main = threads[main_id]
    total = sum(c for _, c in main)
    lines = [f"main thread: {total} samples = wall time (200 Hz; idle frames included); "
             f"{len(threads)} thread(s) sampled", "", "phase (main thread)                       % of wall"]
    lines += _buckets(main, total, PHASES, 40)
    lines += ["", "top functions, main thread (inclusive % of wall time)"] + _top(main, total, top)
    lines += ["", "top self time, main thread (leaf frames)"] + _leaves(main, total, 10)
    # the other threads: where they were busy (not waiting), as % of the main thread's wall time
    others = sorted(((t, s) for t, s in threads.items() if t != main_id),
                    key=lambda ts: -sum(c for fr, c in ts[1] if not _is_idle(fr)))
    for tid, samples in others[:3]:
        busy = sum(c for fr, c in samples if not _is_idle(fr))
        if busy < 0.05 * total:
            continue
        lines += ["", f"other thread {tid}: busy {100 * busy / total:.1f}% of the wall time; busy in:"]
        lines += _top(samples, total, 10, busy_only=True)
    return "\n".join(lines)


CPU_BUCKETS = [
    ("python start-up + imports", "_find_and_load"),
    ("md5 of whole files (md5_file: before the plan or at upload)", "md5_file (cartsync/inventory.py)"),
    ("multipart part workers (read + part md5 + send)", "_put_multipart.<locals>.worker (cartsync/backends/s3.py)"),
    ("botocore request signing (auth.py)", "botocore/auth.py"),
    ("botocore serialize + validate", "botocore/serialize.py"),
    ("botocore response parsing", "botocore/parsers.py"),
    ("botocore event hooks (hooks.py)", "botocore/hooks.py"),
    ("urllib3 + http.client (sending, connections)", "urllib3/"),
    ("s3fs (only for storage_options only it knows)", "s3fs/core.py"),
    ("listing without botocore (s3_list)", "cartsync/backends/s3/listing.py"),
    ("hash cache (sqlite)", "HashCache."),
    ("selection", "select (cartsync/selection.py)"),
    ("all upload work (Executor._upload, inclusive)", "Executor._upload (cartsync/executor.py)"),
]


def summarize_cpu(raw: Path, top: int = 25) -> str:
    """All threads together, CPU samples only (py-spy without --idle): where the CPU time goes."""
    samples: list[tuple[list[str], int]] = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            frames = stack.split(";")
            frames = frames[1:] if frames[0].startswith(("thread", "process")) else frames
            samples.append(([_key(f) for f in frames], int(count)))
    total = sum(c for _, c in samples) or 1
    lines = [f"CPU samples, all threads: {total} (= CPU seconds x rate)", "", "bucket (inclusive, may overlap)"]
    lines += _buckets(samples, total, CPU_BUCKETS, 64)
    lines += ["", "top functions (inclusive % of CPU samples)"] + _top(samples, total, top)
    lines += ["", "top self (leaf frames)"] + _leaves(samples, total, 12)
    return "\n".join(lines)


def _profile(name: str, cmd: list[str], env: dict, work: Path, cpu: bool = False, prefix: str = "profile") -> str:
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
    # wall mode: every thread, idle frames too, 200 Hz; cpu mode: busy samples only, 50 Hz, no pausing
    opts = ["--nonblocking", "-r", "50"] if cpu else ["--idle", "--threads", "-r", "200"]
    r = run([str(pyspy), "record", *opts, "--format", "raw", "-o", str(raw), "--", *cmd], env=env, timeout=1800)
    if not raw.exists():
        return f"py-spy failed: {r.tail()}"
    text = f"{name}: `{' '.join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}` took {r.seconds:.2f} s " \
           f"under py-spy (rc {r.rc})\n\n" + (summarize_cpu(raw) if cpu else summarize(raw))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{prefix}-{name}.txt").write_text(text + "\n")
    log(f"profile {name}: {r.seconds:.2f} s -> results/{prefix}-{name}.txt")
    return text


def run_profiles(srv, work: Path, res: dict[str, Any] | None = None, quick: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    url = srv.endpoint_url
    prefix = "quick-profile" if quick else "profile"

    def profile(*a, **k):   # noqa: F811 — results/quick-profile-*.txt for --quick
        return _profile(*a, prefix=prefix, **k)
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
    # CPU view for the upload (a wall-clock profile of 70+ threads slows it 3x and says little)
    out["first-sync-cpu"] = profile("first-sync-cpu", apply, env, work, cpu=True)
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


def resummarize(folder: Path) -> None:
    """Re-print the summaries of the raw profiles a --keep run left in `folder`."""
    for raw in sorted(folder.glob("profile-*.raw.txt")):
        print(f"\n=== {raw.name}\n{summarize_cpu(raw) if '-cpu' in raw.name else summarize(raw)}")


def main() -> int:
    import argparse
    import tempfile
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--rev", default="", help="profile this git revision (default: the working tree)")
    args = ap.parse_args()
    from s3server import start_s3_server
    work = Path(tempfile.mkdtemp(prefix="cartsync-profile-"))
    from benchlib import freeze_cartsync
    print(f"cartsync under test: {freeze_cartsync(work, args.rev or None)}", flush=True)
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
