"""The check registry and the runner."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Union

from doctor.facts import Facts
from doctor.findings import Finding

__all__ = ["REGISTRY", "CheckResult", "CheckSpec", "CheckStatus", "Skip", "check", "run_checks"]


@dataclass(frozen=True)
class Skip:
    """The check could not judge: what it needs is missing (said once, elsewhere)."""

    reason: str


Outcome = Union[Skip, Sequence[Finding]]
CheckFunction = Callable[[Facts], Outcome]


@dataclass(frozen=True)
class CheckSpec:
    """A registered check: its finding id, family, descriptions and function."""

    id: str  # the finding id this check emits: a stable contract
    family: str
    summary: str  # one line: what a finding of this id means
    label: str  # what the check looks at, shown beside its status
    function: CheckFunction


class CheckStatus(str, enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    CRASHED = "crashed"  # a bug in the doctor; reported, never a traceback


@dataclass(frozen=True)
class CheckResult:
    """How one check ended: passed, failed with findings, skipped or crashed."""

    spec: CheckSpec
    status: CheckStatus
    findings: tuple[Finding, ...] = ()
    reason: str | None = None  # why skipped or crashed


REGISTRY: dict[str, CheckSpec] = {}


def check(
    id: str, *, family: str, summary: str, label: str
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check function under its finding id."""

    def register(function: CheckFunction) -> CheckFunction:
        if id in REGISTRY:
            raise ValueError(f"duplicate check id {id!r}")
        REGISTRY[id] = CheckSpec(
            id=id, family=family, summary=summary, label=label, function=function
        )
        return function

    return register


def run_checks(facts: Facts, specs: Sequence[CheckSpec] | None = None) -> list[CheckResult]:
    results = []
    for spec in specs if specs is not None else list(REGISTRY.values()):
        try:
            outcome = spec.function(facts)
        except Exception as exc:  # one broken check never stops the report
            results.append(
                CheckResult(spec, CheckStatus.CRASHED, reason=f"{type(exc).__name__}: {exc}")
            )
            continue
        if isinstance(outcome, Skip):
            results.append(CheckResult(spec, CheckStatus.SKIPPED, reason=outcome.reason))
        elif outcome:
            results.append(CheckResult(spec, CheckStatus.FAILED, findings=tuple(outcome)))
        else:
            results.append(CheckResult(spec, CheckStatus.PASSED))
    return results
