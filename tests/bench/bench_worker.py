"""Child-process jobs of the benchmark harness (run in their own process so that the moto server
living in the harness does not share their GIL). Prints one JSON object on stdout.

    python bench_worker.py put SRC ENDPOINT BUCKET PREFIX [--threads 16]
    python bench_worker.py hash --cache DB FILE...
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cmd_put(args: argparse.Namespace) -> dict:
    """The server's ceiling: every file with one plain PutObject, 16 threads, nothing else."""
    import boto3
    from botocore.config import Config

    src = Path(args.src)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    client = boto3.client(
        "s3", endpoint_url=args.endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        # no extra checksum pass over the body: the ceiling is the server's, not botocore's
        config=Config(max_pool_connections=args.threads, retries={"max_attempts": 1},
                      request_checksum_calculation="when_required", response_checksum_validation="when_required"))
    prefix = args.prefix.strip("/")

    def put(p: Path) -> int:
        key = f"{prefix}/{p.relative_to(src).as_posix()}" if prefix else p.relative_to(src).as_posix()
        with open(p, "rb") as body:
            client.put_object(Bucket=args.bucket, Key=key, Body=body)
        return p.stat().st_size

    t0, c0 = time.perf_counter(), _cpu()
    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        total = sum(pool.map(put, files))
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "files": len(files), "bytes": total}


def cmd_hash(args: argparse.Namespace) -> dict:
    """cartsync's inventory (parallel MD5 + on-disk hash cache) over the given files."""
    from cartsync.inventory import HashCache, inventory
    from cartsync.model import SourceFile

    files = [SourceFile(Path(f).name, Path(f)) for f in args.files]
    cache = HashCache(Path(args.cache))
    t0, c0 = time.perf_counter(), _cpu()
    local = inventory(files, cache, args.jobs)
    out = {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "files": len(local),
           "bytes": sum(f.size for f in local.values()), "bytes_hashed": cache.bytes_hashed,
           "hits": cache.hits, "misses": cache.misses, "threads": args.jobs or os.cpu_count()}
    cache.close()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("put")
    a.add_argument("src")
    a.add_argument("endpoint")
    a.add_argument("bucket")
    a.add_argument("prefix")
    a.add_argument("--threads", type=int, default=16)
    a.set_defaults(func=cmd_put)
    h = sub.add_parser("hash")
    h.add_argument("--cache", required=True)
    h.add_argument("--jobs", type=int, default=None)
    h.add_argument("files", nargs="+")
    h.set_defaults(func=cmd_hash)
    args = p.parse_args(argv)
    print(json.dumps(args.func(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
