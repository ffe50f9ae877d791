"""One run: probe -> facts -> derive -> checks -> relations -> remedies -> report."""

from __future__ import annotations

from doctor.checks import attach_remedies, relate, run_checks
from doctor.derive import derive
from doctor.facts import Facts
from doctor.probe import ProbeOptions, gather
from doctor.report import Report

__all__ = ["diagnose", "judge"]


def judge(facts: Facts) -> Report:
    """Checks and remedies over facts: pure, used by tests with hand-built facts."""
    ctx = derive(facts)
    results = run_checks(ctx)
    findings = attach_remedies(relate(results), ctx)
    return Report(context=ctx, results=tuple(results), findings=tuple(findings))


def diagnose(options: ProbeOptions) -> Report:
    return judge(gather(options))
