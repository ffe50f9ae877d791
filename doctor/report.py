"""The report: facts, check results, findings with remedies, and the verdict."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from doctor.checks import CheckResult, CheckStatus
from doctor.checks.expectations import Expectations, expected_wheels
from doctor.facts import Facts
from doctor.findings import Finding, Severity

__all__ = ["EXIT_DOCTOR_FAILED", "EXIT_ERRORS", "EXIT_OK", "Report", "Verdict"]

EXIT_OK = 0
EXIT_ERRORS = 1
EXIT_DOCTOR_FAILED = 2


class Verdict(str, enum.Enum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"
    # No error found, but the doctor could not do all its work (exit code 2).
    INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class Report:
    """The facts, every check's result and the findings with their remedies."""

    facts: Facts
    results: tuple[CheckResult, ...]
    findings: tuple[Finding, ...]

    @property
    def verdict(self) -> Verdict:
        worst = max((f.severity.rank for f in self.findings), default=-1)
        if worst >= Severity.ERROR.rank:
            return Verdict.ERROR
        if self.crashed or self.facts.interpreter is None:
            return Verdict.INCOMPLETE
        if worst >= Severity.WARNING.rank:
            return Verdict.WARNING
        return Verdict.OK

    @property
    def torch_requirements(self) -> Expectations | None:
        """torch's requirements evaluated for the inspected interpreter (None without torch)."""
        return expected_wheels(self.facts)

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    @property
    def crashed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is CheckStatus.CRASHED)

    @property
    def exit_code(self) -> int:
        if self.verdict is Verdict.ERROR:
            return EXIT_ERRORS
        if self.verdict is Verdict.INCOMPLETE:
            return EXIT_DOCTOR_FAILED
        return EXIT_OK

    @property
    def summary(self) -> str:
        """One line, e.g. '2 errors, 1 warning' or 'no problems found'."""
        parts = []
        for severity, word in ((Severity.ERROR, "error"), (Severity.WARNING, "warning")):
            n = self.count(severity)
            if n:
                parts.append(f"{n} {word}{'s' if n != 1 else ''}")
        if self.facts.interpreter is None:
            parts.append("the environment could not be inspected")
        elif self.crashed:
            n = len(self.crashed)
            parts.append(f"{n} check{'s' if n != 1 else ''} could not run")
        return ", ".join(parts) if parts else "no problems found"
