"""The check registry and the runner.

A check is declared once, with everything the runner needs to order, skip and relate it::

    @check(
        "library-not-found",
        family="libraries",
        summary="...",                # what a finding of this id means
        label="...",                  # what the check looks at (shown beside its status)
        payload=LibraryNotFound,      # the finding's typed data (a Payload dataclass)
        requires=("cuda-build", "libraries"),   # needs (doctor/checks/needs.py) or check ids
        caused_by=("missing-cuda-wheel",),      # roots that explain this finding
    )
    def library_not_found(ctx: Context) -> Outcome: ...

    @remedy("library-not-found")
    def _(finding: Finding[LibraryNotFound], ctx: Context) -> Sequence[Remedy]: ...

``requires`` names facts a check needs (skipped with the need's reason when absent) or
other checks (skipped, "see <id>", when that check failed: one cause, one finding).
``caused_by`` relates findings after every check ran: a finding whose subjects all
belong to a failed root's subjects becomes that root's consequence (chains collapse to the
first root). Only roots get remedies and count for the verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Callable

from doctor.checks.needs import NEEDS
from doctor.derive import Context
from doctor.findings import (
    CheckFunction,
    CheckResult,
    CheckSpec,
    CheckStatus,
    Finding,
    Outcome,
    Payload,
    Remedy,
    Severity,
    Skip,
)
from doctor.remedies import run_in_project

__all__ = [
    "REGISTRY",
    "REMEDIES",
    "CheckResult",
    "CheckSpec",
    "CheckStatus",
    "Outcome",
    "Skip",
    "check",
    "outcome_of",
    "relate",
    "remedy",
    "run_checks",
]


REGISTRY: dict[str, CheckSpec] = {}
RemedyBuilder = Callable[[Finding[Any], Context], Sequence[Remedy]]
REMEDIES: dict[str, RemedyBuilder] = {}


def check(
    id: str,
    *,
    severities: Sequence[Severity],
    family: str,
    summary: str,
    label: str,
    payload: type[Payload],
    requires: Sequence[str] = (),
    caused_by: Sequence[str] = (),
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check function under its finding id."""

    def register(function: CheckFunction) -> CheckFunction:
        if id in REGISTRY:
            raise ValueError(f"duplicate check id {id!r}")
        unknown = [r for r in requires if r not in NEEDS and r not in REGISTRY]
        if unknown:
            # A check may require only needs and checks registered before it: no cycles.
            raise ValueError(f"{id}: unknown requirement(s) {unknown}")
        REGISTRY[id] = CheckSpec(
            id=id,
            family=family,
            severities=tuple(severities),
            summary=summary,
            label=label,
            function=function,
            payload=payload,
            requires=tuple(requires),
            caused_by=tuple(caused_by),
        )
        return function

    return register


def remedy(finding_id: str) -> Callable[[Any], Any]:
    """Register the remedy builder of a finding id (in the module of its check)."""

    def register(builder: Any) -> Any:
        if finding_id in REMEDIES:
            raise ValueError(f"duplicate remedy for {finding_id!r}")
        REMEDIES[finding_id] = builder
        return builder

    return register


def _run_one(spec: CheckSpec, ctx: Context, done: dict[str, CheckResult]) -> CheckResult:
    for requirement in spec.requires:
        need = NEEDS.get(requirement)
        if need is not None:
            reason = need(ctx)
            if reason is not None:
                return CheckResult(spec, CheckStatus.SKIPPED, reason=reason)
            continue
        required = done.get(requirement)
        if required is not None and required.status is CheckStatus.FAILED:
            return CheckResult(spec, CheckStatus.SKIPPED, reason=f"see {requirement}")
    try:
        outcome = spec.function(ctx)
    except Exception as exc:  # one broken check never stops the report
        return CheckResult(spec, CheckStatus.CRASHED, reason=f"{type(exc).__name__}: {exc}")
    if isinstance(outcome, Skip):
        return CheckResult(spec, CheckStatus.SKIPPED, reason=outcome.reason)
    for finding in outcome:
        if (
            finding.id != spec.id
            or not isinstance(finding.data, spec.payload)
            or finding.severity not in spec.severities
        ):
            return CheckResult(
                spec,
                CheckStatus.CRASHED,
                reason=f"emitted {finding.id} ({finding.severity.value}) with a "
                f"{type(finding.data).__name__} payload: not what it declares",
            )
    if outcome:
        return CheckResult(spec, CheckStatus.FAILED, findings=tuple(outcome))
    return CheckResult(spec, CheckStatus.PASSED)


def run_checks(ctx: Context, specs: Sequence[CheckSpec] | None = None) -> list[CheckResult]:
    """Every check in registration order (a required check always runs before)."""
    done: dict[str, CheckResult] = {}
    for spec in specs if specs is not None else list(REGISTRY.values()):
        done[spec.id] = _run_one(spec, ctx, done)
    return list(done.values())


def outcome_of(check_id: str, ctx: Context) -> Outcome:
    """One check's outcome as the runner sees it (its requirements applied): for tests."""
    specs = list(REGISTRY.values())
    upto = [s.id for s in specs].index(check_id) + 1
    result = run_checks(ctx, specs[:upto])[-1]
    if result.status is CheckStatus.SKIPPED:
        return Skip(result.reason or "")
    if result.status is CheckStatus.CRASHED:
        raise RuntimeError(f"{check_id} crashed: {result.reason}")
    return list(result.findings)


def _explains(root: Finding[Any], finding: Finding[Any]) -> bool:
    subjects = finding.data.subjects()
    return bool(subjects) and subjects <= root.data.subjects()


def relate(results: Sequence[CheckResult]) -> list[Finding[Any]]:
    """All findings, each consequence marked with its root's id, roots first in check order.

    The relation is the declared ``caused_by`` of the consequence's check; a finding is
    explained by a root when every subject it names is one of the root's subjects.
    """
    findings = [f for r in results for f in r.findings]
    by_id: dict[str, list[Finding[Any]]] = {}
    for finding in findings:
        by_id.setdefault(finding.id, []).append(finding)
    parent: dict[int, Finding[Any]] = {}
    for result in results:
        for finding in result.findings:
            for cause in result.spec.caused_by:
                root = next((r for r in by_id.get(cause, ()) if _explains(r, finding)), None)
                if root is not None:
                    parent[id(finding)] = root
                    break

    def top(finding: Finding[Any]) -> Finding[Any]:
        seen = set()
        while id(finding) in parent and id(finding) not in seen:
            seen.add(id(finding))
            finding = parent[id(finding)]
        return finding

    consequences = [replace(f, root=top(f).id) for f in findings if id(f) in parent]
    # A root is as severe as the worst of what it causes: a shadowing library (a warning
    # alone) that makes torch's libraries fail to load is an error.
    worst: dict[str, Severity] = {}
    for consequence in consequences:
        known = worst.get(consequence.root or "")
        if known is None or consequence.severity.rank > known.rank:
            worst[consequence.root or ""] = consequence.severity
    roots = []
    for finding in findings:
        if id(finding) in parent:
            continue
        raised = worst.get(finding.id)
        if raised is not None and raised.rank > finding.severity.rank:
            finding = replace(finding, severity=raised)
        roots.append(finding)
    return roots + consequences


def attach_remedies(findings: Sequence[Finding[Any]], ctx: Context) -> list[Finding[Any]]:
    """Each root finding with its remedies; consequences get none (their root's fix them)."""
    out = []
    for finding in findings:
        builder = REMEDIES.get(finding.id)
        if finding.root is not None or builder is None:
            out.append(finding)
            continue
        try:
            remedies = tuple(run_in_project(ctx, builder(finding, ctx)))
        except Exception as exc:  # a broken remedy never costs the report
            remedies = ()
            finding = replace(
                finding,
                evidence=(*finding.evidence, f"(no remedy: {type(exc).__name__}: {exc})"),
            )
        out.append(replace(finding, remedies=(*finding.remedies, *remedies)))
    return out
