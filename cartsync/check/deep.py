"""`--deep`: proof that remote equals local, beyond the listing's ETag. Every file is read back through the
target's own authenticated client, streamed (memory stays flat), several at once, and its MD5 compared with
the local file's. A listing can agree while the bytes do not (a change behind cartsync's back that kept the
size and the recorded ETag, bit rot, a proxy rewriting bodies); only reading the bytes shows it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from ..backends import Backend
from ..model import LocalFile, RemoteFile
from .model import Finding, Verdict

CHUNK = 1 << 20


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def opener(backend: Backend) -> Callable[[str], Iterator[bytes]]:
    """key at the target → its bytes, in chunks, read with the target's credentials."""
    from ..backends.fsspec import FsspecBackend
    from ..backends.s3 import S3Backend
    from ..backends.zenodo import ZenodoBackend
    if isinstance(backend, S3Backend):
        def s3(key: str) -> Iterator[bytes]:
            full = f"{backend.prefix}/{key}" if backend.prefix else key
            if backend.client is None:
                with backend.fs.open(f"{backend.bucket}/{full}", "rb") as f:
                    yield from _chunks(f)
                return
            body = backend.client.get_object(Bucket=backend.bucket, Key=full)["Body"]
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()
        return s3
    if isinstance(backend, ZenodoBackend):
        links = {f.get("filename"): (f.get("links") or {}).get("download")
                 for f in ((backend.dep or {}).get("files") or [])}

        def zen(key: str) -> Iterator[bytes]:
            link = links.get(key)
            if not link:
                raise KeyError(key)        # listed without a download link: reported as a failed read-back
            with backend.api.session.get(link, stream=True, timeout=(10, 120)) as resp:
                resp.raise_for_status()
                yield from resp.iter_content(CHUNK)
        return zen
    assert isinstance(backend, FsspecBackend)

    def fs(key: str) -> Iterator[bytes]:
        with backend.fs.open(backend.path(key), "rb") as f:
            yield from _chunks(f)
    return fs


def read_back(backend: Backend, local: Mapping[str, LocalFile], remote: Mapping[str, RemoteFile],
              jobs: int) -> list[Finding]:
    """One finding per file: `local` is keyed as at the target (mapped keys), with MD5s."""
    read = opener(backend)

    def one(key: str) -> Finding:
        lf = local[key]
        if key not in remote:
            return Finding("deep", key, Verdict.FAILED, "not on the target",
                           "run `cartsync apply` for this target, then check again")
        md5, n = hashlib.md5(), 0
        try:
            for chunk in read(key):
                md5.update(chunk)
                n += len(chunk)
        except Exception as exc:  # noqa: BLE001 — any failure to read back is this file's finding
            return Finding("deep", key, Verdict.FAILED, f"read back failed: {type(exc).__name__}",
                           "check the target's credentials and re-run with -v")
        if md5.hexdigest() != lf.md5 or n != lf.size:
            return Finding("deep", key, Verdict.FAILED,
                           f"read back {n} B, md5 {md5.hexdigest()}; local {lf.size} B, md5 {lf.md5} (the listing "
                           f"says {remote[key].etag or remote[key].md5 or 'nothing'})",
                           "the listing still matches, so apply will not re-send it: run apply once with "
                           "overwrite: always for this target (or upload-aws --restart)")
        return Finding("deep", key, Verdict.PASSED, f"read back {n} B; md5 {lf.md5} matches")
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="deep") as pool:
        return list(pool.map(one, sorted(local)))


