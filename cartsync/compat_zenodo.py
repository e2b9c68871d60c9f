"""upload-zenodo's flags → an in-memory manifest, and the identity of the dataset's deposition.

Which deposition is "mine": the dataset's, never the current folder's. Its record lives in
`<in-dir>/.cartsync-upload-zenodo.json` keyed by (Zenodo server, catalog id or catalog file name), so it
travels with the folder; the marker in the deposition's notes (found again if the record is lost) is
derived from (server, resolved --in-dir, catalog id). Two datasets uploaded from one folder make two
depositions; re-running one dataset's command from anywhere reuses its own. Every question of meaning
is settled by cartloader's `upload_zenodo.py` (ee2fb4a); checks happen here so errors name the flags.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from . import identity, redact, selection
from .catalog_format import CATALOG_NAME
from .errors import CartsyncError

UPLOAD_TYPES = ("dataset", "software", "publication", "poster", "presentation", "image", "video", "lesson", "other")
NO_DESCRIPTION = "No description provided."          # cartloader's default for a new deposition
STATE_NAME = ".cartsync-upload-zenodo.json"          # in --in-dir: hidden, so `--upload-method all` skips it
# cartloader's own bookkeeping, never data: `all` leaves it out (cartloader's glob would send it)
FLAG_PATTERNS = ("*.aws.done", "*.zenodo.done")


def _looks_like_path(value: str) -> bool:
    return any(c in value for c in "/\\.~") and not any(c.isspace() for c in value)


def _token_file(args: argparse.Namespace, cwd: Path) -> str | None:
    """The token file's absolute path, checked here so that errors name --zenodo-token."""
    if not args.zenodo_token:
        if not os.environ.get("ZENODO_TOKEN", "").strip():
            raise CartsyncError("no Zenodo token: --zenodo-token is not given and ZENODO_TOKEN is not set",
                                "pass --zenodo-token FILE (a file holding the token, as with cartloader), or "
                                "export ZENODO_TOKEN")
        return None
    path = (cwd / os.path.expanduser(args.zenodo_token)).resolve()
    if not path.is_file():
        # the value may be the token itself, pasted in the wrong place: describe it, never echo it
        shown = args.zenodo_token if _looks_like_path(args.zenodo_token) else \
            f"(a value of {len(args.zenodo_token)} characters, not a path)"
        raise CartsyncError(f"--zenodo-token {shown}: no such file",
                            "pass the path of a file holding the token (from Zenodo's Applications settings), "
                            "not the token itself")
    return str(path)


def _data_file(name: str, in_dir: Path, flag: str) -> str:
    """A --files / --in-list name as a path relative to --in-dir (an absolute one must be inside it)."""
    if not os.path.isabs(name):
        return name
    try:
        return Path(os.path.normpath(name)).relative_to(in_dir).as_posix()
    except ValueError:
        raise CartsyncError(f"{flag} {name}: outside --in-dir {in_dir}",
                            "only files inside --in-dir can be uploaded (copy or link the file into it)") from None


def _user_list(names: list[str], in_dir: Path, cwd: Path) -> list[str]:
    """cartloader's page: `--in-list NAME [NAME …]`; cartsync's earlier form: one file listing the names."""
    if len(names) == 1 and not (in_dir / names[0]).exists() and (cwd / names[0]).is_file():
        try:
            lines = (cwd / names[0]).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CartsyncError(f"--in-list {names[0]}: cannot read: {exc}") from None
        names = [ln.strip() for ln in lines if ln.strip()]
    elif len(names) == 1 and not (in_dir / names[0]).exists():
        raise CartsyncError(f"--in-list {names[0]}: cannot read: No such file or directory")
    return [_data_file(n, in_dir, "--in-list") for n in names]


def _catalog_of(args: argparse.Namespace, in_dir: Path, cwd: Path) -> Path | None:
    if args.catalog_yaml:
        return (cwd / args.catalog_yaml).resolve()
    default = in_dir / CATALOG_NAME
    return default if default.is_file() else None


def _identity(server: str, in_dir: Path, catalog: Path | None) -> tuple[str, str]:
    """(state record key, notes marker) of this dataset's deposition on this server. See the module doc."""
    catalog_id = selection.dataset_id_of(catalog, "") if catalog is not None and catalog.is_file() else ""
    dataset = catalog_id or (catalog.name if catalog is not None else "(no catalog)")
    return (f"{server} {dataset}",
            identity.deposition_marker(server=server, dataset=str(in_dir), catalog_id=catalog_id))


def _zenodo_source(args: argparse.Namespace, in_dir: Path, cwd: Path) -> dict[str, Any]:
    source: dict[str, Any] = {"dir": str(in_dir)}
    method = args.upload_method
    if method in ("files", "user_list"):
        names = args.files if method == "files" else args.in_list
        if not names:
            raise CartsyncError(f"--upload-method {method} needs {'--files' if method == 'files' else '--in-list'} "
                                "NAME [NAME …]")
        files = ([_data_file(n, in_dir, "--files") for n in names] if method == "files"
                 else _user_list(names, in_dir, cwd))
        source.update(method="list", files=files)
    elif method == "all":
        # cartloader: glob(in_dir/*) files, i.e. top level, no dotfiles
        source.update(method="all", exclude=[".*", "*/**", *FLAG_PATTERNS])
    else:
        source["method"] = "catalog"
        if args.catalog_yaml:
            source["catalog"] = str((cwd / args.catalog_yaml).resolve())
    return source


def zenodo_manifest(args: argparse.Namespace, cwd: Path) -> tuple[dict[str, Any], tuple[Path, str, str], list[str]]:
    """(manifest data, (state file, state key, marker), notes for the user)."""
    in_dir = (cwd / args.in_dir).resolve()
    if not in_dir.is_dir():
        raise CartsyncError(f"--in-dir {args.in_dir}: {'not a folder' if in_dir.exists() else 'no such folder'}")
    server = args.zenodo_url.rstrip("/")
    token = _token_file(args, cwd)
    source = _zenodo_source(args, in_dir, cwd)
    state_file = in_dir / STATE_NAME
    key, marker = _identity(server, in_dir, _catalog_of(args, in_dir, cwd))
    deposition: Any = "new"
    if args.zenodo_deposition_id:
        if not args.zenodo_deposition_id.isdigit():
            shown = redact.shown(args.zenodo_deposition_id)
            raise CartsyncError(f"--zenodo-deposition-id {shown}: not a deposition id (use the "
                                "number in the deposition's URL)")
        deposition = int(args.zenodo_deposition_id)
    new = deposition == "new"
    if new:
        from .backends.zenodo.state import StateFile
        recorded = StateFile(state_file, key).read().get("deposition_id")
        missing = [flag for flag, value in (("--title", args.title), ("--creators", args.creators)) if not value]
        if recorded is not None and (missing or args.print_manifest):
            # this dataset's deposition exists: update it with what was given (a printed manifest names it)
            deposition, new = int(recorded), False
        elif missing:
            raise CartsyncError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required when "
                                "creating a new deposition",
                                'add --title "…" --creators "Lastname, Firstname", or upload into an existing '
                                "deposition with --zenodo-deposition-id ID")
    meta: dict[str, Any] = {}
    for field, value in (("title", args.title), ("upload_type", args.upload_type or ("dataset" if new else None)),
                         ("description", args.description)):
        if value:
            meta[field] = value
    notes = []
    if new and not args.description:
        meta["description"] = NO_DESCRIPTION
        notes.append(f'no --description: the deposition\'s description is "{NO_DESCRIPTION}" (cartloader\'s '
                     "default); add --description to set it")
    if not (args.overwrite or args.restart):
        notes.append("without --overwrite, files already in the deposition are kept even if their content "
                     "changed (as cartloader does); add --overwrite to replace changed files")
    if args.creators:
        # cartloader sends each name as given ({"name": name}); the object form takes any name
        meta["creators"] = [c if "," in c else {"name": c} for c in (c.strip() for c in args.creators)]
    zen: dict[str, Any] = {"url": server, "deposition": deposition, "publish": bool(args.publish),
                           "metadata": meta}
    if token:
        zen["token_file"] = token
    target = {"name": "zenodo", "zenodo": zen,
              "overwrite": "always" if args.restart else ("changed" if args.overwrite else "never"),
              "delete": bool(args.restart)}
    return {"version": 1, "source": source, "targets": [target]}, (state_file, key, marker), notes
