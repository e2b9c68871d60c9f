"""Local inventory and the hash cache."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from cartsync.inventory import HashCache, inventory, multipart_etag
from cartsync.model import SourceFile


def files_in(root: Path) -> list[SourceFile]:
    return [SourceFile(p.name, p) for p in sorted(root.iterdir()) if p.is_file()]


def test_md5_streamed_and_cached(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.bin").write_bytes(os.urandom(3 * 2**20 + i))
    cache = HashCache(tmp_path / "h.sqlite3")
    inv = inventory(files_in(src), cache)
    assert {k: f.md5 for k, f in inv.items()} == {
        p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in src.iterdir()}
    assert (cache.misses, cache.hits) == (5, 0)
    cache.close()
    cache2 = HashCache(tmp_path / "h.sqlite3")     # a new run: nothing hashed
    inventory(files_in(src), cache2)
    assert (cache2.misses, cache2.hits, cache2.bytes_hashed) == (0, 5, 0)


def test_same_size_same_mtime_change_is_seen(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(b"a" * 1000)
    cache = HashCache(tmp_path / "h.sqlite3")
    first = inventory([SourceFile("a.bin", f)], cache)["a.bin"].md5
    st = f.stat()
    f.write_bytes(b"b" * 1000)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = inventory([SourceFile("a.bin", f)], cache)["a.bin"].md5
    assert first != second == hashlib.md5(b"b" * 1000).hexdigest()


def test_corrupt_cache_file_costs_time_not_correctness(tmp_path):
    db = tmp_path / "h.sqlite3"
    db.write_bytes(b"this is not a database" * 100)
    f = tmp_path / "a.bin"
    f.write_bytes(b"abc")
    cache = HashCache(db)
    assert inventory([SourceFile("a.bin", f)], cache)["a.bin"].md5 == hashlib.md5(b"abc").hexdigest()


def test_cache_survives_concurrent_writers(tmp_path):
    """Four processes hash different files into one cache at once; all entries land, none corrupt."""
    db = tmp_path / "h.sqlite3"
    script = (
        "import sys, pathlib\n"
        "from cartsync.inventory import HashCache, inventory\nfrom cartsync.model import SourceFile\n"
        "root = pathlib.Path(sys.argv[1]); n = int(sys.argv[2])\n"
        "files = []\n"
        "for i in range(50):\n"
        "    p = root / f'{n}-{i}.bin'; p.write_bytes(bytes([n, i]) * 100); files.append(SourceFile(p.name, p))\n"
        "c = HashCache(pathlib.Path(sys.argv[3])); inventory(files, c); c.close()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(n), str(db)]) for n in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    cache = HashCache(db)
    srcs = [SourceFile(p.name, p) for p in sorted(tmp_path.glob("*.bin"))]
    inventory(srcs, cache)
    assert (cache.hits, cache.misses) == (200, 0)


def test_multipart_etag_matches_s3_rule(tmp_path):
    f = tmp_path / "a.bin"
    data = os.urandom(11 * 2**20)
    f.write_bytes(data)
    ps = 5 * 2**20
    parts = [hashlib.md5(data[i:i + ps]).digest() for i in range(0, len(data), ps)]
    assert multipart_etag(f, ps) == hashlib.md5(b"".join(parts)).hexdigest() + "-3"


def test_cache_writes_are_batched_and_flushed_at_close(tmp_path):
    """Digests are written in batches (per-file transactions stalled the upload threads) and all of them
    reach the database by close()."""
    from cartsync.inventory import WRITE_BATCH, HashCache
    files = []
    for i in range(WRITE_BATCH + 10):
        p = tmp_path / f"f{i}"
        p.write_bytes(b"%d" % i)
        files.append(p)
    db = tmp_path / "h.sqlite3"
    cache = HashCache(db)
    for p in files:
        cache.put(p, p.stat(), f"d{p.name}")
    import sqlite3
    written = sqlite3.connect(db).execute("SELECT count(*) FROM hashes").fetchone()[0]
    assert written == WRITE_BATCH                       # one batch so far; the rest waits for close
    assert cache.get(files[-1], files[-1].stat()) == f"d{files[-1].name}"   # but is already visible
    cache.close()
    again = HashCache(db)
    assert all(again.get(p, p.stat()) == f"d{p.name}" for p in files)
    again.close()
