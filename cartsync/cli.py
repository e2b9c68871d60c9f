"""Command line: argparse and dispatch to `commands`; the one place where errors become messages and exit codes."""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Callable, Sequence

from . import __version__, compat, interrupt
from .cliflags import global_flags
from .commands import cmd_apply, cmd_check, cmd_plan, cmd_validate
from .errors import CartsyncError

log = logging.getLogger("cartsync")

EXAMPLES = """\
examples:
  cartsync validate manifests/example.yaml
  cartsync plan manifests/example.yaml                 # what apply would do; changes nothing
  cartsync plan manifests/example.yaml --detailed-exitcode   # CI: 0 no changes, 2 changes, 1 error
  cartsync apply manifests/example.yaml --target web --jobs 16
  cartsync apply manifests/example.yaml --dry-run --json
  cartsync check manifests/example.yaml --target web --deep   # is it viewable? does remote equal local?
  cartsync upload-aws --in-dir out/ --s3-dir s3://bucket/sample --catalog-yaml out/catalog.yaml
  cartsync upload-zenodo --in-dir out/ --upload-method catalog --zenodo-token ~/.zenodo_token \\
      --create-new-deposition --title "My data" --creators "Doe, Jane" --upload-type dataset
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # exit 1, not argparse's 2: with --detailed-exitcode, 2 means "changes pending"
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: error: {message}\n")


def _common(p: argparse.ArgumentParser) -> None:
    global_flags(p, here=False)
    p.add_argument("--target", action="append", default=[], metavar="NAME",
                   help="only this target (repeatable; default: all)")
    p.add_argument("--jobs", "-j", type=int, default=8, metavar="N", help="concurrent transfers (default 8)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--shard", metavar="K/N", help="a collection only: publish shard K of N of its datasets "
                   "(`slurm`: this job-array task's; default $CARTSYNC_SHARD)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cartsync", description="Publish spatial-omics outputs to S3/fsspec stores and Zenodo, "
        "declaratively: write down what should be where; plan shows what would change; apply does only that.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cartsync {__version__}")
    global_flags(parser, here=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check the manifest and the source; no network")
    p.add_argument("manifest")
    global_flags(p, here=False)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("plan", help="show what apply would do; changes nothing")
    p.add_argument("manifest")
    _common(p)
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 if no changes, 2 if changes, 1 on error")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="make the targets match the manifest; verify; report")
    p.add_argument("manifest")
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="same as plan: print what would change, change nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("check", help="is it viewable? public-side checks (anonymous HTTP); read-only",
                       description="Check each target from the public side as a browser viewer reads it: the "
                       "catalog, every file, PMTiles range reads, CORS for the viewer's origin (Zenodo: which "
                       "record URLs serve ranges and CORS). --deep also reads every file back and compares MD5s. "
                       "Exit 0: all passed (warnings allowed); 1: a check failed.")
    p.add_argument("manifest")
    global_flags(p, here=False)
    p.add_argument("--target", action="append", default=[], metavar="NAME",
                   help="only this target (repeatable; default: all)")
    p.add_argument("--jobs", "-j", type=int, default=8, metavar="N", help="concurrent requests (default 8)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--origin", metavar="URL", help="the viewer's origin for the CORS checks (default: the target's "
                   "`origin:`, else CartoScope's https://v3o-main.carto-scope.org)")
    p.add_argument("--deep", action="store_true", help="read every file back (authenticated) and compare MD5s")
    p.set_defaults(func=cmd_check)

    compat.add_parsers(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet or not verbose else (logging.INFO if verbose == 1 else logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbose < 2 else
                                           "%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(level)
    # libraries stay at WARNING even if something raised them: their debug output prints request headers
    for name in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "requests"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        with interrupt.handled():
            return func(args)
    except CartsyncError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to finish (it resumes where it stopped)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 — the one catch site for the unexpected
        if args.debug:
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: re-run with --debug for a traceback, and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
