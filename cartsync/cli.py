"""Command line: argparse and dispatch to `commands`; the one place where errors become messages and exit codes."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from . import __version__, compat, interrupt, redact
from .cliflags import global_flags
from .commands import cmd_apply, cmd_check, cmd_plan, cmd_unlock, cmd_validate
from .errors import CartsyncError

log = logging.getLogger("cartsync")

EXAMPLES = """\
examples:
  cartsync validate manifests/example.yaml
  cartsync plan manifests/example.yaml                 # what apply would do; changes nothing
  cartsync plan manifests/example.yaml --detailed-exitcode   # CI: 0 no changes, 2 changes, 1 error
  cartsync apply manifests/example.yaml --target local --jobs 16
  cartsync apply manifests/example.yaml --dry-run --json
  cartsync plan manifests/example.yaml --out plan.json --format markdown   # review it, then:
  cartsync apply plan.json                             # exactly that plan, or refused if anything changed
  cartsync unlock manifests/example.yaml --target local   # break a crashed run's lock
  cartsync check manifests/example.yaml --target local --deep   # is it viewable? does remote equal local?
  cartsync upload-aws --in-dir out/ --s3-dir s3://bucket/sample --catalog-yaml out/catalog.yaml
  cartsync upload-zenodo --in-dir out/ --upload-method catalog --zenodo-token ~/.zenodo_token \\
      --create-new-deposition --title "My data" --creators "Doe, Jane" --upload-type dataset
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # exit 1, not argparse's 2: with --detailed-exitcode, 2 means "changes pending"
        self.print_usage(sys.stderr)
        # argparse quotes the value it refused: that may be a token pasted into the wrong flag
        self.exit(1, f"{self.prog}: error: {redact.scrubbed(message)}\n")


def _common(p: argparse.ArgumentParser) -> None:
    global_flags(p, here=False)
    p.add_argument("--target", action="append", default=[], metavar="NAME",
                   help="only this target (repeatable; default: all)")
    p.add_argument("--jobs", "-j", type=int, default=8, metavar="N", help="concurrent transfers (default 8)")
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout (= --format json)")
    p.add_argument("--format", choices=("text", "json", "markdown"), default=None,
                   help="output: text (default), json, or markdown (for a pull request or $GITHUB_STEP_SUMMARY)")
    p.add_argument("--allow-mass-delete", action="store_true",
                   help="this run only: let the deletes through even where the max_delete guard trips")
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
    p.add_argument("--out", metavar="FILE", help="also save the plan (with a fingerprint of its inputs) for "
                   "`cartsync apply FILE`")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("apply", help="make the targets match the manifest (or a saved plan); verify; report")
    p.add_argument("manifest", metavar="MANIFEST|PLAN", help="a manifest, or a plan saved by `plan --out`")
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="same as plan: print what would change, change nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("unlock", help="remove a target's lock object (a crashed run's); see README 'Locks'")
    p.add_argument("manifest")
    p.add_argument("--target", required=True, metavar="NAME", help="the target whose lock to remove")
    global_flags(p, here=False)
    p.set_defaults(func=cmd_unlock)

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


class _PrintableFormatter(logging.Formatter):
    """Log messages name files and quote servers: their control characters are escaped (tracebacks,
    added after the message, keep their line breaks)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return redact.printable(super().formatMessage(record))


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet or not verbose else (logging.INFO if verbose == 1 else logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_PrintableFormatter("%(levelname)s: %(message)s" if verbose < 2 else
                                             "%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    log.setLevel(level)
    # libraries stay at WARNING even if something raised them: their debug output prints request headers
    for name in ("botocore", "aiobotocore", "s3fs", "fsspec", "urllib3", "requests"):
        logging.getLogger(name).setLevel(logging.WARNING)


class _ReaderGone:
    """stdout/stderr whose reader went away (`cartsync plan … | head`): the rest of the output is dropped
    quietly and the run goes on — an apply must not stop half-way because nobody reads its summary."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.gone = True
        try:    # what is still buffered is flushed at exit: let it go to /dev/null, not a traceback
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _ReaderGone(sys.stdout), _ReaderGone(sys.stderr)
    try:
        return _main(argv)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams


def _main(argv: Sequence[str] | None) -> int:
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
        # messages carry file names and server answers: no control sequence reaches the terminal
        print(f"error: {redact.printable(exc.message, keep_newlines=True)}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {redact.printable(exc.hint, keep_newlines=True)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; re-run the same command to finish (it resumes where it stopped)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 — the one catch site for the unexpected
        if args.debug:
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {redact.printable(str(exc))}", file=sys.stderr)
        print("hint: re-run with --debug for a traceback, and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
