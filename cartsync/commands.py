"""The commands: each takes parsed values, runs the engine and prints; returns the exit code.

Commands never import the CLI (pre-commit's rule): `cli` parses and dispatches here, `compat` translates
cartloader's flags into a manifest and calls `run_apply` like `cmd_apply` does.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

from . import engine, render
from . import manifest as manifest_mod
from . import shard as shard_mod
from .model import Plan, Report


@dataclass(frozen=True)
class Output:
    """How results are printed: JSON on stdout, or text (plans on stderr, reports on stdout)."""

    json: bool = False
    quiet: bool = False
    verbose: int = 0
    detailed_exitcode: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Output:
        return cls(json=bool(getattr(args, "json", False)), quiet=bool(getattr(args, "quiet", False)),
                   verbose=int(getattr(args, "verbose", 0) or 0),
                   detailed_exitcode=bool(getattr(args, "detailed_exitcode", False)))


def options_from_args(args: argparse.Namespace, jobs: int | None = None) -> engine.Options:
    quiet_bar = getattr(args, "no_progress", False) or getattr(args, "quiet", False) or getattr(args, "json", False)
    given = getattr(args, "shard", None)
    shard = shard_mod.parse(given) if given else shard_mod.from_environment(os.environ)
    return engine.Options(targets=tuple(getattr(args, "target", None) or ()),
                          jobs=jobs if jobs is not None else getattr(args, "jobs", 8),
                          show_progress=False if quiet_bar else None, shard=shard)


def cmd_validate(args: argparse.Namespace) -> int:
    from . import selection
    m = manifest_mod.load(args.manifest)
    files = selection.select(m.source)
    print(f"{args.manifest}: valid; {len(files)} file(s) selected from {m.source.dir}; "
          f"target(s): {', '.join(t.name for t in m.targets)}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    return run_plan(manifest_mod.load(args.manifest), options_from_args(args), Output.from_args(args))


def cmd_apply(args: argparse.Namespace) -> int:
    return run_apply(manifest_mod.load(args.manifest), options_from_args(args), Output.from_args(args),
                     dry_run=args.dry_run)


def run_plan(m: manifest_mod.Manifest, opts: engine.Options, out: Output) -> int:
    plans = engine.plan(m, opts)
    if out.json:
        print(render.dumps({"plans": [render.plan_json(p) for p in plans]}))
    else:
        print("\n\n".join(render.plan_text(p, out.verbose > 0) for p in plans))
    changed = any(p.has_changes for p in plans)
    return 2 if changed and out.detailed_exitcode else 0


def run_apply(m: manifest_mod.Manifest, opts: engine.Options, out: Output, dry_run: bool = False) -> int:
    if dry_run:
        return run_plan(m, opts, out)

    def on_plan(plans: list[Plan]) -> None:
        # the plan goes to stderr before the first write, as Terraform shows it before applying
        if not out.json and not out.quiet:
            for p in plans:
                if p.has_changes:
                    print(render.plan_text(p, out.verbose > 0), file=sys.stderr, flush=True)

    def on_report(plan: Plan, report: Report) -> None:
        if not out.json:
            print(render.report_text(report) if plan.has_changes else
                  f"{report.target}: no changes; {len(plan.actions)} file(s) up to date; 0 B sent.", flush=True)

    results = engine.apply(m, opts, on_plan=on_plan, on_report=on_report)
    if out.json:
        print(render.dumps({"reports": [render.report_json(r) for _, r in results]}))
    return 1 if any(r.failed or r.skipped for _, r in results) else 0


def cmd_check(args: argparse.Namespace) -> int:
    return run_check(manifest_mod.load(args.manifest), args)


def run_check(m: manifest_mod.Manifest, args: argparse.Namespace) -> int:
    """`cartsync check` (and `upload-aws --check`): the check pipeline, then a table per target or JSON."""
    from .check import render as check_render
    from .check import run as check_run
    results = check_run.check(m, tuple(getattr(args, "target", None) or ()), getattr(args, "origin", None),
                              getattr(args, "deep", False), getattr(args, "jobs", 8))
    if getattr(args, "json", False):
        print(render.dumps({"checks": [check_render.as_json(r) for r in results]}))
    else:
        print("\n\n".join(check_render.text(r, (getattr(args, "verbose", 0) or 0) > 0) for r in results))
    return 1 if any(r.verdict.value == "failed" for r in results) else 0
