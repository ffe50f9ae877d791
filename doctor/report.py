"""The report: the context, every check's result, the findings related to their root
causes and carrying their remedies, and every judgement a renderer shows (verdict, order,
the first step). Renderers only format what is here."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from doctor.checks import CheckResult, CheckStatus
from doctor.derive import Context
from doctor.derive.expectations import Expectations
from doctor.facts import Facts
from doctor.findings import Finding, Remedy, RemedyKind, Severity

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
    """The context, every check's result and the findings with their remedies."""

    context: Context
    results: tuple[CheckResult, ...]
    findings: tuple[Finding[Any], ...]  # roots first, then consequences (Finding.root)

    @property
    def facts(self) -> Facts:
        return self.context.facts

    @cached_property
    def roots(self) -> tuple[Finding[Any], ...]:
        """Root causes, the worst first (then in check order): what the user fixes."""
        roots = [f for f in self.findings if f.root is None]
        return tuple(sorted(roots, key=lambda f: -f.severity.rank))

    def consequences_of(self, root: Finding[Any]) -> tuple[Finding[Any], ...]:
        return tuple(f for f in self.findings if f.root == root.id)

    def root_of(self, result: CheckResult) -> str | None:
        """The root id every finding of a failed check hangs under (None: it is a root)."""
        roots = {f.root for f in result.findings}
        if len(roots) == 1:
            return next(iter(roots))
        return None

    @property
    def verdict(self) -> Verdict:
        worst = max((f.severity.rank for f in self.roots), default=-1)
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
        return self.context.expected

    def count(self, severity: Severity) -> int:
        """Root causes of this severity (consequences are not counted again)."""
        return sum(1 for f in self.roots if f.severity is severity)

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

    @property
    def first_step(self) -> tuple[Finding[Any], Remedy] | None:
        """The worst root cause with a runnable remedy, and that remedy: what to do first.

        A pyproject.toml block is applied by `torch-doctor fix`, so for it the step is
        the block itself (renderers say `torch-doctor fix` beside it).
        """
        for finding in self.roots:
            if finding.severity is Severity.INFO:
                continue
            for remedy in finding.remedies:
                if remedy.kind is not RemedyKind.TEXT:
                    return finding, remedy
            if finding.remedies:
                return finding, finding.remedies[0]
        return None
