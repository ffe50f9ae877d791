"""`--format json`: exactly one JSON object, documented in docs/json-report.md."""

from __future__ import annotations

from typing import Any

from doctor import REPORT_SCHEMA, __version__
from doctor.facts import to_jsonable
from doctor.findings import Finding
from doctor.report import Report

__all__ = ["report_to_dict"]


def finding_to_dict(finding: Finding[Any]) -> dict[str, Any]:
    return {
        "id": finding.id,
        "root": finding.root,
        "severity": finding.severity.value,
        "title": finding.title,
        "detail": finding.detail,
        "evidence": list(finding.evidence),
        "remedies": [
            {"kind": r.kind.value, "summary": r.summary, "text": r.text, "target": r.target}
            for r in finding.remedies
        ],
        "data": to_jsonable(finding.data),
    }


def requirements_to_dict(report: Report) -> dict[str, Any] | None:
    expectations = report.torch_requirements
    if expectations is None:
        return None
    return {
        "wheels": [
            {
                "name": w.name,
                "requirement": w.requirement,
                "required_by": w.required_by,
                "installed_version": w.installed.version if w.installed else None,
                "status": w.status,
                "cuda": w.is_cuda,
            }
            for w in expectations.wheels
        ],
        "unparsable": list(expectations.unparsable),
        "cuda_toolkit_extras_unknown": list(expectations.toolkit_extras_unknown),
    }


def report_to_dict(report: Report) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "version": __version__,
        "verdict": report.verdict.value,
        "summary": report.summary,
        "exit_code": report.exit_code,
        "checks": [
            {
                "id": r.spec.id,
                "family": r.spec.family,
                "label": r.spec.label,
                "status": r.status.value,
                "reason": r.reason,
            }
            for r in report.results
        ],
        # Root causes first (the worst first), then their consequences, each naming its root.
        "findings": [finding_to_dict(f) for f in report.roots]
        + [finding_to_dict(f) for f in report.findings if f.root is not None],
        "torch_requirements": requirements_to_dict(report),
        "facts": to_jsonable(report.facts),
    }
