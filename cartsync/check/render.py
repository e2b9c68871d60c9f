"""Check results → a compact table per target for people, JSON for machines.

The table shows one row per (check, subject) that did not pass; checks whose subjects all passed fold into
one row with a count (every row with -v). The fix follows each row that needs one; the exact configuration
to apply (CORS rule, bucket policy) follows the table.
"""
from __future__ import annotations

from typing import Any

from .model import Finding, TargetCheck, Verdict

ORDER = ["public-url", "catalog", "files", "pmtiles", "cors", "zenodo", "deep"]
# what a folded row of passes says (the first finding's own evidence would name one file's numbers)
FOLDED = {"catalog": "each: GET 200, parses, identical to the local catalog",
          "files": "each: HEAD 200, Content-Length = local size",
          "pmtiles": "each: 206 with the right Content-Range, a PMTiles v3 header with its root directory inside "
                     "the file, no Content-Encoding, Content-Type application/vnd.pmtiles",
          "deep": "each: read back, MD5 equal to the local file's"}


def _rows(result: TargetCheck, verbose: bool) -> list[tuple[Finding, str]]:
    rows: list[tuple[Finding, str]] = []
    for check in sorted({f.check for f in result.findings}, key=ORDER.index):
        group = [f for f in result.findings if f.check == check]
        foldable = check in FOLDED and not verbose and len(group) > 1
        rows += [(f, f.subject) for f in group if not foldable or f.verdict is not Verdict.PASSED]
        passed = [f for f in group if f.verdict is Verdict.PASSED]
        if foldable and passed:
            label = f"all {len(group)}" if len(passed) == len(group) else f"{len(passed)} other(s)"
            rows.append((Finding(check, label, Verdict.PASSED, FOLDED[check]), label))
    return rows


def text(result: TargetCheck, verbose: bool = False) -> str:
    where = result.public_url or "(no public URL)"
    lines = [f"Target {result.target} → {where}  (viewer origin {result.origin})"]
    rows = _rows(result, verbose)
    w_check = max((len(f.check) for f, _ in rows), default=5)
    w_subject = min(max((len(s) for _, s in rows), default=7), 48)
    for f, subject in rows:
        lines.append(f"  {f.check:<{w_check}}  {subject:<{w_subject}}  {f.verdict.value:<7}  {f.evidence}")
        if f.fix and f.verdict is not Verdict.PASSED:
            lines.append(f"  {'':<{w_check}}  {'':<{w_subject}}  {'fix:':<7}  {f.fix}")
    lines.append(summary(result))
    for block in result.advice:
        lines += ["", block]
    return "\n".join(lines)


def summary(result: TargetCheck) -> str:
    n = {v: sum(1 for f in result.findings if f.verdict is v) for v in Verdict}
    head = {"passed": "viewable", "warning": "viewable, with warnings", "failed": "NOT viewable"}[result.verdict.value]
    if result.public_url is None and result.verdict is not Verdict.FAILED:
        head = "not checked from the public side"
    return (f"Check {result.target}: {head} — {n[Verdict.PASSED]} passed, "
            f"{n[Verdict.WARNING]} warning(s), {n[Verdict.FAILED]} failed.")


def as_json(result: TargetCheck) -> dict[str, Any]:
    return {"target": result.target, "public_url": result.public_url, "origin": result.origin,
            "verdict": result.verdict.value,
            "findings": [{"check": f.check, "subject": f.subject, "verdict": f.verdict.value,
                          "evidence": f.evidence, "fix": f.fix, "status": f.status} for f in result.findings],
            "advice": list(result.advice)}
