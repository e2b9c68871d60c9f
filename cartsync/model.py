"""Plain values passed between the steps: no I/O here."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

TMP_SUFFIX = ".cartsync-tmp"    # a local target's copies are written to <name><TMP_SUFFIX> first (backends/fsspec.py)



@dataclass(frozen=True)
class SourceFile:
    """A file chosen for upload: its key (relative POSIX path at the target) and local path.

    `catalog`: this is a dataset's catalog (whatever its local name or folder): it is written after every
    data file of the target succeeded. Selection decides which file that is; nothing tests names later.
    """

    key: str
    path: Path
    catalog: bool = False


@dataclass(frozen=True)
class LocalFile:
    """A selected local file with its size and MD5, and the stat it was hashed (or surveyed) at.

    `md5` is None until the file is hashed: a file whose plan does not depend on its content (nothing of
    that size on the target) is hashed when it is uploaded, where the hashing overlaps the transfers.
    """

    key: str
    path: Path
    size: int
    md5: str | None
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    catalog: bool = False           # a dataset's catalog (see SourceFile)


@dataclass(frozen=True)
class RemoteFile:
    """One entry of a target listing. `md5` is None when the store does not report it."""

    key: str
    size: int
    md5: str | None = None
    etag: str | None = None
    # backend-private details (e.g. a Zenodo file id); never compared
    extra: tuple[tuple[str, str], ...] = ()
    # the compared headers as the store has them (S3), sorted (name, value); None: unknown or not compared
    headers: tuple[tuple[str, str], ...] | None = None

    def get(self, name: str) -> str | None:
        return dict(self.extra).get(name)


@dataclass(frozen=True)
class Scope:
    """The part of a target one run owns. `datasets` None: every key under the target. Otherwise only the
    keys of these collection datasets (`<id>/…`): a shard's share, or a manifest's `datasets:` list.
    Remote files outside the scope are never deleted, replaced or planned; `why` says so in the plan."""

    datasets: frozenset[str] | None = None
    why: str = ""

    def owns(self, key: str) -> bool:
        return self.datasets is None or key.split("/", 1)[0] in self.datasets


WHOLE_TARGET = Scope()       # the default scope: a run owns every key under the target


@dataclass(frozen=True)
class KeyRange:
    """Keys k with start_after < k < stop_at (relative to the target, byte order as S3 lists them):
    what a listing may be limited to when a scope is a contiguous run of datasets."""

    start_after: str
    stop_at: str

    @classmethod
    def of(cls, scope: Scope) -> KeyRange | None:
        if not scope.datasets:
            return None
        keys = sorted((d + "/").encode("utf-8") for d in scope.datasets)
        # every key of dataset d lies in ("d/", "d0"): "0" follows "/" in byte order
        return cls(keys[0].decode(), keys[-1][:-1].decode() + "0")


class Kind(str, enum.Enum):
    CREATE = "create"
    REPLACE = "replace"
    DELETE = "delete"
    KEEP = "keep"
    HEADERS = "headers"      # same data, other headers: fixed in place, no bytes sent

    @property
    def sign(self) -> str:
        return {"create": "+", "replace": "~", "delete": "-", "keep": "=", "headers": "~"}[self.value]


@dataclass(frozen=True)
class Action:
    kind: Kind
    key: str
    size: int
    reason: str = ""
    local: LocalFile | None = None
    remote: RemoteFile | None = None
    # Kind.HEADERS: (header, now, wanted) for each header that differs (None = absent)
    headers: tuple[tuple[str, str | None, str | None], ...] = ()
    # a delete that clears the way for an upload (a file where a folder must go, or the reverse, on a
    # target with real folders): it runs before the uploads, not last
    first: bool = False

    @property
    def catalog(self) -> bool:
        """An upload of a dataset's catalog: written only after every data file succeeded."""
        return self.local is not None and self.local.catalog


@dataclass(frozen=True)
class Change:
    """A non-file change a backend will make (Zenodo: deposition, metadata, publish)."""

    sign: str        # "+", "~", "-", "!" (needs attention) or "=" (informational)
    subject: str     # e.g. "deposition", "metadata.title"
    detail: str = ""


@dataclass(frozen=True)
class DeleteLimit:
    """The max_delete guard: how many deletions one apply may make before they are refused.

    Trips when the deletions exceed `count`, or exceed `fraction` of the target's files; deletions up to
    `floor` never trip it (a small target is not guarded by the default: deleting 1 of 2 files is fine).
    """

    count: int | None = None
    fraction: float | None = None
    floor: int = 0


DEFAULT_DELETE_LIMIT = DeleteLimit(fraction=0.5, floor=10)


@dataclass(frozen=True)
class Plan:
    target: str
    url: str
    actions: tuple[Action, ...]
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    deletes_refused: bool = False    # the max_delete guard tripped: apply sends the uploads, not the deletes
    scope: Scope = WHOLE_TARGET      # the part of the target this run owns: it touches nothing outside

    def of(self, kind: Kind) -> list[Action]:
        return [a for a in self.actions if a.kind is kind]

    @property
    def uploads(self) -> list[Action]:
        return [a for a in self.actions if a.kind in (Kind.CREATE, Kind.REPLACE)]

    @property
    def has_changes(self) -> bool:
        return bool(self.uploads or self.of(Kind.DELETE) or self.of(Kind.HEADERS)) or any(
            c.sign in "+~-" for c in self.changes)


@dataclass
class Outcome:
    """What apply did with one action."""

    action: Action
    ok: bool
    error: str = ""
    retries: int = 0
    bytes_sent: int = 0


@dataclass
class Report:
    target: str
    url: str
    outcomes: list[Outcome] = field(default_factory=list)
    skipped: list[Action] = field(default_factory=list)   # not attempted (e.g. deletes after a failure)
    refused: list[Action] = field(default_factory=list)   # deletes the max_delete guard refused
    changes: list[Change] = field(default_factory=list)   # backend changes made
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)     # e.g. a failed clean-up after every transfer succeeded
    stopped: str = ""                                      # why the target stopped early (e.g. every write denied)
    seconds: float = 0.0
    other_retries: int = 0                                 # listing and lifecycle calls

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def bytes_sent(self) -> int:
        return sum(o.bytes_sent for o in self.outcomes)

    @property
    def retries(self) -> int:
        return sum(o.retries for o in self.outcomes) + self.other_retries
