"""cartloader's upload_aws / upload_zenodo command lines, translated into in-memory manifests.

The translated manifest runs through the same engine as a YAML one;
`--print-manifest` prints it, so users can keep it in git instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from . import manifest as manifest_mod
from .cliflags import global_flags
from .commands import Output, options_from_args, run_apply, run_check
from .errors import CartsyncError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upload-aws", help="cartloader's upload_aws, same flags, through cartsync's engine",
                       description="Upload a cartload2 output folder (or a collection) to S3, like cartloader's "
                       "upload_aws, but idempotently: only what changed is sent.")
    p.add_argument("--in-dir", required=True, help="input folder (or, with --in-list, the parent of the datasets)")
    p.add_argument("--s3-dir", required=True, help="s3://bucket/prefix (or, with --in-list, the parent prefix)")
    p.add_argument("--catalog-yaml", help="catalog file (default: <in-dir>/catalog.yaml; not with --in-list)")
    p.add_argument("--in-list", help="TSV whose first column lists dataset sub-folders of --in-dir (collection)")
    p.add_argument("--n-jobs", type=int, default=8, help="concurrent transfers")
    p.add_argument("--profile", help="AWS profile")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--upload-basics-only", action="store_true", help="only the mandatory cartload files")
    group.add_argument("--upload-optional-only", action="store_true", help="only the optional files (UMAP, alias)")
    group.add_argument("--upload-basemap-only", action="store_true", help="only extra basemaps (e.g. histology)")
    p.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    p.add_argument("--restart", action="store_true", help="re-upload everything (overwrite: always)")
    p.add_argument("--aws", help="accepted for compatibility; not needed (cartsync talks to S3 itself)")
    p.add_argument("--makefn", help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true",
                   help="after a successful upload, run `cartsync check` on it (is it viewable?)")
    _shared(p)
    p.set_defaults(func=cmd_upload_aws)

    p = sub.add_parser("upload-zenodo", help="cartloader's upload_zenodo, same flags, through cartsync's engine",
                       description="Upload a cartload2 output folder to a Zenodo deposition, like cartloader's "
                       "upload_zenodo, but idempotently: one deposition, a new version only when files change.")
    p.add_argument("--in-dir", required=True, help="input folder")
    p.add_argument("--upload-method", choices=["all", "catalog", "user_list", "files"], default="catalog")
    p.add_argument("--in-list", help="user_list: a file listing paths (relative to --in-dir), one per line")
    p.add_argument("--files", nargs="+", help="files: paths relative to --in-dir")
    p.add_argument("--catalog-yaml", help="catalog file (default: <in-dir>/catalog.yaml)")
    p.add_argument("--zenodo-token", help="path of a file holding the token (default: $ZENODO_TOKEN)")
    p.add_argument("--zenodo-url", default="https://zenodo.org", help="server (e.g. https://sandbox.zenodo.org)")
    dep = p.add_mutually_exclusive_group()
    dep.add_argument("--zenodo-deposition-id", help="an existing deposition")
    dep.add_argument("--create-new-deposition", action="store_true",
                     help="create one (once: re-runs reuse it, see the state file)")
    p.add_argument("--create-new-version", action="store_true",
                   help="accepted; a published deposition gets a new version whenever its files change")
    p.add_argument("--title")
    p.add_argument("--upload-type", default=None, help="default: dataset")
    p.add_argument("--creators", nargs="+", help='"Lastname, Firstname" (or "Firstname Lastname")')
    p.add_argument("--description")
    p.add_argument("--overwrite", action="store_true", help="replace files whose content changed")
    p.add_argument("--restart", action="store_true", help="re-upload everything and drop files not in the source")
    p.add_argument("--publish", action="store_true", help="publish (mints a DOI; cannot be undone)")
    p.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    p.add_argument("--n-jobs", type=int, default=4, help="concurrent uploads")
    _shared(p)
    p.set_defaults(func=cmd_upload_zenodo)


def _shared(p: argparse.ArgumentParser) -> None:
    global_flags(p, here=False)
    p.add_argument("--print-manifest", action="store_true", help="print the equivalent manifest and exit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _in_list(path: str) -> list[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise CartsyncError(f"--in-list {path}: cannot read: {exc.strerror}") from None
    ids = [line.split("\t")[0].strip() for line in lines if line.strip() and not line.startswith("#")]
    if not ids:
        raise CartsyncError(f"--in-list {path}: lists no datasets", "one dataset folder name per line")
    return ids


def aws_manifest(args: argparse.Namespace, cwd: Path) -> dict[str, Any]:
    if not args.s3_dir.startswith("s3://"):
        raise CartsyncError(f"--s3-dir {args.s3_dir}: must start with s3://")
    parts = (["basics"] if args.upload_basics_only else ["optional"] if args.upload_optional_only
             else ["basemap"] if args.upload_basemap_only else None)
    source: dict[str, Any] = {"dir": str((cwd / args.in_dir).resolve()), "method": "catalog"}
    if args.in_list:
        if args.catalog_yaml:
            raise CartsyncError("--catalog-yaml cannot be used with --in-list",
                                "each dataset folder must hold its own catalog.yaml")
        source.update(collection=True, datasets=_in_list(args.in_list))
    elif args.catalog_yaml:
        source["catalog"] = str((cwd / args.catalog_yaml).resolve())
    if parts:
        source["parts"] = parts
    target: dict[str, Any] = {"name": "aws", "url": args.s3_dir.rstrip("/"),
                              "overwrite": "always" if args.restart else "changed"}
    if args.profile:
        target["storage_options"] = {"profile": args.profile}
    return {"version": 1, "source": source, "targets": [target]}


def _creator(name: str) -> str:
    """cartloader took plain names; Zenodo wants "Lastname, Firstname"."""
    name = name.strip()
    if "," in name or " " not in name:
        return name
    first, last = name.rsplit(" ", 1)
    return f"{last}, {first}"


COMPAT_MANIFEST = "cartsync-upload-zenodo.yaml"   # the (virtual) manifest upload-zenodo runs as, in the cwd


def zenodo_manifest(args: argparse.Namespace, cwd: Path) -> dict[str, Any]:
    source: dict[str, Any] = {"dir": str((cwd / args.in_dir).resolve())}
    method = args.upload_method
    if method == "user_list":
        if not args.in_list:
            raise CartsyncError("--upload-method user_list needs --in-list FILE")
        try:
            files = [ln.strip() for ln in Path(args.in_list).read_text().splitlines() if ln.strip()]
        except OSError as exc:
            raise CartsyncError(f"--in-list {args.in_list}: cannot read: {exc.strerror}") from None
        source.update(method="list", files=files)
    elif method == "files":
        if not args.files:
            raise CartsyncError("--upload-method files needs --files PATH …")
        source.update(method="list", files=list(args.files))
    else:
        source["method"] = method
        if args.catalog_yaml and method == "catalog":
            source["catalog"] = str((cwd / args.catalog_yaml).resolve())
    deposition: Any
    if args.zenodo_deposition_id:
        if not args.zenodo_deposition_id.isdigit():
            raise CartsyncError(f"--zenodo-deposition-id {args.zenodo_deposition_id}: not a deposition id (use the "
                                "number in the deposition's URL)")
        deposition = int(args.zenodo_deposition_id)
    elif args.create_new_deposition:
        from .backends.zenodo import StateFile
        recorded = StateFile(manifest_mod.state_file_for(cwd / COMPAT_MANIFEST), "zenodo").read()
        deposition = recorded.get("deposition_id", "new")
    else:
        raise CartsyncError("say which deposition: --zenodo-deposition-id ID or --create-new-deposition")
    meta: dict[str, Any] = {}
    for key, value in (("title", args.title), ("upload_type", args.upload_type or (
            "dataset" if deposition == "new" else None)), ("description", args.description)):
        if value:
            meta[key] = value
    if args.creators:
        meta["creators"] = [_creator(c) for c in args.creators]
    zen: dict[str, Any] = {"url": args.zenodo_url, "deposition": deposition, "publish": bool(args.publish),
                           "metadata": meta}
    if args.zenodo_token:
        zen["token_file"] = str((cwd / args.zenodo_token).resolve())
    target = {"name": "zenodo", "zenodo": zen,
              "overwrite": "always" if args.restart else ("changed" if args.overwrite else "never"),
              "delete": bool(args.restart)}
    return {"version": 1, "source": source, "targets": [target]}


def cmd_upload_zenodo(args: argparse.Namespace) -> int:
    data = zenodo_manifest(args, Path.cwd())
    if not (args.overwrite or args.restart) and not args.print_manifest:
        print("note: without --overwrite, files already in the deposition are kept even if their content "
              "changed (as cartloader does); add --overwrite to replace changed files", file=sys.stderr)
    return run_translated(data, args, "upload-zenodo", Path.cwd() / COMPAT_MANIFEST)


def run_translated(data: dict[str, Any], args: argparse.Namespace, what: str, as_path: Path | None = None) -> int:
    if args.print_manifest:
        sys.stdout.write("# cartsync manifest translated from `cartsync " + what + "`\n")
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return 0
    if getattr(args, "aws", None):
        print("note: --aws is not needed; cartsync talks to S3 itself", file=sys.stderr)
    m = manifest_mod.from_data(data, as_path or Path.cwd() / f"<{what} flags>")
    opts = options_from_args(args, jobs=getattr(args, "n_jobs", 8))
    return run_apply(m, opts, Output.from_args(args), dry_run=args.dry_run)


def cmd_upload_aws(args: argparse.Namespace) -> int:
    code = run_translated(aws_manifest(args, Path.cwd()), args, "upload-aws")
    if code or not args.check or args.print_manifest or args.dry_run:
        return code
    return run_check(manifest_mod.from_data(aws_manifest(args, Path.cwd()), Path.cwd() / "<upload-aws flags>"), args)
