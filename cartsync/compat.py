"""cartloader's upload_aws / upload_zenodo command lines, translated into in-memory manifests.

Every question of meaning is settled by cartloader's code (seqscope/cartloader at ee2fb4a,
`cartloader/scripts/upload_aws.py`, `upload_zenodo.py`): replace `cartloader` with `cartsync` in a
command line and it does what cartloader would, with cartsync's guarantees (a diff, verification,
one deposition per dataset). The translated manifest runs through the same engine as a YAML one
(`run_translated` is the one call into the pipeline); `--print-manifest` prints it, once it validates,
so users can keep it in git instead. Errors name the flags the user typed, never a manifest they
did not write. cartloader's flag files (`cartload.aws.done`, …) are written only after a fully
successful run, so its pipelines skip the step only when there is nothing left to do.
upload-zenodo's translation, and which deposition is "mine", are in compat_zenodo.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from . import manifest as manifest_mod
from . import redact, selection
from .catalog_format import CATALOG_NAME, PARTS
from .cliflags import global_flags
from .commands import Output, options_from_args, run_apply, run_check
from .compat_zenodo import NO_DESCRIPTION, UPLOAD_TYPES, zenodo_manifest
from .errors import CartsyncError, ManifestError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upload-aws", aliases=["upload_aws"],
                       help="cartloader's upload_aws, same flags, through cartsync's engine",
                       description="Upload a cartload2 output folder (or a collection) to S3, like cartloader's "
                       "upload_aws, but idempotently: only what changed is sent.")
    p.add_argument("--in-dir", required=True, help="input folder (or, with --in-list, the parent of the datasets)")
    p.add_argument("--s3-dir", required=True, help="s3://bucket/prefix (or, with --in-list, the parent prefix)")
    p.add_argument("--catalog-yaml", help="catalog file (default: <in-dir>/catalog.yaml; published as catalog.yaml; "
                   "not with --in-list)")
    p.add_argument("--in-list", help="TSV (no header) whose first column lists dataset sub-folders of --in-dir")
    p.add_argument("--n-jobs", type=int, default=8, help="concurrent transfers (default 8)")
    p.add_argument("--profile", help="AWS profile")
    p.add_argument("--endpoint-url", help="S3 endpoint (MinIO, Ceph, …), as the aws CLI's --endpoint-url")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--upload-basics-only", action="store_true", help="only the mandatory cartload files")
    group.add_argument("--upload-optional-only", action="store_true", help="only the optional files (UMAP, alias)")
    group.add_argument("--upload-basemap-only", action="store_true", help="only extra basemaps (e.g. histology)")
    p.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    p.add_argument("--restart", action="store_true", help="re-upload everything (overwrite: always)")
    p.add_argument("--aws", help='the aws CLI (not run: cartsync talks to S3 itself); its --endpoint-url, --profile, '
                   '--region, --ca-bundle, --no-verify-ssl and --no-sign-request are honoured, e.g. '
                   '"aws --endpoint-url https://s3.example.org"')
    p.add_argument("--makefn", help=argparse.SUPPRESS)
    p.add_argument("--check", action="store_true",
                   help="after a successful upload, run `cartsync check` on it (is it viewable?)")
    _shared(p)
    p.set_defaults(func=cmd_upload_aws)

    p = sub.add_parser("upload-zenodo", aliases=["upload_zenodo"],
                       help="cartloader's upload_zenodo, same flags, through cartsync's engine",
                       description="Upload a cartload2 output folder to a Zenodo deposition, like cartloader's "
                       "upload_zenodo, but idempotently: one deposition per dataset, a new version only when "
                       "files change.")
    p.add_argument("--in-dir", required=True, help="input folder")
    p.add_argument("--upload-method", choices=["all", "catalog", "files", "user_list"], default="all",
                   help="all (default): the top-level, non-hidden files of --in-dir; catalog: the files the "
                   "catalog names, and the catalog; files (or user_list): the files named by --files (or --in-list)")
    p.add_argument("--files", nargs="+", help="files: names relative to --in-dir (or absolute, inside it)")
    p.add_argument("--in-list", nargs="+", metavar="NAME",
                   help="user_list: file names relative to --in-dir (or one file that lists them, one per line)")
    p.add_argument("--catalog-yaml", help="catalog file (default: <in-dir>/catalog.yaml; published as catalog.yaml)")
    p.add_argument("--zenodo-token", help="path of a file holding the token (default: $ZENODO_TOKEN)")
    p.add_argument("--zenodo-url", default="https://zenodo.org", help="server (e.g. https://sandbox.zenodo.org)")
    p.add_argument("--zenodo-deposition-id",
                   help="an existing deposition (without it: this dataset's own, created on the first run)")
    p.add_argument("--create-new-deposition", action="store_true",
                   help="accepted: without --zenodo-deposition-id, the dataset gets its own deposition (once)")
    p.add_argument("--create-new-version", action="store_true",
                   help="accepted: a published deposition gets a new version whenever its files change")
    p.add_argument("--title")
    p.add_argument("--upload-type", choices=UPLOAD_TYPES, default=None, help="default for a new deposition: dataset")
    p.add_argument("--creators", nargs="+", help='names as Zenodo shows them: "Lastname, Firstname", or an '
                   "organisation; sent as given")
    p.add_argument("--description", help=f'default for a new deposition: "{NO_DESCRIPTION}"')
    p.add_argument("--overwrite", action="store_true", help="replace files whose content changed")
    p.add_argument("--restart", action="store_true", help="re-upload everything and drop files not in the source")
    p.add_argument("--publish", action="store_true", help="publish (mints a DOI; cannot be undone)")
    p.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    p.add_argument("--n-jobs", type=int, default=4, help="concurrent uploads (default 4)")
    _shared(p)
    p.set_defaults(func=cmd_upload_zenodo)


def _shared(p: argparse.ArgumentParser) -> None:
    global_flags(p, here=False)
    p.add_argument("--print-manifest", action="store_true", help="print the equivalent manifest and exit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# ---- upload-aws ---------------------------------------------------------------------------------

_AWS_VALUES = {"--endpoint-url": "endpoint_url", "--profile": "profile", "--region": "region",
               "--ca-bundle": "ca_bundle"}
_AWS_SWITCHES = {"--no-verify-ssl": ("verify", False), "--no-sign-request": ("anon", True)}


def _aws_words(command: str) -> dict[str, Any]:
    """The settings a user put in `--aws "aws --endpoint-url X …"` (cartloader pastes it before `s3 cp`).
    The first word is the binary, which cartsync does not run; anything but a connection flag is refused."""
    try:
        words = shlex.split(command)
    except ValueError as exc:
        raise CartsyncError(f"--aws: cannot be split into words ({exc})", "check its quotes") from None
    out: dict[str, Any] = {}
    rest = iter(words[1:])
    for word in rest:
        flag, eq, inline = word.partition("=")
        if flag in _AWS_VALUES:
            value = inline if eq else next(rest, None)
            if not value:
                raise CartsyncError(f"--aws: {flag} needs a value", f'write --aws "aws {flag} VALUE"')
            out[_AWS_VALUES[flag]] = value
        elif word in _AWS_SWITCHES:
            key, switch = _AWS_SWITCHES[word]
            out[key] = switch
        else:
            # never echo a word that is not a known flag: it may be a pasted secret
            shown = repr(flag) if flag.startswith("--") and flag[2:].replace("-", "").isalnum() and len(flag) < 40 \
                else f"a word of {len(word)} characters"
            raise CartsyncError(f"--aws: cartsync cannot honour {shown} (it talks to S3 itself, without the aws CLI)",
                                "keep only --endpoint-url, --profile, --region, --ca-bundle, --no-verify-ssl or "
                                "--no-sign-request in --aws (or use --endpoint-url / --profile)")
    return out


def _storage_options(args: argparse.Namespace) -> dict[str, Any]:
    words = _aws_words(args.aws) if args.aws else {}
    for flag, key in (("--profile", "profile"), ("--endpoint-url", "endpoint_url")):
        given = getattr(args, key)
        if given and key in words and words[key] != given:
            raise CartsyncError(f"{flag} and --aws {flag} disagree", f"give {flag} once")
        if given:
            words[key] = given
    endpoint = words.get("endpoint_url")
    if endpoint is not None:
        netloc = endpoint.split("://", 1)[-1].split("/", 1)[0]
        if "://" not in endpoint or "@" in netloc:
            raise CartsyncError("--endpoint-url: not an http(s):// URL without credentials",
                                "write it as https://host[:port]; credentials come from the environment or a profile")
    opts = {k: v for k, v in words.items() if k not in ("verify", "ca_bundle")}
    if "verify" in words or "ca_bundle" in words:
        opts["client_kwargs"] = {"verify": words.get("ca_bundle", words.get("verify"))}
    return opts


def _in_list_tsv(path: str) -> list[str]:
    """The first column of cartloader's --in-list TSV (no header), quotes removed as pandas.read_csv would."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter="\t", quotechar='"'))
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise CartsyncError(f"--in-list {path}: cannot read: {why}") from None
    ids = [row[0].strip() for row in rows if row and row[0].strip() and not row[0].startswith("#")]
    if not ids:
        raise CartsyncError(f"--in-list {path}: lists no datasets", "one dataset folder name per line")
    return ids


def _parts(args: argparse.Namespace) -> tuple[str, ...]:
    return (("basics",) if args.upload_basics_only else ("optional",) if args.upload_optional_only
            else ("basemap",) if args.upload_basemap_only else PARTS)


def aws_manifest(args: argparse.Namespace, cwd: Path) -> dict[str, Any]:
    if not args.s3_dir.startswith("s3://"):
        raise CartsyncError(f"--s3-dir {args.s3_dir}: must start with s3://")
    source: dict[str, Any] = {"dir": str((cwd / args.in_dir).resolve()), "method": "catalog"}
    if args.in_list:
        if args.catalog_yaml:
            raise CartsyncError("--catalog-yaml cannot be used with --in-list",
                                "each dataset folder must hold its own catalog.yaml")
        source.update(collection=True, datasets=_in_list_tsv(str(cwd / args.in_list)))
    elif args.catalog_yaml:
        source["catalog"] = str((cwd / args.catalog_yaml).resolve())
    if _parts(args) != PARTS:
        source["parts"] = list(_parts(args))
    target: dict[str, Any] = {"name": "aws", "url": args.s3_dir.rstrip("/"),
                              "overwrite": "always" if args.restart else "changed"}
    options = _storage_options(args)
    if options:
        target["storage_options"] = options
    return {"version": 1, "source": source, "targets": [target]}


def cmd_upload_aws(args: argparse.Namespace) -> int:
    # before anything is printed (--print-manifest) or sent: a token pasted into a flag is never echoed
    redact.check_flags({}, {"--s3-dir": args.s3_dir}, exists=lambda raw: True)
    data = aws_manifest(args, Path.cwd())
    notes = ["the aws CLI in --aws is not run; cartsync talks to S3 itself (with its connection flags)"] \
        if args.aws else []
    code = run_translated(data, args, "upload-aws", notes)
    if code == 0 and not (args.dry_run or args.print_manifest):
        source = data["source"]
        root = Path(source["dir"])
        folders = [root / d for d in source["datasets"]] if source.get("collection") else [root]
        for folder in folders:
            catalog = Path(source["catalog"]) if source.get("catalog") else folder / CATALOG_NAME
            _touch_flags(folder, catalog, _parts(args), "aws")
        if args.check:          # the published dataset, from the public side (cartsync check)
            code = run_check(manifest_mod.from_data(data, root / "<upload-aws flags>"), args)
    return code


def cmd_upload_zenodo(args: argparse.Namespace) -> int:
    redact.check_flags({"--zenodo-token": args.zenodo_token}, {"--zenodo-url": args.zenodo_url},
                       exists=lambda raw: Path(raw).expanduser().exists())
    data, state, notes = zenodo_manifest(args, Path.cwd())
    code = run_translated(data, args, "upload-zenodo", notes, state)
    if code == 0 and args.upload_method == "catalog" and not (args.dry_run or args.print_manifest):
        in_dir = Path(data["source"]["dir"])
        catalog = Path(data["source"].get("catalog") or in_dir / CATALOG_NAME)
        _touch_flags(in_dir, catalog, PARTS, "zenodo")
    return code


# ---- shared -------------------------------------------------------------------------------------

def _touch_flags(folder: Path, catalog: Path, parts: tuple[str, ...], where: str) -> None:
    """cartloader's flag files, after a fully successful run only: `cartload.<where>.done` when the
    basics went, `<file>.<where>.done` beside each optional and basemap file that went."""
    if "basics" in parts:
        (folder / f"cartload.{where}.done").touch()
    for part in ("optional", "basemap"):
        if part in parts:
            for rel in selection.catalog_files(catalog, folder, [], (part,)):
                (folder / f"{rel}.{where}.done").touch()


# manifest key path → the flag that set it, so that a translated command's errors name what was typed
_FLAGS = (("source.dir", "--in-dir"), ("source.catalog", "--catalog-yaml"), ("source.files", "--files"),
          ("source.datasets", "--in-list"), ("metadata.title", "--title"), ("metadata.creators", "--creators"),
          ("metadata.upload_type", "--upload-type"), ("metadata.description", "--description"),
          ("zenodo.token_file", "--zenodo-token"), ("zenodo.url", "--zenodo-url"),
          ("zenodo.deposition", "--zenodo-deposition-id"), ("storage_options", "--aws/--profile/--endpoint-url"),
          ("targets[0].url", "--s3-dir"))


def _as_flags(exc: ManifestError, file: Path) -> CartsyncError:
    lines = []
    for problem in exc.problems:
        text = problem.split(f"{file}: ", 1)[-1]
        path, _, message = text.partition(": ")
        flag = next((f for key, f in _FLAGS if key in path), None)
        lines.append(f"{flag}: {message}" if flag else message or text)
    return CartsyncError("\n".join(lines) if len(lines) == 1 else "the flags do not make a valid upload:\n" +
                         "\n".join(f"  {line}" for line in lines), exc.hint)


def run_translated(data: dict[str, Any], args: argparse.Namespace, what: str, notes: list[str],
                   state: tuple[Path, str, str] | None = None) -> int:
    """Validate the translated manifest, then print it (--print-manifest) or, after the notes, run it
    through the pipeline. `state`: (state file, record key, marker) naming upload-zenodo's deposition
    by its dataset."""
    # named after the dataset, not the current folder: one run at a time per dataset (engine.target_lock)
    virtual = Path(data["source"]["dir"]) / f"<{what} flags>"
    try:
        m = manifest_mod.from_data(data, virtual)
    except ManifestError as exc:
        raise _as_flags(exc, virtual) from None
    if args.print_manifest:
        sys.stdout.write(f"# cartsync manifest translated from `cartsync {what}`; run it with:\n"
                         f"#   cartsync apply FILE --jobs {args.n_jobs}\n")
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        return 0
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if state is not None:
        state_file, key, marker = state
        m = dataclasses.replace(m, targets=tuple(
            dataclasses.replace(t, zenodo=dataclasses.replace(t.zenodo, state_file=state_file, state_key=key,
                                                              marker=marker)) if t.zenodo else t
            for t in m.targets))
    return run_apply(m, options_from_args(args, jobs=args.n_jobs), Output.from_args(args), dry_run=args.dry_run)
