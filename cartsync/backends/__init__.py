"""Backends: one per kind of target. `open_backend` picks it from the target config."""
from __future__ import annotations

from ..config import TargetConfig
from ..inventory import HashCache
from .base import Backend, Features


def backend_class(target: TargetConfig) -> type[Backend]:
    if target.zenodo is not None:
        from .zenodo import ZenodoBackend
        return ZenodoBackend
    if target.url.startswith(("s3://", "s3a://")):
        from .s3 import S3Backend
        return S3Backend
    from .fsspec import FsspecBackend
    return FsspecBackend


def open_backend(target: TargetConfig, cache: HashCache) -> Backend:
    return backend_class(target)(target, cache)


__all__ = ["Backend", "Features", "backend_class", "open_backend"]
