"""One run: probe -> facts -> checks -> remedies -> report."""

from __future__ import annotations

from doctor.checks import run_checks
from doctor.facts import Facts
from doctor.probe import ProbeOptions, gather
from doctor.remedies import attach_remedies
from doctor.report import Report

__all__ = ["diagnose", "judge"]


def judge(facts: Facts) -> Report:
    """Checks and remedies over facts: pure, used by tests with hand-built facts."""
    results = run_checks(facts)
    findings = [f for r in results for f in r.findings]
    return Report(
        facts=facts, results=tuple(results), findings=tuple(attach_remedies(findings, facts))
    )


def diagnose(options: ProbeOptions) -> Report:
    return judge(gather(options))
