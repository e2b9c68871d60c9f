"""zenodo: targets — a deposition per target, written through Zenodo's legacy deposit REST API.

    backend.py     ZenodoBackend: the Backend interface (listing, plan_changes, begin/upload/delete/finish)
    deposition.py  Deposition: the writes that move a deposition through its lifecycle, and its state
    locate.py      Finder: which deposition is the target's (state file, marker, concept search); reads only
    client.py      the HTTP client (token, errors, rate-limit headers); budget.py the shared rate budget
    meta.py        metadata as a value (wanted, diff, merge) and the server's files as RemoteFile
    state.py       the state file beside the manifest
"""
from __future__ import annotations

from .backend import ZenodoBackend

__all__ = ["ZenodoBackend"]
