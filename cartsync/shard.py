"""Split a collection's datasets over N processes: deterministic, size-balanced, contiguous in key order.

Every shard computes the same split from the same collection (dataset ids and sizes, no clock, no host),
so N processes on N machines together cover every dataset exactly once. Each shard gets a contiguous run
of datasets in the order S3 lists them (by `<id>/`), cut where the running size crosses k/N of the
total: a shard then lists one key range of the target instead of the whole collection or one request per
dataset, and the N listings together cost about one listing of the collection. The balance is within
one dataset's size of perfect, which for collections of many similar datasets is what a job array needs.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import CartsyncError

_FORM = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based, as pytest-split, Jest and Playwright count) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse(text: str, where: str = "--shard") -> Shard:
    """`K/N` with 1 <= K <= N, or `slurm` (SLURM_ARRAY_TASK_ID, _MIN and _COUNT of this array task)."""
    if text.strip().lower() == "slurm":
        return from_slurm(os.environ, where)
    m = _FORM.fullmatch(text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise CartsyncError(f"{where} {text!r}: not a shard", "write K/N with 1 <= K <= N, e.g. 2/4, or `slurm` "
                            "inside a SLURM job array")
    return Shard(int(m.group(1)), int(m.group(2)))


def from_slurm(env: Mapping[str, str], where: str = "--shard slurm") -> Shard:
    """This SLURM array task's shard: task ids may start anywhere (`--array=0-3`, `--array=1-4`)."""
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        step = int(env.get("SLURM_ARRAY_TASK_STEP", "1") or 1)
    except (KeyError, ValueError):
        raise CartsyncError(f"{where}: not inside a SLURM job array (SLURM_ARRAY_TASK_ID and "
                            "SLURM_ARRAY_TASK_COUNT are not set)", "submit with sbatch --array=1-N, or give "
                            "--shard K/N") from None
    index = (task - first) // step + 1
    if not 1 <= index <= count:
        raise CartsyncError(f"{where}: SLURM_ARRAY_TASK_ID {task} is outside the array (min {first}, "
                            f"{count} task(s))", "use a contiguous --array=1-N")
    return Shard(index, count)


def from_environment(env: Mapping[str, str]) -> Shard | None:
    """CARTSYNC_SHARD (K/N or slurm), if set."""
    value = env.get("CARTSYNC_SHARD", "").strip()
    return parse(value, "CARTSYNC_SHARD") if value else None


def order(ids: list[str]) -> list[str]:
    """Dataset ids in the order their keys list (`a-x/` before `a/`, as S3 sorts bytes)."""
    return sorted(ids, key=lambda d: (d + "/").encode("utf-8"))


def share(sizes: Mapping[str, int], shard: Shard) -> list[str]:
    """The datasets (id → bytes) shard `shard` publishes, in key order; the N shares partition `sizes`.

    Cut points: shard k takes the datasets whose running total (before them, plus half their own size)
    falls in [ (k-1)/N, k/N ) of the whole; a dataset belongs to the shard its midpoint falls in, so each
    share is within one dataset of total/N. Zero-byte collections split by count.
    """
    ids = order(list(sizes))
    weights = [max(sizes[d], 0) for d in ids] if sum(sizes.values()) > 0 else [1] * len(ids)
    total = sum(weights)
    mine, before = [], 0
    for d, w in zip(ids, weights, strict=False):
        mid = before + w / 2
        if min(int(mid * shard.count // total) + 1, shard.count) == shard.index:
            mine.append(d)
        before += w
    return mine
