"""`cartsync check`: the pipeline. Read-only: the only thing written is the local hash cache.

manifest → selection → local sizes (and MD5s of the catalogs; of everything with --deep) → per target:
its public URLs (public.py, zenodo.py) → anonymous checks (probes.py) → with --deep, an authenticated
read-back (deep.py) → findings, and the exact fixes (advice.py) for what failed.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .. import engine
from .. import inventory as inv
from ..backends import Backend
from ..backends.zenodo import ZenodoBackend
from ..config import Manifest
from ..model import LocalFile
from . import advice, deep, probes, zenodo
from .model import Finding, TargetCheck, Verdict
from .public import PublicBase, public_base

# CartoScope, the viewer cartloader's outputs are made for: its docs link datasets as
# https://v3o-main.carto-scope.org/dataset?uri=… (seqscope/cartloader docs/vignettes/pipelines/*.md).
DEFAULT_ORIGIN = "https://v3o-main.carto-scope.org"
T = TypeVar("T")


def check(manifest: Manifest, names: tuple[str, ...], origin: str | None, deep_read: bool,
          jobs: int = 8) -> list[TargetCheck]:
    cache = engine.cache_for()
    try:
        # the engine's own selection and targets (a Zenodo collection: a deposition per dataset), limits checked
        files, _, targets = engine.prepared(manifest, engine.Options(targets=names))
        local = inv.survey(files, cache)
        wanted = set(local) if deep_read else {k for k, f in local.items() if f.catalog}
        local = inv.hash_missing(local, cache, jobs, keys=wanted)
        with engine.opened(manifest, targets, cache, lock=False) as backends:
            return [check_target(b, local, origin or b.target.origin or DEFAULT_ORIGIN, deep_read, jobs)
                    for b in backends]
    finally:
        cache.close()


def _parallel(fn: Callable[[str], T], keys: list[str], jobs: int) -> list[T]:
    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(keys) or 1)), thread_name_prefix="check") as pool:
        return list(pool.map(fn, keys))


def check_target(backend: Backend, local: Mapping[str, LocalFile], origin: str, deep_read: bool,
                 jobs: int) -> TargetCheck:
    target = backend.target
    keys = engine.files_for(target, sorted(local))
    mapping = backend.map_keys(target, keys)
    mapped = {mapping[k]: local[k] for k in keys}
    base: PublicBase | None = None
    remote = None
    if isinstance(backend, ZenodoBackend):
        remote = backend.listing()
        server = target.zenodo.url if target.zenodo else target.url
        record = backend.published
        rid = record.get("record_id") or record.get("id") if record else None
        result = TargetCheck(target.name, f"{server}/records/{rid}" if record else None)
        if record is None:
            zenodo.unpublished(result, backend.dep)
        else:
            zenodo.check_record(result, server, record, mapped, origin)
    else:
        base = public_base(target)
        result = TargetCheck(target.name, base.url if base else None)
        if base is None:
            result.add(Finding("public-url", target.url, Verdict.WARNING,
                               "no public URL: cartsync cannot tell where this target is served over HTTP",
                               "set public_url: on the target to the URL it is served at, to check it as a viewer"))
        else:
            _url_checks(result, base, mapped, origin, jobs)
    if deep_read:
        result.findings += deep.read_back(backend, mapped, backend.listing() if remote is None else remote, jobs)
    result.origin = origin
    _advise(result, base, origin)
    return result


def _url_checks(result: TargetCheck, base: PublicBase, mapped: Mapping[str, LocalFile], origin: str,
                jobs: int) -> None:
    catalogs = sorted(k for k, f in mapped.items() if f.catalog)
    if not catalogs:
        result.add(Finding("catalog", "catalog.yaml", Verdict.FAILED, "no catalog.yaml among the published files",
                           "a viewer opens <url>/catalog.yaml: publish the dataset with method: catalog"))
    for key in catalogs:
        result.add(probes.catalog(base.of(key), key, mapped[key].md5 or ""))
    keys = sorted(mapped)
    result.findings += _parallel(lambda k: probes.file_present(base.of(k), k, mapped[k].size), keys, jobs)
    tiles = [k for k in keys if k.endswith(".pmtiles")]
    result.findings += _parallel(lambda k: probes.pmtiles(base.of(k), k, mapped[k].size), tiles, jobs)
    sample = (tiles or catalogs or keys)[:1]
    if sample:
        result.findings += probes.cors(base.of(sample[0]), sample[0], origin)


def _advise(result: TargetCheck, base: PublicBase | None, origin: str) -> None:
    bucket = base.bucket if base is not None and base.aws else None
    if any(f.check == "cors" and f.verdict is not Verdict.PASSED for f in result.findings):
        result.advice.append(advice.cors_advice(origin, bucket))
    if any(f.status in (401, 403) and f.check != "cors" for f in result.findings) and base is not None:
        result.advice.append(advice.policy_advice(bucket, base.prefix))
