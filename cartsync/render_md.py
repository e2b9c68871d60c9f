"""Plans and reports as GitHub-flavoured Markdown, for a pull-request comment or $GITHUB_STEP_SUMMARY.

Shape: a heading, one line per target (its summary), then per target with something to show a collapsed
<details> block holding the actions in a ```diff fence (so `+` is green and `-` red). Keys are shown as
they are inside the fence; a key holding a backtick run gets a longer fence. Timings are left out so that
the same change gives the same Markdown (a bot can update its comment instead of adding one).
"""
from __future__ import annotations

import re

from .model import Kind, Outcome, Plan, Report
from .render import human_size, summary_line

_DONE = {Kind.CREATE: "created", Kind.REPLACE: "replaced", Kind.DELETE: "deleted", Kind.KEEP: "kept"}


def _cell(text: str) -> str:
    """Text for a Markdown line outside a fence: no control characters, no HTML, no emphasis."""
    text = re.sub(r"[\x00-\x1f\x7f]", "?", text)
    return re.sub(r"([\\`*_<>\[\]|])", r"\\\1", text)


def _code(text: str) -> str:
    """A URL or path as inline code (no escaping needed inside; a backtick cannot end it)."""
    return "`" + re.sub(r"[\x00-\x1f\x7f`]", "?", text) + "`"


def _fenced(lines: list[str]) -> list[str]:
    body = [re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "?", line) for line in lines]
    longest = max((len(m) for line in body for m in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence + "diff", *body, fence]


def _details(summary: str, lines: list[str]) -> list[str]:
    return ["", f"<details><summary>{_cell(summary)}</summary>", "", *_fenced(lines), "", "</details>"]


def plan_markdown(plans: list[Plan]) -> str:
    changed = sum(1 for p in plans if p.has_changes)
    out = [f"### cartsync plan: {changed} of {len(plans)} target(s) to change", ""]
    out += [f"- **{_cell(p.target)}** ({_code(p.url)}): {_cell(summary_line(p))}" for p in plans]
    for p in plans:
        shown = [a for a in p.actions if a.kind is not Kind.KEEP]
        lines = [f"{a.kind.sign} {a.kind.value:<8} {a.key}  {human_size(a.size)}"
                 + (f"  ({a.reason})" if a.kind is Kind.REPLACE else "") for a in shown]
        lines += [f"{c.sign} {c.subject}" + (f": {c.detail}" if c.detail else "") for c in p.changes]
        lines += [f"! {n}" for n in p.notes]
        if lines:
            out += _details(f"{p.target}: {len(shown)} file action(s)", lines)
    return "\n".join(out) + "\n"


def _report_line(r: Report) -> str:
    done = {k: sum(1 for o in r.outcomes if o.ok and o.action.kind is k) for k in Kind}
    status = "failed" if r.failed or r.skipped or r.refused else "ok"
    return (f"{status}: {done[Kind.CREATE]} created, {done[Kind.REPLACE]} replaced, {done[Kind.DELETE]} deleted; "
            f"{human_size(r.bytes_sent)} sent, {r.retries} retries.")


def _outcome(o: Outcome) -> str:
    if o.ok:
        return f"{o.action.kind.sign} {_DONE[o.action.kind]:<8} {o.action.key}  {human_size(o.action.size)}"
    return f"! FAILED   {o.action.key}: {o.error}"


def report_markdown(results: list[tuple[Plan, Report]]) -> str:
    ok = sum(1 for _, r in results if not (r.failed or r.skipped or r.refused))
    out = [f"### cartsync apply: {ok} of {len(results)} target(s) done", ""]
    out += [f"- **{_cell(r.target)}** ({_code(r.url)}): " + (_cell(_report_line(r)) if p.has_changes else
            f"no changes; {len(p.actions)} file(s) up to date.") for p, r in results]
    for _, r in results:
        lines = [_outcome(o) for o in sorted(r.outcomes, key=lambda o: (o.ok, o.action.key))]
        lines += [f"{c.sign} {c.subject}" + (f": {c.detail}" if c.detail else "") for c in r.changes]
        lines += [f"! STOPPED: {r.stopped}"] if r.stopped else []
        lines += [f"! not done: {a.kind.value} {a.key}" for a in r.skipped]
        lines += [f"! refused by max_delete: delete {a.key}" for a in r.refused]
        if lines:
            out += _details(f"{r.target}: {len(r.outcomes)} file action(s)", lines)
    return "\n".join(out) + "\n"
