"""cartloader's upload_aws / upload_zenodo command lines, translated into in-memory manifests.

Every question of meaning is settled by cartloader's code (seqscope/cartloader at ee2fb4a,
`cartloader/scripts/upload_aws.py`, `upload_zenodo.py`): replace `cartloader` with `cartsync` in a
command line and it does what cartloader would, with cartsync's guarantees (a diff, verification,
one deposition per dataset). The translated manifest runs through the same engine as a YAML one
(`run_translated` is the one call into the pipeline); `--print-manifest` prints it, once it validates,
so users can keep it in git instead. Errors name the flags the user typed, never a manifest they
did not write. cartloader's flag files (`cartload.aws.done`, …) are written only after a fully
successful run, so its pipelines skip the step only when there is nothing left to do.

Which deposition is "mine" (upload-zenodo): the dataset, never the current folder. Its record lives
in `<in-dir>/.cartsync-upload-zenodo.json` keyed by (Zenodo server, catalog id or catalog file), so
it travels with the folder; the marker in the deposition's notes (found again if the record is lost)
is derived from (server, resolved --in-dir, catalog id). Two datasets uploaded from one folder make
two depositions; re-running one dataset's command from anywhere reuses its own.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

from . import manifest as manifest_mod
from . import selection
from .errors import CartsyncError, ManifestError

UPLOAD_TYPES = ("dataset", "software", "publication", "poster", "presentation", "image", "video", "lesson", "other")
NO_DESCRIPTION = "No description provided."          # cartloader's default for a new deposition
STATE_NAME = ".cartsync-upload-zenodo.json"          # in --in-dir: hidden, so `--upload-method all` skips it
# cartloader's own bookkeeping, never data: `all` leaves it out (cartloader's glob would send it)
FLAG_PATTERNS = ("*.aws.done", "*.zenodo.done")


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
    from .cli import _global_flags
    _global_flags(p, here=False)
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
            key, value = _AWS_SWITCHES[word]
            out[key] = value
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
            else ("basemap",) if args.upload_basemap_only else ("basics", "optional", "basemap"))


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
    if _parts(args) != ("basics", "optional", "basemap"):
        source["parts"] = list(_parts(args))
    target: dict[str, Any] = {"name": "aws", "url": args.s3_dir.rstrip("/"),
                              "overwrite": "always" if args.restart else "changed"}
    options = _storage_options(args)
    if options:
        target["storage_options"] = options
    return {"version": 1, "source": source, "targets": [target]}


def cmd_upload_aws(args: argparse.Namespace) -> int:
    data = aws_manifest(args, Path.cwd())
    notes = ["the aws CLI in --aws is not run; cartsync talks to S3 itself (with its connection flags)"] \
        if args.aws else []
    code = run_translated(data, args, "upload-aws", notes)
    if code == 0 and not (args.dry_run or args.print_manifest):
        source = data["source"]
        root = Path(source["dir"])
        folders = [root / d for d in source["datasets"]] if source.get("collection") else [root]
        for folder in folders:
            catalog = Path(source["catalog"]) if source.get("catalog") else folder / selection.CATALOG_NAME
            _touch_flags(folder, catalog, _parts(args), "aws")
    return code


# ---- upload-zenodo ------------------------------------------------------------------------------

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
    default = in_dir / selection.CATALOG_NAME
    return default if default.is_file() else None


def _identity(server: str, in_dir: Path, catalog: Path | None) -> tuple[str, str]:
    """(state record key, notes marker) of this dataset's deposition on this server. See the module doc."""
    catalog_id = selection.dataset_id_of(catalog, "") if catalog is not None and catalog.is_file() else ""
    dataset = catalog_id or (catalog.name if catalog is not None else "(no catalog)")
    return (f"{server} {dataset}",
            manifest_mod.marker_for(server=server, dataset=str(in_dir), catalog_id=catalog_id))


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
            raise CartsyncError(f"--zenodo-deposition-id {args.zenodo_deposition_id}: not a deposition id (use the "
                                "number in the deposition's URL)")
        deposition = int(args.zenodo_deposition_id)
    new = deposition == "new"
    if new:
        from .backends.zenodo import StateFile
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


def cmd_upload_zenodo(args: argparse.Namespace) -> int:
    data, state, notes = zenodo_manifest(args, Path.cwd())
    code = run_translated(data, args, "upload-zenodo", notes, state)
    if code == 0 and args.upload_method == "catalog" and not (args.dry_run or args.print_manifest):
        in_dir = Path(data["source"]["dir"])
        catalog = Path(data["source"].get("catalog") or in_dir / selection.CATALOG_NAME)
        _touch_flags(in_dir, catalog, ("basics", "optional", "basemap"), "zenodo")
    return code


# ---- shared -------------------------------------------------------------------------------------

def _touch_flags(folder: Path, catalog: Path, parts: tuple[str, ...], where: str) -> None:
    """cartloader's flag files, after a fully successful run only: `cartload.<where>.done` when the
    basics went, `<file>.<where>.done` beside each optional and basemap file that went."""
    if "basics" in parts:
        (folder / f"cartload.{where}.done").touch()
    for part in ("optional", "basemap"):
        if part in parts:
            for rel in selection.catalog_refs(catalog, folder, [], (part,)):
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
    from .cli import run_apply
    virtual = Path.cwd() / f"<{what} flags>"
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
    ns = argparse.Namespace(target=[], jobs=args.n_jobs, json=args.json, dry_run=args.dry_run,
                            no_progress=args.no_progress, quiet=args.quiet, verbose=args.verbose)
    return run_apply(m, ns)
