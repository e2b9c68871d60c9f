"""The commands: each takes parsed values, runs the engine and prints; returns the exit code.

Commands never import the CLI (pre-commit's rule): `cli` parses and dispatches here, `compat` translates
cartloader's flags into a manifest and calls `run_apply` like `cmd_apply` does.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from . import engine, render, render_md, saved_plan
from . import manifest as manifest_mod
from . import shard as shard_mod
from .errors import CartsyncError
from .model import Plan, Report


@dataclass(frozen=True)
class Output:
    """How results are printed: JSON or Markdown on stdout, or text (plans on stderr, reports on stdout)."""

    json: bool = False
    quiet: bool = False
    verbose: int = 0
    detailed_exitcode: bool = False
    markdown: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Output:
        fmt = getattr(args, "format", None) or ("json" if getattr(args, "json", False) else "text")
        return cls(json=fmt == "json", quiet=bool(getattr(args, "quiet", False)),
                   verbose=int(getattr(args, "verbose", 0) or 0),
                   detailed_exitcode=bool(getattr(args, "detailed_exitcode", False)), markdown=fmt == "markdown")


def options_from_args(args: argparse.Namespace, jobs: int | None = None) -> engine.Options:
    quiet_bar = getattr(args, "no_progress", False) or getattr(args, "quiet", False) or getattr(args, "json", False)
    given = getattr(args, "shard", None)
    shard = shard_mod.parse(given) if given else shard_mod.from_environment(os.environ)
    return engine.Options(targets=tuple(getattr(args, "target", None) or ()),
                          jobs=jobs if jobs is not None else getattr(args, "jobs", 8),
                          show_progress=False if quiet_bar else None, shard=shard,
                          allow_mass_delete=bool(getattr(args, "allow_mass_delete", False)))


def cmd_validate(args: argparse.Namespace) -> int:
    from . import selection
    m = manifest_mod.load(args.manifest)
    files = selection.select(m.source)
    print(f"{args.manifest}: valid; {len(files)} file(s) selected from {m.source.dir}; "
          f"target(s): {', '.join(t.name for t in m.targets)}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    m = manifest_mod.load(args.manifest)
    opts, out = options_from_args(args), Output.from_args(args)
    if not getattr(args, "out", None):
        return run_plan(m, opts, out)
    captured = saved_plan.Captured()
    plans = engine.plan(m, opts, on_inputs=captured.capture)
    path = Path(args.out)
    saved_plan.write(path, saved_plan.document(m.path, opts.targets, opts.allow_mass_delete, captured, plans))
    code = print_plans(plans, out)
    if not out.json and not out.markdown:
        print(f"\nSaved this plan to {path}; apply exactly it with: cartsync apply {path}")
    return code


def cmd_unlock(args: argparse.Namespace) -> int:
    print(engine.unlock(manifest_mod.load(args.manifest), args.target))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    opts, out = options_from_args(args), Output.from_args(args)
    if saved_plan.is_saved_plan(Path(args.manifest)):
        return apply_saved(Path(args.manifest), opts, out, dry_run=args.dry_run)
    return run_apply(manifest_mod.load(args.manifest), opts, out, dry_run=args.dry_run)


def apply_saved(path: Path, opts: engine.Options, out: Output, dry_run: bool = False) -> int:
    """Apply a saved plan exactly, after checking it is not stale (see saved_plan)."""
    if opts.targets or opts.allow_mass_delete:
        raise CartsyncError(f"saved plan {path}: --target and --allow-mass-delete cannot change a saved plan",
                            "give them to `cartsync plan … --out` instead")
    doc = saved_plan.load(path)
    checker = saved_plan.Checker(path, doc)
    checker.check_manifest()
    m = manifest_mod.load(checker.manifest)
    opts = replace(opts, targets=tuple(doc["options"]["targets"]),
                   allow_mass_delete=bool(doc["options"]["allow_mass_delete"]))
    if dry_run:
        plans = engine.plan(m, opts, on_inputs=checker.inputs)
        checker.plans(plans)
        return print_plans(plans, out)
    return run_apply(m, opts, out, on_inputs=checker.inputs, check_plans=checker.plans)


def print_plans(plans: list[Plan], out: Output) -> int:
    if out.json:
        print(render.dumps({"plans": [render.plan_json(p) for p in plans]}))
    elif out.markdown:
        print(render_md.plan_markdown(plans), end="")
    else:
        print("\n\n".join(render.plan_text(p, out.verbose > 0) for p in plans))
    changed = any(p.has_changes for p in plans)
    return 2 if changed and out.detailed_exitcode else 0


def run_plan(m: manifest_mod.Manifest, opts: engine.Options, out: Output) -> int:
    return print_plans(engine.plan(m, opts), out)


def run_apply(m: manifest_mod.Manifest, opts: engine.Options, out: Output, dry_run: bool = False,
              on_inputs: engine.Inputs | None = None, check_plans=None) -> int:
    if dry_run:
        return run_plan(m, opts, out)

    def on_plan(plans: list[Plan]) -> None:
        if check_plans is not None:
            check_plans(plans)
        # the plan goes to stderr before the first write, as Terraform shows it before applying
        if not out.json and not out.quiet:
            for p in plans:
                if p.has_changes:
                    print(render.plan_text(p, out.verbose > 0), file=sys.stderr, flush=True)

    def on_report(plan: Plan, report: Report) -> None:
        if not out.json and not out.markdown:
            print(render.report_text(report) if plan.has_changes else
                  f"{report.target}: no changes; {len(plan.actions)} file(s) up to date; 0 B sent.", flush=True)

    results = engine.apply(m, opts, on_plan=on_plan, on_report=on_report, on_inputs=on_inputs)
    if out.json:
        print(render.dumps({"reports": [render.report_json(r) for _, r in results]}))
    elif out.markdown:
        print(render_md.report_markdown(results), end="")
    return 1 if any(r.failed or r.skipped or r.refused for _, r in results) else 0


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
