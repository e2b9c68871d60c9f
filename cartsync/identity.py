"""The one hash cartsync names things by: which (manifest, target[, dataset]) a lock or a deposition is.

`digest(*parts)`: SHA-1 of the parts joined by NUL, first 16 hex digits (collisions are not a security
matter here: these are names, never proofs). Both identities below are that digest of different parts, and
both are stored, so neither formula may change:

- `deposition_marker(**fields)`: the mark left in a Zenodo deposition's notes to find "the deposition this
  dataset made" when the state file is lost. Its parts are `key=value` sorted by key, from what the user
  wrote (server, target name, dataset, metadata), never from where the manifest happens to be: a moved,
  renamed or freshly cloned project finds its deposition again, and two datasets never share one. It lives
  on Zenodo: changing it would orphan every published deposition's recovery.
- `run_key(manifest, target, dataset)`: the name of this machine's lock for one apply of a target (and of
  the cache file that says "this target has no lock object" once). Its parts are the manifest's real path,
  the target's name and the dataset: two checkouts of one project are two runs, unlike the marker.
"""
from __future__ import annotations

import hashlib
from pathlib import Path


def digest(*parts: str) -> str:
    """The identity hash of `parts` (order matters): 16 hex digits."""
    return hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]


def deposition_marker(**fields: str) -> str:
    """`cartsync:<digest>` of `fields` (see the module doc); the order fields are given in does not matter."""
    return "cartsync:" + digest(*(f"{k}={v}" for k, v in sorted(fields.items())))


def run_key(manifest: Path, target: str, dataset: str = "") -> str:
    """The machine-lock name of one (manifest file, target, dataset)."""
    return digest(str(manifest.resolve()), target, dataset)
