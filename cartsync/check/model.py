"""Plain values of a check: one Finding per (check, subject), grouped per target. No I/O here."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Verdict(str, enum.Enum):
    PASSED = "passed"
    WARNING = "warning"
    FAILED = "failed"

    @property
    def rank(self) -> int:
        return {"passed": 0, "warning": 1, "failed": 2}[self.value]


def worst(verdicts: list[Verdict]) -> Verdict:
    return max(verdicts, key=lambda v: v.rank, default=Verdict.PASSED)


@dataclass(frozen=True)
class Finding:
    """What one check concluded about one subject (a key, a URL, the record), with the evidence seen on the
    wire (status line, headers) and, unless it passed, the fix."""

    check: str        # catalog | files | pmtiles | cors | zenodo | public-url | deep
    subject: str
    verdict: Verdict
    evidence: str
    fix: str = ""
    status: int = 0   # the HTTP status that decided it (401/403: anonymous reads refused), 0 if none


@dataclass
class TargetCheck:
    """Every finding for one target, plus advice blocks (exact JSON to apply) printed once after the table."""

    target: str
    public_url: str | None
    origin: str = ""                      # the viewer origin the CORS checks used
    findings: list[Finding] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return worst([f.verdict for f in self.findings])

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)
