"""Plans and reports → text for people and JSON for machines.

Text for people shows every name and server-given value through redact.printable: a file name holding
\r, ESC or a bidi override cannot move the cursor or spoof a plan line. JSON keeps the exact key
(json.dumps escapes control characters itself).
"""
from __future__ import annotations

import json
from typing import Any

from .model import Change, Kind, Plan, Report
from .redact import printable


def human_size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def plan_text(plan: Plan, verbose: bool = False) -> str:
    lines = [f"Target {printable(plan.target)} → {printable(plan.url)}"]
    shown = [(a, printable(a.key)) for a in plan.actions if verbose or a.kind is not Kind.KEEP]
    width = max((len(key) for _, key in shown), default=0)
    size_width = max((len(human_size(a.size)) for a, _ in shown), default=0)
    for a, key in shown:
        if a.kind is Kind.HEADERS:        # nothing is sent: no size, just what changes
            lines.append(f"  {a.kind.sign} {a.kind.value:<8} {key:<{width}}  ({printable(a.reason)})")
            continue
        why = f"  ({printable(a.reason)})" if verbose or a.kind is Kind.REPLACE else ""
        lines.append(f"  {a.kind.sign} {a.kind.value:<8} {key:<{width}}  {human_size(a.size):>{size_width}}{why}")
    lines += [_change_line(c) for c in plan.changes]
    lines += [f"  note: {printable(n)}" for n in plan.notes]
    lines.append(summary_line(plan))
    return "\n".join(lines)


def _change_line(c: Change) -> str:
    return f"  {c.sign} {printable(c.subject)}" + (f": {printable(c.detail)}" if c.detail else "")


def summary_line(plan: Plan) -> str:
    n = {k: len(plan.of(k)) for k in Kind}
    send = sum(a.size for a in plan.uploads)
    if not plan.has_changes:
        return f"No changes. {n[Kind.KEEP]} file(s) up to date."
    other = sum(1 for c in plan.changes if c.sign in "+~-")
    extra = f", {other} other change(s)" if other else ""
    fixes = f"{n[Kind.HEADERS]} to update headers, " if n[Kind.HEADERS] else ""
    return (f"Plan: {n[Kind.CREATE]} to create, {n[Kind.REPLACE]} to replace, {n[Kind.DELETE]} to delete, "
            f"{fixes}{n[Kind.KEEP]} unchanged{extra} ({human_size(send)} to send).")


def plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "target": plan.target, "url": plan.url, "has_changes": plan.has_changes,
        "summary": {k.value: len(plan.of(k)) for k in Kind},
        "actions": [{"action": a.kind.value, "key": a.key, "size": a.size, "reason": a.reason,
                     "md5": a.local.md5 if a.local else None,
                     **({"headers": [{"name": n, "now": now, "wanted": new} for n, now, new in a.headers]}
                        if a.kind is Kind.HEADERS else {})} for a in plan.actions],
        "changes": [{"sign": c.sign, "subject": c.subject, "detail": c.detail} for c in plan.changes],
        "notes": list(plan.notes), "deletes_refused": plan.deletes_refused,
    }


def report_text(report: Report) -> str:
    done = {k: sum(1 for o in report.outcomes if o.ok and o.action.kind is k) for k in Kind}
    rate = report.bytes_sent / report.seconds if report.seconds > 0 else 0.0
    fixed = f", {done[Kind.HEADERS]} headers updated" if done[Kind.HEADERS] else ""
    lines = [f"{printable(report.target)}: {done[Kind.CREATE]} created, {done[Kind.REPLACE]} replaced, "
             f"{done[Kind.DELETE]} deleted{fixed}; {human_size(report.bytes_sent)} sent in {report.seconds:.1f} s"
             f" ({human_size(rate)}/s), {report.retries} retries."]
    lines += [_change_line(c) for c in report.changes]
    lines += [f"  warning: {printable(w)}" for w in report.warnings]
    if report.stopped:
        lines.append(f"  STOPPED: {printable(report.stopped)}")
    for o in report.failed:
        lines.append(f"  FAILED {printable(o.action.key)}: {printable(o.error)}")
    if report.refused:
        lines.append(f"  deletes refused by max_delete: {len(report.refused)} file(s) kept on the target; if the "
                     "deletes are meant, re-run with --allow-mass-delete")
    if report.skipped:
        lines.append(f"  not done because of the failure(s) above: {len(report.skipped)} action(s) "
                     f"({', '.join(printable(a.key) for a in report.skipped[:5])}"
                     f"{', …' if len(report.skipped) > 5 else ''})")
    return "\n".join(lines)


def report_json(report: Report) -> dict[str, Any]:
    return {
        "target": report.target, "url": report.url,
        "ok": not report.failed and not report.skipped and not report.refused,
        "stopped": report.stopped,
        "bytes_sent": report.bytes_sent, "seconds": round(report.seconds, 3), "retries": report.retries,
        "outcomes": [{"action": o.action.kind.value, "key": o.action.key, "ok": o.ok, "error": o.error,
                      "retries": o.retries, "bytes_sent": o.bytes_sent} for o in report.outcomes],
        "skipped": [{"action": a.kind.value, "key": a.key} for a in report.skipped],
        "refused": [{"action": a.kind.value, "key": a.key} for a in report.refused],
        "changes": [{"sign": c.sign, "subject": c.subject, "detail": c.detail} for c in report.changes],
        "warnings": list(report.warnings),
    }


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)
